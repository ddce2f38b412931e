"""Load the trunk model from an Ansible inventory directory.

The model is the ``siporch`` variable in ``<inventory>/group_vars/all/*.yml`` (one file
holds it). Other files there may hold secrets, whole-file encrypted with Ansible Vault or as
inline ``!vault`` values; the model refers to them as ``"{{ vault_name }}"``. Every problem
is collected and reported with its file, line and field path.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from siporch import gcpause, vault
from siporch.errors import ModelError, Problem
from siporch.model.messages import (
    describe_errors,
    json_may_refuse,
    refused_character,
    refused_characters,
)
from siporch.model.schema import Model

MODEL_VAR = "siporch"
VAULT_HEADER = b"$ANSIBLE_VAULT;"
_REF = re.compile(r"^\s*\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}\s*$")


@dataclass
class LoadedModel:
    """A validated model with where it came from."""

    model: Model
    source: Path
    inventory: Path
    model_hash: str
    warnings: list[Problem] = field(default_factory=list)


class _Vault:
    """Decrypts Ansible Vault data lazily, so a model without secrets needs no password."""

    def __init__(self, inventory: Path, password_file: Path | None) -> None:
        self._inventory = inventory
        self._password_file = password_file
        self._lib: Any = None

    def decrypt(self, data: bytes, where: str) -> bytes:
        if self._lib is None:
            self._lib = self._open(where)
        from ansible.errors import AnsibleError

        try:
            plain: bytes = self._lib.decrypt(data)
        except AnsibleError as exc:
            raise ModelError(
                problems=[Problem(where, "", f"cannot decrypt Ansible Vault data: {exc}")]
            ) from None
        return plain

    def _open(self, where: str) -> Any:
        try:
            path = vault.password_file(self._inventory, self._password_file)
            if path is None:
                raise ModelError(
                    problems=[
                        Problem(
                            where,
                            "",
                            "holds Ansible Vault data but no vault password file is given "
                            "(use --vault-password-file or ANSIBLE_VAULT_PASSWORD_FILE, "
                            "or put one at <inventory>/../.vault-pass)",
                        )
                    ]
                )
            return vault.open_vault(path)
        except vault.VaultError as exc:
            raise ModelError(problems=[Problem(exc.file, "", exc.reason)]) from None


def _decode(raw: bytes, where: str, *, inline: bool = False) -> str:
    """UTF-8 text, or a problem naming the line of the first undecodable byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if inline:  # ``where`` is the line of the !vault value
            message = "the decrypted !vault value is not UTF-8 text"
        else:
            line = raw[: exc.start].count(b"\n") + 1
            column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
            where = f"{where}:{line}"
            message = (
                f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at column {column} "
                "(save the file as UTF-8)"
            )
        raise ModelError(problems=[Problem(where, "", message)]) from None


_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc,valid-type]
    """Safe loader (libyaml when present) that keeps node positions, reports duplicate
    keys and decrypts inline ``!vault`` values."""

    vault: _Vault
    filename: str
    duplicates: list[tuple[str, int]]

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    self.duplicates.append((key_node.value, key_node.start_mark.line + 1))
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


def _vault_constructor(loader: _Loader, node: yaml.Node) -> str:
    text = loader.construct_scalar(node)  # type: ignore[arg-type]
    where = f"{loader.filename}:{node.start_mark.line + 1}"
    return _decode(loader.vault.decrypt(str(text).encode(), where), where, inline=True)


_Loader.add_constructor("!vault", _vault_constructor)


try:  # a YAML parser in Rust: ~15x faster on big models; PyYAML stays the reference
    import ryaml as _ryaml
except ImportError:  # pragma: no cover
    _ryaml = None


def _pyyaml(text: str, path: Path, vault: _Vault) -> tuple[Any, yaml.Node | None]:
    loader = _Loader(text)
    loader.vault = vault
    loader.filename = str(path)
    loader.duplicates = []
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
        duplicates = loader.duplicates
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ModelError(
            problems=[Problem(str(path), "", f"not valid YAML{line}: {problem}")]
        ) from None
    finally:
        loader.dispose()
    if duplicates:
        raise ModelError(
            problems=[
                Problem(f"{path}:{line}", key, "duplicate key: the later one would silently win")
                for key, line in duplicates
            ]
        )
    return data, node


def _read_yaml(path: Path, vault: _Vault) -> tuple[Any, Callable[[], yaml.Node | None]]:
    """The file's data, and a function giving its YAML node tree (for line numbers)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ModelError(
            problems=[Problem(str(path), "", f"cannot read: {exc.strerror or exc}")]
        ) from None
    if raw.startswith(VAULT_HEADER):
        raw = vault.decrypt(raw, str(path))
    text = _decode(raw, str(path))
    if _ryaml is not None and "!vault" not in text:
        try:
            data = _ryaml.loads(text)
        except Exception:
            pass  # PyYAML below reports the problem precisely
        else:
            return data, lambda: _pyyaml(text, path, vault)[1]
    data, node = _pyyaml(text, path, vault)
    return data, lambda: node


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


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The line of the deepest YAML node along ``loc`` (1-based)."""
    line = None
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        nxt = None
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(part):
                    nxt = v
                    line = k.start_mark.line + 1
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            nxt = node.value[part]
            line = nxt.start_mark.line + 1
        node = nxt
    return line


class _Locator:
    def __init__(self, source: Path, root: Callable[[], yaml.Node | None]) -> None:
        self.source = source
        self._root = root
        self._node: yaml.Node | None = None
        self._composed = False

    def problem(self, loc: tuple[Any, ...], message: str, severity: str = "error") -> Problem:
        if not self._composed:
            self._node, self._composed = self._root(), True
        line = _line_of(self._node, (MODEL_VAR, *loc))
        where = f"{self.source}:{line}" if line else str(self.source)
        return Problem(where, format_path(loc) or MODEL_VAR, message, severity)


