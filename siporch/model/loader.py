"""Load the trunk model from an Ansible inventory, read by ansible-core itself.

The model is the ``siporch`` variable as the group ``all`` sees it. The inventory sources
(``hosts.yml``, ``hosts.ini``, a directory of them, several sources), ``group_vars`` and
``host_vars`` (files or directories), Ansible Vault (whole files and inline ``!vault``) and
``{{ ... }}`` templates are read by ansible-core's own ``InventoryManager``,
``VariableManager``, ``DataLoader`` and ``Templar``: YAML 1.1 as Ansible reads it
(``off`` is false, merge keys, ``0755``...), and the value siporch checks is the value
Ansible's playbooks see. Every value keeps the ``Origin`` tag ansible-core puts on it (file,
line, column), so each problem is reported as ``file:line: path: message``.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from pydantic import ValidationError

from siporch import gcpause, vault
from siporch.errors import ModelError, Problem
from siporch.model import chunks
from siporch.model.loaded import LoadedModel
from siporch.model.loaded import own_trunk_ids as own_trunk_ids
from siporch.model.loaded import sources as _sources
from siporch.model.messages import (
    describe_errors,
    json_may_refuse,
    refused_character,
    refused_characters,
)
from siporch.model.schema import Model

MODEL_VAR = "siporch"
# Inventory variable naming the groups the model's hosts must be in, by role.
GROUPS_VAR = "siporch_host_groups"
DEFAULT_GROUPS: dict[str, str] = {"edge": "siporch_edge", "pbx": "siporch_pbx"}
# Host variable declaring a management address: ansible_host may then be that address.
MANAGEMENT_VAR = "siporch_management_address"
VAULT_HEADER = b"$ANSIBLE_VAULT;"

Inventory = Path | str | Sequence[Path | str]


@dataclass
class InventoryHost:
    """A host of the inventory as ansible-core sees it (for the model's cross-checks)."""

    name: str
    groups: set[str]
    ansible_host: str | None
    ansible_host_where: str | None
    management_address: str | None


def _inventory_dir(source: Path) -> Path:
    return source if source.is_dir() else source.parent


class _Secrets:
    """The vault password as an ansible-core secret, opened on first use (a model without
    secrets needs no password); a problem with it is kept to be reported with its file."""

    def __init__(self, inventory: Path, password_file: Path | None) -> None:
        from ansible.errors import AnsibleError
        from ansible.parsing.vault import VaultSecret

        outer = self

        class LazySecret(VaultSecret):  # type: ignore[misc]
            @property
            def bytes(self) -> bytes:
                if outer._password is None:
                    outer._password = outer._open()
                    if outer._password is None:
                        raise AnsibleError("no vault password")
                return outer._password

        self._inventory = inventory
        self._password_file = password_file
        self.problem: Problem | None = None
        self._password: bytes | None = None
        self.duplicates: list[tuple[str, int, str]] = []
        self.secrets: list[tuple[str, Any]] = [("default", LazySecret())]

    def _open(self) -> bytes | None:
        try:
            path = vault.password_file(self._inventory, self._password_file)
            if path is None:
                self.problem = Problem(
                    str(self._inventory),
                    "",
                    "holds Ansible Vault data but no vault password file is given "
                    "(use --vault-password-file or ANSIBLE_VAULT_PASSWORD_FILE, "
                    "or put one at <inventory>/../.vault-pass)",
                )
                return None
            secret: bytes = vault.open_vault(path).secrets[0][1].bytes
            return secret
        except vault.VaultError as exc:
            self.problem = Problem(exc.file, "", exc.reason)
            return None


class _Paths:
    """Origin paths (absolute, as ansible-core records them) spelled as the user gave the
    inventory (``inventory/example/group_vars/...``)."""

    def __init__(self, sources: Sequence[Path]) -> None:
        self._prefixes = []
        for s in sources:
            d = _inventory_dir(s)
            shown = str(d) if s.is_dir() else str(s.parent)
            self._prefixes.append((os.path.abspath(d) + os.sep, shown + os.sep))

    def show(self, path: str | None) -> str:
        if not path:
            return "<inventory>"
        for absolute, shown in self._prefixes:
            if path.startswith(absolute):
                return ("" if shown == "." + os.sep else shown) + path[len(absolute) :]
        return path

    def where(self, origin: Any) -> str | None:
        if origin is None or not getattr(origin, "path", None):
            return None
        text = self.show(origin.path)
        return f"{text}:{origin.line_num}" if origin.line_num else text


@contextmanager
def _ansible_settings(secrets: _Secrets) -> Iterator[list[Any]]:
    """ansible-core as siporch needs it while loading.

    * an inventory source no plugin can parse is an error (its reasons are collected, not
      printed);
    * a key written twice in one YAML mapping is collected as an error (``secrets.duplicates``)
      where Ansible warns and keeps the later value; a key a merge (``<<:``) brings in and
      the mapping sets again is an override, not a duplicate;
    * the ``group_vars``/``host_vars`` plugin's process-wide file cache starts empty (files
      may have changed since an earlier load in the same process);
    * the vault secret is the one inline ``!vault`` values decrypt with.
    """
    from unittest import mock

    import ansible.inventory.manager as manager
    from ansible import constants as C
    from ansible._internal._yaml._constructor import AnsibleInstrumentedConstructor
    from ansible.parsing.vault import VaultSecretsContext
    from ansible.plugins.loader import vars_loader
    from ansible.plugins.vars import host_group_vars

    failures: list[Any] = []
    real = manager.display

    class Recorder:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def error_as_warning(self, msg: str, exception: BaseException, **kw: Any) -> None:
            failures.append(exception)

        def warning(self, msg: str, *a: Any, **kw: Any) -> None:
            pass

    original = AnsibleInstrumentedConstructor.construct_mapping

    def construct_mapping(self: Any, node: Any, deep: bool = False) -> Any:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not hasattr(key_node, "value"):
                continue
            if not isinstance(key_node.value, str):
                continue
            ident = (key_node.tag, key_node.value)
            if ident in seen:
                secrets.duplicates.append(
                    (self._origin.path, key_node.start_mark.line + self._origin.line_num,
                     key_node.value)
                )
            seen.add(ident)
        self._duplicate_key_mode = "ignore"
        return original(self, node, deep)

    host_group_vars.FOUND.clear()
    host_group_vars.NAK.clear()
    saved_ctx = VaultSecretsContext._current
    VaultSecretsContext._current = VaultSecretsContext(secrets.secrets)
    # group_vars/host_vars through ansible-core's own host_group_vars only, whatever vars
    # plugins an ansible.cfg in reach enables (siporch's playbooks enable a faster reader
    # of large files that skips the checks above): the model reads the same everywhere.
    plugins: dict[str, Any] = {}
    try:
        with (
            mock.patch.object(C, "VARIABLE_PLUGINS_ENABLED", ["host_group_vars"]),
            mock.patch.object(vars_loader, "_plugin_instance_cache", plugins),
            mock.patch.object(manager, "display", Recorder()),
            mock.patch.object(C, "INVENTORY_ANY_UNPARSED_IS_FAILED", True),
            mock.patch.object(AnsibleInstrumentedConstructor, "construct_mapping", construct_mapping),
        ):
            vars_loader.get("host_group_vars")  # the one plugin of the read
            yield failures
    finally:
        VaultSecretsContext._current = saved_ctx


def _duplicates(secrets: _Secrets, paths: _Paths) -> list[Problem]:
    out = []
    for path, line, key in dict.fromkeys(secrets.duplicates):
        out.append(
            Problem(
                f"{paths.show(path)}:{line}", key, "duplicate key: the later one would silently win"
            )
        )
    return out


def _utf8_problem(path: Path, lib: Any, paths: _Paths) -> Problem | None:
    """Where a file is not UTF-8 text, precisely (ansible-core says less)."""
    try:
        raw = path.read_bytes()
        if raw.startswith(VAULT_HEADER) and lib is not None:
            raw = lib.decrypt(raw)
    except Exception:
        return None
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        return Problem(
            f"{paths.show(str(path))}:{line}",
            "",
            f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at column {column} "
            "(save the file as UTF-8)",
        )
    return None


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", "") or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _error_origin(exc: BaseException) -> Any:
    from ansible._internal._datatag._tags import Origin

    seen: BaseException | None = exc
    while seen is not None:
        obj = getattr(seen, "obj", None)
        origin = obj if isinstance(obj, Origin) else Origin.get_tag(obj)
        if origin is not None and origin.path:
            return origin
        seen = seen.__cause__ or seen.__context__
    return None


def _ansible_problem(exc: BaseException, paths: _Paths, secrets: _Secrets) -> Problem:
    """An error ansible-core raised while reading the inventory, as one plain problem."""
    if secrets.problem is not None:
        return secrets.problem
    origin = _error_origin(exc)
    where = paths.where(origin) or "<inventory>"
    message = _first_line(exc)
    if origin is not None and origin.path:
        lib = None
        try:
            from ansible.parsing.vault import VaultLib

            lib = VaultLib(secrets.secrets)
        except Exception:
            pass
        bad = _utf8_problem(Path(origin.path), lib, paths)
        if bad is not None:
            return bad
    low = message.lower()
    if "decrypt" in low or "vault" in low:
        return Problem(where, "", f"cannot decrypt Ansible Vault data: {message}")
    col = f", column {origin.col_num}" if origin is not None and origin.col_num else ""
    line = f" (line {origin.line_num}{col})" if origin is not None and origin.line_num else ""
    if "yaml" in low or "syntax" in low or "parse" in low or "mapping" in low:
        return Problem(where, "", f"not valid YAML{line}: {message}")
    return Problem(where, "", message)


def _parse_failures(failures: list[Any], source: str) -> tuple[str, str]:
    """Where and why no inventory plugin could read ``source``: the YAML (for a .yml
    file) or INI plugin's reason."""
    yaml_file = source.endswith((".yml", ".yaml", ".json"))
    best: tuple[str, str] | None = None
    for exc in failures:
        origin = _error_origin(exc)
        text = _first_line(exc)
        cause = exc.__cause__
        if cause is not None and _first_line(cause) not in text:
            text = f"{text}: {_first_line(cause)}"
        line = f":{origin.line_num}" if origin is not None and origin.line_num else ""
        plugin = "yaml" if yaml_file else "ini"
        if plugin in text.lower() or best is None:
            best = (line, text)
    return best or ("", "no inventory plugin could parse it")


# The fast path: group_vars/host_vars files read by libyaml + PyYAML's safe constructor
# (what ansible-core's constructor is built on), without an origin tag on every value.
# Used only for plain YAML: a file with a ``!`` anywhere (``!vault``, ``!unsafe``,
# ``!!binary``...) or that parses as JSON goes to ansible-core's own reader. A string that
# may be a template is tagged as ansible-core tags it (trusted, with its origin), so the
# Templar treats it the same. tests/unit/test_model_ansible.py proves both paths give the
# same data, and the same as ansible-inventory; positions for messages come from a second,
# slow read when there is something to report.
FAST_YAML = True
#: where the fast path keeps the parsed entries of a file (``chunks.Store``), when a
#: cache is in use (set by ``siporch.cache.load_model``); None: every file read whole
CHUNKS: Callable[[str], chunks.Store | None] | None = None
#: keep the data a model was validated from in ``LoadedModel.data`` (for the cache)
KEEP_DATA = False


def _data_loader(secrets: _Secrets, fast: bool) -> Any:
    from ansible.parsing.dataloader import DataLoader

    if not fast:
        loader = DataLoader()
    else:
        loader = _fast_loader_class()()
        loader.fast_files = []
        loader.duplicates = secrets.duplicates
    loader.set_vault_secrets(secrets.secrets)
    return loader


@functools.cache
def _fast_loader_class() -> type:
    import yaml
    from ansible._internal._datatag._tags import Origin, TrustedAsTemplate
    from ansible.module_utils._internal._datatag import AnsibleTagHelper
    from ansible.parsing.dataloader import DataLoader
    from yaml.nodes import MappingNode, ScalarNode

    trusted = TrustedAsTemplate()
    STR = "tag:yaml.org,2002:str"

    class FastYaml(yaml.CSafeLoader):
        path: str
        duplicates: list[tuple[str, int, str]]
        offset = 0  # the text's first line in its file (an entry of ``chunks``)

        def construct_yaml_str(self, node: Any) -> Any:
            value = self.construct_scalar(node)
            if "{" in value and _may_template(value):
                where = Origin(
                    path=self.path,
                    line_num=node.start_mark.line + 1,
                    col_num=node.start_mark.column + 1,
                )
                return AnsibleTagHelper.tag(value, [where, trusted])
            return value

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[tuple[str, str]] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(
                    getattr(key_node, "value", None), str
                ):
                    continue
                ident = (key_node.tag, key_node.value)
                if ident in seen:
                    self.duplicates.append(
                        (self.path, key_node.start_mark.line + 1, key_node.value)
                    )
                seen.add(ident)
            return super().construct_mapping(node, deep=deep)

        def plain_data(self) -> Any:
            """``get_single_data`` without PyYAML's generic construction (its bookkeeping
            per node for anchors, recursion and two-step objects, about half the read):
            for text with no anchor, alias, tag or merge key (``_UNSAFE``), where every
            node is its own value. The same constructors as ``get_single_data`` for every
            scalar that is not a string, the same duplicate keys, later keys winning."""
            node = self.get_single_node()
            if node is None:
                return None
            constructors = self.yaml_constructors
            path = self.path
            duplicates = self.duplicates
            offset = self.offset + 1  # line numbers from 1, in the file

            def string(n: Any) -> Any:
                value = n.value
                if "{" in value and _may_template(value):
                    where = Origin(
                        path=path,
                        line_num=n.start_mark.line + offset,
                        col_num=n.start_mark.column + 1,
                    )
                    return AnsibleTagHelper.tag(value, [where, trusted])
                return value

            def walk(n: Any) -> Any:
                kind = type(n)
                if kind is ScalarNode:
                    if n.tag == STR:
                        return string(n)
                    return constructors[n.tag](self, n)  # KeyError: not plain, fall back
                if kind is MappingNode:
                    out: dict[Any, Any] = {}
                    seen: set[tuple[str, str]] = set()
                    for key_node, value_node in n.value:
                        if type(key_node) is ScalarNode:
                            ident = (key_node.tag, key_node.value)
                            if ident in seen:
                                duplicates.append((path, key_node.start_mark.line + offset, ident[1]))
                            seen.add(ident)
                        out[walk(key_node)] = walk(value_node)
                    return out
                return [walk(child) for child in n.value]

            return walk(node)

    FastYaml.add_constructor("tag:yaml.org,2002:str", FastYaml.construct_yaml_str)

    class FastDataLoader(DataLoader):  # type: ignore[misc]
        fast_files: list[str]
        duplicates: list[tuple[str, int, str]]

        def load(
            self,
            data: str,
            file_name: str | None = None,
            show_content: bool = True,
            json_only: bool = False,
        ) -> Any:
            text = str(data)
            if (
                not FAST_YAML
                or json_only
                or file_name is None
                or not TrustedAsTemplate.is_tagged_on(data)
                or "!" in text
                or _is_json(text)
            ):
                return super().load(data, file_name, show_content, json_only)
            plain = not _unsafe(text)
            store = CHUNKS(str(file_name)) if plain and CHUNKS is not None else None
            if store is not None:
                try:
                    read = chunks.read(text, functools.partial(_parse_plain, str(file_name)), store)
                except Exception:
                    read = None
                if read is not None:
                    result, dups = read
                    store.save()
                    self.duplicates.extend((str(file_name), line, key) for line, key in dups)
                    self.fast_files.append(str(file_name))
                    return _by_variable(result, str(file_name))
            parser = FastYaml(text)
            parser.path = str(file_name)
            parser.duplicates = []
            try:
                result = parser.plain_data() if plain else parser.get_single_data()
            except Exception:
                return super().load(data, file_name, show_content, json_only)
            finally:
                parser.dispose()
            self.duplicates.extend(parser.duplicates)
            self.fast_files.append(str(file_name))
            return _by_variable(result, str(file_name))

    def _by_variable(result: Any, path: str) -> Any:
        if isinstance(result, dict):  # where each variable comes from (its file)
            origin = Origin(path=path)
            result = {k: origin.tag(v) if isinstance(v, dict | list) else v for k, v in result.items()}
        return result

    def _parse_plain(path: str, text: str, first: int) -> tuple[Any, list[tuple[int, str]]]:
        parser = FastYaml(text)
        parser.path, parser.duplicates, parser.offset = path, [], first
        try:
            value = parser.plain_data()
        finally:
            parser.dispose()
        return value, [(line, key) for _, line, key in parser.duplicates]

    return FastDataLoader


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


class _Session:
    """One ansible-core reading of the inventory sources."""

    def __init__(
        self,
        sources: tuple[Path, ...],
        secrets: _Secrets,
        failures: list[Any],
        fast: bool = False,
    ) -> None:
        from ansible.inventory.manager import InventoryManager
        from ansible.vars.manager import VariableManager

        self.loader = _data_loader(secrets, fast)
        self.loader.set_vault_secrets(secrets.secrets)
        self.inventory = InventoryManager(
            loader=self.loader, sources=[os.path.abspath(s) for s in sources]
        )
        self.vm = VariableManager(loader=self.loader, inventory=self.inventory)

    def group_vars(self, name: str = "all") -> dict[str, Any]:
        """The variables a group defines (inventory, group_vars), as ansible-inventory
        --list shows them."""
        from ansible.utils.vars import combine_vars
        from ansible.vars.plugins import get_vars_from_inventory_sources

        group = self.inventory.groups[name]
        own = group.get_vars()
        plugin = get_vars_from_inventory_sources(
            self.loader, self.inventory._sources, [group], "all"
        )
        return dict(combine_vars(own, plugin))

    def host_vars(self, host: Any) -> dict[str, Any]:
        """All variables of one host, as ansible-inventory --host shows them."""
        return dict(self.vm.get_vars(host=host, include_hostvars=False, stage="all"))

    def templar(self, variables: Mapping[str, Any]) -> Any:
        from ansible.template import Templar
        from ansible.vars.hostvars import HostVars

        context = dict(variables)
        context.setdefault("hostvars", HostVars(self.inventory, self.vm, self.loader))
        context.setdefault("groups", self.inventory.get_groups_dict())
        return Templar(loader=self.loader, variables=context)


_PLAIN = (str, int, bool, float, type(None))
_MARKS = ("{{", "{%", "{#")  # Jinja's delimiters: only such a string can be a template


def _may_template(text: str) -> bool:
    return "{" in text and any(m in text for m in _MARKS)


def _native(
    value: Any,
    templar: Any,
    loc: tuple[Any, ...],
    errors: list[tuple[tuple[Any, ...], str]],
) -> Any:
    """``value`` templated (ansible-core's Templar, where a string may be a template) and
    decrypted, as plain Python data (tags dropped); template errors are collected with
    their path. Written for speed: a model has hundreds of thousands of values."""
    kind = type(value)
    if kind in _PLAIN and not (kind is str and _may_template(value)):
        return value
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for k, v in value.items():
            key = k if type(k) in _PLAIN else _scalar(k)
            tv = type(v)
            if tv in _PLAIN and not (tv is str and _may_template(v)):
                out[key] = v
            elif isinstance(v, str) and tv.__name__ != "EncryptedString" and not _may_template(v):
                out[key] = str(v)
            elif isinstance(v, int) and tv is not bool:
                out[key] = int(v)
            else:
                out[key] = _native(v, templar, (*loc, key), errors)
        return out
    if isinstance(value, list | tuple):
        return [_native(v, templar, (*loc, i), errors) for i, v in enumerate(value)]
    if kind.__name__ == "EncryptedString" or (isinstance(value, str) and _may_template(value)):
        try:
            result = templar.template(value)
        except Exception as exc:
            errors.append((loc, _template_message(exc)))
            return _scalar(value)
        if result is value:
            return _scalar(value)
        return _native(result, templar, loc, errors)
    return _scalar(value)


def _scalar(value: Any) -> Any:
    kind = type(value)
    if kind in _PLAIN:
        return value
    if isinstance(value, str) and kind.__name__ != "EncryptedString":
        return str(value)
    if isinstance(value, int) and kind is not bool:
        return int(value)
    if isinstance(value, float):
        return float(value)
    from ansible.module_utils._internal._datatag import AnsibleTagHelper

    return AnsibleTagHelper.untag(value)


def _template_message(exc: BaseException) -> str:
    text = _first_line(exc)
    from ansible.errors import AnsibleUndefinedVariable

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, AnsibleUndefinedVariable):
            import re

            m = re.search(r"'([A-Za-z_][A-Za-z0-9_]*)' is undefined", str(seen))
            if m:
                return (
                    f"undefined variable '{m.group(1)}' (define it in the inventory, e.g. "
                    "group_vars/all/vault.yml)"
                )
        seen = seen.__cause__ or seen.__context__
    low = text.lower()
    if "decrypt" in low or "vault" in low:
        return f"cannot decrypt Ansible Vault data: {text}"
    return f"template error: {text}"


