"""The lifecycle's core types: releases, what a host runs, and the difference between them.

Data flows one way through them::

    model --render--> files --host_manifest--> HostManifest (candidate)
    hosts --read_hosts--> HostBase (what each host runs: its `current` and manifest.json)
    diff_trees(base files, candidate files) -> [FileChange]     (the one tree comparison)
    build_plan(...) -> Plan (per host: base, changes, reloads)  (diff, render, deploy --check)

``base_release`` (reads the hosts) and ``build_plan`` / ``plan_diff`` (render) live in
`siporch.lifecycle`: this module needs only the standard library, so the Ansible
collection carries a copy of it for its plugins.

Manifests on disk keep their JSON format (``from_json``/``to_json`` round-trip the same
bytes, unknown keys included), so hosts running older releases still read and are read.
The hosts are the source of truth for what they run; the controller's ``build/releases``
is a cache of release contents, used only when it agrees with what a host reports.

Ansible filters (``roles/siporch_release/filter_plugins``) import this module, so the
playbooks and the CLI compare trees the same way.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

MANIFEST = "manifest.json"
MASK = "********"
#: Key of a manifest (a release's, a host's) with {trunk name: id}.
TRUNK_IDS = "trunk_ids"
#: Key of a release's manifest: the trunks whose id the model gives itself (``id:``).
OWN_IDS = "trunk_ids_own"

#: States of a file between two trees (unchanged files are not listed).
ADDED: Final = "added"
REMOVED: Final = "removed"
MODIFIED: Final = "modified"
FileState = Literal["added", "removed", "modified"]

#: What is known of the release a host runs.
RUNS: Final = "runs"  # `current` points to a release whose manifest was read
NEVER_DEPLOYED: Final = "never deployed"  # no `current` link: every file is added
UNREACHABLE: Final = "unreachable"  # the host could not be read: nothing is known
NO_MANIFEST: Final = "no manifest"  # `current` exists, but no manifest on host or controller
BaseState = Literal["runs", "never deployed", "unreachable", "no manifest"]


# --------------------------------------------------------------------------- manifests


@dataclass(frozen=True)
class FileEntry:
    """One file of a host release: content hash, mode, reload action, whether it holds
    secrets. A tree read from a host has hashes only (mode None)."""

    sha256: str
    mode: str | None = None
    reload: str = "none"
    secret: bool = False

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> FileEntry:
        if isinstance(data, str):
            return cls(data)
        mode = data.get("mode")
        return cls(
            str(data.get("sha256", "")),
            str(mode) if mode is not None else None,
            str(data.get("reload", "none") or "none"),
            bool(data.get("secret", False)),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sha256": self.sha256}
        if self.mode is not None:
            out["mode"] = self.mode
        out["reload"] = self.reload
        out["secret"] = self.secret
        return out


Tree = Mapping[str, FileEntry]
TreeLike = Mapping[str, FileEntry] | Mapping[str, Mapping[str, Any]] | Mapping[str, str]


def tree(data: TreeLike | None) -> dict[str, FileEntry]:
    """A file tree from a manifest's ``files`` map, a {path: sha256} map, or entries."""
    out: dict[str, FileEntry] = {}
    for path, value in (data or {}).items():
        if path == MANIFEST:
            continue
        out[str(path)] = value if isinstance(value, FileEntry) else FileEntry.from_json(value)
    return out


def _ids(data: Any) -> dict[str, int] | None:
    """{trunk: id} from a manifest's ``trunk_ids`` (None when absent or not such a map)."""
    if not isinstance(data, Mapping):
        return None
    try:
        return {str(k): int(v) for k, v in data.items()}
    except (TypeError, ValueError):
        return None


def _dumps(data: Mapping[str, Any]) -> str:
    """The one JSON layout of manifests on disk (what ``write_release`` has always written)."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


@dataclass(frozen=True)
class HostManifest:
    """``<release>/<host>/manifest.json``: one host's part of a release (shipped to it)."""

    id: str
    host: str
    role: str
    files: Mapping[str, FileEntry]
    site: str | None = None
    model_hash: str = ""
    siporch_version: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)  # keys of other versions, kept
    # {trunk: id} of the trunks the host's files number (an edge's); None: not recorded
    # (a PBX, or a release made before they were)
    trunk_ids: Mapping[str, int] | None = None

    _KEYS = ("id", "host", "role", "site", "model_hash", "siporch_version", "files", "trunk_ids")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HostManifest:
        if not isinstance(data, Mapping) or not isinstance(data.get("files", {}), Mapping):
            raise ValueError("not a siporch host manifest")
        return cls(
            id=str(data.get("id", "")),
            host=str(data.get("host", "")),
            role=str(data.get("role", "")),
            files=tree(data.get("files", {})),
            site=data.get("site"),
            model_hash=str(data.get("model_hash", "")),
            siporch_version=str(data.get("siporch_version", "")),
            extra={k: v for k, v in data.items() if k not in cls._KEYS},
            trunk_ids=_ids(data.get(TRUNK_IDS)),
        )

    @classmethod
    def loads(cls, text: str | bytes) -> HostManifest:
        return cls.from_json(json.loads(text))

    def to_json(self) -> dict[str, Any]:
        out = {
            **self.extra,
            "id": self.id,
            "host": self.host,
            "role": self.role,
            "site": self.site,
            "model_hash": self.model_hash,
            "siporch_version": self.siporch_version,
            "files": {p: e.to_json() for p, e in sorted(self.files.items())},
        }
        if self.trunk_ids is not None:
            out[TRUNK_IDS] = dict(sorted(self.trunk_ids.items()))
        return out

    def dumps(self) -> str:
        return _dumps(self.to_json())

    @property
    def secret_paths(self) -> set[str]:
        return {p for p, e in self.files.items() if e.secret}


