"""The controller's cache of work already done: the validated model of an inventory and
the files rendered from a model, kept under ``<state>/cache/`` and found by content hashes.

- ``<state>/cache/model/<key>.pickle``: a :class:`LoadedModel` (warnings included) and its
  sanitized model. ``key`` hashes the content of every file Ansible may read for the
  inventory (the inventory directories with their ``group_vars``/``host_vars``, the vault
  password file, the ansible.cfg files Ansible looks for), the ``ANSIBLE_*`` environment,
  the role groups asked for, and the versions of siporch (with a hash of its model code),
  ansible-core, pydantic and Python. An inventory whose templates could read anything
  else (a lookup, a filter, a ``{% %}`` block: anything but ``{{ variable }}``), with an
  executable file (a dynamic inventory, a vault password script), is never cached.
- ``<state>/cache/render/<key>.pickle``: every host's rendered files. ``key`` hashes the
  model hash, siporch's version and a hash of its render code and templates.
- ``<state>/cache/text/<key>.pickle``: large tables kept between renders by the hash of
  their inputs and of siporch's code (:func:`siporch.render.stored_text`).

An entry is written to a temporary file and renamed into place (readers see a whole entry
or none; concurrent writers of one key write the same bytes). An entry that cannot be read
is ignored and rewritten. The newest :data:`KEEP` entries of each kind are kept. Entries
hold decrypted secrets, as the rendered releases do: the cache directory is 0700 and its
files 0600. ``SIPORCH_CACHE=0`` turns the cache off; deleting ``<state>/cache`` clears it
(``siporch`` rebuilds it on the next run).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import pickle
import re
import stat
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from siporch import __version__, vault

#: Environment variable: ``0`` (or ``off``, ``no``, ``false``) turns the cache off.
CACHE_ENV = "SIPORCH_CACHE"
#: Entries kept of each kind (model, render).
KEEP = 4
#: Bumped when an entry's layout changes.
FORMAT = "4"

T = TypeVar("T")

# ``{{ name }}``, ``{{ name.attr }}``, ``{{ name['key'] }}``: a variable of the inventory.
_PLAIN_VARIABLE = re.compile(
    r"""\s*[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*|\[(?:'[^']*'|"[^"]*"|\d+)\])*\s*"""
)
_EXPRESSION = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


def enabled() -> bool:
    return os.environ.get(CACHE_ENV, "1").strip().lower() not in ("0", "off", "no", "false")


def cache_dir(state: Path) -> Path:
    return state / "cache"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@functools.cache
def code_hash() -> str:
    """A hash of siporch's source files and templates: a change of code or template may be
    a change of output."""
    from siporch.resources import templates_dir

    root = Path(__file__).resolve().parent
    h = hashlib.sha256(__version__.encode())
    files = [p for p in root.rglob("*.py") if "__pycache__" not in p.parts]
    files += [p for p in templates_dir().rglob("*") if p.is_file()]
    for f in sorted(files):
        h.update(f"{f}\0{_sha(f.read_bytes())}\n".encode())
    return h.hexdigest()


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = [sys.version]
    for dist in ("ansible-core", "pydantic", "pydantic-core", "PyYAML"):
        try:
            out.append(f"{dist}={version(dist)}")
        except PackageNotFoundError:
            out.append(f"{dist}=?")
    return "\n".join(out)


def _safe_text(data: bytes) -> bool:
    """Whether a file's templates only name variables (nothing read from elsewhere)."""
    if b"{%" in data:
        return False
    if b"{{" not in data:
        return True
    text = data.decode("utf-8", "replace")
    return all(_PLAIN_VARIABLE.fullmatch(m.group(1)) for m in _EXPRESSION.finditer(text))


def _inventory_files(sources: Sequence[Path], skip: Path | None) -> list[Path]:
    """Every file Ansible may read for ``sources`` (and the vault password files beside)."""
    files: set[Path] = set()
    for source in sources:
        source = source.resolve()
        if source.is_dir():
            top = source
        else:
            top = source.parent
            files.add(source)
        roots = [source] if source.is_dir() else [top / "group_vars", top / "host_vars"]
        for root in roots:
            if not root.is_dir():
                continue
            for dirpath, dirnames, filenames in os.walk(root):
                here = Path(dirpath)
                if skip is not None and (here == skip or skip in here.parents):
                    dirnames[:] = []
                    continue
                dirnames.sort()
                files.update(here / f for f in filenames)
        files.update(vault.default_candidates(top))
    return sorted(files)


def _ansible_cfgs() -> list[Path]:
    out = [
        Path.cwd() / "ansible.cfg",
        Path.home() / ".ansible.cfg",
        Path("/etc/ansible/ansible.cfg"),
    ]
    if os.environ.get("ANSIBLE_CONFIG"):
        out.insert(0, Path(os.environ["ANSIBLE_CONFIG"]))
    return out


def model_key(
    sources: Sequence[Path],
    vault_password_file: Path | None,
    groups: Mapping[str, str] | None,
    state: Path,
) -> str | None:
    """The cache key of an inventory's model, or None when it must not be cached."""
    h = hashlib.sha256(f"model {FORMAT}\n{code_hash()}\n{_versions()}\n".encode())
    h.update(f"cwd={Path.cwd()}\ngroups={sorted((groups or {}).items())}\n".encode())
    for k in sorted(os.environ):
        if k.startswith("ANSIBLE_"):
            h.update(f"env {k}={os.environ[k]}\n".encode())
    files = _inventory_files(sources, cache_dir(state).resolve())
    extra = [*_ansible_cfgs(), *([vault_password_file] if vault_password_file else [])]
    for var in ("ANSIBLE_VAULT_PASSWORD_FILE", "ANSIBLE_VAULT_IDENTITY_LIST"):
        for item in os.environ.get(var, "").split(","):
            if item.strip():  # an identity list names files as label@path
                extra.append(Path(item.strip().rpartition("@")[2]).expanduser())
    for f in [*files, *extra]:
        try:
            st = f.stat()
        except OSError:
            h.update(f"absent {f}\n".encode())
            continue
        if stat.S_ISDIR(st.st_mode):
            h.update(f"dir {f}\n".encode())
            continue
        if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o111:
            return None  # a script: what it prints is not known from its content
        try:
            data = f.read_bytes()
        except OSError:
            return None
        if f in files and not _safe_text(data):
            return None
        h.update(f"file {f}\0{_sha(data)}\n".encode())
    return h.hexdigest()


def render_key(model_hash: str) -> str:
    return _sha(f"render {FORMAT}\n{code_hash()}\n{model_hash}".encode())


def _read(path: Path) -> Any:
    try:
        with path.open("rb") as f:
            value = pickle.load(f)
    except FileNotFoundError:
        return None
    except Exception:
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # most recently used: kept longest
    return value


def _write(path: Path, value: Any, keep: int = KEEP) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path.parent.parent, 0o700)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _prune(path.parent, keep)
    except OSError:
        pass  # a cache that cannot be written is only slower