def _origin_at(raw: Any, loc: tuple[Any, ...]) -> Any:
    """The ``Origin`` of the deepest value along ``loc`` in the data as read (a mapping
    entry is placed at its key, a list item at the item)."""
    from ansible._internal._datatag._tags import Origin

    origin = Origin.get_tag(raw)
    node = raw
    for part in loc:
        if isinstance(node, Mapping):
            key = next((k for k in node if k == part), None)
            if key is None:
                break
            origin = Origin.get_tag(key) or origin
            node = node[key]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            origin = Origin.get_tag(node) or origin
        else:
            break
    return origin


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_KEY_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_.-]*):(?:[ \t]|$)")
# YAML 1.1 words a plain key would not read as a string
_NOT_STR = {"y", "yes", "n", "no", "true", "false", "on", "off", "null", "~"}
# what a block-style walk over the text cannot follow: merge keys, anchors, aliases, tags,
# documents and directives, tabs in indentation
_UNSAFE = re.compile(r"<<|(?:^|[\s,\[{])[&*!]\S|^\t|^---[ \t]*\S|^\.\.\.|^%", re.MULTILINE)
_unsafe = chunks.not_plain


class _TextLines:
    """Where ansible-core's own reader would place a problem (the line of the deepest key
    along its path, :func:`_origin_at`) in a file the fast path read without positions,
    found by walking the file's block-style text: no second reading. Anything the walk is
    not sure of (flow style on the path, anchors, merges, tags, quoted or non-string keys,
    scalar list items) gives None, and the caller reads the file the slow way."""

    def __init__(self) -> None:
        self._files: dict[str, list[str] | None] = {}
        self._index: dict[tuple[int, int, int], dict[str, int] | None] = {}
        self._ends: dict[tuple[int, int, int], int] = {}
        self._items: dict[tuple[int, int, int, int], list[int]] = {}
        # per file (id of its lines): each line's indent, -1 for a blank or comment line
        self._indents: dict[int, list[int]] = {}
        self.located: set[int] = set()  # id() of problems placed here

    def _lines(self, path: str) -> list[str] | None:
        if path not in self._files:
            try:
                text = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                text = None
            lines = None if text is None or _unsafe(text) else text.splitlines()
            self._files[path] = lines
            if lines is not None:
                self._indents[id(lines)] = [
                    len(line) - len(line.lstrip(" ")) if self._content(line) else -1
                    for line in lines
                ]
        return self._files[path]

    @staticmethod
    def _content(line: str) -> bool:
        body = line.strip()
        return bool(body) and not body.startswith("#")

    @staticmethod
    def _indent(line: str) -> int:
        return len(line) - len(line.lstrip(" "))

    def _end(self, lines: list[str], start: int, indent: int) -> int:
        """The end of the block that starts at ``start``: the next content line indented
        ``indent`` or less."""
        ident = (id(lines), start, indent)
        if ident not in self._ends:
            indents = self._indents[id(lines)]
            i = start
            while i < len(lines) and (indents[i] < 0 or indents[i] > indent):
                i += 1
            self._ends[ident] = i
        return self._ends[ident]

    def _keys(self, lines: list[str], start: int, end: int, col: int) -> dict[str, int] | None:
        """{key: line} of the block mapping whose keys start at column ``col`` in
        lines[start:end] (its first key may follow a list item's ``- `` on line
        ``start``); None when a key is not a plain string."""
        ident = (id(lines), start, col)
        if ident in self._index:
            return self._index[ident]
        keys: dict[str, int] = {}
        out: dict[str, int] | None = keys
        indents = self._indents[id(lines)]
        for i in range(start, end):
            ind = indents[i]
            if ind < 0:
                continue
            line = lines[i]
            if i != start and ind != col:
                if ind < col:
                    out = None
                    break
                continue
            if i != start and line[col : col + 2].strip() == "-":
                continue  # an item of the previous key's list, written at the key's column
            m = _KEY_LINE.match(line, col)
            if m is None or m.group(1).lower() in _NOT_STR or m.group(1) in keys:
                out = None
                break
            keys[m.group(1)] = i
        self._index[ident] = out
        return out

    def line(self, path: str, var: str, loc: tuple[Any, ...]) -> int | None:
        lines = self._lines(path)
        if lines is None:
            return None
        top = self._keys(lines, 0, len(lines), 0)
        if top is None or var not in top:
            return None
        at = top[var]
        if lines[at][len(var) + 1 :].strip(" ") and not lines[at][len(var) + 1 :].strip().startswith("#"):
            return None  # the value is on the key's line (flow style)
        start, end = at + 1, self._end(lines, at + 1, 0)
        first = next((i for i in range(start, end) if self._content(lines[i])), None)
        if first is None:
            return None
        col = self._indent(lines[first])
        found = first + 1  # the mapping's own position: its first key
        block = (first, end, col)  # where the value at the current depth is written
        for n, part in enumerate(loc):
            more = n + 1 < len(loc)
            first, end, col = block
            if lines[first][col:].startswith("-") and lines[first][col : col + 2].strip() == "-":
                if not isinstance(part, int) or isinstance(part, bool):
                    break  # _origin_at stops where a path does not fit
                items = self._items.get((id(lines), first, end, col))
                if items is None:
                    indents = self._indents[id(lines)]
                    items = self._items[(id(lines), first, end, col)] = [
                        i
                        for i in range(first, end)
                        if indents[i] == col and lines[i][col : col + 2].strip() == "-"
                    ]
                if not 0 <= part < len(items):
                    break
                item = items[part]
                rest = lines[item][col + 1 :]
                key_col = col + 1 + self._indent(rest)
                if _KEY_LINE.match(lines[item], key_col) is None:
                    return None  # a scalar item: a string has a position, a number not
                found = item + 1
                block = (item, self._end(lines, item + 1, col), key_col)
                continue
            if not isinstance(part, str) or not _PLAIN_KEY.fullmatch(part):
                return None
            if part.lower() in _NOT_STR:
                return None
            keys = self._keys(lines, first, end, col)
            if keys is None:
                return None
            if part not in keys:
                break
            at = keys[part]
            found = at + 1
            key_col = col if at != first else _KEY_LINE.match(lines[at], col).start()  # type: ignore[union-attr]
            tail = lines[at][key_col + len(part) + 1 :].strip()
            if tail and not tail.startswith("#"):  # the value is on the key's line
                if more and tail.startswith(("{", "[")):
                    return None  # a flow collection: positions inside it are not known
                break  # a scalar: the path ends at its key
            inner_end = self._end(lines, at + 1, col)
            nxt = next((i for i in range(at + 1, inner_end) if self._content(lines[i])), None)
            if nxt is None:  # a list written at the key's column, or no value (null)
                nxt = next((i for i in range(at + 1, len(lines)) if self._content(lines[i])), None)
                if nxt is None or self._indent(lines[nxt]) != col or lines[nxt][col : col + 2].strip() != "-":
                    break
                inner_end = nxt
                while inner_end < len(lines) and (
                    not self._content(lines[inner_end])
                    or self._indent(lines[inner_end]) > col
                    or (lines[inner_end][col : col + 2].strip() == "-"
                    and self._indent(lines[inner_end]) == col)
                ):
                    inner_end += 1
            block = (nxt, inner_end, self._indent(lines[nxt]))
        return found


