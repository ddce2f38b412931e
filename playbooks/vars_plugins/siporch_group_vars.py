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

import os
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
    if (
        raw.lstrip().startswith(b"$ANSIBLE_VAULT")
        or b"!" in raw
        and (b"!vault" in raw or b"!unsafe" in raw or b" !" in raw or b"\n!" in raw)
    ):
        return False, None
    try:
        data = yaml.load(raw, Loader=yaml.CSafeLoader)  # noqa: S506 - the safe loader
    except yaml.YAMLError:
        return False, None  # Ansible's loader reports the error with its position
    data = _trust(data)
    _CACHE[path] = (key, data)
    return True, data


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
