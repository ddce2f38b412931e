"""Generated trunk models for benchmarks and scale tests.

``generate(n)`` returns the model as plain data, the value of the ``siporch:`` variable in
``group_vars/all/siporch.yml`` (so ``Model.model_validate(generate(n))`` validates it), and
``write_inventory(path, n)`` writes a whole inventory directory with it.

Shape: a central and a branch site, one edge per site and a PBX at the central site;
``n_trunks`` IP-authenticated trunks (every tenth one at the branch), two peers each in
198.19.128.0/17 (then 100.64.0.0/10 beyond 16,383 trunks; addresses never contacted: data only), ``dids_per_trunk`` DID ranges of
100 numbers per trunk, and one outbound route per ten trunks plus emergency, national and
international routes.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import yaml

_PEER_NET = ipaddress.ip_network("198.19.128.0/17")
# Beyond 16,383 trunks (100,000 for the scale benchmark): shared address space, data only.
_MORE_PEERS = ipaddress.ip_network("100.64.0.0/10")


def _peer_address(n: int) -> str:
    """The ``n``-th peer address: 198.19.128.1 onwards, then 100.64.0.1 onwards."""
    first = _PEER_NET.num_addresses - 2
    if n < first:
        return str(ipaddress.ip_address(int(_PEER_NET.network_address) + 1 + n))
    return str(ipaddress.ip_address(int(_MORE_PEERS.network_address) + 1 + n - first))


def _normalization(area: str) -> list[dict[str, str]]:
    return [
        {"name": "emergency", "match": r"^(911|112)$", "replace": "911"},
        {"name": "international", "match": r"^011(\d{7,15})$", "replace": r"+\1"},
        {"name": "national-with-1", "match": r"^1([2-9]\d{9})$", "replace": r"+1\1"},
        {"name": "national", "match": r"^([2-9]\d{9})$", "replace": r"+1\1"},
        {"name": "local-7-digit", "match": r"^([2-9]\d{6})$", "replace": rf"+1{area}\1"},
        {"name": "e164", "match": r"^\+(\d{7,15})$", "replace": r"+\1"},
    ]


def trunk_name(i: int) -> str:
    return f"trunk-{i:05d}"


def generate(n_trunks: int, dids_per_trunk: int = 10) -> dict[str, Any]:
    """A valid model with ``n_trunks`` trunks and ``dids_per_trunk`` DID ranges each."""
    if n_trunks < 2:
        raise ValueError("n_trunks must be at least 2")
    if 2 * n_trunks > _PEER_NET.num_addresses - 2 + _MORE_PEERS.num_addresses - 2:
        raise ValueError("too many trunks for the peer address blocks")
    trunks: dict[str, Any] = {}
    inbound: list[dict[str, Any]] = []
    for i in range(n_trunks):
        name = trunk_name(i)
        site = "branch" if i % 10 == 9 else "central"
        peers = [
            {
                "address": _peer_address(2 * i + k),
                "port": 5060,
                "transport": "udp",
                "priority": k + 1,
            }
            for k in range(2)
        ]
        trunks[name] = {
            "description": f"generated trunk {i}",
            "site": site,
            "kind": "itsp",
            "peers": peers,
            "auth": {"type": "ip"},
            "codecs": ["pcmu", "pcma"],
            "media": (
                {"mode": "anchor"}
                if i % 2 == 0
                else {"mode": "bypass", "allow_internal_addresses": True}
            ),
            "max_channels": 30 + i % 70,
            "probe": {"interval": 30, "threshold": 3},
            "translation": {
                "outbound": [{"name": "strip-plus", "match": r"^\+(\d+)$", "replace": r"\1"}],
                "inbound": [{"name": "national", "match": r"^1?([2-9]\d{9})$", "replace": r"+1\1"}],
            },
        }
        for j in range(dids_per_trunk):
            k = i * dids_per_trunk + j
            start = 2_000_000_000 + k * 100
            inbound.append(
                {
                    "name": f"did-{i:05d}-{j:02d}",
                    "range": {"start": f"+1{start}", "end": f"+1{start + 99}"},
                    "destination": {"host": "pbx-central", "context": "from-trunk"},
                }
            )
    names = list(trunks)
    central = [n for n in names if trunks[n]["site"] == "central"]
    branch = [n for n in names if trunks[n]["site"] == "branch"] or central[:1]
    routes: list[dict[str, Any]] = [
        {"name": "emergency", "pattern": r"^911$", "trunks": central[:2]},
    ]
    for r in range(max(1, n_trunks // 10)):
        first = names[(10 * r) % n_trunks]
        second = names[(10 * r + 1) % n_trunks]
        routes.append(
            {
                "name": f"prefix-{r:05d}",
                "pattern": rf"^\+44{r:05d}\d{{5}}$",
                "trunks": [first, second],
            }
        )
    routes += [
        {
            "name": "branch-national",
            "sites": ["branch"],
            "pattern": r"^\+1[2-9]\d{9}$",
            "exceptions": [r"^\+1900\d{7}$"],
            "trunks": [branch[0], central[0]],
        },
        {
            "name": "national",
            "pattern": r"^\+1[2-9]\d{9}$",
            "exceptions": [r"^\+1900\d{7}$", r"^\+1976\d{7}$"],
            "trunks": central[:2],
        },
        {
            "name": "international",
            "pattern": r"^\+[2-9]\d{6,14}$",
            "strategy": "weighted",
            "weights": {central[0]: 70, central[1]: 30},
            "trunks": central[:2],
        },
    ]
    return {
        "version": 1,
        "organisation": "Generated Corp",
        "domain": "example.com",
        "sites": {
            "central": {
                "kind": "central",
                "normalization": _normalization("202"),
            },
            "branch": {
                "kind": "branch",
                "backup_site": "central",
                "normalization": _normalization("206"),
            },
        },
        "hosts": {
            "edge-central": {
                "site": "central",
                "role": "edge",
                "address": "198.18.0.10",
                "transports": [{"protocol": "udp", "port": 5060}],
                "kamailio": {"shm_mb": 1024, "pkg_mb": 32, "children": 8},
            },
            "edge-branch": {
                "site": "branch",
                "role": "edge",
                "address": "198.18.0.11",
                "transports": [{"protocol": "udp", "port": 5060}],
            },
            "pbx-central": {
                "site": "central",
                "role": "pbx",
                "address": "198.18.0.20",
                "ami": {"user": "siporch", "secret": "generated", "permit": ["198.18.0.0/24"]},
            },
        },
        "trunks": trunks,
        "inbound": inbound,
        "routes": routes,
        "security": {
            "flood": {"density": 30, "sampling_time": 2, "block_seconds": 300},
            "blocked_user_agents": ["friendly-scanner", "sipvicious", "sipcli"],
        },
    }


def write_inventory(path: Path, n_trunks: int, dids_per_trunk: int = 10) -> Path:
    """Write ``path/hosts.yml`` and ``path/group_vars/all/siporch.yml``; returns ``path``."""
    model = generate(n_trunks, dids_per_trunk)
    gv = path / "group_vars" / "all"
    gv.mkdir(parents=True, exist_ok=True)
    (gv / "siporch.yml").write_text(yaml.safe_dump({"siporch": model}, sort_keys=False))
    hosts = {
        "all": {
            "children": {
                "siporch_edge": {"hosts": {"edge-central": None, "edge-branch": None}},
                "siporch_pbx": {"hosts": {"pbx-central": None}},
            }
        }
    }
    (path / "hosts.yml").write_text(yaml.safe_dump(hosts, sort_keys=False))
    return path