@dataclass(frozen=True)
class Manifest:
    """``<release>/manifest.json`` on the controller: every host of one release."""

    id: str
    hosts: Mapping[str, HostManifest]
    created: str = ""
    inventory: str = ""
    model_hash: str = ""
    content_hash: str = ""
    siporch_version: str = ""
    previous: str | None = None
    changes: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    _KEYS = (
        "id", "hosts", "created", "inventory", "model_hash", "content_hash",
        "siporch_version", "previous", "changes",
    )  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Manifest:
        if not isinstance(data, Mapping) or not isinstance(data.get("hosts", {}), Mapping):
            raise ValueError("not a siporch release manifest")
        return cls(
            id=str(data.get("id", "")),
            hosts={h: HostManifest.from_json(m) for h, m in data.get("hosts", {}).items()},
            created=str(data.get("created", "")),
            inventory=str(data.get("inventory", "")),
            model_hash=str(data.get("model_hash", "")),
            content_hash=str(data.get("content_hash", "")),
            siporch_version=str(data.get("siporch_version", "")),
            previous=data.get("previous"),
            changes=tuple(data.get("changes", []) or []),
            extra={k: v for k, v in data.items() if k not in cls._KEYS},
        )

    @classmethod
    def loads(cls, text: str | bytes) -> Manifest:
        return cls.from_json(json.loads(text))

    def to_json(self) -> dict[str, Any]:
        return {
            **self.extra,
            "id": self.id,
            "created": self.created,
            "inventory": self.inventory,
            "model_hash": self.model_hash,
            "content_hash": self.content_hash,
            "siporch_version": self.siporch_version,
            "previous": self.previous,
            "changes": list(self.changes),
            "hosts": {h: m.to_json() for h, m in self.hosts.items()},
        }

    def dumps(self) -> str:
        return _dumps(self.to_json())


