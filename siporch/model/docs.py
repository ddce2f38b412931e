"""Builds docs/model.md from the model's own field descriptions.

    python -m siporch.model.docs > docs/model.md

A unit test checks the committed file is current, so the reference never drifts.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic_core import PydanticUndefined

from siporch.model import schema

INTRO = """\
# The trunk model

The model is the value of the Ansible variable `siporch`, in
`inventory/<env>/group_vars/all/siporch.yml`. Ansible sees it like any other variable;
siporch reads, checks and renders it. Secrets live in Ansible Vault: either a whole-file
encrypted `group_vars/all/vault.yml` whose variables the model names as
`"{{ vault_name }}"`, or inline `!vault` values. The vault password file is taken from
`--vault-password-file`, `ANSIBLE_VAULT_PASSWORD_FILE`, or `.vault-pass` next to the
inventory (the example's is a demo password: use your own).

Check it with `siporch validate -i inventory/<env>`: every problem in one run, each with
its file, line and field path (`trunks.itsp-a.peers[1].port`), what is wrong and what is
allowed; exit code 2 and nothing touched when there is an error. Editors can check the YAML
with the JSON Schema from `siporch schema`.

Checks beyond the types: unknown references (route -> trunk, DID -> host or trunk, trunk
and host -> site, backup site), duplicate names and YAML keys, overlapping DID ranges,
regular expressions that do not compile or refer to missing groups, a source address
claimed by two trunks (or by one of our own hosts), TLS listeners without certificates,
TLS peers with no TLS listener on the edge, registration without a password, a trunk at a
site with no edge; warnings for a branch site with no backup route (no route of the site
uses another site's trunk), a PBX without AMI, SRTP without TLS.

## Semantics

* **Number rules** (`sites.*.normalization`, `trunks.*.translation.*`): tried in order, the
  first whose `match` matches the *whole* number wins; `replace` may use `\\1`..`\\9`.
  No match leaves the number as it is.
* **Outbound**: a call from a PBX is normalized with its site's rules, then the first route
  (in file order) whose `sites` include the site (empty: all), whose `pattern` matches and
  none of whose `exceptions` match, is taken. Its `trunks` are tried in order (`failover`)
  or spread by `weights` (`weighted`); each trunk's peers by `priority` (lower first),
  equal priorities by `weight`. The number sent is translated by the trunk's `outbound`
  rules, then a leading `+` is removed if `strip_plus`. A trunk of another site is reached
  through that site's edge. The next trunk is tried on the responses in `failover_on`
  (`5xx`, `6xx`, `timeout`, `unreachable`, `capacity`, or a code such as `486`); any other
  4xx goes back to the caller.
* **Inbound**: the source address identifies the trunk (`security.allowed_sources`, or its
  peers and `inbound_addresses`); the called number is translated by the trunk's `inbound`
  rules; the first `inbound` entry whose range or pattern matches decides the destination.
  Unknown sources get 403; unknown numbers 404.
* **Providers by name**: a peer `address` may be a host name. The edge resolves it at call
  time, never siporch at render time: a bare domain as RFC 3263 says (NAPTR, SRV by
  priority and weight, A/AAAA; the next SRV target when one does not answer), a name with
  `port` by A/AAAA only; a changed DNS answer is used within 30 s without a deploy. Calls
  from such a provider are trusted from `inbound_addresses` / `security.allowed_sources`
  (addresses or CIDR networks, e.g. its published signalling blocks) and, with
  `inbound_trust_resolved: true`, from the addresses the edge resolves for its peer names
  (warning: an `itsp` trunk whose peers are all names and that has neither gets 403 for
  every call it sends). Over TLS the certificate must list the peer's name. `media.mode:
  bypass` on an `itsp` trunk sends internal media addresses to the provider: an error while
  `security.topology_hiding` is on, unless `media.allow_internal_addresses: true`.

`siporch route NUMBER [--site S] [--from TRUNK]` shows every step for one number.

## Reference
"""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        names = {getattr(a, "__name__", "") for a in args}
        opt = " (optional)" if type(None) in args else ""
        if {"IPv4Address", "IPv6Address", "str"} <= names:
            return "IP address or host name" + opt
        if {"IPv4Address", "IPv6Address"} <= names:
            return "IP address" + opt
        if {"IPv4Network", "IPv6Network"} <= names:
            return "IP network (CIDR)" + opt
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + (
            " (optional)" if type(None) in args else ""
        )
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"map of name -> {_type_name(args[1])}"
    if inspect.isclass(tp) and issubclass(tp, BaseModel):
        return f"[{tp.__name__}](#{tp.__name__.lower()})"
    if tp is SecretStr:
        return "secret string"
    return {"str": "string", "int": "integer", "bool": "boolean"}.get(
        getattr(tp, "__name__", ""), getattr(tp, "__name__", str(tp))
    )


def _default(field: Any) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return "(defaults)"
        return f"`{value}`" if value not in ([], {}) else "empty"
    if field.default is PydanticUndefined or field.default is None:
        return "unset"
    return f"`{field.default}`"


def _classes() -> list[type[BaseModel]]:
    seen: list[type[BaseModel]] = []

    def visit(cls: type[BaseModel]) -> None:
        if cls in seen:
            return
        seen.append(cls)
        for f in cls.model_fields.values():
            stack = [f.annotation]
            while stack:
                tp = stack.pop()
                if inspect.isclass(tp) and issubclass(tp, BaseModel):
                    visit(tp)
                stack.extend(typing.get_args(tp))

    visit(schema.Model)
    return seen


def render() -> str:
    out = [INTRO]
    for cls in _classes():
        out.append(f"\n### {cls.__name__}\n")
        doc = inspect.cleandoc(cls.__doc__ or "")
        out.append(doc + "\n")
        out.append("\n| field | type | default | meaning |\n|---|---|---|---|\n")
        for name, f in cls.model_fields.items():
            desc = (f.description or "").replace("|", "\\|")
            extra = []
            for m in f.metadata:
                for attr, sym in (("ge", ">="), ("le", "<="), ("min_length", "min items")):
                    v = getattr(m, attr, None)
                    if v is not None:
                        extra.append(f"{sym} {v}")
            if extra:
                desc = (desc + "; " if desc else "") + ", ".join(extra)
            out.append(f"| `{name}` | {_type_name(f.annotation)} | {_default(f)} | {desc} |\n")
    return "".join(out)


if __name__ == "__main__":
    print(render(), end="")