class _Locator:
    def __init__(
        self,
        source: Path,
        raw: Any = None,
        paths: _Paths | None = None,
        text: _TextLines | None = None,
    ) -> None:
        self.source = source
        self._raw = raw
        self._paths = paths
        self._text = text

    def problem(self, loc: tuple[Any, ...], message: str, severity: str = "error") -> Problem:
        where = None
        placed = False
        if self._paths is not None and self._raw is not None:
            origin = _origin_at(self._raw, loc)
            where = self._paths.where(origin)
            if (
                self._text is not None
                and origin is not None
                and getattr(origin, "path", None)
                and not origin.line_num
            ):
                line = self._text.line(origin.path, MODEL_VAR, loc)
                if line is not None:
                    where, placed = f"{self._paths.show(origin.path)}:{line}", True
        out = Problem(where or str(self.source), format_path(loc) or MODEL_VAR, message, severity)
        if placed and self._text is not None:
            self._text.located.add(id(out))
        return out


def load_model(
    inventory: Inventory,
    vault_password_file: Path | None = None,
    *,
    groups: Mapping[str, str] | None = None,
) -> LoadedModel:
    """Load, decrypt, template and validate the model of an inventory: one or several
    sources (directories or files such as ``hosts.yml``/``hosts.ini``), read by
    ansible-core. ``groups`` (role -> inventory group) overrides the inventory's
    ``siporch_host_groups`` (default ``siporch_edge``/``siporch_pbx``)."""
    with gcpause.paused():
        return _load_model(_sources(inventory), vault_password_file, groups)