def read_manifest(out_dir: Path, release_id: str) -> Manifest | None:
    """The controller's cached manifest of a release, None when absent or unreadable."""
    try:
        return Manifest.loads((out_dir / release_id / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------- differences


@dataclass(frozen=True)
class FileChange:
    """One path that differs between two trees."""

    path: str
    state: FileState
    old: FileEntry | None
    new: FileEntry | None

    @property
    def mode_only(self) -> bool:
        """Same content, another mode."""
        return (
            self.old is not None and self.new is not None and self.old.sha256 == self.new.sha256
        )

    @property
    def secret(self) -> bool:
        return bool((self.new and self.new.secret) or (self.old and self.old.secret))

    @property
    def reload(self) -> str:
        entry = self.new or self.old
        return entry.reload if entry else "none"

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "state": self.state,
            "old": self.old.to_json() if self.old else None,
            "new": self.new.to_json() if self.new else None,
        }


def _mode(mode: str | None) -> int | None:
    try:
        return int(mode, 8) if mode else None
    except ValueError:
        return None


def diff_trees(old: TreeLike | None, new: TreeLike | None) -> list[FileChange]:
    """THE comparison of two file trees, sorted by path. A path is modified when its
    content hash differs, or when both sides know its mode and the modes differ. Unchanged
    paths are not listed; ``manifest.json`` is never part of a tree."""
    a, b = tree(old), tree(new)
    out: list[FileChange] = []
    for path in sorted(set(a) | set(b)):
        o, n = a.get(path), b.get(path)
        if o is None:
            out.append(FileChange(path, ADDED, None, n))
        elif n is None:
            out.append(FileChange(path, REMOVED, o, None))
        elif o.sha256 != n.sha256 or (
            None not in (_mode(o.mode), _mode(n.mode)) and _mode(o.mode) != _mode(n.mode)
        ):
            out.append(FileChange(path, MODIFIED, o, n))
    return out


def release_drift(
    manifest: Mapping[str, Any], found: Iterable[Mapping[str, Any]], root: str
) -> dict[str, list[str]]:
    """Files of a release on a host (``[{path, checksum, mode}]`` under ``root``: the state
    script's, or ``ansible.builtin.find`` results with sha256 checksums) against its
    manifest: ``{"modified": [...], "missing": [...], "extra": [...]}`` (a changed mode
    counts as modified)."""
    prefix = root.rstrip("/") + "/"
    have = {
        str(f["path"])[len(prefix) :]: FileEntry(
            str(f.get("checksum", "")), str(f.get("mode", "")) or None
        )
        for f in found
        if str(f.get("path", "")).startswith(prefix)
    }
    changes = diff_trees(manifest.get("files", {}), have)
    return {
        "modified": [c.path for c in changes if c.state not in (ADDED, REMOVED)],
        "missing": [c.path for c in changes if c.state == REMOVED],
        "extra": [c.path for c in changes if c.state == ADDED],
    }


def states(changes: Iterable[FileChange]) -> dict[str, str]:
    """``{path: added|removed|modified}``: the shape the manifests' users always had."""
    return {c.path: c.state for c in changes}


# ------------------------------------------------------------------------ secret masking

#: Keys whose values are secrets in the rendered configs (Asterisk `password`, `secret`,
#: `md5_cred`; anything named like a key, token or passphrase).
_SECRET_KEY = re.compile(
    r"^(?P<key>\s*[A-Za-z0-9_.-]*(?:password|passwd|secret|md5_cred|passphrase|token|"
    r"private_key|auth_key)[A-Za-z0-9_.-]*\s*(?:=>?|:)\s*)(?P<value>\S.*?)(?P<tail>\s*)$",
    re.IGNORECASE,
)


# A password row of the edge's db_text htable ``creds`` (siporch/render/kamailio.py):
# ``<row>:<trunk id>.p:<key type>:<value type>:<password>:<expires>``.
_SECRET_HTABLE_ROW = re.compile(r"^(?P<key>\d+:\d+\.p:\d+:\d+:)(?P<value>.*)(?P<tail>:\d+)$")


# What a line that either pattern matches contains, in lower case (``pass`` for
# password, passwd and passphrase; ``.p:`` for a ``creds`` row).
_SECRET_NEEDLES = ("pass", "secret", "md5_cred", "token", "private_key", "auth_key", ".p:")
# Line breaks of ``str.splitlines`` other than ``\n`` (the ASCII ones, then the others).
_OTHER_BREAKS = "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_ASCII_BREAKS = _OTHER_BREAKS[:6]


def _mask_line(body: str) -> str:
    """One line's body (no line break) with a secret key's value masked."""
    if not body.lstrip().startswith((";", "#")):
        m = _SECRET_KEY.match(body) or _SECRET_HTABLE_ROW.match(body)
        if m:
            body = m.group("key") + MASK + m.group("tail")
    return body


def mask_secrets(text: str, values: Iterable[str] = ()) -> str:
    """``text`` with every secret value replaced by ``********``: the value of each line
    whose key names a secret, and every occurrence of the known ``values``.

    Line by line in meaning (a value never spans lines; a comment line, ``;`` or ``#``,
    is left alone). An ASCII text whose lines end in ``\n`` (every rendered file) is
    masked without a loop over its lines: only the lines that name a secret go through
    the patterns, and each value is one ``str.replace`` of the whole text
    (`tests/unit/test_core.py` compares it with the loop over lines)."""
    known = sorted({v for v in values if v}, key=len, reverse=True)
    if (
        not text.isascii()
        or any(c in text for c in _ASCII_BREAKS)
        or any(c in v for v in known for c in "\n" + _OTHER_BREAKS)
    ):
        return _mask_lines(text, known)
    text = _mask_keys(text)
    for v in known:  # no value holds a line break: no occurrence spans two lines
        text = text.replace(v, MASK)
    return text


def _mask_keys(text: str) -> str:
    """An ASCII ``text`` whose only line break is ``\n`` with :func:`_mask_line` applied
    to the lines that hold one of :data:`_SECRET_NEEDLES` (in any case): no other line
    can match either pattern. Found with ``str.find`` on the lower-cased text (ASCII:
    same offsets), not a loop over every line."""
    low = text.lower()
    starts: set[int] = set()
    for needle in _SECRET_NEEDLES:
        at = low.find(needle)
        while at != -1:
            starts.add(low.rfind("\n", 0, at) + 1)
            end = low.find("\n", at)
            at = -1 if end == -1 else low.find(needle, end)
    if not starts:
        return text
    out: list[str] = []
    done = 0
    for start in sorted(starts):
        end = text.find("\n", start)
        end = len(text) if end == -1 else end
        out += (text[done:start], _mask_line(text[start:end]))
        done = end
    out.append(text[done:])
    return "".join(out)


def _mask_lines(text: str, known: list[str]) -> str:
    """:func:`mask_secrets` one line at a time (``str.splitlines``' line breaks)."""
    out = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        end = line[len(body) :]
        body = _mask_line(body)
        for v in known:
            body = body.replace(v, MASK)
        out.append(body + end)
    return "".join(out)


def _range(start: int, stop: int) -> str:
    """A hunk's line range as ``difflib.unified_diff`` writes it."""
    beginning, length = start + 1, stop - start
    if length == 1:
        return str(beginning)
    if not length:
        beginning -= 1
    return f"{beginning},{length}"


def _unified(a: list[str], b: list[str], fromfile: str, tofile: str, n: int = 3) -> Iterable[str]:
    """``difflib.unified_diff(a, b, fromfile, tofile, n=n)`` that first sets aside the
    lines both sides share at their start and end (all but ``n`` of context): a table of
    100,000 lines with one line changed is compared in milliseconds, not seconds."""
    if a == b:
        return
    common = min(len(a), len(b))
    head = 0
    while head < common and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < common - head and a[len(a) - 1 - tail] == b[len(b) - 1 - tail]:
        tail += 1
    lo = max(0, head - n)
    cut = max(0, tail - n)
    a_mid, b_mid = a[lo : len(a) - cut], b[lo : len(b) - cut]
    yield f"--- {fromfile}\n"
    yield f"+++ {tofile}\n"
    for group in difflib.SequenceMatcher(None, a_mid, b_mid).get_grouped_opcodes(n):
        first, last = group[0], group[-1]
        yield (
            f"@@ -{_range(first[1] + lo, last[2] + lo)} "
            f"+{_range(first[3] + lo, last[4] + lo)} @@\n"
        )
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                yield from (" " + line for line in a_mid[i1:i2])
                continue
            if tag in ("replace", "delete"):
                yield from ("-" + line for line in a_mid[i1:i2])
            if tag in ("replace", "insert"):
                yield from ("+" + line for line in b_mid[j1:j2])


def unified_diff(
    path: str,
    old: bytes | None,
    new: bytes | None,
    *,
    secret: bool = False,
    label_old: str = "old",
    label_new: str = "new",
    secret_values: Iterable[str] = (),
) -> str:
    """A unified diff of one file; a file with secrets has its secret values masked on
    both sides (the diff shows that a secret line changed, never the value); the known
    ``secret_values`` are masked in any file."""
    a = (old or b"").decode("utf-8", "replace")
    b = (new or b"").decode("utf-8", "replace")
    values = list(secret_values)
    if secret:
        a, b = mask_secrets(a, values), mask_secrets(b, values)
    elif values:  # a known secret never shows, whatever file it ended up in
        for v in sorted({v for v in values if v}, key=len, reverse=True):
            a, b = a.replace(v, MASK), b.replace(v, MASK)
    text = "".join(
        _unified(
            a.splitlines(keepends=True),
            b.splitlines(keepends=True),
            f"{label_old}/{path}" if old is not None else "/dev/null",
            f"{label_new}/{path}" if new is not None else "/dev/null",
        )
    )
    if not text and old != new:
        # the difference is only in secret values (or only in bytes the decode hid)
        text = (
            f"--- {label_old}/{path}\n+++ {label_new}/{path}\n"
            f"@@ secret values changed ({MASK}) @@\n"
        )
    return text if text.endswith("\n") or not text else text + "\n"


# ------------------------------------------------------------------ what each host runs


@dataclass(frozen=True)
class HostRead:
    """What was read from a host: its `current` release id (None: no link), the sha256
    of each file under it, and the manifest.json shipped with the release (None: none)."""

    release: str | None
    files: Mapping[str, str]
    manifest: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class HostBase:
    """The base of a plan for one host: the release it runs, as read from the host."""

    host: str
    state: BaseState
    release: str | None = None
    manifest: HostManifest | None = None
    files_on_host: Mapping[str, str] = field(default_factory=dict)
    manifest_source: Literal["host", "controller", ""] = ""
    error: str = ""

    @property
    def known(self) -> bool:
        """The plan can say what changes on this host."""
        return self.state in (RUNS, NEVER_DEPLOYED)

    @property
    def files(self) -> dict[str, FileEntry]:
        """The tree the host runs: its manifest's files (empty when never deployed)."""
        return dict(self.manifest.files) if self.manifest else {}

    def describe(self) -> str:
        if self.state == RUNS:
            return f"runs {self.release}"
        if self.state == NEVER_DEPLOYED:
            return "never deployed (no release on the host)"
        if self.state == NO_MANIFEST:
            return f"runs {self.release}, whose manifest is neither on the host nor here"
        return f"unknown: {self.error or 'host unreachable'}"

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "release": self.release,
            "manifest_source": self.manifest_source or None,
            "error": self.error or None,
        }


