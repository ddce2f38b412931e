"""Kamailio edge renderer: model -> ``kamailio/`` tree of one edge host.

``kamailio.cfg`` is the same for every edge and every model: the routing logic only.
``host.cfg`` holds what differs per host (listeners, TLS, rtpengine socket, flood limits,
data paths). Everything per trunk, route and DID goes to db_text tables under ``db/``
that Kamailio reloads over RPC. docs/kamailio.md documents the tables.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from siporch.errors import SiporchError
from siporch.model.numbering import trunk_ids
from siporch.model.schema import (
    DEFAULT_FAILOVER_ON,
    Host,
    Model,
    NumberRule,
    Peer,
    Probe,
    RegisterAuth,
    Route,
    Trunk,
)
from siporch.numbers import digit_blocks
from siporch.records import RECORDS_DB, RECORDS_DIR, SCHEMA, SCHEMA_PG
from siporch.render import files as file_meta
from siporch.render import model_part_json, shared_text, stored_text
from siporch.render.env import environment

#: Where the deployed tree lives on an edge host (through the ``current`` symlink).
DEFAULT_ROOT = "/etc/siporch/current"
#: Where Kamailio's RPC sockets go.
DEFAULT_RUN_DIR = "/run/kamailio"

#: Changed file -> reload action (first match wins).
RELOADS: list[tuple[str, str]] = file_meta.RELOADS["kamailio"]

#: Dispatcher algorithms of a DID's PBX set (htable dids ``<i>.alg``): the first member
#: that is up (by priority), or round-robin over the members that are up.
DS_ALG_FAILOVER = 8
DS_ALG_ROUND_ROBIN = 4
DS_ALGORITHMS = {"failover": DS_ALG_FAILOVER, "round-robin": DS_ALG_ROUND_ROBIN}

# Numbering shared with kamailio.cfg. kamailio.cfg holds none of these numbers, only the
# names CFG_DEFINES gives them in host.cfg.
GROUP_LOCAL_PBX = 1_000_001  #: permissions group of this site's PBX hosts
GROUP_EDGE = 1_000_002  #: permissions group of the other edge hosts
GROUP_OTHER_PBX = 1_000_003  #: PBX hosts of other sites (in-dialog requests only)
GROUP_MANAGEMENT = 1_000_009  #: who may use JSON-RPC over HTTP: loopback + AMI permit networks
RPC_HTTP_PORT = 5071  #: JSON-RPC over HTTP: http://<edge address>:5071/RPC
SET_HOST_BASE = 1_000_000  #: dispatcher set of a PBX host: base + position in sorted host names
SET_SITE_EDGES_BASE = 2_000_000  #: dispatcher set of a site's edges: base + position of the site
SET_PBX_GROUP_BASE = 3_000_000  #: dispatcher set of a PBX group: base + position in sorted names
DP_NORMALIZE = 1
DP_ROUTES = 2
DP_DID_PATTERNS = 3
DP_TRUNK_IN_BASE = 1_000_000
DP_TRUNK_OUT_BASE = 2_000_000
DP_TRUNK_CALLING_BASE = 3_000_000  #: + trunk id: calling-number translation toward the trunk
#: A trunk's id is also its permissions group and its dispatcher set: every group and set
#: above this one is a host's or a site's.
MAX_TRUNK_ID = 999_999


#: Answers to the dispatcher's OPTIONS probes that mean "up": any 2xx, 3xx or 4xx (a peer
#: that refuses OPTIONS still answers) except 408. A probe nobody answers ends with tm's
#: own 408 after fr_timer, which the dispatcher cannot tell from a received one:
#: ``class=4`` made a dead peer "up" again at every probe that timed out (a dead PBX was
#: tried, and waited out, again). 5xx and 6xx mean down, as for route PROBE_TICK.
PROBE_UP_CODES = "class=2;class=3;" + ";".join(f"code={c}" for c in range(400, 500) if c != 408)


def _failover_list(conditions: Iterable[str]) -> str:
    """Failover conditions as kamailio.cfg tests them: ``in_list(x, fo, ",")``."""
    return "," + ",".join(conditions) + ","


#: The ``#!define``s host.cfg gives kamailio.cfg (name -> number). A name ending in ``_S`` is
#: the number as a quoted string, for function arguments: Kamailio's preprocessor replaces
#: names, never text inside quotes. kamailio.cfg uses every one of them and no number of
#: its own (tests/unit/test_render_kamailio.py).
CFG_DEFINES: dict[str, int | str] = {
    "GROUP_LOCAL_PBX": GROUP_LOCAL_PBX,
    "GROUP_EDGE": GROUP_EDGE,
    "GROUP_EDGE_S": GROUP_EDGE,
    "GROUP_OTHER_PBX": GROUP_OTHER_PBX,
    "GROUP_MANAGEMENT_S": GROUP_MANAGEMENT,
    "RPC_HTTP_PORT": RPC_HTTP_PORT,
    "DP_NORMALIZE_S": DP_NORMALIZE,
    "DP_ROUTES_S": DP_ROUTES,
    "DP_DID_PATTERNS_S": DP_DID_PATTERNS,
    "DP_TRUNK_IN_BASE": DP_TRUNK_IN_BASE,
    "DP_TRUNK_OUT_BASE": DP_TRUNK_OUT_BASE,
    "DP_TRUNK_CALLING_BASE": DP_TRUNK_CALLING_BASE,
    "MAX_TRUNK_ID": MAX_TRUNK_ID,
    # the failover conditions of a call without a route ($avp(fo), as routes' ``fo`` keys)
    "FAILOVER_DEFAULT": _failover_list(DEFAULT_FAILOVER_ON),
    # the dispatcher's probe answers that mean "up" (ds_ping_reply_codes)
    "PROBE_UP_CODES": PROBE_UP_CODES,
}


def cfg_defines() -> list[str]:
    """The ``#!define`` lines of :data:`CFG_DEFINES` (text and ``_S`` names quoted)."""
    return [
        f'#!define {name} "{value}"'
        if isinstance(value, str) or name.endswith("_S")
        else f"#!define {name} {value}"
        for name, value in CFG_DEFINES.items()
    ]