def _read_inventory(
    sources: tuple[Path, ...], vault_password_file: Path | None, fast: bool = False
) -> tuple[_Session, _Secrets, _Paths]:
    missing = [s for s in sources if not s.exists()]
    if missing or not sources:
        raise ModelError(
            problems=[
                Problem(str(s), "", "inventory directory does not exist (nor an inventory file)")
                for s in missing
            ]
            or [Problem("<inventory>", "", "no inventory given")]
        )
    paths = _Paths(sources)
    secrets = _Secrets(_inventory_dir(sources[0]), vault_password_file)
    from ansible.errors import AnsibleError

    with _ansible_settings(secrets) as failures:
        try:
            session = _Session(sources, secrets, failures, fast)
        except AnsibleError as exc:
            if secrets.problem is not None:
                raise ModelError(problems=[secrets.problem]) from None
            text = str(exc)
            if "failed to parse inventory source" in text.lower():
                source = text.rsplit(" ", 1)[-1]
                line, why = _parse_failures(failures, source)
                raise ModelError(
                    problems=[
                        Problem(
                            paths.show(source) + line,
                            "",
                            f"not an inventory Ansible can read: {why}",
                        )
                    ]
                ) from None
            raise ModelError(problems=[_ansible_problem(exc, paths, secrets)]) from None
    if secrets.duplicates:
        raise ModelError(problems=_duplicates(secrets, paths))
    return session, secrets, paths


