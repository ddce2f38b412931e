"""Write ``inventory/lab/``: the example inventory, moved onto the lab's hosts.

* ``hosts.yml``: the example's groups and hosts with lab addresses, plus ``lab_peers``
  (the ITSP and gateway hosts) and ``lab_infra`` (the lab's DNS server), and the connection settings of the lab (root over SSH
  with the lab's own key, no host key checks: lab hosts get new keys on every start).
* ``group_vars/**``: the example's YAML with every documentation address rewritten
  (``siporch.lab.addresses``); Ansible Vault files are copied byte for byte.
* every other file of the example (a vault password file, for instance) byte for byte.
* ``lab.json``: host -> address, namespace, root path, for tests and tools.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from siporch.errors import LabError
from siporch.lab.addresses import documentation_addresses, map_address, rewrite_text
from siporch.lab.spec import BRIDGE, CONTROLLER_ADDRESS, HOSTS, LAB_NETWORK, LabPaths

HEADER = (
    "# Written by `siporch lab up` from {src}: do not edit, it is rewritten on every\n"
    "# `lab up`. Lab addresses are in 198.18.0.0/15 (RFC 2544); see docs/lab.md.\n"
)
SSH_COMMON_ARGS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
PEERS_GROUP = "lab_peers"
LAB_GROUP = "siporch_lab"
_REWRITE_SUFFIXES = (".yml", ".yaml")


def is_vault_file(data: bytes) -> bool:
    return data.lstrip().startswith(b"$ANSIBLE_VAULT;")


def _load_example_hosts(example: Path) -> dict[str, Any]:
    path = example / "hosts.yml"
    if not path.is_file():
        raise LabError(f"{path} does not exist", hint="pass the example inventory with -i")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise LabError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("all"), dict):
        raise LabError(f"{path} has no `all:` group")
    return data


def _walk_groups(group: dict[str, Any], name: str, out: dict[str, dict[str, Any]]) -> None:
    hosts = group.get("hosts") or {}
    if hosts:
        out[name] = {h: dict(v or {}) for h, v in hosts.items()}
    for child, body in (group.get("children") or {}).items():
        _walk_groups(body or {}, child, out)


def lab_hosts_document(example: Path, key: Path) -> dict[str, Any]:
    """The hosts.yml document for the lab, derived from the example's hosts.yml."""
    example_doc = _load_example_hosts(example)
    groups: dict[str, dict[str, Any]] = {}
    _walk_groups(example_doc["all"], "all", groups)
    by_name = {h.name: h for h in HOSTS}
    children: dict[str, Any] = {}
    placed: set[str] = set()
    for group, hosts in groups.items():
        members: dict[str, Any] = {}
        for name, hvars in hosts.items():
            if name not in by_name:
                raise LabError(
                    f"{example / 'hosts.yml'}: host {name!r} has no lab counterpart",
                    hint="lab hosts: " + ", ".join(by_name),
                )
            hvars = {k: (map_address(v) if isinstance(v, str) else v) for k, v in hvars.items()}
            hvars["ansible_host"] = by_name[name].address
            members[name] = hvars
            placed.add(name)
        if group == "all":
            children.setdefault("ungrouped", {"hosts": {}})["hosts"].update(members)
        else:
            children[group] = {"hosts": members}
    # Hosts the example does not place (ITSPs, the gateway, the lab's DNS) go into the
    # lab groups they name: lab_peers for peers, lab_infra for the lab's own services.
    children[PEERS_GROUP] = {"hosts": {}}
    for h in HOSTS:
        if h.name in placed:
            continue
        for group in h.groups or (PEERS_GROUP,):
            children.setdefault(group, {"hosts": {}})["hosts"][h.name] = {
                "ansible_host": h.address
            }
    return {
        "all": {
            "vars": {
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(key),
                "ansible_ssh_common_args": SSH_COMMON_ARGS,
                "ansible_python_interpreter": "/usr/bin/python3",
                # No registrar answers itsp-b in the lab unless a test starts one: the
                # deploy's health gate does not wait for outbound registrations here.
                "asterisk_pbx_health_registrations": False,
            },
            "children": children,
        }
    }


def lab_json_document(paths: LabPaths, inventory: Path) -> dict[str, Any]:
    """lab.json: one group ``siporch_lab`` holding every lab host with its
    lab facts as host variables (``lab_address``, ``lab_netns``, ``lab_root``, ...) and
    the lab's own facts as group variables. Ansible reads every ``*.json`` of an
    inventory directory as inventory, so the file is shaped as one; use
    ``read_lab_json()`` for a flat view."""
    return {
        LAB_GROUP: {
            "vars": {
                "lab_network": LAB_NETWORK,
                "lab_bridge": BRIDGE,
                "lab_controller": CONTROLLER_ADDRESS,
                "lab_ssh_key": str(paths.ssh_key),
                "lab_inventory": str(inventory.resolve()),
            },
            "hosts": {
                h.name: {
                    "lab_address": h.address,
                    "lab_addresses": list(h.addresses),
                    "lab_netns": h.netns,
                    "lab_veth": h.veth,
                    "lab_root": str(paths.host_root(h.name)),
                    "lab_groups": list(h.groups),
                    "lab_role": h.role,
                    "lab_description": h.description,
                }
                for h in HOSTS
            },
        }
    }


def read_lab_json(path: Path) -> dict[str, Any]:
    """Flat view of lab.json: ``{"network", "bridge", ..., "hosts": {name: {"address",
    "addresses", "netns", "veth", "root", "groups", "role", "description"}}}``."""
    try:
        doc = json.loads(path.read_text())[LAB_GROUP]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LabError(f"{path} is missing or not a lab.json", hint="run `siporch lab up`") from exc
    flat: dict[str, Any] = {k.removeprefix("lab_"): v for k, v in doc["vars"].items()}
    flat["hosts"] = {
        name: {k.removeprefix("lab_"): v for k, v in hvars.items()}
        for name, hvars in doc["hosts"].items()
    }
    return flat


def _copy_tree(example: Path, dest: Path) -> None:
    for src in sorted(example.rglob("*")):
        rel = src.relative_to(example)
        if rel == Path("hosts.yml") or src.is_dir():
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        data = src.read_bytes()
        in_vars = rel.parts[0] in ("group_vars", "host_vars")
        if in_vars and src.suffix in _REWRITE_SUFFIXES and not is_vault_file(data):
            text = rewrite_text(data.decode())
            left = documentation_addresses(text)
            if left:
                raise LabError(f"{src}: addresses left unmapped: {', '.join(left)}")
            target.write_text(text)
        else:
            target.write_bytes(data)
        shutil.copymode(src, target)


def write_inventory(example: Path, dest: Path, paths: LabPaths) -> Path:
    """Write the lab inventory for ``example`` into ``dest`` (replacing an earlier one)."""
    if not example.is_dir():
        raise LabError(f"example inventory {example} does not exist")
    if dest.exists() and any(dest.iterdir()) and not (dest / "lab.json").exists():
        raise LabError(
            f"{dest} exists and was not written by the lab; refusing to overwrite it",
            hint="move it away or pass another --out",
        )
    tmp = dest.with_name(f".{dest.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    hosts_doc = lab_hosts_document(example, paths.ssh_key)
    header = HEADER.format(src=example)
    (tmp / "hosts.yml").write_text(header + yaml.safe_dump(hosts_doc, sort_keys=False))
    _copy_tree(example, tmp)
    (tmp / "lab.json").write_text(json.dumps(lab_json_document(paths, dest), indent=2) + "\n")
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return dest
