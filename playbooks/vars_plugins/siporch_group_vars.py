"""host_group_vars, with large plain-data vars files read at libyaml speed.

Ansible 2.19 tags every scalar of a vars file with its origin (file, line, column) and
its trust as a template while it builds it: a trunk model of 1,000 trunks (2 MB of YAML
in group_vars) costs Ansible about 5 s of CPU before the first task, on every run. The
model is data: no template in it is needed for it to be read.

This plugin finds the same files as host_group_vars (it is host_group_vars) and reads a
file of at least ``SIPORCH_FAST_VARS_MIN`` bytes (64 KiB by default) with PyYAML's
``CSafeLoader``: the same YAML 1.1 resolver and safe constructors as Ansible's loader
(booleans, octal, sexagesimal, dates, merge keys), without the per-scalar tags. A string
with template markers (``{{``, ``{%``, ``{#``) is still marked trusted, so it is
templated as before. Everything else goes through Ansible's own loader: smaller files,
vault-encrypted files, files with ``!vault`` or ``!unsafe`` values or any other local tag,
and any file the fast reader cannot read. What differs: a duplicate key in a large file is
not warned about (the last value wins, as with Ansible), and errors about a value of such a
file name the file without a line.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from ansible.errors import AnsibleError, AnsibleParserError
from ansible.plugins.vars.host_group_vars import VarsModule as HostGroupVars
from ansible.utils.vars import combine_vars

try:  # ansible-core's data tagging (2.19+); without it, every file takes Ansible's loader
    from ansible._internal._datatag._tags import TrustedAsTemplate

    _TRUSTED: Any = TrustedAsTemplate()
except ImportError:  # pragma: no cover - older or newer internals
    _TRUSTED = None

DOCUMENTATION = """
    name: siporch_group_vars
    short_description: host_group_vars, reading large plain-data vars files faster
    description:
        - Loads host_vars and group_vars as host_group_vars does; a vars file of at least
          SIPORCH_FAST_VARS_MIN bytes without vault data or local tags is read with
          PyYAML's CSafeLoader (YAML 1.1, as Ansible reads it), strings with template
          markers kept trusted as templates.
    options:
      _valid_extensions:
        default: [".yml", ".yaml", ".json"]
        description:
          - Check all of these extensions when looking for 'variable' files which should
            be YAML or JSON or vaulted versions of these.
        ini:
          - key: yaml_valid_extensions
            section: defaults
        env:
          - name: ANSIBLE_YAML_FILENAME_EXT
        type: list
        elements: string
    extends_documentation_fragment:
      - vars_plugin_staging
    author: siporch
"""

_MARKERS = ("{{", "{%", "{#")
_CACHE: dict[str, tuple[tuple[int, int], Any]] = {}


def _min_size() -> int:
    try:
        return int(os.environ.get("SIPORCH_FAST_VARS_MIN", str(64 * 1024)))
    except ValueError:
        return 64 * 1024


def _trust(value: Any) -> Any:
    """Mark the strings that hold templates as trusted (as Ansible does for vars files)."""
    if isinstance(value, str):
        if any(m in value for m in _MARKERS):
            return _TRUSTED.tag(value)
        return value
    if isinstance(value, dict):
        return {_trust(k): _trust(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_trust(v) for v in value]
    return value


def fast_load(path: str) -> tuple[bool, Any]:
    """(True, data) when the file is read here; (False, None) when Ansible's loader must."""
    if _TRUSTED is None or not hasattr(yaml, "CSafeLoader"):
        return False, None
    try:
        st = os.stat(path)
    except OSError:
        return False, None
    if st.st_size < _min_size():
        return False, None
    key = (st.st_mtime_ns, st.st_size)
    hit = _CACHE.get(path)
    if hit is not None and hit[0] == key:
        return True, hit[1]
    with open(path, "rb") as fh:
        raw = fh.read()
    # whole-file vault, vaulted values, unsafe values, or any other local tag: Ansible's
    if raw.lstrip().startswith(b"$ANSIBLE_VAULT") or (
        b"!" in raw and (b"!vault" in raw or b"!unsafe" in raw or b" !" in raw or b"\n!" in raw)
    ):
        return False, None
    try:
        data = _read_by_entry(path, raw)
        if data is None:
            data = _trust(yaml.load(raw, Loader=yaml.CSafeLoader))
    except yaml.YAMLError:
        return False, None  # Ansible's loader reports the error with its position
    _CACHE[path] = (key, data)
    return True, data


