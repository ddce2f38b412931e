"""Gather the state of every host at once and assemble the status report.

The report is a plain dict following the documented schema `siporch.status/1`
(docs/status.md); the reporters (table, JSON, Prometheus) only read it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from siporch.errors import MonitorError
from siporch.hosts import Inventory, read_current, ssh_run
from siporch.monitor import kamailio, rtpengine
from siporch.monitor.handler import CallStateHandler
from siporch.monitor.topology import EdgeTarget, PbxTarget, Topology
from siporch.monitor.transport import UP, AmiConnection

SCHEMA = "siporch.status/1"
EXIT_HEALTHY = 0
EXIT_DEGRADED = 1
EXIT_UNREACHABLE = 2


@dataclass
class PbxResult:
    target: PbxTarget
    handler: CallStateHandler
    state: str = "unknown"
    error: str | None = None
    version: str | None = None
    release: str | None = None


@dataclass
class EdgeResult:
    target: EdgeTarget
    kamailio_state: str = "unknown"
    kamailio_error: str | None = None
    targets: list[kamailio.DispatcherTarget] = field(default_factory=list)
    dialogs: dict[str, int] | None = None
    rtpengine_state: str = "unknown"
    rtpengine_error: str | None = None
    rtpengine_stats: dict[str, Any] | None = None
    release: str | None = None
    tls_mismatch: dict[str, str] = field(default_factory=dict)
    auth_failed: dict[str, str] = field(default_factory=dict)
    # an edge of a pair (`sites.<site>.edges`): the DMQ bus as it sees it, whether it
    # holds the floating address, whether Redis answers it (None: not known)
    dmq: list[kamailio.DmqNode] | None = None
    holds_vip: bool | None = None
    redis: str | None = None
    pair_error: str | None = None


def new_handler(topology: Topology, target: PbxTarget) -> CallStateHandler:
    return CallStateHandler(target.name, topology.trunks)


# --------------------------------------------------------------------------- gathering


async def query_pbx(
    topology: Topology, target: PbxTarget, *, timeout: float, secret: str | None = None
) -> PbxResult:
    handler = new_handler(topology, target)
    result = PbxResult(target, handler)
    conn = AmiConnection(target, handler, timeout=timeout, secret=secret)
    try:
        async with asyncio.timeout(timeout * 3):
            await conn.snapshot()
        result.state = UP
        result.version = conn.version
    except MonitorError as exc:
        state = conn.state
        conn.close()
        result.state = state if state not in ("up", "closed", "connecting") else "unreachable"
        result.error = str(exc).split("\n", 1)[0]
    except TimeoutError:
        conn.close()
        result.state = "unreachable"
        result.error = f"{target.name}: no complete answer from AMI within {timeout * 3:g} s"
    return result


async def query_edge(
    target: EdgeTarget, *, timeout: float, inventory: Inventory | None = None
) -> EdgeResult:
    result = EdgeResult(target)
    host, port = target.rtpengine_ng

    async def kam() -> None:
        try:
            result.targets = await kamailio.dispatcher_list(target.kamailio_rpc, timeout=timeout)
            result.kamailio_state = "up"
        except MonitorError as exc:
            result.kamailio_state = "unreachable"
            result.kamailio_error = f"{target.name}: {exc}"
            return
        try:
            result.dialogs = await kamailio.dialog_stats(target.kamailio_rpc, timeout=timeout)
        except MonitorError:
            result.dialogs = None  # dialog module not loaded: not an error
        try:
            result.tls_mismatch = await kamailio.tls_mismatches(
                target.kamailio_rpc, timeout=timeout
            )
        except MonitorError:
            result.tls_mismatch = {}  # an edge without the tlsn table: nothing to show
        try:
            result.auth_failed = await kamailio.auth_failures(target.kamailio_rpc, timeout=timeout)
        except MonitorError:
            result.auth_failed = {}  # an edge without the authf table: nothing to show
        if target.pair is not None:
            try:
                result.dmq = await kamailio.dmq_nodes(target.kamailio_rpc, timeout=timeout)
            except MonitorError:
                result.dmq = None  # a release without DMQ yet

    async def rtp() -> None:
        try:
            if host == "ssh":
                result.rtpengine_stats = await _rtpengine_over_ssh(
                    inventory, target, port, timeout=timeout
                )
            else:
                result.rtpengine_stats = await rtpengine.statistics(host, port, timeout=timeout)
            result.rtpengine_state = "up"
        except MonitorError as exc:
            result.rtpengine_state = "unreachable"
            result.rtpengine_error = f"{target.name}: {exc}"

    async def pair() -> None:
        if target.pair is None or (target.pair.vip is None and target.pair.redis is None):
            return
        try:
            probe = await _pair_over_ssh(inventory, target, timeout=timeout)
        except MonitorError as exc:
            result.pair_error = f"{target.name}: {exc}"
            return
        if target.pair.vip is not None:
            result.holds_vip = bool(probe.get("vip"))
        if target.pair.redis is not None:
            result.redis = str(probe.get("redis", "unknown"))

    await asyncio.gather(kam(), rtp(), pair())
    return result


#: Run on an edge of a pair (python3, argv: vip or "", redis host or "", redis port):
#: whether the vip is one of its addresses, and whether Redis answers PING.
_PAIR_PROBE = r"""
import json, socket, subprocess, sys
vip, host, port = sys.argv[1], sys.argv[2], sys.argv[3]
out = {}
if vip:
    addrs = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True).stdout
    out["vip"] = any(f" {vip}/" in line for line in addrs.splitlines())
