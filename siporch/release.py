"""Release bundles: ``<state>/releases/<id>/<host>/...`` plus manifests.

A release is what one render of the model produced for every host. Its id is the UTC time
of the render and the start of the model hash; rendering an unchanged model again reuses
the release that already holds the same files, so deploys stay idempotent.

The controller's state directory (:func:`state_dir`) is ``$SIPORCH_STATE`` when set, else
``build/`` beside the inventory directory (``~/proj/inventory`` -> ``~/proj/build``); never
inside the installed package. Layout::

    <state>/releases/<id>/manifest.json          every host, no secrets; trunk_ids(_own)
    <state>/releases/<id>/model.json             the model with secrets replaced by hashes
    <state>/releases/<id>/<host>/manifest.json   that host's part (shipped with its files)
    <state>/releases/<id>/<host>/<relpath>       the rendered files
    <state>/state/<inventory path>.json          the release last deployed from an inventory
    <state>/cache/{model,render,sanitized,text}/ siporch.cache (SIPORCH_CACHE=0: off)

A file unchanged since the previous release of the same inventory is a hard link to it
(:func:`_link`), so a release stores only what changed (and its manifests and model).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from siporch import __version__
from siporch.core import OWN_IDS, TRUNK_IDS, HostManifest, Manifest, recorded_trunk_ids
from siporch.errors import SiporchError
from siporch.model.loaded import LoadedModel, own_trunk_ids
from siporch.model.numbering import trunk_ids
from siporch.render import reload_action, render_release, secret_files

if TYPE_CHECKING:
    from pydantic import SecretStr

    from siporch.cache import Facts
    from siporch.model.schema import Model

#: Environment variable naming the controller's state directory (releases/, state/).
STATE_ENV = "SIPORCH_STATE"
KEEP = 20
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Release:
    id: str
    path: Path
    manifest: dict[str, Any]
    reused: bool = False


def state_dir(inventory: Path | str) -> Path:
    """The controller's state directory for ``inventory``: ``$SIPORCH_STATE``, else
    ``build/`` in the directory that holds the inventory directory."""
    env = os.environ.get(STATE_ENV, "").strip()
    if env:
        return Path(env).expanduser().resolve()
    return Path(inventory).expanduser().resolve().parent / "build"


def default_out(inventory: Path | str) -> Path:
    """Where releases of ``inventory`` go unless ``--out`` says otherwise."""
    return state_dir(inventory) / "releases"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sanitized_model(model: Model) -> dict[str, Any]:
    """The model as JSON data, each secret replaced by ``sha256:<hash>``: pydantic's JSON
    mode (in Rust; a walk in Python took a second at 10,000 trunks), then the secrets of
    the schema (``siporch.cache.secret_values``' fields; tests/unit/test_release.py checks
    that this is the walk of every field it replaces)."""

    def digest(value: SecretStr) -> str:
        return "sha256:" + sha256(value.get_secret_value().encode())

    data: dict[str, Any] = model.model_dump(mode="json")
    for name, host in model.hosts.items():
        if host.ami is not None:
            data["hosts"][name]["ami"]["secret"] = digest(host.ami.secret)
    for name, trunk in model.trunks.items():
        auth: Any = trunk.auth
        if auth.type == "register":
            data["trunks"][name]["auth"]["password"] = digest(auth.password)
        if trunk.credentials is not None:
            data["trunks"][name]["credentials"]["password"] = digest(trunk.credentials.password)
    return data


def model_json(sanitized: dict[str, Any]) -> str:
    """``model.json``: keys sorted, one line per top-level key and per entry below it (a
    trunk, a host, a DID range), each entry compact (the C encoder; the indented encoder
    is pure Python and takes seconds at scale). ``json.loads`` reads it as before."""
    enc = _entry_encoder()
    lines = ["{"]
    keys = sorted(sanitized)
    for i, key in enumerate(keys):
        value = sanitized[key]
        comma = "," if i < len(keys) - 1 else ""
        if isinstance(value, dict) and value:
            inner = sorted(value)
            lines.append(f"  {enc(key)}: {{")
            lines.extend(
                f"    {enc(k)}: {enc(value[k])}{',' if j < len(inner) - 1 else ''}"
                for j, k in enumerate(inner)
            )
            lines.append(f"  }}{comma}")
        elif isinstance(value, list) and value:
            lines.append(f"  {enc(key)}: [")
            lines.extend(
                f"    {enc(v)}{',' if j < len(value) - 1 else ''}" for j, v in enumerate(value)
            )
            lines.append(f"  ]{comma}")
        else:
            lines.append(f"  {enc(key)}: {enc(value)}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _entry_encoder() -> Any:
    """One entry of ``model.json`` as JSON: ``json.JSONEncoder(sort_keys=True,
    separators=(", ", ": ")).encode``, calling its C encoder directly (the method builds
    the encoder again for each of a model's hundred thousand entries)."""
    slow = json.JSONEncoder(sort_keys=True, ensure_ascii=True, separators=(", ", ": "))
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return slow.encode
    fast = make(None, slow.default, json.encoder.encode_basestring_ascii, None, ": ", ", ",
                True, False, True)  # fmt: skip

    def encode(value: Any) -> str:
        return "".join(fast(value, 0))

    return encode


def cached_model_json(loaded: LoadedModel) -> str:
    """``model.json`` of a loaded model, from the cache when this model was written before."""
    from siporch import cache

    return cache.sanitized_entry(
        state_dir(loaded.inventory),
        loaded.model_hash,
        lambda: model_json(sanitized_model(loaded.model)),
    )


def cached_render(loaded: LoadedModel) -> dict[str, dict[str, bytes]]:
    """Every host's files (:func:`siporch.render.render_release`), from the cache when this
    model was rendered before by this siporch with these templates."""
    from siporch import cache

    state = state_dir(loaded.inventory)
    store = cache.cache_dir(state) / "text" if cache.enabled() else None
    return cache.render_entry(
        state, loaded.model_hash, lambda: render_release(loaded.model, store=store)
    )


def content_hash(files: dict[str, dict[str, bytes]]) -> str:
    h = hashlib.sha256()
    for host in sorted(files):
        for path in sorted(files[host]):
            h.update(f"{host}\0{path}\0{sha256(files[host][path])}\n".encode())
    return h.hexdigest()


def new_release_id(model_hash: str, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{model_hash[:8]}"


def host_manifest(
    model: Model | Facts, host: str, files: dict[str, bytes], release_id: str, model_hash: str
) -> dict[str, Any]:
    """``<release>/<host>/manifest.json``: the host's files (hash, mode, reload, secret)
    and, for an edge, ``trunk_ids``: {trunk: id} of every trunk of the model."""
    role = model.hosts[host].role
    secrets = secret_files(role)
    out: dict[str, Any] = {
        "id": release_id,
        "host": host,
        "role": role,
        "site": model.hosts[host].site,
        "model_hash": model_hash,
        "siporch_version": __version__,
        "files": {
            path: {
                "sha256": sha256(data),
                "mode": "0640" if path in secrets else "0644",
                "reload": reload_action(role, path),
                "secret": path in secrets,
            }
            for path, data in sorted(files.items())
        },
    }
    if role == "edge":  # the ids its tables number the trunks with (what the plan compares)
        ids = getattr(model, "trunk_ids", None)
        out[TRUNK_IDS] = dict(ids) if ids is not None else trunk_ids(model)  # type: ignore[arg-type]
    return out


@dataclass(frozen=True)
class IdBase:
    """The trunk ids a render keeps: those of the newest release of the inventory on the
    controller (``release``), and of the release last deployed from it when that is
    another; ``reserved`` holds every id of either (a removed trunk's id is not given to
    another trunk while a host may run it)."""

    release: str | None
    kept: dict[str, int]
    reserved: frozenset[int]
    deployed: str | None = None

    @property
    def key(self) -> str:
        """A hash of the ids this base keeps and reserves (for the model cache: a new
        release that numbers the trunks the same keeps the cached model)."""
        text = json.dumps([sorted(self.kept.items()), sorted(self.reserved)])
        return hashlib.sha256(text.encode()).hexdigest()


def release_trunk_ids(out_dir: Path, manifest: dict[str, Any]) -> dict[str, int]:
    """{trunk: id} of a release: recorded in its manifest; for a release made before they
    were, the numbering of its model.json (own ids, then name order)."""
    from siporch.core import assign_ids

    recorded = recorded_trunk_ids(manifest)
    if recorded is not None:
        return recorded
    try:
        model = json.loads((out_dir / str(manifest.get("id")) / "model.json").read_text())
    except (OSError, ValueError):
        return {}
    trunks = model.get("trunks") or {}
    return assign_ids({n: (t or {}).get("id") for n, t in trunks.items()})


def _newest_release(out_dir: Path, inventory: str) -> dict[str, Any] | None:
    """The manifest of the newest release of ``inventory`` in ``out_dir``, reading
    manifests newest first until one is the inventory's. Ids sort by their time, to the
    second; releases written in the same second sort by when their manifest was written
    (a model hash says nothing of order)."""

    def written(name: str) -> tuple[str, int]:
        try:
            return name.split("-", 1)[0], (out_dir / name / MANIFEST).stat().st_mtime_ns
        except OSError:
            return name.split("-", 1)[0], 0

    try:
        names = sorted((n for n in os.listdir(out_dir) if n[:1].isdigit()), key=written)
    except OSError:
        return None
    names.reverse()
    for name in names:
        try:
            data = json.loads((out_dir / name / MANIFEST).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("inventory") == inventory:
            return data
    return None


def id_base(inventory: Path, first_source: Path | None = None) -> IdBase:
    """The trunk ids a render of ``inventory`` keeps (:class:`IdBase`), from the
    controller's releases of it (``state_dir(first_source)/releases``)."""
    out_dir = default_out(first_source or inventory)
    newest = _newest_release(out_dir, inventory_key(inventory))
    kept = release_trunk_ids(out_dir, newest) if newest else {}
    reserved = set(kept.values())
    deployed = deployed_release(first_source or inventory, out_dir)
    if deployed and (newest is None or deployed != newest.get("id")):
        try:
            old = release_trunk_ids(out_dir, load_release(deployed, out_dir))
        except (SiporchError, OSError, ValueError):
            old = {}
        reserved |= set(old.values())
        kept = {**{n: i for n, i in old.items() if i not in kept.values()}, **kept}
    if _HOSTS_IDS is not None:  # what the hosts run wins (`ids_from_hosts`)
        taken = set(_HOSTS_IDS.values())
        kept = {
            **{n: i for n, i in kept.items() if n not in _HOSTS_IDS and i not in taken},
            **_HOSTS_IDS,
        }
        reserved |= taken
    return IdBase(str(newest["id"]) if newest else None, kept, frozenset(reserved), deployed)


_HOSTS_IDS: dict[str, int] | None = None


@contextmanager
def ids_from_hosts(ids: Mapping[str, int]) -> Iterator[None]:
    """Within it, a model loaded keeps ``ids`` ({trunk: id} the hosts run,
    `siporch.lifecycle.trunk_ids_of_hosts`) before the ids of the controller's releases:
    a render from a controller without them (a fresh clone) numbers the trunks as the hosts
    do, and records it in its release for the renders after it."""
    global _HOSTS_IDS
    saved, _HOSTS_IDS = _HOSTS_IDS, dict(ids)
    try:
        yield
    finally:
        _HOSTS_IDS = saved


def list_releases(out_dir: Path) -> list[dict[str, Any]]:
    """Manifests of the releases on the controller, oldest first."""
    out = []
    if out_dir.is_dir():
        for d in sorted(out_dir.iterdir()):
            m = d / MANIFEST
            if d.is_dir() and m.is_file():
                try:
                    out.append(json.loads(m.read_text()))
                except (OSError, json.JSONDecodeError):
                    continue
    out.sort(key=lambda m: (m.get("created", ""), m.get("id", "")))
    return out


def load_release(release_id: str, out_dir: Path) -> dict[str, Any]:
    path = out_dir / release_id / MANIFEST
    if not path.is_file():
        known = ", ".join(m["id"] for m in list_releases(out_dir)[-5:]) or "none"
        raise SiporchError(f"no release '{release_id}' in {out_dir} (newest: {known})")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def read_release_files(release_id: str, out_dir: Path) -> dict[str, dict[str, bytes]]:
    manifest = load_release(release_id, out_dir)
    root = out_dir / release_id
    return {
        host: {p: (root / host / p).read_bytes() for p in hm["files"]}
        for host, hm in manifest["hosts"].items()
    }


def build_release(
    loaded: LoadedModel,
    out_dir: Path | None = None,
    release_id: str | None = None,
    *,
    files: dict[str, dict[str, bytes]] | None = None,
    keep: int = KEEP,
) -> Release:
    """Render (unless ``files`` is given) and write a release bundle; reuse an identical one."""
    from siporch.cache import facts

    model = facts(loaded)  # roles and sites of the hosts (a cached model is not read)
    # beside the first inventory source (a file's directory, a directory's parent), where
    # the deploy records what it left running
    first = loaded.inventories[0] if loaded.inventories else loaded.inventory
    out_dir = default_out(first) if out_dir is None else out_dir
    files = cached_render(loaded) if files is None else files
    chash = content_hash(files)
    inventory = inventory_key(loaded.inventory)
    previous = [m for m in list_releases(out_dir) if m.get("inventory") == inventory]
    if release_id is None:
        for m in reversed(previous):
            if (
                m.get("content_hash") == chash
                and m.get("model_hash") == loaded.model_hash
                and _records_ids(m)
            ):
                return Release(m["id"], out_dir / m["id"], m, reused=True)
    rid = release_id or new_release_id(loaded.model_hash)
    final = out_dir / rid
    if final.exists():
        raise SiporchError(f"release {rid} already exists in {out_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{rid}.", dir=out_dir))
    last = previous[-1] if previous else None
    try:
        hosts: dict[str, Any] = {}
        for host, hfiles in files.items():
            hm = host_manifest(model, host, hfiles, rid, loaded.model_hash)
            secret = secret_files(model.hosts[host].role)
            old = (last or {}).get("hosts", {}).get(host, {}).get("files", {})
            for rel, data in hfiles.items():
                target = tmp / host / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                entry = old.get(rel) if isinstance(old, dict) else None
                if (
                    isinstance(entry, dict)
                    and entry.get("sha256") == hm["files"][rel]["sha256"]
                    and _link(out_dir / last["id"] / host / rel, target, data, rel in secret)  # type: ignore[index]
                ):
                    continue
                target.write_bytes(data)
                if rel in secret:
                    os.chmod(target, 0o600)
            (tmp / host / MANIFEST).write_text(HostManifest.from_json(hm).dumps())
            hosts[host] = hm
        text = cached_model_json(loaded)
        ids = getattr(model, "trunk_ids", None)
        new_ids = dict(ids) if ids is not None else trunk_ids(loaded.model)
        manifest = {
            "id": rid,
            "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "inventory": inventory,
            "model_hash": loaded.model_hash,
            "content_hash": chash,
            "siporch_version": __version__,
            "previous": previous[-1]["id"] if previous else None,
            "changes": _changes(previous[-1] if previous else None, out_dir, text, new_ids),
            "hosts": hosts,
        }
        manifest[TRUNK_IDS] = new_ids
        manifest[OWN_IDS] = sorted(own_trunk_ids(loaded))
        (tmp / "model.json").write_text(text)
        (tmp / MANIFEST).write_text(Manifest.from_json(manifest).dumps())
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _prune(out_dir, inventory, keep)
    return Release(rid, final, manifest)


def _records_ids(manifest: dict[str, Any]) -> bool:
    """Whether a release records its trunk ids where the plan reads them (the trunks with
    their own ``id``, and each edge's ids in its host manifest): one made before is not
    reused, so that the hosts get manifests that say which ids they run."""
    hosts = manifest.get("hosts") or {}
    return OWN_IDS in manifest and all(
        TRUNK_IDS in hm for hm in hosts.values() if isinstance(hm, dict) and hm.get("role") == "edge"
    )


def _link(source: Path, target: Path, data: bytes, secret: bool) -> bool:
    """Hard-link ``target`` to the previous release's ``source`` when that holds exactly
    ``data`` with the mode a new file would get: a release stores an unchanged file once.
    Releases are never written after they are made, so the shared inode never changes."""
    try:
        st = source.lstat()
        if (
            not stat.S_ISREG(st.st_mode)
            or st.st_size != len(data)
            or bool(secret) != (st.st_mode & 0o077 == 0)
            or source.read_bytes() != data
        ):
            return False
        os.link(source, target)
    except OSError:
        return False
    return True


def _changes(
    prev: dict[str, Any] | None, out_dir: Path, text: str, ids: Mapping[str, int]
) -> list[str]:
    """The model changes since the previous release (``text``: this one's ``model.json``),
    decoding only the entries that differ (`siporch.plan.semantic_diff_text`)."""
    from siporch.plan import semantic_diff_text

    old = None
    if prev is not None:
        try:
            old = (out_dir / prev["id"] / "model.json").read_text()
        except (OSError, UnicodeDecodeError):
            old = None
    recorded = recorded_trunk_ids(prev or {})
    both = None if recorded is None else (recorded, ids)
    try:
        return semantic_diff_text(old, text, both)
    except json.JSONDecodeError:  # a damaged model.json: compared with nothing, as before
        return semantic_diff_text(None, text)


def _prune(out_dir: Path, inventory: str, keep: int) -> None:
    mine = [m for m in list_releases(out_dir) if m.get("inventory") == inventory]
    for m in mine[:-keep] if keep > 0 else []:
        shutil.rmtree(out_dir / m["id"], ignore_errors=True)


def inventory_key(inventory: Path | str) -> str:
    """How releases name the inventory they came from: its absolute path."""
    return str(Path(inventory).resolve())


def _state_file(inventory: Path, out_dir: Path) -> Path:
    slug = inventory_key(inventory).strip("/").replace("/", "_") or "root"
    return out_dir.parent / "state" / f"{slug}.json"


def mark_deployed(inventory: Path, release_id: str, out_dir: Path | None = None) -> None:
    """Record the release a deploy (or rollback) of ``inventory`` left running."""
    out_dir = default_out(inventory) if out_dir is None else out_dir
    path = _state_file(inventory, out_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"deployed": release_id}) + "\n")
    os.replace(tmp, path)


def deployed_release(inventory: Path, out_dir: Path | None = None) -> str | None:
    """The release last deployed from ``inventory`` by this controller, if known."""
    out_dir = default_out(inventory) if out_dir is None else out_dir
    path = _state_file(inventory, out_dir)
    try:
        rid = json.loads(path.read_text()).get("deployed")
    except (OSError, json.JSONDecodeError):
        return None
    if rid and (out_dir / rid / MANIFEST).is_file():
        return str(rid)
    return None