def _shadowed(sources: Sequence[Path], paths: _Paths) -> list[Problem]:
    """``group_vars/all.yml`` next to a ``group_vars/all/`` directory: Ansible reads the
    directory and ignores the file (and so does siporch); say so."""
    out = []
    for d in dict.fromkeys(_inventory_dir(s) for s in sources):
        for sub in ("group_vars", "host_vars"):
            base = d / sub
            if not base.is_dir():
                continue
            for f in sorted(base.iterdir()):
                if f.is_file() and f.suffix in (".yml", ".yaml", ".json") and (
                    base / f.stem
                ).is_dir():
                    out.append(
                        Problem(
                            paths.show(str(f.absolute())),
                            "",
                            f"ignored by Ansible (and siporch): the directory {sub}/{f.stem}/ "
                            "exists, and Ansible reads only the directory; move this file's "
                            "variables into it",
                            "warning",
                        )
                    )
    return out


@dataclass
class _Read:
    data: Any
    raw: Any
    source: Path
    paths: _Paths
    pre: list[Problem]
    hosts: dict[str, InventoryHost]
    role_groups: dict[str, str]
    shown: str
    warnings: list[Problem]
    fast_files: list[str] = field(default_factory=list)
    text: _TextLines | None = None  # places problems in files read by the fast path

    @property
    def fast(self) -> bool:
        """Whether a file was read by the fast path (its values carry no position)."""
        return bool(self.fast_files)


