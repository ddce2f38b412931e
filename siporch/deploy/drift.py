"""Drift: what runs on the hosts compared with the model and the last deploy.

Three sources are compared, per host:

* files: the release ``/etc/siporch/current`` points to and the sha256 of every file in it
  (read over SSH with the inventory's settings, like ``siporch status``) against the
  manifest of the release the controller last deployed; when the controller has no record
  of a deploy, against the manifest of the release the host runs (controller copy first,
  else the one shipped with the release);
* the model: what the model renders to now against that release (an "undeployed change");
* runtime state: the edge's dispatcher destinations (Kamailio JSON-RPC, `dispatcher.list`)
  against the rendered dispatcher table, and the PBX's PJSIP endpoints and outbound
  registrations (AMI) against siporch's rendered ``pjsip_siporch.conf``. The PBX's
  Asterisk is shared with the site: objects the site defines in its own files are not
  drift; a loaded object is reported as not in the model only when its name is siporch's
  (``siporch-*``).

The comparisons are pure functions over plain data (`compare_*`), so they are tested
without hosts; `check()` gathers the data and runs them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from siporch.core import (
    ADDED,
    REMOVED,
    RUNS,
    HostRead,
    diff_trees,
    read_manifest,
    resolve_base,
)
from siporch.errors import MonitorError, SiporchError
from siporch.hosts import CURRENT, Inventory, primary, read_host, select
from siporch.release import default_out, deployed_release, sha256

SCHEMA = "siporch.drift/1"
DISPATCHER = "kamailio/db/dispatcher"
PJSIP = "asterisk/pjsip_siporch.conf"
#: Loaded PJSIP objects with this prefix are siporch's; any other is the site's.
OWN_PREFIX = "siporch-"

EXIT_CLEAN = 0
EXIT_DRIFT = 1
EXIT_ERROR = 2

#: Kinds of drift, as they appear in the report.
RELEASE = "release"
MODIFIED = "modified"
MISSING = "missing"
EXTRA = "extra"
UNDEPLOYED = "undeployed change"
DISPATCHER_KIND = "dispatcher"
ENDPOINT = "endpoint"
REGISTRATION = "registration"


class DriftError(SiporchError):
    """Drift could not be checked (bad input, no release to compare with)."""


@dataclass(frozen=True)
class Drift:
    host: str
    kind: str
    subject: str
    message: str

    def __str__(self) -> str:
        return f"{self.host}: {self.message}"


@dataclass(frozen=True)
class DispatcherEntry:
    set_id: int
    uri: str
    description: str = ""


@dataclass
class DriftReport:
    reference: str | None
    reference_source: str  # "deployed" | "host"
    drift: list[Drift] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        if self.errors:
            return EXIT_ERROR
        return EXIT_DRIFT if self.drift else EXIT_CLEAN

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "reference": self.reference,
            "reference_source": self.reference_source,
            "exit_code": self.exit_code,
            "drift": [asdict(d) for d in self.drift],
            "errors": list(self.errors),
            "hosts": self.hosts,
        }


# ------------------------------------------------------------------------------ parsing


def short(digest: str) -> str:
    return digest[:12] + "…" if len(digest) > 12 else digest


def _db_text_fields(line: str) -> list[str]:
    """One db_text row: fields separated by ``:``, ``\\:`` is a literal colon."""
    fields, cur, i = [], [], 0
    while i < len(line):
        ch = line[i]
        if ch == "\\" and i + 1 < len(line):
            nxt = line[i + 1]
            cur.append({"n": "\n", "r": "\r", "t": "\t", "0": "\0"}.get(nxt, nxt))
            i += 2
            continue
        if ch == ":":
            fields.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    fields.append("".join(cur))
    return fields


def parse_dispatcher_table(text: str) -> list[DispatcherEntry]:
    """Kamailio's db_text `dispatcher` table -> its destinations."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return []
    header = [h.split("(", 1)[0] for h in lines[0].split()]
    try:
        i_set, i_dst = header.index("setid"), header.index("destination")
    except ValueError:
        raise DriftError("the dispatcher table has no setid/destination columns") from None
    i_desc = header.index("description") if "description" in header else None
    out = []
    for line in lines[1:]:
        f = _db_text_fields(line)
        if len(f) <= max(i_set, i_dst):
            continue
        try:
            set_id = int(f[i_set])
        except ValueError:
            continue
        desc = f[i_desc] if i_desc is not None and i_desc < len(f) else ""
        out.append(DispatcherEntry(set_id, f[i_dst], desc))
    return out


