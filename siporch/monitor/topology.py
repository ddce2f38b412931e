"""What `siporch status` looks at, taken from the trunk model.

The monitor works on this small, plain description rather than on the pydantic model, so
the call-state handler and the reporters can be driven from recorded data in tests.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: PJSIP endpoint prefix of the outbound path from a PBX to its site's edge.
EDGE_ENDPOINT_PREFIX = "siporch-edge-"
#: Channel variable the dialplan sets to the trunk that carries the call.
TRUNK_VARIABLE = "SIPORCH_TRUNK"
#: Where the Kamailio JSON-RPC (jsonrpcs over xhttp) of an edge is reached, by default.
DEFAULT_KAMAILIO_RPC = "http://{address}:5071/RPC"
#: Where the rtpengine ng control socket of an edge is reached, by default.
#: "ssh": ask rtpengine on 127.0.0.1:<ng_port> of the edge through SSH (its ng protocol has
#: no authentication, so it never listens beyond loopback); or an "ADDR:PORT" template.
DEFAULT_RTPENGINE_NG = "ssh"


@dataclass(frozen=True)
class PeerInfo:
    address: str
    port: int
    transport: str = "udp"


@dataclass(frozen=True)
class TrunkInfo:
    name: str
    site: str
    kind: str = "itsp"
    auth: str = "ip"  # "ip" | "register"
    max_channels: int | None = None
    peers: tuple[PeerInfo, ...] = ()
    set_id: int | None = None  # dispatcher set / numeric trunk id


@dataclass(frozen=True)
class PbxTarget:
    name: str
    site: str
    address: str
    port: int
    user: str
    secret: str = field(repr=False)


@dataclass(frozen=True)
class EdgePair:
    """The redundancy of an edge's site (`sites.<site>.edges`)."""

    mode: str
    hosts: tuple[str, ...]
    vip: str | None
    redis: tuple[str, int] | None


@dataclass(frozen=True)
class EdgeTarget:
    name: str
    site: str
    address: str
    ng_port: int
    kamailio_rpc: str  # URL
    rtpengine_ng: tuple[str, int]
    pair: EdgePair | None = None


@dataclass(frozen=True)
class Topology:
    sites: tuple[str, ...]
    trunks: dict[str, TrunkInfo]
    pbxs: tuple[PbxTarget, ...]
    edges: tuple[EdgeTarget, ...]
    ssh: dict[str, dict[str, str]] = field(default_factory=dict)  # host -> ansible vars

    def trunk_by_peer(self, address: str) -> TrunkInfo | None:
        for trunk in self.trunks.values():
            for peer in trunk.peers:
                if peer.address == address:
                    return trunk
        return None


def _pair(model: Any, name: str) -> EdgePair | None:
    pair = model.edge_pair(name)
    if pair is None:
        return None
    return EdgePair(
        mode=pair.mode,
        hosts=tuple(pair.hosts),
        vip=str(pair.vip) if pair.vip is not None else None,
        redis=(str(pair.redis.address), pair.redis.port) if pair.redis is not None else None,
    )


def _hostport(template: str, address: str, ng_port: int) -> tuple[str, int]:
    if template == "ssh":
        return "ssh", ng_port
    text = template.format(address=address, ng_port=ng_port)
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def _trunk_ids(model: Any) -> dict[str, int]:
    try:
        from siporch.model.numbering import trunk_ids
    except ImportError:  # numbering not available: explicit ids, then name order
        ids: dict[str, int] = {}
        used = {t.id for t in model.trunks.values() if t.id}
        n = 1
        for name in sorted(model.trunks):
            if model.trunks[name].id:
                ids[name] = model.trunks[name].id
                continue
            while n in used:
                n += 1
            ids[name] = n
            used.add(n)
        return ids
    result: dict[str, int] = trunk_ids(model)
    return result


def from_model(
    model: Any,
    *,
    kamailio_rpc: str = DEFAULT_KAMAILIO_RPC,
    rtpengine_ng: str = DEFAULT_RTPENGINE_NG,
    hosts_filter: set[str] | None = None,
) -> Topology:
    """Build the monitor's view of a validated `siporch.model.schema.Model`."""
    ids = _trunk_ids(model)
    trunks: dict[str, TrunkInfo] = {}
    for name, t in model.trunks.items():
        trunks[name] = TrunkInfo(
            name=name,
            site=t.site,
            kind=t.kind,
            auth=t.auth.type,
            max_channels=t.max_channels,
            peers=tuple(PeerInfo(str(p.address), p.effective_port, p.transport) for p in t.peers),
            set_id=ids.get(name),
        )
    pbxs: list[PbxTarget] = []
    edges: list[EdgeTarget] = []
    for name, h in model.hosts.items():
        if hosts_filter and name not in hosts_filter:
            continue
        if h.role == "pbx" and h.ami is not None:
            bind = h.ami.bind
            address = str(h.address)
            if bind is not None and not ipaddress.ip_address(bind).is_unspecified:
                address = str(bind)
            pbxs.append(
                PbxTarget(
                    name=name,
                    site=h.site,
                    address=address,
                    port=h.ami.port,
                    user=h.ami.user,
                    secret=h.ami.secret.get_secret_value(),
                )
            )
        elif h.role == "edge":
            address = str(h.address)
            edges.append(
                EdgeTarget(
                    name=name,
                    site=h.site,
                    address=address,
                    ng_port=h.rtpengine.ng_port,
                    kamailio_rpc=kamailio_rpc.format(address=address, name=name),
                    rtpengine_ng=_hostport(rtpengine_ng, address, h.rtpengine.ng_port),
                    pair=_pair(model, name),
                )
            )
    return Topology(
        sites=tuple(model.sites),
        trunks=trunks,
        pbxs=tuple(pbxs),
        edges=tuple(edges),
    )


def from_inventory(
    inventory: Any,
    vault_password_file: Any = None,
    *,
    hosts: Sequence[str] = (),
    limit: str | None = None,
    kamailio_rpc: str = DEFAULT_KAMAILIO_RPC,
    rtpengine_ng: str = DEFAULT_RTPENGINE_NG,
) -> Topology:
    """The monitor's view of an inventory's model: only the named ``hosts`` (an unknown
    name is an error) and those the Ansible host pattern ``limit`` selects."""
    from siporch.errors import MonitorError
    from siporch.hosts import select
    from siporch.model import load_model

    model = load_model(inventory, vault_password_file).model
    unknown = [h for h in hosts if h not in model.hosts]
    if unknown:
        raise MonitorError(
            f"unknown host(s): {', '.join(unknown)}",
            hint=f"hosts in the model: {', '.join(model.hosts)}",
        )
    chosen: set[str] | None = set(hosts) or None
    if limit:
        chosen = set(select(inventory, limit, [h for h in model.hosts if not hosts or h in hosts]))
    topology = from_model(
        model, kamailio_rpc=kamailio_rpc, rtpengine_ng=rtpengine_ng, hosts_filter=chosen
    )
    if not topology.pbxs and not topology.edges:
        raise MonitorError("the model has no PBX host with `ami` and no edge host to look at")
    return topology