def read_model_data(inventory: Inventory, vault_password_file: Path | None = None) -> Any:
    """The value of the ``siporch`` variable as Ansible sees it (templated, decrypted, as
    plain Python data), before siporch's own checks: what :func:`load_model` validates."""
    with gcpause.paused():
        read = _read_model(_sources(inventory), vault_password_file, None, fast=FAST_YAML)
    if read.pre:
        raise ModelError(problems=read.pre)
    return read.data


def _read_model(
    sources: tuple[Path, ...],
    vault_password_file: Path | None,
    groups: Mapping[str, str] | None,
    fast: bool = False,
) -> _Read:
    from ansible.errors import AnsibleError

    session, secrets, paths = _read_inventory(sources, vault_password_file, fast)
    shown = ", ".join(str(s) for s in sources)
    with _ansible_settings(secrets):
        try:
            all_vars = session.group_vars("all")
            raw = all_vars.get(MODEL_VAR)
            hosts, overrides = _hosts(session, raw, paths)
        except AnsibleError as exc:
            raise ModelError(problems=[_ansible_problem(exc, paths, secrets)]) from None
        if raw is None:
            missing = Problem(
                shown,
                MODEL_VAR,
                "no file defines the trunk model variable (put it in "
                "group_vars/all.yml or group_vars/all/)",
            )
            raise ModelError(problems=(overrides or [missing]) + _shadowed(sources, paths))
        from ansible._internal._datatag._tags import Origin

        origin = Origin.get_tag(raw)
        source = Path(paths.show(origin.path)) if origin is not None and origin.path else Path(shown)
        templar = session.templar(all_vars)
        errors: list[tuple[tuple[Any, ...], str]] = []
        try:
            data = _native(raw, templar, (), errors)
            group_errors: list[tuple[tuple[Any, ...], str]] = []
            wanted = _native(all_vars.get(GROUPS_VAR), templar, (), group_errors)
        except AnsibleError as exc:
            raise ModelError(problems=[_ansible_problem(exc, paths, secrets)]) from None
        if secrets.problem is not None:
            raise ModelError(problems=[secrets.problem])
    if secrets.duplicates:
        raise ModelError(problems=_duplicates(secrets, paths))
    role_groups = dict(groups) if groups is not None else _role_groups(wanted, shown)
    fast_files = list(getattr(session.loader, "fast_files", []))
    text = _TextLines() if fast_files else None
    locator = _Locator(source, raw, paths, text)
    return _Read(
        data=data,
        raw=raw,
        source=source,
        paths=paths,
        pre=[locator.problem(loc, msg) for loc, msg in errors] + overrides,
        hosts=hosts,
        role_groups=role_groups,
        shown=shown,
        warnings=_shadowed(sources, paths),
        fast_files=fast_files,
        text=text,
    )


def _load_model(
    sources: tuple[Path, ...],
    vault_password_file: Path | None,
    groups: Mapping[str, str] | None,
) -> LoadedModel:
    read: _Read | None = None
    try:
        read = _read_model(sources, vault_password_file, groups, fast=FAST_YAML)
        loaded = _loaded(read, sources)
    except ModelError as exc:
        if not FAST_YAML:
            raise
        if read is not None and _placed(read, exc.problems):
            raise
        # something to report: read again the slow way, for file and line of every value
        return _loaded(_read_model(sources, vault_password_file, groups), sources)
    if read.fast and loaded.warnings and not _placed(read, loaded.warnings):
        return _loaded(_read_model(sources, vault_password_file, groups), sources)
    return loaded