def parse_pjsip_objects(text: str) -> dict[str, set[str]]:
    """Rendered `pjsip.conf` -> {object type: section names}; templates `(!)` are skipped,
    a section without `type` takes its template's."""
    templates: dict[str, str] = {}
    sections: list[tuple[str, bool, list[str], str | None]] = []
    name: str | None = None
    is_template = False
    parents: list[str] = []
    typ: str | None = None

    def close() -> None:
        if name is not None:
            sections.append((name, is_template, parents, typ))

    for raw in text.splitlines():
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and "]" in line:
            close()
            name = line[1 : line.index("]")].strip()
            options = line[line.index("]") + 1 :].strip()
            opts = [o.strip() for o in options.strip("()").split(",") if o.strip()]
            is_template = "!" in opts
            parents = [o for o in opts if o not in ("!", "+")]
            typ = None
            continue
        key, sep, value = line.partition("=")
        if sep and key.strip() == "type" and name is not None:
            typ = value.lstrip(">").strip()
    close()
    for n, tmpl, _, t in sections:
        if tmpl and t:
            templates[n] = t
    out: dict[str, set[str]] = {}
    for n, tmpl, pars, t in sections:
        if tmpl:
            continue
        kind = t or next((templates[p] for p in pars if p in templates), None)
        if kind:
            out.setdefault(kind, set()).add(n)
    return out


# ---------------------------------------------------------------------------- comparing


def compare_release(
    host: str, running: str | None, reference: str | None, *, deployed: bool = True
) -> list[Drift]:
    """The release a host runs against the one last deployed (or, when no deploy is
    recorded, the newest release any host of the inventory runs)."""
    if running is None:
        return [Drift(host, RELEASE, CURRENT, f"no release: {CURRENT} does not exist")]
    if reference is not None and running != reference:
        other = "the last deploy was" if deployed else "other hosts run"
        return [Drift(host, RELEASE, CURRENT, f"runs release {running}, {other} {reference}")]
    return []


def compare_files(
    host: str, on_host: Mapping[str, str], expected: Mapping[str, str], release: str
) -> list[Drift]:
    """File hashes on a host against the manifest hashes of the release it should run."""
    out: list[Drift] = []
    for c in diff_trees(expected, on_host):
        path = c.path
        if c.state == ADDED:
            out.append(Drift(host, EXTRA, path, f"{path} on host is not in release {release}"))
        elif c.state == REMOVED:
            out.append(Drift(host, MISSING, path, f"{path} of release {release} missing on host"))
        else:
            have, want = on_host[path], expected[path]
            out.append(
                Drift(
                    host,
                    MODIFIED,
                    path,
                    f"{path} modified on host (sha256 {short(have)}, "
                    f"release {release} has {short(want)})",
                )
            )
    return out


def compare_model(
    host: str, rendered: Mapping[str, str] | None, deployed: Mapping[str, str] | None, release: str
) -> list[Drift]:
    """What the model renders now against the release deployed: undeployed changes."""
    if rendered is None:
        return [
            Drift(host, UNDEPLOYED, "", f"undeployed change: no longer in the model ({release})")
        ]
    if deployed is None:
        return [Drift(host, UNDEPLOYED, "", "undeployed change: new host, never deployed")]
    what = {ADDED: "added", REMOVED: "removed"}
    return [
        Drift(
            host,
            UNDEPLOYED,
            c.path,
            f"undeployed change: {c.path} {what.get(c.state, 'changed')} in the model "
            f"since release {release}",
        )
        for c in diff_trees(deployed, rendered)
    ]


def _uri_key(uri: str) -> str:
    return uri.strip().lower()


def compare_dispatcher(
    host: str, expected: Iterable[DispatcherEntry], running: Iterable[tuple[int, str]]
) -> list[Drift]:
    """Dispatcher destinations the edge runs ((set, uri)) against the model's table."""
    want = {(e.set_id, _uri_key(e.uri)): e for e in expected}
    have = {(s, _uri_key(u)): u for s, u in running}
    out = []
    for key in sorted(set(want) - set(have)):
        e = want[key]
        peer = f" ({e.description})" if e.description else ""
        out.append(
            Drift(
                host,
                DISPATCHER_KIND,
                e.uri,
                f"dispatcher set {e.set_id}: destination {e.uri}{peer} of the model is not "
                "loaded in Kamailio",
            )
        )
    for key in sorted(set(have) - set(want)):
        out.append(
            Drift(
                host,
                DISPATCHER_KIND,
                have[key],
                f"dispatcher set {key[0]}: destination {have[key]} is loaded in Kamailio but "
                "not in the model",
            )
        )
    return out


def compare_pjsip(
    host: str,
    expected: Mapping[str, set[str]],
    endpoints: Iterable[str],
    registrations: Iterable[str],
) -> list[Drift]:
    """PJSIP endpoints and outbound registrations on Asterisk against the rendered config.

    Every object of the model must be loaded. The site's own objects (its phones, its
    registrations) share the Asterisk: an object loaded that the model does not have is
    drift only when its name is one siporch uses (``siporch-*``, e.g. a removed edge)."""
    out = []
    for kind, label, have in (
        (ENDPOINT, "endpoint", set(endpoints)),
        (REGISTRATION, "registration", set(registrations)),
    ):
        want = set(expected.get(label, set()))
        for name in sorted(want - have):
            out.append(Drift(host, kind, name, f"PJSIP {label} {name} of the model is not loaded"))
        for name in sorted(n for n in have - want if n.startswith(OWN_PREFIX)):
            out.append(
                Drift(host, kind, name, f"PJSIP {label} {name} is loaded but not in the model")
            )
    return out