def resolve_base(
    host: str, read: HostRead | BaseException, cache: Callable[[str], Manifest | None]
) -> HostBase:
    """A host's base from what was read from it. The host's own manifest wins; the
    controller's copy of that release (``cache(release_id)``) is used only when the host
    has none."""
    if isinstance(read, BaseException):
        return HostBase(host, UNREACHABLE, error=str(read) or type(read).__name__)
    if read.release is None:
        return HostBase(host, NEVER_DEPLOYED, files_on_host=dict(read.files))
    if read.manifest:
        try:
            hm = HostManifest.from_json(read.manifest)
            return HostBase(host, RUNS, read.release, hm, dict(read.files), "host")
        except ValueError:
            pass
    cached = cache(read.release)
    if cached is not None and host in cached.hosts:
        return HostBase(
            host, RUNS, read.release, cached.hosts[host], dict(read.files), "controller"
        )
    return HostBase(host, NO_MANIFEST, read.release, None, dict(read.files))


Reader = Callable[[str, str], Awaitable[HostRead]]


async def read_bases(
    hosts: Mapping[str, str], reader: Reader, cache: Callable[[str], Manifest | None]
) -> dict[str, HostBase]:
    """Read every host (``{name: address}``) at once and resolve its base."""
    names = list(hosts)
    import asyncio  # here: most commands never read a host

    reads = await asyncio.gather(*(reader(h, hosts[h]) for h in names), return_exceptions=True)
    out: dict[str, HostBase] = {}
    for host, read in zip(names, reads, strict=True):
        if isinstance(read, BaseException) and not isinstance(read, Exception):
            raise read
        out[host] = resolve_base(host, read, cache)
    return out


