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

The model is the value of the Ansible variable `siporch` for the group `all`, usually in
`inventory/<env>/group_vars/all/siporch.yml` (or `group_vars/all.yml`). siporch reads the
inventory with ansible-core itself (`InventoryManager`, `VariableManager`, `DataLoader`,
`Templar`), so the model means exactly what Ansible's playbooks see:

* **Inventory sources**: `-i` takes a directory, a file (`hosts.yml`, `hosts.ini`, any
  format an enabled inventory plugin reads), and for `validate`, `render` and `route`
  several `-i`, combined as by `ansible-playbook`. `group_vars/` and `host_vars/` next to
  each source are read as Ansible reads them: a file (`group_vars/all.yml`) or a directory
  (`group_vars/all/*.yml`). When both exist, Ansible reads only the directory and ignores
  the file; siporch does the same and warns about the ignored file.
* **YAML 1.1**, as Ansible reads it: a bare `off`, `no`, `yes`, `on` is a boolean
  (`srtp: off` is accepted for `srtp: "off"`), `0755` is the octal number 493, `1:30` is
  90, `2026-12-05` a date; merge keys (`<<: *anchor`) work, and a key the mapping sets
  again after a merge overrides the merged one. A key written twice in the same mapping is
  an error (Ansible only warns and keeps the later value).
* **Templates**: any string of the model may be a Jinja template, rendered by Ansible's
  Templar with the variables of the group `all` plus `hostvars` and `groups`:
  `"{{ vault_ami_secret }}"`, `"{{ base_port | int + 1 }}"`,
  `"{{ hostvars['edge-central'].ansible_host }}"`. Variables that exist only for one host
  (its `host_vars`, `inventory_hostname`) are not defined there: the model is one for all
  hosts. A string tagged `!unsafe` is never templated.