TABLE_VERSIONS = {
    "address": 6,
    "dialplan": 2,
    "dispatcher": 4,
    "dids": 2,
    "routes": 2,
    "security": 2,
    "trunks": 2,
    "credentials": 2,
}

#: Files that carry secrets: deployed with mode 0640 (group kamailio), never shown in diffs.
SECRET_FILES: list[str] = file_meta.SECRET_FILES["kamailio"]

_HEADERS = {
    "address": "id(int,auto) grp(int) ip_addr(string) mask(int) port(int) tag(string,null)",
    "dialplan": (
        "id(int,auto) dpid(int) pr(int) match_op(int) match_exp(string) match_len(int) "
        "subst_exp(string) repl_exp(string) attrs(string)"
    ),
    "dispatcher": (
        "id(int,auto) setid(int) destination(string) flags(int) priority(int) "
        "attrs(string) description(string)"
    ),
    "htable": (
        "id(int,auto) key_name(string) key_type(int) value_type(int) key_value(string) expires(int)"
    ),
    "version": "id(int,auto) table_name(string) table_version(int)",
}

_RTP_BASE = "replace-origin replace-session-connection ICE=remove"
_SRTP_TOWARD_TRUNK = {
    "off": "RTP/AVP",
    "optional": "RTP/AVP OSRTP-offer",
    "required": "RTP/SAVP",
}
_REPLACE_OK = re.compile(r"^(?:[^\\$\x00-\x1f]|\\[0-9])+$")


class KamailioRenderError(SiporchError):
    """The model cannot be expressed in the edge's data tables."""


Row = Sequence[object]


def render(
    model: Model,
    host: str,
    *,
    root: str = DEFAULT_ROOT,
    run_dir: str = DEFAULT_RUN_DIR,
    records_dir: str = RECORDS_DIR,
) -> dict[str, str]:
    """The ``kamailio/`` tree of edge ``host``. ``root`` is where the tree is read from on
    the host (tests point it at a temporary directory); ``run_dir`` holds the RPC sockets;
    ``records_dir`` the call records (outside every release)."""
    if host not in model.hosts:
        raise KamailioRenderError(f"unknown host '{host}'")
    h = model.hosts[host]
    if h.role != "edge":
        raise KamailioRenderError(f"host '{host}' has role '{h.role}', not 'edge'")
    data = _EdgeData(model, host)
    env = environment()
    files: dict[str, str] = {}

    def db(name: str, header: str, rows: Iterable[Row]) -> None:
        lines = [header]
        lines.extend(f"{i}:{':'.join(map(_cell, row))}" for i, row in enumerate(rows, 1))
        lines.append("")
        files[f"kamailio/db/{name}"] = "\n".join(lines)

    db("address", _HEADERS["address"], data.address_rows())
    db("dispatcher", _HEADERS["dispatcher"], data.dispatcher_rows())
    db("dialplan", _HEADERS["dialplan"], data.dialplan_rows())
    for name, items in (
        ("trunks", data.trunk_items()),
        ("routes", data.route_items()),
        ("security", data.security_items()),
    ):
        files[f"kamailio/db/{name}"] = _htable_text(items)
    files["kamailio/db/credentials"] = _htable_text(data.credential_items())
    # The same for every edge: its numbers and destinations are model-wide.
    files["kamailio/db/dids"] = shared_text(
        "kamailio/db/dids",
        lambda: stored_text(
            "kamailio/db/dids", data.did_inputs(), lambda: _htable_text(data.did_items())
        ),
    )
    versions = [("version", 1), *sorted(TABLE_VERSIONS.items())]
    db("version", _HEADERS["version"], versions)
    sizes = memory_sizes(h, files)
    files["kamailio/kamailio.cfg"] = env.get_template("kamailio/kamailio.cfg").render()
    files["kamailio/host.cfg"] = env.get_template("kamailio/host.cfg.j2").render(
        **_host_context(model, host, h, root, run_dir, sizes),
        **_records_context(model, host, root, records_dir),
    )
    files["kamailio/kamailio.env"] = env.get_template("kamailio/kamailio.env.j2").render(
        shm_mb=sizes.shm_mb, pkg_mb=sizes.pkg_mb, memory_manager=h.kamailio.memory_manager
    )
    if model.records.enabled:
        if model.records.backend == "postgresql":
            files["kamailio/records-pg.sql"] = SCHEMA_PG
        else:
            files["kamailio/records.sql"] = SCHEMA
    if _has_tls(h):
        files["kamailio/tls.cfg"] = env.get_template("kamailio/tls.cfg.j2").render(
            host=host, tls=h.tls
        )
    return dict(sorted(files.items()))