# ----------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class HostPlan:
    host: str
    base: HostBase
    changes: tuple[FileChange, ...] = ()
    reloads: tuple[str, ...] = ()
    removed: bool = False  # in the base, no longer in the model

    @property
    def changed(self) -> bool:
        return bool(self.changes) or self.removed

    def to_json(self) -> dict[str, Any]:
        return {
            "base": self.base.to_json(),
            "known": self.base.known,
            "removed": self.removed,
            "new_host": self.base.state == NEVER_DEPLOYED,
            "files": states(self.changes),
            "reloads": list(self.reloads),
        }


@dataclass(frozen=True)
class Plan:
    """What a deploy of the candidate would change on each host, against what it runs."""

    hosts: Mapping[str, HostPlan]
    summary: tuple[str, ...] | None  # None: no model of the base to compare with
    summary_base: str | None = None
    candidate: Mapping[str, Mapping[str, bytes]] = field(default_factory=dict, repr=False)
    candidate_manifests: Mapping[str, HostManifest] = field(default_factory=dict, repr=False)
    id_changes: tuple[IdChange, ...] = ()  # trunks numbered otherwise than the hosts run them

    @property
    def refusal(self) -> str | None:
        """Why a deploy of this plan must not go on (`id_refusal`), None when it may."""
        return id_refusal(self.id_changes)

    @property
    def unknown(self) -> list[str]:
        return [h for h, p in self.hosts.items() if not p.base.known]

    @property
    def changed(self) -> bool:
        return any(p.changed for p in self.hosts.values()) or bool(self.summary)

    def to_json(self) -> dict[str, Any]:
        return {
            "changed": self.changed,
            "unknown": self.unknown,
            "summary": list(self.summary) if self.summary is not None else None,
            "summary_base": self.summary_base,
            "trunk_id_changes": [c.to_json() for c in self.id_changes],
            "refusal": self.refusal,
            "hosts": {h: p.to_json() for h, p in self.hosts.items()},
        }


def plan_host(host: str, base: HostBase, candidate: HostManifest | None) -> HostPlan:
    """One host's part of a plan (pure)."""
    from siporch.plan import reload_actions

    if not base.known:
        return HostPlan(host, base)
    if candidate is None:
        return HostPlan(host, base, removed=base.state == RUNS)
    changes = tuple(diff_trees(base.files, candidate.files))
    old = base.manifest.to_json() if base.manifest else None
    reloads = tuple(reload_actions(old, candidate.to_json())) if changes else ()
    return HostPlan(host, base, changes, reloads)


def recorded_trunk_ids(manifest: Mapping[str, Any]) -> dict[str, int] | None:
    """{trunk: id} as a release's manifest records them; None for a release made before
    they were recorded."""
    recorded = manifest.get(TRUNK_IDS)
    if not isinstance(recorded, dict):
        return None
    return {str(k): int(v) for k, v in recorded.items()}