def _prune(directory: Path, keep: int = KEEP) -> None:
    entries: list[tuple[float, Path]] = []
    for p in directory.glob("*.pickle"):
        try:
            entries.append((p.stat().st_mtime, p))
        except OSError:
            continue
    for _, p in sorted(entries, reverse=True)[keep:]:
        p.unlink(missing_ok=True)


def cached(directory: Path, key: str | None, build: Callable[[], T], keep: int = KEEP) -> T:
    """The entry ``key`` of ``directory``, built (and stored, the newest ``keep`` of the
    directory kept) when absent."""
    if key is None or not enabled():
        return build()
    path = directory / f"{key}.pickle"
    value = _read(path)
    if value is not None:
        return value  # type: ignore[no-any-return]
    value = build()
    _write(path, value, keep)
    return value


def model_entry(state: Path, key: str | None, build: Callable[[], T]) -> T:
    return cached(cache_dir(state) / "model", key, build)


def render_entry(state: Path, model_hash: str, build: Callable[[], T]) -> T:
    return cached(cache_dir(state) / "render", render_key(model_hash), build)


def sanitized_entry(state: Path, model_hash: str, build: Callable[[], str]) -> str:
    return cached(cache_dir(state) / "sanitized", render_key(model_hash), build)


@dataclass(frozen=True)
class HostFacts:
    role: str
    site: str | None
    address: str


@dataclass(frozen=True)
class Facts:
    """What the lifecycle commands need of a model besides its files, kept beside it in
    the cache so that an unchanged model is not rebuilt to answer them. ``hosts`` has the
    shape of ``Model.hosts`` for :func:`siporch.core.siporch_hosts` and
    :func:`siporch.release.host_manifest`."""

    hosts: dict[str, HostFacts]
    secrets: list[str]
    counts: dict[str, int]
    trunk_ids: dict[str, int] = field(default_factory=dict)  # what a release records