# ----------------------------------------------------------------------------- helpers


_ESCAPE = str.maketrans(
    {"\\": "\\\\", ":": "\\:", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0"}
)
_NEEDS_ESCAPE = re.compile(r"[\\:\n\r\t\0]")
_ATTRS_MAX = 100  # the dialplan keeps at most 128 bytes of attributes


def _cell(value: object) -> str:
    """One db_text column value, with '\\', ':' and control characters escaped."""
    cls = value.__class__
    if cls is int:
        return str(value)
    if cls is bool:
        return "1" if value else "0"
    text = str(value)
    if _NEEDS_ESCAPE.search(text):
        return text.translate(_ESCAPE)
    return text


def _label(name: str) -> str:
    """A rule name as dialplan attributes: printable, short."""
    return "".join(c if c.isprintable() else " " for c in name)[:_ATTRS_MAX]


def _htable_text(items: Iterable[tuple[str, str | int]]) -> str:
    """An htable db_text file: key, key_type 0, value_type 0 (string) or 1 (integer),
    value, expires 0."""
    needs = _NEEDS_ESCAPE.search
    lines = [_HEADERS["htable"]]
    append = lines.append
    for i, (key, value) in enumerate(items, 1):
        if needs(key):
            key = key.translate(_ESCAPE)
        if value.__class__ is int:
            append(f"{i}:{key}:0:1:{value}:0")
        else:
            append(f"{i}:{key}:0:0:{_cell(value)}:0")
    lines.append("")
    return "\n".join(lines)


def _has_tls(h: Host) -> bool:
    return any(t.protocol == "tls" for t in h.transports)


def _ip(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """str() of an address; IPv4 the fast way (this runs once per peer and source)."""
    if address.version == 4:
        return socket.inet_ntoa(address.packed)
    return str(address)


def _hostport(address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> str:
    a = f"[{address}]" if address.version == 6 else _ip(address)
    return f"{a}:{port}"


def _peer_uri(p: Peer) -> str:
    """The dispatcher destination of a peer. A host name stays a name, resolved by
    Kamailio at call time: without a port as RFC 3263 says (no transport parameter for
    udp, so NAPTR records may choose; SRV of the transport for tcp/tls), with a port
    A/AAAA only."""
    if not isinstance(p.address, str):
        return _sip_uri(p.address, p.effective_port, p.transport)
    if p.port is None:
        if p.transport == "udp":
            return f"sip:{p.address}"
        return f"sip:{p.address};transport={p.transport}"
    return f"sip:{p.address}:{p.port};transport={p.transport}"


def registrar_names(trunk: Trunk) -> list[str]:
    """The host names (lower case) a registration of ``trunk`` may be sent to: its peers by
    name and ``auth.registrar`` when that is a name."""
    out: dict[str, None] = {}
    for p in trunk.peers:
        if isinstance(p.address, str):
            out.setdefault(p.address.lower(), None)
    registrar = trunk.auth.registrar if isinstance(trunk.auth, RegisterAuth) else None
    if registrar:
        host = re.sub(r"^sips?:", "", registrar, flags=re.I).split(";", 1)[0]
        host = host.rsplit("@", 1)[-1]
        host = host.split("]", 1)[0] + "]" if host.startswith("[") else host.split(":", 1)[0]
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            if host:
                out.setdefault(host.lower(), None)
    return list(out)


def _trusts_resolved(trunk: Trunk) -> bool:
    """Calls are also taken from the addresses the edge resolves for the trunk's peers by
    name (not when security.allowed_sources fixes the sources)."""
    return (
        trunk.inbound_trust_resolved
        and not trunk.security.allowed_sources
        and any(p.is_name for p in trunk.peers)
    )


#: dispatcher flag: do not resolve the destination on load (a peer by name whose
#: addresses are not trusted as sources: tm resolves it per call)
DS_FLAG_NO_DNS = 16


def _edge_probe(model: Model, site: str) -> Probe:
    """Dispatcher has one ping timer and one failure threshold per Kamailio: the edge
    gives it the values most of its probed trunks ask for (on a tie the shorter interval,
    then the lower threshold), or the defaults when it carries none; it also probes the
    PBX hosts and other edges with them. Trunks that ask for other values are probed by
    the script instead (``script_probed``)."""
    counts: dict[tuple[int, int], int] = {}
    for t in model.trunks.values():
        if t.site == site and t.probe.enabled:
            pair = (t.probe.interval, t.probe.threshold)
            counts[pair] = counts.get(pair, 0) + 1
    if not counts:
        return Probe()
    interval, threshold = min(counts, key=lambda pair: (-counts[pair], pair))
    return Probe(interval=interval, threshold=threshold)


def script_probed(model: Model, trunk: Trunk, edge: Probe | None = None) -> bool:
    """A probed trunk whose interval or threshold is not the dispatcher's of its edge: the
    edge's route PROBE_TICK probes its peers at its own interval and takes one out after
    its own number of failures (docs/kamailio.md, OPTIONS probing). ``edge``: the edge's
    ``_edge_probe`` of the trunk's site, when the caller has it (it walks every trunk)."""
    if not trunk.probe.enabled:
        return False
    if edge is None:
        edge = _edge_probe(model, trunk.site)
    return (trunk.probe.interval, trunk.probe.threshold) != (edge.interval, edge.threshold)


def _sip_uri(address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int, proto: str) -> str:
    return f"sip:{_hostport(address, port)};transport={proto}"


def _host_context(
    model: Model, name: str, h: Host, root: str, run_dir: str, sizes: MemorySizes
) -> dict[str, object]:
    advertised = h.public_address or h.address
    pair = model.edge_pair(name)
    listens: list[str] = []
    if pair is not None and pair.vip is not None:
        # The floating address first: the default socket of what the edge sends by itself
        # (probes, keepalives), bound on both edges (net.ipv4.ip_nonlocal_bind, set by the
        # keepalived_vip role) whichever holds it; the edge's own address stays for its
        # health checks.
        advertised = pair.vip
        listens.extend(f"{t.protocol}:{_hostport(pair.vip, t.port)}" for t in h.transports)
    for t in h.transports:
        line = f"{t.protocol}:{_hostport(h.address, t.port)}"
        if h.public_address is not None:
            line += f" advertise {_hostport(h.public_address, t.port)}"
        listens.append(line)
    key = hashlib.sha256(f"siporch-topoh:{model.domain}".encode()).hexdigest()[:32]
    probe = _edge_probe(model, h.site)
    return {
        "host": name,
        "db_dir": f"{root}/kamailio/db",
        "run_dir": run_dir,
        "advertised": str(advertised),
        "rtpengine_port": h.rtpengine.ng_port,
        "db_max_rows": db_max_rows(h, sizes.pkg_mb),
        "probe_interval": probe.interval,
        "probe_threshold": probe.threshold,
        "flood": model.security.flood,
        "topology_hiding": model.security.topology_hiding,
        "topoh_key": key,
        "tls": _has_tls(h),
        "tls_config": f"{root}/kamailio/tls.cfg",
        "defines": cfg_defines(),
        "rpc_listen": _hostport(h.address, RPC_HTTP_PORT),
        "children": h.kamailio.children,
        "listens": listens,
        "keepalive": model.calls.keepalive,
        "dmq": _dmq_context(model, name, h),
        "vip": str(pair.vip) if pair is not None and pair.vip is not None else None,
        # route PAIR_SOCKET: the floating address's port per transport ("udp=5060;tls=5061")
        "vip_ports": ";".join(f"{t.protocol}={t.port}" for t in h.transports),
    }


def _dmq_context(model: Model, name: str, h: Host) -> dict[str, object] | None:
    """Kamailio DMQ between the edges of a site's `edges`: this edge's own DMQ address,
    the next edge of the list to join the bus through, and its dialog hash ids."""
    pair = model.edge_pair(name)
    if pair is None:
        return None
    index = pair.hosts.index(name)
    peer = pair.hosts[(index + 1) % len(pair.hosts)]
    port = pair.dmq_port
    return {
        "port": port,
        "listen": f"udp:{_hostport(h.address, port)}",
        "server": f"sip:{_hostport(h.address, port)}",
        "notify": f"sip:{_hostport(model.hosts[peer].address, port)}",
        # each edge its own dialog ids: h_id_start = position, h_id_step = edges
        "h_id_start": index + 1,
        "h_id_step": len(pair.hosts),
        "peers": [e for e in pair.hosts if e != name],
    }


def _records_context(model: Model, host: str, root: str, records_dir: str) -> dict[str, object]:
    """Call records (siporch/records.py): where, how long, how big."""
    r = model.records
    pg = r.postgresql if r.backend == "postgresql" else None
    host_part = (f"[{pg.host}]" if ":" in pg.host else pg.host) if pg is not None else ""
    return {
        "records": r.enabled,
        "records_backend": r.backend,
        # db_postgres's URL; the model allows no character that would need escaping in it
        "records_pg_url": (
            f"postgres://{pg.user}:{pg.password.get_secret_value()}@{host_part}:{pg.port}/"
            f"{pg.database}"
            if pg is not None
            else ""
        ),
        "records_db": f"{records_dir}/{RECORDS_DB}",
        "records_retention_s": r.retention_days * 86400,
        "records_max_bytes": r.max_mb * 1024 * 1024,
        "release_manifest": f"{root}/manifest.json",
    }


def db_max_rows(h: Host, pkg_mb: int | None = None) -> int:
    """db_text's max_result_rows: it allocates that many row pointers (8 bytes) in private
    memory for each query, so a quarter of pkg_mb goes to them."""
    return (h.kamailio.pkg_mb if pkg_mb is None else pkg_mb) * 1024 * 1024 // 8 // 4


@dataclass(frozen=True)
class MemorySizes:
    """Kamailio's memory on one edge, MB: the model's values, raised to what its data
    tables need (never lowered, never a render failure)."""

    shm_mb: int
    pkg_mb: int
    shm_need_mb: int
    pkg_need_mb: int


_MB = 1024 * 1024


def _round_up(mb: float, step: int) -> int:
    return int(-(-mb // step) * step)


def memory_sizes(h: Host, files: Mapping[str, str]) -> MemorySizes:
    """Sizes from the edge's db_text tables (the model's values are floors; the
    estimates are generous: memory not touched costs nothing). Private memory (each process, -M): the query
    of the largest table holds its whole result there, a row pointer per row (a quarter of
    pkg_mb goes to them, :func:`db_max_rows`), a row of values per row and a copy of its
    text. Shared memory (-m): db_text's cache of every table, each htable item and
    dispatcher/dialplan entry built from it, and each dial plan rule's compiled regex."""
    tables = {p: t for p, t in files.items() if p.startswith("kamailio/db/")}
    rows = {p: t.count("\n") - 1 for p, t in tables.items()}
    size = {p: len(t.encode()) for p, t in tables.items()}
    big_rows = max(rows.values(), default=0)
    big_bytes = max(size.values(), default=0)
    pkg_need = max(
        big_rows * 8 * 4 / _MB,  # db_max_rows >= the largest table
        (big_rows * 160 + 2 * big_bytes) / _MB,  # one query's result
    )
    dialplan = rows.get("kamailio/db/dialplan", 0)
    # 10,000 trunks (15 MB of tables, 390,000 rows, 19,000 rules) peaked at 410 MB of
    # shared memory in Kamailio 5.6 (docs/kamailio.md, Size): this gives 1.4x that.
    shm_need = 128 + (8 * sum(size.values()) + 512 * sum(rows.values()) + 8192 * dialplan) / _MB
    pkg_need_mb = _round_up(pkg_need, 4)
    shm_need_mb = _round_up(shm_need, 32)
    return MemorySizes(
        shm_mb=max(h.kamailio.shm_mb, shm_need_mb),
        pkg_mb=max(h.kamailio.pkg_mb, pkg_need_mb),
        shm_need_mb=shm_need_mb,
        pkg_need_mb=pkg_need_mb,
    )


def whole(regex: str) -> str:
    """A regex that matches exactly what ``re.fullmatch(regex, s)`` matches (group numbers
    unchanged), for Kamailio dialplan (PCRE)."""
    return f"^(?:{regex})$"


def route_regex(route: Route) -> str:
    """The route's pattern with its exceptions folded in as negative lookaheads."""
    excepts = "".join(f"(?!(?:{e})$)" for e in route.exceptions)
    return f"^{excepts}(?:{route.pattern})$"


def range_prefixes(start: str, end: str) -> list[str]:
    """Digit-string prefixes that cover ``start``..``end`` (same length) exactly, each
    standing for every string of that length starting with it."""
    if len(start) != len(end) or not (start.isdigit() and end.isdigit()) or start > end:
        raise KamailioRenderError(f"bad number range {start}..{end}")
    out: list[str] = []
    for blk in digit_blocks(start, end):
        if not blk.first or (blk.first, blk.last) == ("0", "9"):
            out.append(blk.prefix)  # the key's length stands for the digits that follow
        else:
            out.extend(blk.prefix + str(d) for d in range(int(blk.first), int(blk.last) + 1))
    return out


def _check_replace(rule: NumberRule, where: str) -> None:
    if not _REPLACE_OK.match(rule.replace):
        raise KamailioRenderError(
            f"{where}: rule '{rule.name}': replace {rule.replace!r} cannot go into the Kamailio "
            "dialplan: it may only hold printable characters other than '$' and '\\', and "
            "\\1..\\9, and must not be empty"
        )


def _peer_order(peers: Sequence[Peer]) -> list[Peer]:
    """Priority ascending (lower first), then the higher weight, then model order."""
    return [
        p
        for _, p in sorted(enumerate(peers), key=lambda ip: (ip[1].priority, -ip[1].weight, ip[0]))
    ]


def _rtp_flags(trunk: Trunk) -> tuple[str, str]:
    toward_trunk = f"{_RTP_BASE} {_SRTP_TOWARD_TRUNK[trunk.media.srtp]}"
    toward_inside = f"{_RTP_BASE} RTP/AVP"
    return toward_trunk, toward_inside


# ----- outbound profile and caller identity (htable trunks keys rtpc, cid, cn, tp, early)

#: Model codec -> rtpengine codec name.
_RTPENGINE_CODECS = {
    "pcmu": "PCMU",
    "pcma": "PCMA",
    "g722": "G722",
    "g729": "G729",
    "opus": "opus",
    "gsm": "GSM",
}


def _codec_flags(trunk: Trunk) -> str:
    """rtpengine flags for an SDP offer toward the trunk: only the trunk's codecs, in its
    order, and telephone-event only when DTMF goes as RFC 4733 events."""
    flags = ["codec-strip=all"]
    flags += [f"codec-offer={_RTPENGINE_CODECS[c]}" for c in trunk.codecs]
    if trunk.dtmf in ("rfc4733", "auto"):
        flags.append("codec-offer=telephone-event")
    return " ".join(flags)


def _outbound_items(trunk: Trunk, tid: int) -> list[tuple[str, str | int]]:
    st = trunk.session_timers
    items: list[tuple[str, str | int]] = [
        (f"{tid}.rtpc", _codec_flags(trunk)),
        # session timers toward the trunk (route SESSION_TIMERS), T.38 in its dialogs
        (f"{tid}.stm", st.mode),
        (f"{tid}.se", max(st.expires, st.min_se)),
        (f"{tid}.mse", st.min_se),
        (f"{tid}.t38", int(trunk.t38)),
        (f"{tid}.early", trunk.max_early_dialogs or 0),
        (f"{tid}.cid", trunk.caller_id.policy),
        # dialog keepalives toward the trunk's side of its calls (route KEEPALIVE)
        (f"{tid}.ka", int(trunk.keepalive)),
    ]
    if trunk.caller_id.number:
        items.append((f"{tid}.cn", trunk.caller_id.number))
    if trunk.tech_prefix:
        items.append((f"{tid}.tp", trunk.tech_prefix.replace("#", "%23")))
    return items


class _EdgeData:
    """What one edge host needs from the model, as table rows."""

    def __init__(self, model: Model, host: str) -> None:
        self.model = model
        self.host = host
        self.site = model.hosts[host].site
        self.ids = trunk_ids(model)
        for name, tid in self.ids.items():
            if not 1 <= tid <= MAX_TRUNK_ID:
                raise KamailioRenderError(
                    f"trunks.{name}.id: {tid} is outside 1..{MAX_TRUNK_ID} used by the edge"
                )
        self.routes = model.routes_for_site(self.site)
        self.local = [n for n, t in model.trunks.items() if t.site == self.site]
        used: list[str] = []
        for r in self.routes:
            used.extend(r.trunks)
        used.extend(d.destination.trunk for d in model.inbound if d.destination.trunk)
        self.remote = sorted({n for n in used if model.trunks[n].site != self.site})
        hosts = sorted(model.hosts)
        self.host_set = {n: SET_HOST_BASE + i for i, n in enumerate(hosts, 1)}
        self.site_set = {n: SET_SITE_EDGES_BASE + i for i, n in enumerate(sorted(model.sites), 1)}
        self.probe = _edge_probe(model, self.site)  # every local trunk's site
        self.group_set = {
            n: SET_PBX_GROUP_BASE + i for i, n in enumerate(sorted(model.pbx_groups), 1)
        }

    # -- permissions
    def address_rows(self) -> list[Row]:
        rows: list[Row] = []
        for name in self.local:
            tid = self.ids[name]
            for net in self.model.trunks[name].source_networks:
                rows.append((tid, _ip(net.network_address), net.prefixlen, 0, name))
        for name, h in self.model.hosts.items():
            if name == self.host:
                continue
            if h.role == "pbx":
                group = GROUP_LOCAL_PBX if h.site == self.site else GROUP_OTHER_PBX
            else:
                group = GROUP_EDGE
            rows.append((group, h.address, h.address.max_prefixlen, 0, name))
        for sname, site in self.model.sites.items():
            # another site's active-standby pair sends from its floating address
            pair = site.edges
            if sname != self.site and pair is not None and pair.vip is not None:
                rows.append((GROUP_EDGE, pair.vip, pair.vip.max_prefixlen, 0, f"{sname}-vip"))
            # PBXs of a site that siporch does not configure: trusted as its PBX hosts are
            group = GROUP_LOCAL_PBX if sname == self.site else GROUP_OTHER_PBX
            for address in site.pbx_addresses:
                rows.append((group, address, address.max_prefixlen, 0, f"{sname}-pbx"))
        management: dict[str, tuple[str, int]] = {"127.0.0.0/8": ("127.0.0.0", 8)}
        for h in self.model.hosts.values():
            for net in h.ami.permit if h.ami else []:
                management.setdefault(str(net), (_ip(net.network_address), net.prefixlen))
        for network, length in management.values():
            rows.append((GROUP_MANAGEMENT, network, length, 0, "management"))
        return rows

    # -- dispatcher
    def dispatcher_rows(self) -> list[Row]:
        rows: list[Row] = []
        for name in self.local:
            t = self.model.trunks[name]
            peers = _peer_order(t.peers)
            # probed by dispatcher (flag 8) at the edge's values, or by the script
            flags = 8 if t.probe.enabled and not script_probed(self.model, t, self.probe) else 0
            no_dns = 0 if _trusts_resolved(t) else DS_FLAG_NO_DNS
            for pos, p in enumerate(peers):
                uri = _peer_uri(p)
                f = flags | no_dns if p.is_name else flags
                rows.append((self.ids[name], uri, f, len(peers) - pos, f"weight={p.weight}", name))
        for name in sorted(self.model.hosts):
            h = self.model.hosts[name]
            if h.role != "pbx":
                continue
            rows.append((self.host_set[name], self._host_uri(h), 8, 1, "", name))
        # a PBX group: its members, the first one with the highest priority (probed, 8)
        for gname in sorted(self.model.pbx_groups):
            members = self.model.pbx_groups[gname].hosts
            for pos, name in enumerate(members):
                h = self.model.hosts[name]
                rows.append(
                    (self.group_set[gname], self._host_uri(h), 8, len(members) - pos, "", name)
                )
        for site in sorted(self._remote_sites()):
            # an active-standby pair is one destination: its floating address
            edges = self.model.edge_targets(site)
            for pos, e in enumerate(edges):
                h = self.model.hosts[e]
                uri = self._host_uri(h, self.model.sip_address(e))
                rows.append((self.site_set[site], uri, 8, len(edges) - pos, "", e))
        return rows

    def _remote_sites(self) -> set[str]:
        return {self.model.trunks[n].site for n in self.remote}

    @staticmethod
    def _host_uri(
        h: Host, address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    ) -> str:
        t = h.transports[0]
        return _sip_uri(address or h.address, t.port, t.protocol)

    # -- dialplan
    def dialplan_rows(self) -> list[Row]:
        rows: list[Row] = []

        def rules(dpid: int, rs: Sequence[NumberRule], where: str) -> None:
            for pr, r in enumerate(rs, 1):
                _check_replace(r, where)
                rx = whole(r.match)
                rows.append((dpid, pr, 1, rx, 0, rx, r.replace, _label(r.name)))

        rules(DP_NORMALIZE, self.model.sites[self.site].normalization, f"sites.{self.site}")
        for i, r in enumerate(self.routes, 1):
            rows.append((DP_ROUTES, i, 1, route_regex(r), 0, "", "", str(i)))
        for i, d in enumerate(self.model.inbound, 1):
            if d.pattern is not None:
                rows.append((DP_DID_PATTERNS, i, 1, whole(d.pattern), 0, "", "", str(i)))
        for name in self.local:
            t = self.model.trunks[name]
            tid = self.ids[name]
            rules(DP_TRUNK_IN_BASE + tid, t.translation.inbound, f"trunks.{name}")
            rules(DP_TRUNK_OUT_BASE + tid, t.translation.outbound, f"trunks.{name}")
            rules(DP_TRUNK_CALLING_BASE + tid, t.translation.calling, f"trunks.{name}")
        return rows

    # -- htables
    def trunk_items(self) -> list[tuple[str, str | int]]:
        items: list[tuple[str, str | int]] = []
        for name in self.local:
            t = self.model.trunks[name]
            tid = self.ids[name]
            toward_trunk, toward_inside = _rtp_flags(t)
            items += [
                (f"{tid}.name", name),
                (f"{tid}.local", 1),
                (f"{tid}.set", tid),
                (f"{tid}.max", t.max_channels or 0),
                (f"{tid}.cap", t.at_capacity),
                (f"{tid}.anchor", int(t.media.mode == "anchor")),
                (f"{tid}.rtpt", toward_trunk),
                (f"{tid}.rtpi", toward_inside),
                (f"{tid}.plus", int(t.strip_plus)),
                (f"{tid}.pai", t.pai),
            ]
            if t.from_user:
                items.append((f"{tid}.fu", t.from_user))
            if t.from_domain:
                items.append((f"{tid}.fd", t.from_domain))
            items += _outbound_items(t, tid)
            if _trusts_resolved(t):
                items.append((f"{tid}.trr", 1))
            items.append((f"n.{name}", tid))
        if any(_trusts_resolved(self.model.trunks[n]) for n in self.local):
            items.append(("trr", 1))
        items += self._registrar_items()
        items += self._probe_items()
        for name in self.remote:
            tid = self.ids[name]
            site = self.model.trunks[name].site
            if not self.model.hosts_with_role("edge", site):
                raise KamailioRenderError(
                    f"trunks.{name}: used at site '{self.site}' but site '{site}' has no edge"
                )
            items += [
                (f"{tid}.name", name),
                (f"{tid}.local", 0),
                (f"{tid}.via", self.site_set[site]),
                (f"{tid}.ka", int(self.model.trunks[name].keepalive)),
                (f"n.{name}", tid),
            ]
        return items

    def _registrar_items(self) -> list[tuple[str, str | int]]:
        """``rh.<host name>`` = trunk id: the registrars by name a PBX may REGISTER to through
        the edge (route REGISTER_OUT; registrars by address are found in the dispatcher).
        A name shared by several trunks names the first ``register`` trunk, else the first."""
        names: dict[str, int] = {}
        order = sorted(
            self.local, key=lambda n: self.model.trunks[n].auth.type != "register"
        )  # stable: model order within each kind
        for name in order:
            for host in registrar_names(self.model.trunks[name]):
                names.setdefault(host, self.ids[name])
        return [(f"rh.{host}", tid) for host, tid in names.items()]

    def _probe_items(self) -> list[tuple[str, str | int]]:
        """The peers the script probes (route PROBE_TICK): ``pr.<k>.s`` (trunk id = set),
        ``pr.<k>.u`` (its dispatcher URI), ``pr.<k>.i`` (interval), ``pr.n``; and per such
        trunk ``<id>.pth`` (threshold) and ``<id>.prb`` = 1."""
        items: list[tuple[str, str | int]] = []
        k = 0
        for name in self.local:
            t = self.model.trunks[name]
            if not script_probed(self.model, t, self.probe):
                continue
            tid = self.ids[name]
            items += [(f"{tid}.prb", 1), (f"{tid}.pth", t.probe.threshold)]
            for p in _peer_order(t.peers):
                items += [
                    (f"pr.{k}.s", tid),
                    (f"pr.{k}.u", _peer_uri(p)),
                    (f"pr.{k}.i", t.probe.interval),
                ]
                k += 1
        if k:
            items.append(("pr.n", k))
        return items

    def credential_items(self) -> list[tuple[str, str | int]]:
        """htable ``creds`` (a secret file): per local trunk with credentials, ``<id>.u``,
        ``<id>.p`` and ``<id>.r`` (realm; absent: answer whatever realm challenges)."""
        items: list[tuple[str, str | int]] = []
        for name in self.local:
            c = self.model.trunks[name].outbound_credentials()
            if c is None:
                continue
            tid = self.ids[name]
            items += [(f"{tid}.u", c.username), (f"{tid}.p", c.password.get_secret_value())]
            if c.realm:
                items.append((f"{tid}.r", c.realm))
        return items

    def route_items(self) -> list[tuple[str, str | int]]:
        items: list[tuple[str, str | int]] = []
        for i, r in enumerate(self.routes, 1):
            items += [
                (f"{i}.name", r.name),
                (f"{i}.n", len(r.trunks)),
                (f"{i}.fo", _failover_list(r.failover_on)),
                (f"{i}.fr", r.failover_timeout * 1000),
            ]
            wsum = 0
            for j, name in enumerate(r.trunks):
                items.append((f"{i}.t{j}", self.ids[name]))
                if r.strategy == "weighted":
                    w = r.weights.get(name, 1)
                    wsum += w
                    items.append((f"{i}.w{j}", w))
            items.append((f"{i}.wsum", wsum))
        return items

    def did_inputs(self) -> str:
        """Everything :meth:`did_items` reads, as text (the key of the kept table)."""
        return json.dumps(
            {
                "inbound": model_part_json(self.model, "inbound"),
                "pbx_groups": model_part_json(self.model, "pbx_groups"),
                "roles": {n: h.role for n, h in sorted(self.model.hosts.items())},
                "ids": sorted(self.ids.items()),
                "group_set": sorted(self.group_set.items()),
                "host_set": sorted(self.host_set.items()),
            },
            sort_keys=True,
        )

    def did_items(self) -> list[tuple[str, str | int]]:
        items: list[tuple[str, str | int]] = []
        for i, d in enumerate(self.model.inbound, 1):
            dest = d.destination
            if dest.trunk is not None:
                items.append((f"{i}.tid", self.ids[dest.trunk]))
            elif dest.group is not None:
                group = self.model.pbx_groups.get(dest.group)
                if group is None:
                    raise KamailioRenderError(
                        f"inbound.{d.name}: destination group '{dest.group}' is not a PBX group"
                    )
                for member in group.hosts:
                    if self.model.hosts[member].role != "pbx":
                        raise KamailioRenderError(
                            f"pbx_groups.{dest.group}: host '{member}' is not a pbx host"
                        )
                items.append((f"{i}.set", self.group_set[dest.group]))
                items.append((f"{i}.alg", DS_ALGORITHMS[group.strategy]))
            else:
                assert dest.host is not None
                if self.model.hosts[dest.host].role != "pbx":
                    raise KamailioRenderError(
                        f"inbound.{d.name}: destination host '{dest.host}' is not a pbx host"
                    )
                items.append((f"{i}.set", self.host_set[dest.host]))
                items.append((f"{i}.alg", DS_ALG_FAILOVER))
            if d.range is not None:
                start, end = d.range.start, d.range.end
                suffix = f"/{len(start)}"
                items.extend((f"p+{p}{suffix}", i) for p in range_prefixes(start[1:], end[1:]))
        return items

    def security_items(self) -> list[tuple[str, str | int]]:
        agents = self.model.security.blocked_user_agents
        if not agents:
            return []
        alternatives = "|".join(_posix_escape(a.lower()) for a in agents)
        return [("ua", f"({alternatives})")]


def _posix_escape(text: str) -> str:
    """Escape a literal for a POSIX extended regular expression."""
    return re.sub(r"([.\[\](){}*+?|^$\\])", r"\\\1", text)