if host:
    try:
        with socket.create_connection((host, int(port)), timeout=1.5) as s:
            s.sendall(b"PING
")
            out["redis"] = "up" if s.recv(64).startswith(b"+PONG") else "down"
    except OSError as exc:
        out["redis"] = "down: " + (exc.strerror or str(exc))
print(json.dumps(out))
"""


async def _pair_over_ssh(
    inventory: Inventory | None, target: EdgeTarget, *, timeout: float
) -> dict[str, Any]:
    pair = target.pair
    assert pair is not None
    redis_host, redis_port = pair.redis or ("", 0)
    remote = ["python3", "-c", _PAIR_PROBE, pair.vip or "", redis_host, str(redis_port)]
    res = await ssh_run(inventory, target.name, target.address, remote, timeout=timeout)
    if res is None:
        raise MonitorError(f"no SSH access to {target.name}")
    if res.returncode != 0:
        raise MonitorError(res.last_error())
    try:
        data = json.loads(res.stdout.decode())
    except ValueError:
        raise MonitorError("unreadable answer of the pair probe") from None
    return data if isinstance(data, dict) else {}


async def _rtpengine_over_ssh(
    inventory: Inventory | None, target: EdgeTarget, port: int, *, timeout: float
) -> dict[str, Any]:
    where = f"{target.name} 127.0.0.1:{port} (over ssh)"
    cookie, packet = rtpengine.ng_packet({"command": "statistics"})
    remote = ["python3", "-c", rtpengine.REMOTE_NG, str(port), str(timeout / 2), packet.hex()]
    res = await ssh_run(inventory, target.name, target.address, remote, timeout=timeout)
    if res is None:
        raise MonitorError(f"rtpengine ng at {where}: no SSH access to {target.name}")
    if res.returncode != 0:
        raise MonitorError(f"rtpengine ng at {where}: {res.last_error()}")
    try:
        data = bytes.fromhex(res.stdout.decode().strip())
    except ValueError:
        raise MonitorError(f"rtpengine ng at {where}: unreadable answer") from None
    return rtpengine.current_statistics(rtpengine.parse_reply(cookie, data, where))


async def collect(
    topology: Topology,
    *,
    timeout: float = 3.0,
    edges: bool = True,
    releases: bool = False,
    inventory: Inventory | None = None,
    secret_override: str | None = None,
) -> tuple[list[PbxResult], list[EdgeResult]]:
    """Query every PBX and edge concurrently, each with its own timeout."""
    pbx_tasks = [
        query_pbx(topology, t, timeout=timeout, secret=secret_override) for t in topology.pbxs
    ]
    edge_tasks = (
        [query_edge(e, timeout=timeout, inventory=inventory) for e in topology.edges]
        if edges
        else []
    )
    release_tasks: list[Any] = []
    if releases:
        names = [(t.name, t.address) for t in topology.pbxs]
        if edges:
            names += [(e.name, e.address) for e in topology.edges]
        release_tasks = [read_current(inventory, n, a, timeout=timeout) for n, a in names]
    results = await asyncio.gather(*pbx_tasks, *edge_tasks, *release_tasks)
    pbx = list(results[: len(pbx_tasks)])
    edge = list(results[len(pbx_tasks) : len(pbx_tasks) + len(edge_tasks)])
    if releases:
        rel = results[len(pbx_tasks) + len(edge_tasks) :]
        for item, release in zip([*pbx, *edge], rel, strict=True):
            item.release = release
    return pbx, edge  # type: ignore[return-value]


# ---------------------------------------------------------------------------- assembling


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _uri_hostport(uri: str) -> tuple[str, int | None]:
    """`sip:user@host:port;params` -> (host, port or None)."""
    rest = uri.split(":", 1)[1] if uri.startswith(("sip:", "sips:")) else uri
    rest = rest.split("@", 1)[-1].split(";", 1)[0].split(">", 1)[0]
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port = rest.partition(":")
    return host, int(port) if port.isdigit() else None


def _same_peer(uri: str, address: str, port: int) -> bool:
    host, p = _uri_hostport(uri)
    return host == address and (p is None or p == port)


def build_report(
    topology: Topology,
    pbx: Iterable[PbxResult],
    edges: Iterable[EdgeResult],
    *,
    now: float | None = None,
    counters: bool = False,
    counters_since: float | None = None,
) -> dict[str, Any]:
    """The status report (schema `siporch.status/1`) from the gathered results."""
    now = time.time() if now is None else now
    pbx = list(pbx)
    edges = list(edges)
    problems: list[dict[str, Any]] = []
    hosts: list[dict[str, Any]] = []
    for r in pbx:
        hosts.append(
            {
                "name": r.target.name,
                "site": r.target.site,
                "role": "pbx",
                "address": r.target.address,
                "state": r.state,
                "error": r.error,
                "version": r.version,
                "release": r.release,
            }
        )
        if r.state != UP:
            problems.append(_problem("unreachable", r.error or r.state, host=r.target.name))
    for e in edges:
        state = "up"
        errors = [x for x in (e.kamailio_error, e.rtpengine_error) if x]
        if e.kamailio_state != "up" or e.rtpengine_state != "up":
            state = (
                "unreachable"
                if e.kamailio_state != "up" and e.rtpengine_state != "up"
                else ("partial")
            )
        hosts.append(
            {
                "name": e.target.name,
                "site": e.target.site,
                "role": "edge",
                "address": e.target.address,
                "state": state,
                "error": "; ".join(errors) or None,
                "version": None,
                "release": e.release,
            }
        )
        for err in errors:
            problems.append(_problem("unreachable", err, host=e.target.name))

    up_pbx = [r for r in pbx if r.state == UP]
    calls: list[dict[str, Any]] = []
    active: dict[str, int] = {}
    for r in up_pbx:
        for ch in r.handler.calls():
            calls.append(
                {
                    "host": r.target.name,
                    "site": r.target.site,
                    "uniqueid": ch.uniqueid,
                    "channel": ch.channel,
                    "direction": ch.direction,
                    "trunk": ch.trunk,
                    "caller": ch.caller,
                    "callee": ch.callee,
                    "state": ch.state,
                    "duration": round(ch.duration(now), 1),
                    "answered": ch.answered is not None,
                    "codec": ch.codec or None,
                }
            )
            key = ch.trunk or ""
            active[key] = active.get(key, 0) + 1

    edge_targets = [(e, t) for e in edges if e.kamailio_state == "up" for t in e.targets]
    trunks: list[dict[str, Any]] = []
    for name, info in topology.trunks.items():
        peers = []
        for peer in info.peers:
            pjsip_states = [
                c.status
                for r in up_pbx
                for c in r.handler.contacts_for(name)
                if _same_peer(c.uri, peer.address, peer.port)
            ]
            edge_states = [
                t.state
                for e, t in edge_targets
                if e.target.site == info.site
                and _same_peer(t.uri, peer.address, peer.port)
                and (info.set_id is None or t.set_id == info.set_id)
            ]
            pjsip = _merge_pjsip(pjsip_states)
            edge = _merge_edge(edge_states)
            mismatch = next(
                (
                    e.tls_mismatch[str(peer.address)]
                    for e in edges
                    if e.target.site == info.site and str(peer.address) in e.tls_mismatch
                ),
                None,
            )
            if mismatch is not None:
                problems.append(
                    _problem(
                        "degraded",
                        f"trunk {name}: TLS certificate of {mismatch} does not name peer "
                        f"{peer.address} (siporch: tls name mismatch in the edge log)",
                        trunk=name,
                    )
                )
            peers.append(
                {
                    "address": peer.address,
                    "port": peer.port,
                    "transport": peer.transport,
                    "state": _peer_state(edge, pjsip),
                    "pjsip": pjsip,
                    "edge": edge,
                }
            )
        registration: str | None = None
        registrations: list[dict[str, Any]] | None = None
        if info.auth == "register":
            registration = _registration(name, up_pbx)
            registrations = _registrations(name, up_pbx)
        n_active = active.get(name, 0)
        attempts = failures = None
        if counters:
            attempts = sum(r.handler.counters.get(name, _ZERO).attempts for r in pbx)
            failures = sum(r.handler.counters.get(name, _ZERO).failures for r in pbx)
        health = "ok"
        reasons: list[str] = []
        known = [p["state"] for p in peers if p["state"] != "unknown"]
        if known and all(s == "down" for s in known):
            health = "down"
            reasons.append(f"trunk {name}: every peer is down")
        if registration is not None and registration not in ("registered", "unknown"):
            health = "unregistered" if health == "ok" else health
            reasons.append(f"trunk {name}: registration is {registration}")
        elif registration == "registered" and registrations:
            # registered through one edge, not through another: calls still arrive (the
            # provider holds the other edge's binding), but one edge's contact is gone
            through = [g["edge"] for g in registrations if g["state"] == "registered"]
            for g in registrations:
                if g["state"] != "registered":
                    reasons.append(
                        f"trunk {name}: registration through edge {g['edge'] or g['name']} is "
                        f"{g['state']} (registered through {', '.join(through)})"
                    )
        if info.max_channels is not None and n_active >= info.max_channels:
            health = "at_capacity" if health == "ok" else health
            reasons.append(f"trunk {name}: at capacity ({n_active}/{info.max_channels} calls)")
        if not up_pbx and not edge_targets:
            health = "unknown"
        refused = next(
            (
                e.auth_failed[name]
                for e in edges
                if e.target.site == info.site and name in e.auth_failed
            ),
            None,
        )
        if refused is not None:
            reasons.append(
                f"trunk {name}: the provider refused the edge's credentials ({refused}) in the "
                "last 5 minutes (siporch: auth failed in the edge log)"
            )
        for reason in reasons:
            problems.append(_problem("degraded", reason, trunk=name))
        trunks.append(
            {
                "name": name,
                "site": info.site,
                "kind": info.kind,
                "auth": info.auth,
                "registration": registration,
                "registrations": registrations,
                "peers": peers,
                "active_calls": n_active,
                "max_channels": info.max_channels,
                "attempts": attempts,
                "failures": failures,
                "health": health,
            }
        )

    edge_reports = []
    for e in edges:
        edge_reports.append(
            {
                "name": e.target.name,
                "site": e.target.site,
                "address": e.target.address,
                "kamailio": {
                    "url": e.target.kamailio_rpc,
                    "state": e.kamailio_state,
                    "error": e.kamailio_error,
                    "dialogs": e.dialogs,
                    "targets": [
                        {
                            "set": t.set_id,
                            "trunk": _trunk_of_target(topology, e.target.site, t),
                            "uri": t.uri,
                            "state": t.state,
                            "flags": t.flags,
                        }
                        for t in e.targets
                    ],
                },
                "rtpengine": {
                    "address": (
                        f"ssh:127.0.0.1:{e.target.rtpengine_ng[1]}"
                        if e.target.rtpengine_ng[0] == "ssh"
                        else f"{e.target.rtpengine_ng[0]}:{e.target.rtpengine_ng[1]}"
                    ),
                    "state": e.rtpengine_state,
                    "error": e.rtpengine_error,
                    **(e.rtpengine_stats or {}),
                },
            }
        )
        if e.target.pair is not None:
            edge_reports[-1]["pair"] = _pair_report(e)
    problems.extend(_pair_problems(edges))

    code = EXIT_HEALTHY
    if any(p["severity"] == "degraded" for p in problems):
        code = EXIT_DEGRADED
    if any(p["severity"] == "unreachable" for p in problems):
        code = EXIT_UNREACHABLE
    return {
        "schema": SCHEMA,
        "generated_at": _iso(now),
        "health": {0: "healthy", 1: "degraded", 2: "unreachable"}[code],
        "exit_code": code,
        "counters_since": _iso(counters_since) if counters and counters_since else None,
        "problems": problems,
        "sites": list(topology.sites),
        "hosts": hosts,
        "trunks": trunks,
        "calls": calls,
        "edges": edge_reports,
    }


class _Zero:
    attempts = 0
    failures = 0


_ZERO: Any = _Zero()


def _pair_report(e: EdgeResult) -> dict[str, Any]:
    """An edge of a pair: its role (active: holds the floating address), its DMQ peers,
    Redis as it sees it."""
    pair = e.target.pair
    assert pair is not None
    role = None
    if pair.vip is not None and e.holds_vip is not None:
        role = "active" if e.holds_vip else "standby"
    elif pair.mode == "active-active":
        role = "active"
    peers = None
    if e.dmq is not None:
        peers = [
            {"address": f"{n.host}:{n.port}", "status": n.status} for n in e.dmq if not n.local
        ]
    return {
        "mode": pair.mode,
        "vip": pair.vip,
        "role": role,
        "dmq_peers": peers,
        "redis": e.redis,
        "error": e.pair_error,
    }


def _pair_problems(edges: list[EdgeResult]) -> list[dict[str, Any]]:
    """A pair whose edges do not see each other on DMQ, whose Redis does not answer, or
    whose floating address is held by none or by both of its edges."""
    out = []
    by_site: dict[str, list[EdgeResult]] = {}
    for e in edges:
        if e.target.pair is None or e.kamailio_state != "up":
            continue
        by_site.setdefault(e.target.site, []).append(e)
        if e.dmq is not None and not any(n.status == "active" for n in e.dmq if not n.local):
            out.append(_problem("degraded", "no other edge on its DMQ bus", host=e.target.name))
        if e.redis is not None and e.redis != "up":
            out.append(_problem("degraded", f"Redis: {e.redis}", host=e.target.name))
    for site, members in by_site.items():
        pair = members[0].target.pair
        assert pair is not None
        seen = [m for m in members if m.holds_vip is not None]
        if pair.vip is None or len(seen) != len(pair.hosts):
            continue  # not every edge of the pair was looked at
        holders = [m.target.name for m in seen if m.holds_vip]
        if len(holders) != 1:
            who = ", ".join(holders) if holders else "no edge"
            out.append(_problem("degraded", f"site {site}: floating address {pair.vip} on {who}"))
    return out


def _problem(
    severity: str, message: str, *, host: str | None = None, trunk: str | None = None
) -> dict[str, Any]:
    return {"severity": severity, "host": host, "trunk": trunk, "message": message}


def _merge_pjsip(states: list[str]) -> str | None:
    if not states:
        return None
    norm = [s.lower() for s in states]
    if "reachable" in norm:
        return "reachable"
    if "unreachable" in norm:
        return "unreachable"
    if "nonqualified" in norm:
        return "not_qualified"
    return "unknown"


def _peer_state(edge: str | None, pjsip: str | None) -> str:
    """The edge's dispatcher decides where calls go: its view wins over PJSIP qualify."""
    if edge is not None:
        return "up" if edge == "up" else "down"
    if pjsip == "reachable":
        return "up"
    if pjsip == "unreachable":
        return "down"
    return "unknown"


def _merge_edge(states: list[str]) -> str | None:
    if not states:
        return None
    if "up" in states:
        return "up"
    return states[0]


def _registration(trunk: str, pbx: list[PbxResult]) -> str:
    """The trunk's registration state: registered when any of its registrations is (one
    per edge of an active-active site: the provider's calls reach the registered one)."""
    seen: list[str] = []
    for r in pbx:
        seen.extend(reg.status.lower() for reg in r.handler.registrations_for(trunk))
    if not pbx:
        return "unknown"
    if not seen:
        return "missing"
    if "registered" in seen:
        return "registered"
    return seen[0]


def _registrations(trunk: str, pbx: list[PbxResult]) -> list[dict[str, Any]]:
    """Each outbound registration of ``trunk`` on the PBXs: its name, host, the edge it
    goes through (``<trunk>-reg-<edge>``: one per edge of an active-active site; None for
    the trunk's single registration) and its state."""
    out: list[dict[str, Any]] = []
    prefix = f"{trunk}-reg-"
    for r in pbx:
        for reg in r.handler.registrations_for(trunk):
            edge = reg.name[len(prefix) :] if reg.name.startswith(prefix) else None
            out.append(
                {
                    "name": reg.name,
                    "host": r.target.name,
                    "edge": edge,
                    "state": reg.status.lower() or "unknown",
                }
            )
    return out


def _trunk_of_target(topology: Topology, site: str, t: kamailio.DispatcherTarget) -> str | None:
    for name, info in topology.trunks.items():
        if info.set_id is not None and info.set_id == t.set_id:
            return name
    for name, info in topology.trunks.items():
        if any(p.address == t.host for p in info.peers) and info.site == site:
            return name
    return None


def exit_code(report: Mapping[str, Any]) -> int:
    return int(report["exit_code"])