def model_summary(
    out_dir: Path,
    bases: Iterable[HostBase],
    candidate: str,
    ids: Mapping[str, int] | None = None,
) -> tuple[tuple[str, ...] | None, str | None]:
    """The model changes (`siporch.plan.semantic_diff_text`, decoding only the entries that
    differ) from the model of the release the hosts run (the controller's
    ``<out_dir>/<id>/model.json``) to ``candidate`` (a ``model.json`` text; ``ids``: its
    trunks' ids, compared with those the release's manifest records), and that release's
    id. Hosts never deployed: everything is new. ``(None, id)`` when it cannot be known: a
    host unknown, hosts on different releases, or the release's model not on this
    controller."""
    from siporch.plan import semantic_diff_text

    bases = list(bases)
    if any(not b.known for b in bases):
        return None, None
    releases = {b.release for b in bases if b.state == RUNS}
    if not releases:
        return tuple(semantic_diff_text(None, candidate)), None
    if len(releases) > 1:
        return None, None
    rid = str(releases.pop())
    try:
        old = (out_dir / rid / "model.json").read_text()
    except (OSError, ValueError):
        return None, rid
    both = None
    if ids is not None:
        try:
            recorded = recorded_trunk_ids(json.loads((out_dir / rid / MANIFEST).read_text()))
        except (OSError, ValueError, AttributeError):
            recorded = None
        if recorded is not None:
            both = (recorded, ids)
    try:
        return tuple(semantic_diff_text(old, candidate, both)), rid
    except ValueError:  # the release's model.json damaged: as when it is not there
        return None, rid


def model_changes(candidate_dir: Path, running: Iterable[str | None]) -> list[str]:
    """Human lines for a deploy: the model changes from what the hosts run (release ids,
    "" or None for a host never deployed) to the release in ``candidate_dir``."""
    bases = [
        HostBase("?", RUNS, rid) if rid else HostBase("?", NEVER_DEPLOYED) for rid in running
    ]
    try:
        candidate = (candidate_dir / "model.json").read_text()
        summary, rid = model_summary(candidate_dir.parent, bases, candidate)
    except (OSError, ValueError):
        return ["model changes: not known (the release has no model.json)"]
    ids = sorted({b.release for b in bases if b.release})
    if summary is None:
        why = (
            f"the hosts run different releases ({', '.join(ids)})"
            if len(ids) > 1
            else f"the model of release {rid}, which the hosts run, is not on this controller"
        )
        return [f"model changes: not known ({why}); each host's file changes are exact"]
    against = f"release {rid}, which the hosts run" if rid else "hosts never deployed"
    return [f"model changes against {against}: {len(summary) or 'none'}", *summary]


def release_bases(manifest: Manifest) -> dict[str, HostBase]:
    """Bases taken from a release on the controller (``siporch diff --against``), as if
    every host of it ran it."""
    return {
        h: HostBase(h, RUNS, manifest.id, hm, {p: e.sha256 for p, e in hm.files.items()},
                    "controller")
        for h, hm in manifest.hosts.items()
    }


def siporch_hosts(model: Any) -> dict[str, str]:
    """``{host: address}`` of the hosts a release deploys to (edges and PBXs)."""
    return {
        h: str(spec.address) for h, spec in model.hosts.items() if spec.role in ("edge", "pbx")
    }


def model_secrets(model: Any) -> list[str]:
    """Every secret value of a model (to mask them wherever they appear in a diff)."""
    from pydantic import BaseModel, SecretStr

    out: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            out.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, Mapping):
            for v in value.values():
                walk(v)
        elif isinstance(value, list | tuple | set):
            for v in value:
                walk(v)

    walk(model)
    return [v for v in out if v]


# -- Release history on a host -------------------------------------------------------------
#
# Each switch of a host's `current` link appends one line to `<root>/history`:
# ``<UTC time> <kind> <release id>``, where kind is ``deploy`` (a new release goes live) or
# ``back`` (a rollback, or a failed run putting the host back). A rollback goes to the
# release the host ran before the current one went live, skipping releases that were rolled
# back from or never passed a run, which the release ids alone (sorted by time) cannot tell.

HISTORY_KINDS = ("deploy", "back")


def history_line(kind: str, release_id: str, when: str) -> str:
    """One line of a host's history file."""
    if kind not in HISTORY_KINDS:
        raise ValueError(f"unknown history kind {kind!r}")
    return f"{when} {kind} {release_id}\n"


def release_stack(history: str) -> list[str]:
    """The releases a host went live with and did not leave by going back, oldest first.

    A ``deploy`` line pushes its release; a ``back`` line drops the releases newer than
    the one it goes to (release ids start with their UTC time) and pushes that one unless it
    is already on top. Lines in another format are skipped."""
    stack: list[str] = []
    for line in history.splitlines():
        parts = line.split()
        if len(parts) != 3 or parts[1] not in HISTORY_KINDS:
            continue
        kind, release_id = parts[1], parts[2]
        if kind == "back":
            while stack and stack[-1] > release_id:  # left for an older release
                stack.pop()
        if not stack or stack[-1] != release_id:
            stack.append(release_id)
    return stack


