"""The lifecycle steps that read hosts or render: what each host runs (its base) and the
plan of a deploy, built on the types and comparisons of `siporch.core`.

`siporch.core` needs only the standard library (the Ansible collection carries a copy of
it for its plugins); what needs the renderer, the release writer or SSH lives here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from siporch.core import (
    NEVER_DEPLOYED,
    RUNS,
    HostBase,
    HostManifest,
    HostPlan,
    HostRead,
    IdChange,
    Plan,
    Reader,
    id_changes,
    model_summary,
    plan_host,
    read_bases,
    read_manifest,
    release_bases,
    running_ids,
    siporch_hosts,
    unified_diff,
)
from siporch.hosts import Inventory, read_host, select


def base_release(
    inventory: Inventory,
    hosts: Mapping[str, str],
    *,
    out_dir: Path,
    timeout: float = 5.0,
    reader: Reader | None = None,
) -> dict[str, HostBase]:
    """What each host runs, read from the host over SSH (its ``current`` link and the
    release's manifest.json), with the inventory's SSH settings. The controller's
    ``out_dir`` only fills in a manifest a host lacks."""
    if reader is None:

        async def _read(host: str, address: str) -> HostRead:
            return await read_host(inventory, host, address, timeout)

        reader = _read
    import asyncio

    return asyncio.run(read_bases(hosts, reader, lambda rid: read_manifest(out_dir, rid)))


def trunk_ids_of_hosts(
    inventory: Inventory,
    loaded: Any,
    *,
    out_dir: Path,
    timeout: float = 5.0,
    reader: Reader | None = None,
) -> dict[str, int]:
    """{trunk: id} as the hosts of ``loaded``'s model run them (the manifests of their
    current releases, `siporch.core.running_ids`). Every host must be read, and hosts
    that number a trunk differently are an error (deploy one release everywhere first)."""
    from siporch.cache import facts
    from siporch.errors import SiporchError

    bases = base_release(
        inventory, siporch_hosts(facts(loaded)), out_dir=out_dir, timeout=timeout, reader=reader
    )
    for host, base in sorted(bases.items()):
        if not base.known:
            raise SiporchError(f"cannot learn the trunk ids from {host}: {base.describe()}")
    running = running_ids({h: b.manifest for h, b in bases.items() if b.state == RUNS}, out_dir)
    seen: dict[str, tuple[int, str]] = {}
    for host, ids in sorted(running.items()):
        for name, i in sorted((ids or {}).items()):
            first = seen.setdefault(name, (i, host))
            if first[0] != i:
                raise SiporchError(
                    f"{first[1]} and {host} number trunk {name} differently ({first[0]} and "
                    f"{i}): give it `id:` in the model, or deploy one release to every host first"
                )
    return {name: i for name, (i, _) in seen.items()}


def plan_for(
    inventory: Inventory,
    loaded: Any,
    *,
    out_dir: Path,
    against: str | None = None,
    limit: str | None = None,
    timeout: float = 5.0,
    reader: Reader | None = None,
) -> Plan:
    """The plan of deploying ``loaded`` (a LoadedModel): against what each host runs (read
    over SSH), or ``against`` a release of the controller's ``out_dir`` (a host that release
    lacks counts as never deployed). ``limit``: only the hosts this Ansible host pattern
    selects."""
    from siporch.cache import facts
    from siporch.errors import SiporchError

    model = facts(loaded)  # what the plan needs of the model (a cached model is not read)
    hosts = siporch_hosts(model)
    chosen = select(inventory, limit, list(hosts)) if limit else list(hosts)
    if against:
        manifest = read_manifest(out_dir, against)
        if manifest is None:
            raise SiporchError(f"no release '{against}' in {out_dir}")
        bases = {h: b for h, b in release_bases(manifest).items() if h in chosen or not limit}
    else:
        bases = base_release(
            inventory,
            {h: hosts[h] for h in chosen},
            out_dir=out_dir,
            timeout=timeout,
            reader=reader,
        )
    files = None
    if limit:
        from siporch.release import cached_render

        files = {h: f for h, f in cached_render(loaded).items() if h in chosen}
    return build_plan(loaded, bases, out_dir=out_dir, files=files)


def build_plan(
    loaded: Any,
    bases: Mapping[str, HostBase],
    *,
    out_dir: Path,
    files: Mapping[str, Mapping[str, bytes]] | None = None,
) -> Plan:
    """The plan of deploying ``loaded`` (a LoadedModel) onto hosts whose bases were read.
    The model summary compares with the model of the release the hosts run, from the
    controller's cache; when the hosts run different releases or the cache lacks it, the
    summary is None (unknown) and the file changes stand alone."""

    from siporch.cache import facts
    from siporch.model.loaded import own_trunk_ids
    from siporch.release import cached_model_json, cached_render, host_manifest

    model = facts(loaded)  # roles and sites of the hosts (a cached model is not read)
    rendered = cached_render(loaded) if files is None else files
    candidates = {
        h: HostManifest.from_json(host_manifest(model, h, dict(f), "candidate", loaded.model_hash))
        for h, f in rendered.items()
    }
    hosts: dict[str, HostPlan] = {}
    for host in sorted(set(rendered) | set(bases)):
        base = bases.get(host) or HostBase(host, NEVER_DEPLOYED)
        hosts[host] = plan_host(host, base, candidates.get(host))
    releases = {b.release for b in bases.values()}
    same = (
        len(releases) == 1
        and all(b.state == RUNS and b.manifest is not None for b in bases.values())
        and all(b.manifest.model_hash == loaded.model_hash for b in bases.values() if b.manifest)
    )
    summary: tuple[str, ...] | None
    if same:  # the hosts run a release of this very model: no model change
        summary, summary_base = (), releases.pop()
    else:
        summary, summary_base = model_summary(
            out_dir, bases.values(), cached_model_json(loaded), model.trunk_ids
        )
    moves = plan_id_changes(bases, model.trunk_ids, own_trunk_ids(loaded), out_dir)
    if summary and moves:  # said once, with the hosts that run the old ids
        moved = tuple(f"warning: trunk {c.trunk}: id " for c in moves)
        summary = tuple(line for line in summary if not line.startswith(moved))
    return Plan(hosts, summary, summary_base, rendered, candidates, tuple(moves))


def plan_id_changes(
    bases: Mapping[str, HostBase],
    candidate: Mapping[str, int],
    own: Iterable[str],
    out_dir: Path,
) -> list[IdChange]:
    """The trunks whose id the candidate (``candidate``: {trunk: id}; ``own``: the trunks
    whose id the model gives itself) changes from what each host runs: the ids its manifest
    records (`siporch.core.host_trunk_ids`; for an older release, the controller's copy of
    it)."""
    manifests = {h: b.manifest for h, b in bases.items() if b.state == RUNS}
    return id_changes(running_ids(manifests, out_dir), candidate, own)


def base_contents(
    base: HostBase, out_dir: Path, paths: Iterable[str] | None = None
) -> tuple[dict[str, bytes], set[str]]:
    """The contents of a host's base files (``paths`` of them, default all) that the
    controller's cache holds with the hashes the host reports, and the paths whose
    contents are not available here."""
    out: dict[str, bytes] = {}
    missing: set[str] = set()
    if base.release is None:
        return out, missing
    root = out_dir / base.release / base.host
    wanted = None if paths is None else set(paths)
    for path, entry in base.files.items():
        if wanted is not None and path not in wanted:
            continue
        want = base.files_on_host.get(path, entry.sha256)
        try:
            data = (root / path).read_bytes()
        except OSError:
            missing.add(path)
            continue
        from siporch.release import sha256

        if sha256(data) == want:
            out[path] = data
        else:
            missing.add(path)
    return out, missing


def plan_diff(plan: Plan, host: str, out_dir: Path, secret_values: Iterable[str] = ()) -> str:
    """The unified diff of one host's changed files, secrets masked. A base file whose
    content this controller does not hold is named, not guessed."""
    hp = plan.hosts[host]
    if not hp.changes:
        return ""
    old, missing = base_contents(hp.base, out_dir, [c.path for c in hp.changes])
    new = plan.candidate.get(host, {})
    label_old = hp.base.release or "empty"
    values = list(secret_values)
    chunks = []
    for c in hp.changes:
        if c.path in missing:
            chunks.append(
                f"--- {label_old}/{c.path}\n+++ candidate/{c.path}\n"
                f"@@ {c.state}: the content {hp.base.host} runs is not on this controller @@\n"
            )
            continue
        chunks.append(
            unified_diff(
                c.path,
                old.get(c.path),
                new.get(c.path),
                secret=c.secret,
                label_old=label_old,
                label_new="candidate",
                secret_values=values,
            )
        )
    return "".join(chunks)