def _chunks() -> ModuleType | None:
    """siporch.model.chunks, loaded from its file: the package's import (its model and
    pydantic) would cost more than it saves here."""
    if "chunks" not in _MODULES:
        module = None
        try:
            spec = importlib.util.find_spec("siporch")
            if spec is not None and spec.origin:
                source = Path(spec.origin).parent / "model" / "chunks.py"
                loaded = importlib.util.spec_from_file_location("_siporch_vars_chunks", source)
                if loaded is not None and loaded.loader is not None:
                    module = importlib.util.module_from_spec(loaded)
                    sys.modules[loaded.name] = module  # its dataclasses look themselves up
                    loaded.loader.exec_module(module)
        except Exception:
            module = None
        _MODULES["chunks"] = module
    return _MODULES["chunks"]


_MODULES: dict[str, ModuleType | None] = {}


def _store_file(path: str, chunks: ModuleType) -> Path | None:
    """Where the parsed entries of ``path`` are kept: siporch's cache of the inventory
    (``$SIPORCH_STATE/cache/chunks``, else ``build/cache/chunks`` beside the inventory
    directory, 0700 as siporch keeps it), by the file, this plugin, chunks.py, PyYAML."""
    if os.environ.get("SIPORCH_CACHE", "1").strip().lower() in ("0", "off", "no", "false"):
        return None
    file = Path(path).resolve()
    parts = file.parts
    inventory = next(
        (
            Path(*parts[:i])
            for i in range(len(parts) - 1, 0, -1)
            if parts[i] in ("group_vars", "host_vars")
        ),
        None,
    )
    if inventory is None:
        return None
    env = os.environ.get("SIPORCH_STATE", "").strip()
    state = Path(env).expanduser().resolve() if env else inventory.parent / "build"
    ident = hashlib.sha256()
    for part in (__file__, chunks.__file__):
        with open(part, "rb") as fh:
            ident.update(hashlib.sha256(fh.read()).digest())
    ident.update(f"{yaml.__version__}\n{file}".encode())
    return state / "cache" / "chunks" / f"vars-{ident.hexdigest()[:32]}.pickle"


def _read_by_entry(path: str, raw: bytes) -> Any:
    """The file's data when it has the model's shape (siporch.model.chunks): each entry (a
    trunk, a host...) parsed on its own and kept by the hash of its text in siporch's
    cache, so that a file in which one trunk changed parses that trunk only. None: read it
    whole. Only for text without anchors, aliases or merge keys (each node its own value)."""
    chunks = _chunks()
    if chunks is None:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if chunks.not_plain(text):
        return None
    target = _store_file(path, chunks)
    if target is None:
        return None

    def load() -> bytes | None:
        try:
            return target.read_bytes()
        except OSError:
            return None

    def save(data: bytes) -> None:
        try:
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(target.parent.parent, 0o700)  # as siporch keeps its cache
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        except OSError:
            pass  # a cache that cannot be written is only slower

    def parse(part: str, first: int) -> tuple[Any, list[tuple[int, str]]]:
        # an entry kept in the store has no template marker (chunks.may_template): plain
        return _trust(yaml.load(part, Loader=yaml.CSafeLoader)), []

    store = chunks.Store(load, save)
    try:
        read = chunks.read(text, parse, store)
    except yaml.YAMLError:
        raise
    except Exception:
        return None
    if read is None:
        return None
    store.save()
    return read[0]


class VarsModule(HostGroupVars):
    def load_found_files(self, loader: Any, data: Any, found_files: list[str]) -> Any:
        for found in found_files:
            done, new_data = fast_load(found)
            if not done:
                new_data = loader.load_from_file(
                    found, cache="all", unsafe=True, trusted_as_template=True
                )
            if new_data:  # ignore empty files
                try:
                    data = combine_vars(data, new_data)
                except AnsibleError as e:
                    raise AnsibleParserError(f"Could not process {found!r}.") from e
        return data