def rollback_target(history: str, current: str, available: Iterable[str]) -> str:
    """The release a rollback of a host should go to ("" = none).

    From the history when it agrees with the `current` link (its last release is the
    current one): the newest release below it on the stack that is still on the host.
    Otherwise (no history, as on hosts deployed by older siporch versions, or a link
    switched by hand): the newest release whose id sorts before the current one. Below
    the oldest release of the history, releases it never names (from before it was kept)
    are taken by id the same way."""
    on_host = sorted(set(available))
    stack = release_stack(history)
    if stack and stack[-1] == current:
        for release_id in reversed(stack[:-1]):
            if release_id in on_host:
                return release_id
        # Below the history: releases from before it was kept (never named in it).
        named = {line.split()[2] for line in history.splitlines() if len(line.split()) == 3}
        older = [r for r in on_host if r < stack[0] and r not in named]
        return older[-1] if older else ""
    older = [r for r in on_host if r < current]
    return older[-1] if older else ""


def releases_to_prune(available: Iterable[str], keep: int, current: str, history: str) -> list[str]:
    """The releases to remove from a host that holds ``available``, keeping the newest
    ``keep`` by id (ids start with their UTC time), and never the ``current`` one nor the
    release a rollback would go to (:func:`rollback_target`, from the host's history),
    oldest first. ``keep`` below 1 keeps everything."""
    ids = sorted(set(available) | ({current} if current else set()))
    if keep < 1 or len(ids) <= keep:
        return []
    protected = {current, rollback_target(history, current, ids)} if current else set()
    if current and release_stack(history)[-1:] != [current]:
        # a history read before the switch to ``current`` (a deploy's prune): the target
        # once the host's history has that switch's line
        protected.add(rollback_target(history + history_line("deploy", current, "-"), current, ids))
    return [r for r in ids[:-keep] if r not in protected]


# ----------------------------------------------------------------------------- trunk ids


def assign_ids(explicit: Mapping[str, int | None]) -> dict[str, int]:
    """Trunk name -> id, in the order of ``explicit`` (name -> its own ``id`` or None): an
    own id wins; the others count from 1 in name order, skipping the ids taken. The one
    numbering of the renderers (`siporch.model.numbering.trunk_ids`) and of the plan; with
    the ids of an earlier release kept, :func:`stable_ids`."""
    return stable_ids(explicit, {}).ids


@dataclass(frozen=True)
class IdConflict:
    """A trunk's own ``id`` that another trunk of the model kept from the base release."""

    trunk: str
    id: int
    holder: str


@dataclass(frozen=True)
class StableIds:
    ids: dict[str, int]
    conflicts: tuple[IdConflict, ...] = ()


def stable_ids(
    explicit: Mapping[str, int | None],
    kept: Mapping[str, int],
    reserved: Iterable[int] = (),
) -> StableIds:
    """Trunk name -> id, in the order of ``explicit`` (name -> its own ``id`` or None), an
    id once given being kept: an own id wins; a trunk without one keeps its id of the base
    release (``kept``); the others take the lowest ids free, in name order, never one of
    ``kept`` or ``reserved`` (the ids of trunks removed since: not reused while the hosts
    may run them). A trunk's own id that another trunk without one keeps is a conflict
    (that trunk is not renumbered behind the user's back: it keeps its id)."""
    pinned = {name: i for name, i in explicit.items() if i is not None}
    holder_of = {i: name for name, i in pinned.items()}
    out: dict[str, int] = dict(pinned)
    conflicts: list[IdConflict] = []
    for name in sorted(explicit):
        if name in pinned or name not in kept:
            continue
        i = kept[name]
        if i in holder_of:
            conflicts.append(IdConflict(holder_of[i], i, name))
        out[name] = i
    used = set(out.values()) | set(kept.values()) | set(reserved)
    n = 1
    for name in sorted(explicit):
        if name in out:
            continue
        while n in used:
            n += 1
        out[name] = n
        used.add(n)
    return StableIds({name: out[name] for name in explicit}, tuple(conflicts))