def secret_values(model: Any) -> list[str]:
    """Every secret value of a model: the fields the schema declares secret (AMI secrets,
    registration and outbound passwords, the records server's password;
    ``tests/unit/test_render_cache.py`` checks that
    the schema has no others, and that this is ``siporch.core.model_secrets``' set, which
    walks every field and takes a second at 10,000 trunks)."""
    out: list[str] = []
    for host in model.hosts.values():
        if host.ami is not None:
            out.append(host.ami.secret.get_secret_value())
    for trunk in model.trunks.values():
        if trunk.auth.type == "register":
            out.append(trunk.auth.password.get_secret_value())
        if trunk.credentials is not None:
            out.append(trunk.credentials.password.get_secret_value())
    if model.records.postgresql is not None:
        out.append(model.records.postgresql.password.get_secret_value())
    return out


def facts_of(model: Any) -> Facts:
    from siporch.model.numbering import trunk_ids

    return Facts(
        hosts={
            h: HostFacts(spec.role, spec.site, str(spec.address)) for h, spec in model.hosts.items()
        },
        secrets=secret_values(model),
        counts={
            "sites": len(model.sites),
            "hosts": len(model.hosts),
            "trunks": len(model.trunks),
            "routes": len(model.routes),
            "dids": len(model.inbound),
        },
        trunk_ids=trunk_ids(model),
    )


def facts(loaded: Any) -> Facts:
    """The facts of a loaded model: kept with a cached one, else computed."""
    known = getattr(loaded, "facts", None)
    return known if isinstance(known, Facts) else facts_of(loaded.model)


def _cached_loaded_class() -> type:
    from siporch import gcpause
    from siporch.model.loaded import LoadedModel

    class CachedLoadedModel(LoadedModel):
        """A :class:`LoadedModel` from the cache: its model is unpickled on first use (an
        unchanged model's diff or render needs only its facts and files)."""

        facts: Facts
        reload: tuple[Any, ...] = ((), None, None)  # load_model's arguments
        _blob: bytes
        _model: Any

        def __init__(self, blob: bytes, facts: Facts, **fields: Any) -> None:
            self._blob, self._model, self.facts = blob, None, facts
            # the model is a property here (unpickled on first use), not the field
            super().__init__(model=None, **fields)  # type: ignore[arg-type]

        @property
        def model(self) -> Any:
            if self._model is None:
                with gcpause.paused():
                    try:
                        self._model = _model_of(self._blob, self.model_hash)
                    except StaleEntry:  # read the inventory again
                        from siporch.model import loader

                        sources, password, groups = self.reload
                        self._model = loader.load_model(sources, password, groups=groups).model
                self._blob = b""
            return self._model

        @model.setter
        def model(self, value: Any) -> None:
            if value is not None:
                self._model = value

    return CachedLoadedModel


_CACHED_LOADED: type | None = None


class StaleEntry(Exception):
    """A cache entry's data does not validate to the model it was stored for."""


def _model_of(blob: bytes, model_hash: str) -> Any:
    """The model of an entry: unpickled (``M``), or validated again from the data it was
    validated from (``D``), the same model when its hash says so."""
    from siporch.model.loader import model_hash as hash_of
    from siporch.model.schema import Model

    kind, body = blob[:1], blob[1:]
    if kind == b"M":
        return pickle.loads(body)
    model = Model.model_validate(pickle.loads(body))
    if hash_of(model) != model_hash:
        raise StaleEntry("the cached model data no longer validates to its model")
    return model


def _chunk_store(directory: Path, path: str) -> Any:
    """The parsed entries of one inventory file (``siporch.model.chunks``), kept in the
    cache beside the models: one file per inventory file, replaced when it changes."""
    from siporch.model.chunks import Store

    ident = f"chunks {FORMAT}\n{code_hash()}\n{_versions()}\n{path}"
    target = directory / f"{_sha(ident.encode())}.pickle"

    def load() -> bytes | None:
        try:
            return target.read_bytes()
        except OSError:
            return None

    def save(data: bytes) -> None:
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(directory.parent, 0o700)  # decrypted values, as in the other entries
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=directory)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        except OSError:
            pass  # a cache that cannot be written is only slower

    return Store(load, save)