def _placed(read: _Read, problems: Sequence[Problem]) -> bool:
    """Whether every problem was placed from the text of the file the fast path read (at
    the line ansible-core's reader would give): no need to read it again."""
    return (
        read.text is not None
        and bool(problems)
        and all(id(p) in read.text.located for p in problems)
    )


def _loaded(read: _Read, sources: tuple[Path, ...]) -> LoadedModel:
    first = sources[0]
    return _validate(
        read.data,
        _Locator(read.source, read.raw, read.paths, read.text),
        first.parent if first.is_file() else first,
        pre=read.pre,
        hosts=read.hosts,
        role_groups=read.role_groups,
        inventory_name=read.shown,
        sources=sources,
        warnings=read.warnings,
    )


def _role_groups(value: Any, shown: str) -> dict[str, str]:
    if value is None:
        return dict(DEFAULT_GROUPS)
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ModelError(
            problems=[
                Problem(shown, GROUPS_VAR, "must map host roles (edge, pbx) to group names")
            ]
        )
    return {**DEFAULT_GROUPS, **value}


def _hosts(
    session: _Session, raw: Any, paths: _Paths
) -> tuple[dict[str, InventoryHost], list[Problem]]:
    """Every inventory host (name, groups, ansible_host), and a problem for each host or
    group that gives the model another value than group ``all`` does."""
    from ansible._internal._datatag._tags import Origin

    hosts: dict[str, InventoryHost] = {}
    problems: list[Problem] = []
    for host in session.inventory.get_hosts("all"):
        hv = session.host_vars(host)
        mine = hv.get(MODEL_VAR)
        if mine is not None and mine is not raw:
            where = paths.where(Origin.get_tag(mine)) or str(host.name)
            problems.append(
                Problem(
                    where,
                    MODEL_VAR,
                    f"the model is set again for host '{host.name}' (in host_vars or a "
                    "group other than all): define it once, for group all"
                    if raw is not None
                    else f"the model is defined for host '{host.name}' only: define it once, "
                    "for group all (group_vars/all.yml or group_vars/all/)",
                )
            )
        ah = hv.get("ansible_host")
        ah_where = paths.where(Origin.get_tag(ah)) if ah is not None else None
        if ah is not None or hv.get(MANAGEMENT_VAR) is not None:
            errs: list[tuple[tuple[Any, ...], str]] = []
            t = session.templar(hv)
            ah = _native(ah, t, (), errs) if ah is not None else None
            mg = _native(hv.get(MANAGEMENT_VAR), t, (), errs)
        else:
            mg = None
        hosts[host.name] = InventoryHost(
            name=host.name,
            groups={g.name for g in host.get_groups()},
            ansible_host=None if ah is None else str(ah),
            ansible_host_where=ah_where,
            management_address=None if mg is None else str(mg),
        )
    return hosts, problems


def _same_ip(a: str, b: Any) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(str(b))
    except ValueError:
        return False


def check_inventory(
    model: Model,
    hosts: Mapping[str, InventoryHost],
    role_groups: Mapping[str, str],
    inventory_name: str,
) -> list[tuple[tuple[Any, ...], str, str]]:
    """Model hosts against inventory hosts: every model host is an inventory host of its
    role's group, every host of those groups is in the model, and ``ansible_host`` (when an
    IP address) is the host's ``address`` or ``public_address`` (or its declared
    ``siporch_management_address``)."""
    out: list[tuple[tuple[Any, ...], str, str]] = []
    for name, h in model.hosts.items():
        group = role_groups.get(h.role, f"siporch_{h.role}")
        inv = hosts.get(name)
        if inv is None:
            out.append(
                (
                    ("hosts", name),
                    f"host '{name}' is not in the inventory ({inventory_name}): add it to "
                    f"group '{group}'",
                    "error",
                )
            )
            continue
        if group not in inv.groups:
            out.append(
                (
                    ("hosts", name, "role"),
                    f"host '{name}' has role {h.role} but is not in the inventory group "
                    f"'{group}' ({inventory_name})",
                    "error",
                )
            )
        ah = inv.ansible_host
        if ah is None:
            continue
        try:
            ipaddress.ip_address(ah)
        except ValueError:
            continue  # a DNS name: nothing to compare without resolving it
        allowed = [h.address, h.public_address, inv.management_address]
        if any(a is not None and _same_ip(ah, a) for a in allowed):
            continue
        where = inv.ansible_host_where or inventory_name
        if inv.management_address is not None:
            why = (
                f"siporch_management_address {inv.management_address} of inventory host "
                f"'{name}' is not its ansible_host {ah} ({where})"
            )
        else:
            why = (
                f"ansible_host {ah} of inventory host '{name}' ({where}) is not this host's "
                f"address {h.address}"
                + (f" nor public_address {h.public_address}" if h.public_address else "")
                + f": fix one of them, or declare a separate management address with the "
                f"host variable {MANAGEMENT_VAR}: {ah}"
            )
        out.append((("hosts", name, "address"), why, "error"))
    for role, group in role_groups.items():
        for name, inv in hosts.items():
            if group in inv.groups and name not in model.hosts:
                out.append(
                    (
                        ("hosts",),
                        f"inventory host '{name}' of group '{group}' ({inventory_name}) is "
                        f"not in the model: a deploy would find nothing for it ({role})",
                        "error",
                    )
                )
    return out


def inventory_hosts(
    inventory: Inventory, vault_password_file: Path | None = None
) -> dict[str, dict[str, Any]]:
    """Each inventory host's connection variables (``ansible_*``), templated, as
    ansible-core reads them (for the commands that reach hosts over SSH)."""
    sources = _sources(inventory)
    session, secrets, paths = _read_inventory(sources, vault_password_file)
    from ansible.errors import AnsibleError

    out: dict[str, dict[str, Any]] = {}
    with _ansible_settings(secrets):
        try:
            for host in session.inventory.get_hosts("all"):
                hv = session.host_vars(host)
                t = session.templar(hv)
                errors: list[tuple[tuple[Any, ...], str]] = []
                out[host.name] = {
                    k: _native(v, t, (k,), errors)
                    for k, v in hv.items()
                    if k.startswith("ansible_") and k not in ("ansible_facts",)
                }
        except AnsibleError as exc:
            raise ModelError(problems=[_ansible_problem(exc, paths, secrets)]) from None
    return out