* **Secrets** live in Ansible Vault: a whole-file encrypted `group_vars/all/vault.yml`
  whose variables the model names as `"{{ vault_name }}"`, or inline `!vault` values. The
  vault password file is taken from `--vault-password-file`,
  `ANSIBLE_VAULT_PASSWORD_FILE`, or `.vault-pass` next to the inventory or in its parent
  (the example's is a demo password: use your own); an executable file is a script that
  prints the password, as for Ansible. It is only opened when something is encrypted.
* **One model**: it must be defined for the group `all`. A `siporch` set again in
  `host_vars` or in another group's `group_vars` is an error naming that file and line
  (every host must render from the same model).

## The model's hosts and the inventory's hosts

Each host of the model (`hosts:`) must be an inventory host of its role's group:
`siporch_edge` for `role: edge`, `siporch_pbx` for `role: pbx`; other names are set with
the inventory variable `siporch_host_groups: {edge: <group>, pbx: <group>}` (group `all`).
These are errors, each with the model's file and line and the inventory source:

* a model host missing from the inventory, or not in its role's group;
* an inventory host of one of these groups that the model does not have (a deploy would
  find nothing to install on it);
* an `ansible_host` (after templating, from the inventory file or `host_vars`) that is an
  IP address other than the host's `address` or `public_address`. Ansible would configure
  one machine with another machine's SIP configuration. When the hosts are reached over a
  separate management network, say so on the host: `siporch_management_address: <ip>`
  equal to its `ansible_host`. An `ansible_host` that is a DNS name is not compared (siporch
  does not resolve names).

Check it with `siporch validate -i inventory/<env>`: every problem in one run, each with
its file, line and field path (`trunks.itsp-a.peers[1].port`), what is wrong and what is
allowed; exit code 2 and nothing touched when there is an error. Positions come from the
origin ansible-core records on every value it reads (file, line, column); a value a
template brought in is reported at the line of the template. A file that cannot be read
(YAML syntax, a vault that does not decrypt, an inventory no plugin can parse) stops the
run at the first such file; duplicate keys are all reported. Editors can check the YAML
with the JSON Schema from `siporch schema`.

Checks beyond the types: unknown references (route -> trunk, DID -> host, group or trunk,
PBX group -> PBX hosts, trunk and host -> site, backup site), duplicate names and YAML
keys, overlapping DID ranges, regular expressions that do not compile or refer to missing
groups, a source address claimed by two trunks (or by one of our own hosts), TLS listeners
without certificates, TLS peers with no TLS listener on the edge, registration without a
password, a trunk at a site with no edge; warnings for a branch site with no backup route
(no route of the site uses another site's trunk), a PBX without AMI, SRTP without TLS.

## Characters refused in every field

No string of the model (keys, values and secrets, including what a template such as
`"{{ vault_name }}"` brings in) may hold a control character: line breaks (`\\n`, `\\r`, U+0085,
U+2028, U+2029), tabs, NUL, escape and the other C0 and C1 controls, or DEL. `validate`
refuses them with the file, line and field (`trunks.itsp-a.description: contains a line
break (\\n) at character 7: ...`), without showing the value (it may be a secret).

Why: every file siporch renders is line-based (Kamailio's `kamailio.cfg` and db_text
tables, Asterisk's `pjsip.conf` and friends, `rtpengine.conf`). A line break in any text,
even a free-text `description` that ends up as a comment, would let whoever can change the
model write a configuration line of their own: in `pjsip.conf`, a `[section]` with
`type = endpoint` and no authentication, an open door for toll fraud. No field needs such a
character, so the rule has no exceptions. The renderer checks every value it writes once
more and stops on one (this cannot happen for a model that passed `validate`). Printable
Unicode (accents, non-Latin scripts) is accepted where the field's own rules allow it.

Undecodable bytes (a file not saved as UTF-8) are reported with the file and line; a
missing, empty, unreadable or directory vault password file, or a password script that
fails or prints nothing, is reported with that file's name. All of these exit with code 2.

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
* **PBX groups** (`pbx_groups`): a DID's `destination` is one PBX `host`, or a `group` of
  PBX hosts that all render the same dialplan for it (its `context` on every member).
  `strategy: failover` sends each call to the first member that is up, in `hosts` order;
  `round-robin` spreads calls over the members that are up. Either way the edge goes on
  to the next member when one does not answer (no response within 4 s: tm's own 408),
  answers 408 or 5xx, or cannot be sent to; a member that did not answer is skipped until
  it answers the edge's OPTIONS probes again (the site's trunks' `probe` interval and
  threshold; no probe answer for `threshold` probes takes it out too). The single-host
  form (`destination: {host: pbx-central, context: ...}`) stays valid:

  ```yaml
  pbx_groups:
    central-pbx: {hosts: [pbx-central, pbx-central-2], strategy: failover}
  inbound:
    - {name: hq-main, range: {start: '+12025550100', end: '+12025550199'},
       destination: {group: central-pbx, context: from-trunk}}
  ```

  A `register` trunk is registered by one PBX only, the first by name of its site (two
  registrations of one account would have the provider fork each call to both). At a
  site whose edges are `active-active`, that PBX registers it once through each edge
  (`auth.contacts: per-edge`, the default): the provider holds one binding per edge, each
  edge's own address as the contact, and while one edge is down the other's binding still
  takes the provider's calls; `auth.contacts: one` registers through the first edge only,
  for a provider that keeps one binding per account (docs/architecture.md, "Redundancy").
* **Providers by name**: a peer `address` may be a host name. The edge resolves it at call
  time, never siporch at render time: a bare domain as RFC 3263 says (NAPTR, SRV by
  priority and weight, A/AAAA; the next SRV target when one does not answer), a name with
  `port` by A/AAAA only; a changed DNS answer is used within 30 s without a deploy. Calls
  from such a provider are trusted from `inbound_addresses` / `security.allowed_sources`
  (addresses or CIDR networks, e.g. its published signalling blocks) and, with
  `inbound_trust_resolved: true`, from the addresses the edge resolves for its peer names
  (warning: an `itsp` trunk whose peers are all names and that has neither gets 403 for
  every call it sends; not for a second, send-only account at a provider whose peer name
  another trunk of the site has with its blocks: the provider's calls come in as that
  trunk, since one source names one trunk). A `register` trunk registers by the name too
  (its registrar, `auth.registrar` or the first peer, through the edge, which resolves it
  the same way; the registrar's challenge is answered by the PBX's registration); the
  provider's calls to the registered contact are trusted the same way, so give its
  signalling blocks in `inbound_addresses` (`inbound_trust_resolved` trusts one resolved
  address per name, not all of its servers). Over TLS the certificate must list the peer's name. `media.mode:
  bypass` on an `itsp` trunk sends internal media addresses to the provider: an error while
  `security.topology_hiding` is on, unless `media.allow_internal_addresses: true`.

`siporch route NUMBER [--site S] [--trunk TRUNK]` shows every step for one number.

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