def _same_ids(entry: dict[str, Any], kept: Mapping[str, int], reserved: frozenset[int]) -> bool:
    """Whether the trunk ids the releases keep now (``kept``, ``reserved``:
    `siporch.release.IdBase`) number the entry's trunks as they were numbered when it was
    made. A loaded model is its inventory's model with the ids `siporch.core.stable_ids`
    gives the trunks without an ``id`` of their own (`loader._keep_trunk_ids`): the same
    inventory and the same ids, the same model."""
    from siporch.core import stable_ids

    facts, own = entry["facts"], entry["fields"].get("own_ids")
    if not isinstance(facts, Facts) or own is None:
        return False
    mine = set(own)
    explicit = {n: (i if n in mine else None) for n, i in facts.trunk_ids.items()}
    result = stable_ids(explicit, kept, reserved)
    return not result.conflicts and result.ids == facts.trunk_ids


def _entry_of(loaded: Any) -> dict[str, Any]:
    if loaded.data is not None:  # the plain data: validated again on use, checked by hash
        blob = b"D" + pickle.dumps(loaded.data, protocol=pickle.HIGHEST_PROTOCOL)
    else:
        blob = b"M" + pickle.dumps(loaded.model, protocol=pickle.HIGHEST_PROTOCOL)
    return {
        "blob": blob,
        "facts": facts_of(loaded.model),
        "fields": {
            "source": loaded.source,
            "inventory": loaded.inventory,
            "model_hash": loaded.model_hash,
            "warnings": list(loaded.warnings),
            "inventories": tuple(loaded.inventories),
            "own_ids": getattr(loaded, "own_ids", None),
        },
    }


def _loaded_of(entry: dict[str, Any], known: Any = None) -> Any:
    global _CACHED_LOADED
    if _CACHED_LOADED is None:
        _CACHED_LOADED = _cached_loaded_class()
    out = _CACHED_LOADED(entry["blob"], entry["facts"], **entry["fields"])
    out.reload = entry.get("reload", ((), None, None))
    if known is not None:
        out.model = known
    return out


def load_model(
    inventory: Path | Sequence[Path],
    vault_password_file: Path | None = None,
    *,
    groups: Mapping[str, str] | None = None,
) -> Any:
    """:func:`siporch.model.load_model`, from the cache when the inventory's inputs are
    those of a model loaded before (a model with errors is never cached). A model from
    the cache is read on first use of ``.model``; :func:`facts` needs no model."""
    from siporch.model.loaded import sources as sources_of
    from siporch.release import state_dir

    sources = sources_of(inventory)
    if not enabled() or not sources or not all(s.exists() for s in sources):
        return _uncached(inventory, vault_password_file, groups)
    state = state_dir(sources[0])
    password = vault.find_password_file(sources[0], vault_password_file)
    key = model_key(sources, password, groups, state)
    if key is None:
        return _uncached(inventory, vault_password_file, groups)
    # the trunk ids the controller's releases gave, which the loaded model keeps: not in
    # the key (a new release that numbers the trunks as before keeps the entry), checked
    from siporch.release import id_base

    first = sources[0]
    ids = id_base(first.parent if first.is_file() else first, first)
    path = cache_dir(state) / "model" / f"{key}.pickle"
    entry = _read(path)
    if (
        isinstance(entry, dict)
        and {"blob", "facts", "fields"} <= set(entry)
        and _same_ids(entry, ids.kept, ids.reserved)
    ):
        return _loaded_of(entry)
    from siporch.model import loader

    previous = loader.CHUNKS, loader.KEEP_DATA
    loader.CHUNKS = functools.partial(_chunk_store, cache_dir(state) / "chunks")
    loader.KEEP_DATA = True
    try:
        loaded = loader.load_model(inventory, vault_password_file, groups=groups)
    finally:
        loader.CHUNKS, loader.KEEP_DATA = previous
    entry = _entry_of(loaded)
    entry["reload"] = (tuple(sources), vault_password_file, dict(groups) if groups else None)
    loaded.data = None
    _write(path, entry)
    return _loaded_of(entry, loaded.model)


def _uncached(
    inventory: Path | Sequence[Path],
    vault_password_file: Path | None,
    groups: Mapping[str, str] | None,
) -> Any:
    from siporch.model import loader

    return loader.load_model(inventory, vault_password_file, groups=groups)