def format_path(loc: tuple[Any, ...]) -> str:
    """``("trunks", "acme", "peers", 1, "port")`` -> ``trunks.acme.peers[1].port``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = str(part)
            if refused_character(text):  # a key with a control character: show it escaped
                text = text.encode("unicode_escape").decode("ascii")
            out += ("." if out else "") + text
    return out


def model_hash(model: Model) -> str:
    """A stable hash of the model; secrets enter only as their own hashes."""
    h = hashlib.sha256(model.model_dump_json().encode())  # SecretStr dumps as "**********"
    for name, host in model.hosts.items():
        if host.ami is not None:
            h.update(f"\0hosts.{name}.ami.secret\0".encode())
            h.update(hashlib.sha256(host.ami.secret.get_secret_value().encode()).digest())
    for name, trunk in model.trunks.items():
        if trunk.auth.type == "register":
            h.update(f"\0trunks.{name}.auth.password\0".encode())
            h.update(hashlib.sha256(trunk.auth.password.get_secret_value().encode()).digest())
        if trunk.credentials is not None:
            h.update(f"\0trunks.{name}.credentials.password\0".encode())
            h.update(
                hashlib.sha256(trunk.credentials.password.get_secret_value().encode()).digest()
            )
    return h.hexdigest()


def validate_data(
    raw: Any,
    source: Path = Path("<data>"),
    inventory: Path | None = None,
) -> LoadedModel:
    """Validate the value of the ``siporch`` variable given as plain data (no inventory:
    no template, no cross-check against inventory hosts)."""
    return _validate(raw, _Locator(source), inventory if inventory is not None else source.parent)


def _validate(
    data: Any,
    loc8: _Locator,
    inventory: Path,
    *,
    pre: Sequence[Problem] = (),
    hosts: Mapping[str, InventoryHost] | None = None,
    role_groups: Mapping[str, str] | None = None,
    inventory_name: str = "",
    sources: tuple[Path, ...] = (),
    warnings: Sequence[Problem] = (),
) -> LoadedModel:
    if not isinstance(data, dict):
        raise ModelError(problems=[*pre, loc8.problem((), "must be a mapping")])
    try:  # one pass in C over every string: the common case needs no Python walk
        text: str | None = json.dumps(data, ensure_ascii=False, default=str)
    except (TypeError, ValueError):  # keys JSON cannot take (dates...): walk everything
        text = None
    # No control character or line break goes on, in the model's strings or in what its
    # templates bring (a secret, typically): the data is checked after templating.
    refused = refused_characters(data) if text is None or json_may_refuse(text) else []
    problems = list(pre) + [loc8.problem(loc, msg) for loc, msg in refused]
    templated = {p.path for p in pre}
    try:
        model = Model.model_validate(data)
    except ValidationError as exc:
        details = cast(list[dict[str, Any]], exc.errors(include_url=False))  # dicts at run time
        for loc, msg in describe_errors(details, data):
            if any(loc[: len(r)] == r for r, _ in refused):  # reported above
                continue
            if format_path(loc) in templated:  # its template failed: reported above
                continue
            problems.append(loc8.problem(loc, msg))
        raise ModelError(problems=_dedupe(problems)) from None
    if problems:
        raise ModelError(problems=problems)

    from siporch.model.checks import check_model

    found = list(warnings)
    found += [loc8.problem(loc, msg, sev) for loc, msg, sev in check_model(model)]
    if hosts is not None:
        found += [
            loc8.problem(loc, msg, sev)
            for loc, msg, sev in check_inventory(
                model, hosts, role_groups or DEFAULT_GROUPS, inventory_name
            )
        ]
    errors = [p for p in found if p.severity == "error"]
    if errors:
        raise ModelError(problems=found)
    own = tuple(sorted(name for name, t in model.trunks.items() if t.id is not None))
    if hosts is not None:  # an inventory's model: the ids its releases gave are kept
        model = _keep_trunk_ids(model, inventory, sources, loc8)
    return LoadedModel(
        model=model,
        source=loc8.source,
        inventory=inventory,
        model_hash=model_hash(model),
        warnings=[p for p in found if p.severity == "warning"],
        inventories=sources or (inventory,),
        data=data if KEEP_DATA else None,
        own_ids=own,
    )


def _keep_trunk_ids(
    model: Model, inventory: Path, sources: Sequence[Path], loc8: _Locator
) -> Model:
    """The model with each trunk's id as the controller's releases of this inventory gave
    it (`siporch.release.id_base`, `siporch.core.stable_ids`): a trunk without its own
    ``id`` keeps its id, a new one takes the lowest id free. The model is returned as it
    is when that numbering is the plain one (own ids, then name order); else every trunk
    without its own id gets the id it keeps, so that every reader of the model (renderers,
    monitor, plan) numbers trunks the same. A trunk's own id that another trunk keeps is an
    error at that ``id``."""
    from siporch.core import assign_ids, stable_ids
    from siporch.release import id_base

    base = id_base(inventory, sources[0] if sources else None)
    if not base.kept and not base.reserved:
        return model
    explicit = {name: t.id for name, t in model.trunks.items()}
    result = stable_ids(explicit, base.kept, base.reserved)
    if result.conflicts:
        where = base.release or base.deployed or "the last release"
        raise ModelError(
            problems=[
                loc8.problem(
                    ("trunks", c.trunk, "id"),
                    f"id {c.id} is kept by trunk '{c.holder}' (its id in release {where}; "
                    f"a trunk's id is kept once given): give '{c.trunk}' another id, or "
                    f"give '{c.holder}' an `id` of its own",
                )
                for c in result.conflicts
            ]
        )
    if result.ids == assign_ids(explicit):
        return model
    trunks = {
        name: t if t.id is not None else t.model_copy(update={"id": result.ids[name]})
        for name, t in model.trunks.items()
    }
    return model.model_copy(update={"trunks": trunks})


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[str, str, str]] = set()
    out = []
    for p in problems:
        key = (p.file, p.path, p.message)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out