def _resolve_refs(
    value: Any,
    variables: dict[str, Any],
    loc: tuple[Any, ...],
    out: list[tuple[tuple[Any, ...], str]],
    refused: list[tuple[tuple[Any, ...], str]],
) -> Any:
    """Replace ``"{{ name }}"`` strings by the variable's value; collect undefined names
    (in ``out``) and refused characters in the values brought in (in ``refused``)."""
    if isinstance(value, dict):
        return {
            k: _resolve_refs(v, variables, (*loc, k), out, refused) for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            _resolve_refs(v, variables, (*loc, i), out, refused) for i, v in enumerate(value)
        ]
    if isinstance(value, str) and "{{" in value:
        m = _REF.match(value)
        if not m:
            out.append((loc, "only a plain variable reference like '{{ vault_name }}' is allowed"))
            return value
        name = m.group(1)
        if name not in variables:
            out.append(
                (loc, f"undefined variable '{name}' (define it in group_vars/all/, e.g. the vault)")
            )
            return value
        refused.extend(refused_characters(variables[name], loc))  # a secret, typically
        return variables[name]
    return value


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
    return h.hexdigest()


def find_vault_password_file(inventory: Path) -> Path | None:
    """``<inventory>/.vault-pass`` or its parent's (see :mod:`siporch.vault`)."""
    return vault.default_password_file(inventory)


def load_model(inventory: Path, vault_password_file: Path | None = None) -> LoadedModel:
    """Load, decrypt, resolve and validate the model of one inventory directory."""
    with gcpause.paused():
        return _load_model(inventory, vault_password_file)


def _load_model(inventory: Path, vault_password_file: Path | None) -> LoadedModel:
    inventory = Path(inventory)
    gv = inventory / "group_vars" / "all"
    if not inventory.is_dir():
        raise ModelError(
            problems=[Problem(str(inventory), "", "inventory directory does not exist")]
        )
    files = sorted(
        [p for p in gv.iterdir() if p.suffix in (".yml", ".yaml") and p.is_file()]
        if gv.is_dir()
        else []
    )
    if not files:
        raise ModelError(
            problems=[
                Problem(str(gv), "", f"no YAML files; the model is the '{MODEL_VAR}' variable here")
            ]
        )
    secrets = _Vault(inventory, vault_password_file)
    variables: dict[str, Any] = {}
    holders: list[tuple[Path, Callable[[], yaml.Node | None]]] = []
    problems: list[Problem] = []
    for path in files:
        try:
            data, node = _read_yaml(path, secrets)
        except ModelError as exc:
            problems.extend(exc.problems)
            continue
        if data is None:
            continue
        if not isinstance(data, dict):
            problems.append(Problem(str(path), "", "must be a mapping of variable names"))
            continue
        if MODEL_VAR in data:
            holders.append((path, node))
        for k, v in data.items():
            if k == MODEL_VAR and MODEL_VAR in variables:
                continue
            variables[k] = v
    if problems:
        raise ModelError(problems=problems)
    if not holders:
        raise ModelError(
            problems=[Problem(str(gv), MODEL_VAR, "no file defines the trunk model variable")]
        )
    if len(holders) > 1:
        raise ModelError(
            problems=[
                Problem(str(p), MODEL_VAR, "the model is defined in more than one file")
                for p, _ in holders
            ]
        )
    source, root = holders[0]
    return validate_data(variables[MODEL_VAR], source, inventory, variables, root)


def validate_data(
    raw: Any,
    source: Path = Path("<data>"),
    inventory: Path | None = None,
    variables: dict[str, Any] | None = None,
    root: Callable[[], yaml.Node | None] = lambda: None,
) -> LoadedModel:
    """Validate the value of the ``siporch`` variable (already read from YAML)."""
    loc8 = _Locator(source, root)
    if not isinstance(raw, dict):
        raise ModelError(problems=[loc8.problem((), "must be a mapping")])
    try:  # one pass in C over every string: the common case needs no Python walk
        text: str | None = json.dumps(raw, ensure_ascii=False, default=str)
    except (TypeError, ValueError):  # keys JSON cannot take (dates...): walk everything
        text = None
    # No control character or line break goes on, in the model's strings or in what its
    # "{{ variable }}" references bring (checked while resolving them).
    refused = refused_characters(raw) if text is None or json_may_refuse(text) else []
    unresolved: list[tuple[tuple[Any, ...], str]] = []
    has_refs = text is None or "{{" in text
    resolved = (
        _resolve_refs(raw, variables or {}, (), unresolved, refused) if has_refs else raw
    )
    problems = [loc8.problem(loc, msg) for loc, msg in refused + unresolved]
    try:
        model = Model.model_validate(resolved)
    except ValidationError as exc:
        for loc, msg in describe_errors(exc.errors(include_url=False), resolved):
            if not any(loc[: len(r)] == r for r, _ in refused):  # reported above
                problems.append(loc8.problem(loc, msg))
        raise ModelError(problems=_dedupe(problems)) from None
    if problems:
        raise ModelError(problems=problems)

    from siporch.model.checks import check_model

    found = [loc8.problem(loc, msg, sev) for loc, msg, sev in check_model(model)]
    errors = [p for p in found if p.severity == "error"]
    if errors:
        raise ModelError(problems=found)
    return LoadedModel(
        model=model,
        source=source,
        inventory=inventory if inventory is not None else source.parent,
        model_hash=model_hash(model),
        warnings=[p for p in found if p.severity == "warning"],
    )


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[str, str, str]] = set()
    out = []
    for p in problems:
        key = (p.file, p.path, p.message)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out