# ---------------------------------------------------------------------------- gathering


def fleet_release(probes: Iterable[object]) -> str | None:
    """The newest release id any reachable host runs (ids start with the UTC time)."""
    ids = [p.release for p in probes if isinstance(p, HostRead) and p.release]
    return max(ids) if ids else None


def _manifest_files(manifest: Mapping[str, Any] | None) -> dict[str, str] | None:
    if not manifest:
        return None
    files = manifest.get("files")
    if not isinstance(files, dict):
        return None
    return {p: str(f.get("sha256", "")) for p, f in files.items() if isinstance(f, dict)}


def check(
    inventory: Inventory,
    vault_password_file: Path | None = None,
    *,
    out_dir: Path | None = None,
    kamailio_rpc: str = "http://{address}:5071/RPC",
    timeout: float = 5.0,
    runtime: bool = True,
    limit: str | None = None,
) -> DriftReport:
    """Gather everything and compare; errors reaching hosts land in `report.errors`.
    ``limit``: only the hosts this Ansible host pattern selects."""
    return asyncio.run(
        _check(
            inventory,
            vault_password_file,
            out_dir=default_out(primary(inventory)) if out_dir is None else out_dir,
            kamailio_rpc=kamailio_rpc,
            timeout=timeout,
            runtime=runtime,
            limit=limit,
        )
    )


async def _check(
    inventory: Inventory,
    vault_password_file: Path | None,
    *,
    out_dir: Path,
    kamailio_rpc: str,
    timeout: float,
    runtime: bool,
    limit: str | None = None,
) -> DriftReport:
    from siporch.model import load_model
    from siporch.monitor import kamailio
    from siporch.monitor.status import query_pbx
    from siporch.monitor.topology import from_model
    from siporch.render import render_release

    loaded = load_model(inventory, vault_password_file)
    model = loaded.model
    rendered = render_release(model)
    rendered_hashes = {h: {p: sha256(b) for p, b in f.items()} for h, f in rendered.items()}
    first = primary(inventory)
    reference = deployed_release(first, out_dir) or deployed_release(first.resolve(), out_dir)
    report = DriftReport(reference, "deployed" if reference else "host")
    hosts = [h for h, spec in model.hosts.items() if spec.role in ("edge", "pbx")]
    hosts = select(inventory, limit, hosts)

    probes = await asyncio.gather(
        *(read_host(inventory, h, str(model.hosts[h].address), timeout) for h in hosts),
        return_exceptions=True,
    )
    for host, probe in zip(hosts, probes, strict=True):
        if isinstance(probe, SiporchError):
            report.errors.append(str(probe))
            report.hosts[host] = {"reachable": False}
            continue
        if isinstance(probe, BaseException):
            raise probe
        report.hosts[host] = {"reachable": True, "release": probe.release}
        if reference is not None:
            report.drift += compare_release(host, probe.release, reference)
        else:
            report.drift += compare_release(
                host, probe.release, fleet_release(probes), deployed=False
            )
        if probe.release is None:
            continue
        # what the host runs: its own manifest wins, the controller's copy fills a gap
        base = resolve_base(host, probe, lambda rid: read_manifest(out_dir, rid))
        if base.state != RUNS:
            report.errors.append(
                f"{host}: release {probe.release} has no manifest on the host or the controller"
            )
            continue
        expected = {p: e.sha256 for p, e in base.files.items()}
        report.drift += compare_files(host, probe.files, expected, probe.release)
        # the model against what the host runs
        report.drift += compare_model(host, rendered_hashes.get(host), expected, probe.release)

    if runtime:
        topology = from_model(model, kamailio_rpc=kamailio_rpc, hosts_filter=set(hosts))

        async def edge(target: Any) -> list[Drift]:
            try:
                targets = await kamailio.dispatcher_list(target.kamailio_rpc, timeout=timeout)
            except MonitorError as exc:
                report.errors.append(f"{target.name}: {exc}")
                return []
            report.hosts.setdefault(target.name, {})["dispatcher_targets"] = len(targets)
            table = rendered.get(target.name, {}).get(DISPATCHER, b"").decode()
            return compare_dispatcher(
                target.name, parse_dispatcher_table(table), [(t.set_id, t.uri) for t in targets]
            )

        async def pbx(target: Any) -> list[Drift]:
            result = await query_pbx(topology, target, timeout=timeout)
            if result.error:
                report.errors.append(result.error)
                return []
            info = report.hosts.setdefault(target.name, {})
            info["pjsip_endpoints"] = len(result.handler.endpoints)
            info["pjsip_registrations"] = len(result.handler.registrations)
            conf = rendered.get(target.name, {}).get(PJSIP, b"").decode()
            return compare_pjsip(
                target.name,
                parse_pjsip_objects(conf),
                result.handler.endpoints,
                result.handler.registrations,
            )

        found = await asyncio.gather(
            *(edge(e) for e in topology.edges), *(pbx(p) for p in topology.pbxs)
        )
        for items in found:
            report.drift += items
    return report