def renumbered(old: Mapping[str, int], new: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    """The trunks of both that change id: name -> (old id, new id)."""
    return {name: (old[name], new[name]) for name in new if name in old and old[name] != new[name]}


def renumber_warning(name: str, old: int, new: int, where: str = "") -> str:
    """The plan's line for a trunk whose id changes (``where``: e.g. `` on edge-a``)."""
    return (
        f"warning: trunk {name}: id {old} -> {new}{where} (its dispatcher set, permissions "
        "group, dialplan ids, htable keys and dialog profile change; calls up on it lose "
        f"their channel count): give it `id: {old}` in the model to keep it"
    )


@dataclass(frozen=True)
class IdChange:
    """A trunk that hosts run under one id and the candidate numbers with another."""

    trunk: str
    old: int
    new: int
    hosts: tuple[str, ...]
    pinned: bool  # the model gives the trunk this id itself (`id:`): the change is meant

    def warning(self) -> str:
        line = renumber_warning(self.trunk, self.old, self.new, f" on {', '.join(self.hosts)}")
        return line if not self.pinned else line.split(": give it", 1)[0] + " (its own `id:`)"

    def to_json(self) -> dict[str, Any]:
        return {
            "trunk": self.trunk,
            "old": self.old,
            "new": self.new,
            "hosts": list(self.hosts),
            "pinned": self.pinned,
        }


def host_trunk_ids(
    manifest: HostManifest | None, release: Manifest | None = None
) -> dict[str, int] | None:
    """{trunk: id} that a host's files use: recorded in its manifest; for an edge running
    a release made before host manifests recorded them, the ids its release recorded (the
    controller's copy, ``release``). None: not known (a PBX numbers no trunk)."""
    if manifest is None:
        return None
    if manifest.trunk_ids is not None:
        return dict(manifest.trunk_ids)
    if manifest.role == "edge" and release is not None:
        return _ids(release.extra.get(TRUNK_IDS))
    return None


def running_ids(
    manifests: Mapping[str, HostManifest | None], out_dir: Path | None = None
) -> dict[str, dict[str, int] | None]:
    """host -> the trunk ids its files use (`host_trunk_ids`), from the manifests of the
    releases the hosts run; the controller's copy of a release (in ``out_dir``) only for
    a host manifest that does not record them."""
    out: dict[str, dict[str, int] | None] = {}
    for host, manifest in manifests.items():
        release = None
        if manifest is not None and manifest.trunk_ids is None and manifest.id and out_dir:
            release = read_manifest(out_dir, manifest.id)
        out[host] = host_trunk_ids(manifest, release)
    return out


def release_id_changes(
    candidate_dir: Path, running: Mapping[str, Mapping[str, Any] | None]
) -> list[IdChange]:
    """The trunk id changes of deploying the release in ``candidate_dir`` (its manifest's
    ``trunk_ids`` and ``trunk_ids_own``) onto hosts running the releases whose host
    manifests are ``running`` (host -> manifest.json as read from it; empty: none)."""
    candidate = Manifest.loads((candidate_dir / MANIFEST).read_text())
    manifests: dict[str, HostManifest | None] = {}
    for host, data in running.items():
        try:
            manifests[host] = HostManifest.from_json(data) if data else None
        except ValueError:
            manifests[host] = None
    own = candidate.extra.get(OWN_IDS)
    return id_changes(
        running_ids(manifests, candidate_dir.parent),
        _ids(candidate.extra.get(TRUNK_IDS)) or {},
        [str(n) for n in own] if isinstance(own, list) else (),
    )


def id_changes(
    running: Mapping[str, Mapping[str, int] | None],
    candidate: Mapping[str, int],
    pinned: Iterable[str] = (),
) -> list[IdChange]:
    """The trunks whose id changes from what the hosts run (``running``: host -> the ids its
    files use, None when not known) to the ``candidate``'s ids, by trunk name; ``pinned``:
    the trunks whose id the model gives itself. A trunk no longer in the candidate is not
    a change (its id stays reserved, `stable_ids`)."""
    own = set(pinned)
    moves: dict[tuple[str, int, int], list[str]] = {}
    for host in sorted(running):
        ids = running[host] or {}
        for name, old in ids.items():
            new = candidate.get(name)
            if new is not None and new != old:
                moves.setdefault((name, old, new), []).append(host)
    return [
        IdChange(name, old, new, tuple(hosts), name in own)
        for (name, old, new), hosts in sorted(moves.items())
    ]


#: The start of the deploy's refusal (the CLI finds it in the playbook's output).
ID_REFUSAL = "refusing to deploy: trunk ids would change"


def id_refusal(changes: Iterable[IdChange]) -> str | None:
    """The one-line reason a deploy refuses to go on, None when it may: a trunk the hosts
    run would change id without the model's own ``id:`` saying so."""
    moved = [c for c in changes if not c.pinned]
    if not moved:
        return None
    what = "; ".join(
        f"trunk {c.trunk}: id {c.old} -> {c.new} (on {', '.join(c.hosts)})" for c in moved
    )
    pins = ", ".join(f"trunks.{c.trunk}.id: {c.old}" for c in moved)
    return (
        f"{ID_REFUSAL} against what the hosts run: {what}; keep them by giving each its id "
        f"in the model ({pins}), or run `siporch render --ids-from-hosts` once, then deploy "
        "(to renumber them: deploy --renumber-trunks)"
    )
