"""Reporters: the status report as rich tables, as JSON, and as Prometheus metrics.

Every reporter reads the report dict built by `siporch.monitor.status.build_report`
(schema `siporch.status/1`); none of them talks to a host.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

Report = Mapping[str, Any]

_STYLE = {
    "ok": "green",
    "up": "green",
    "healthy": "green",
    "registered": "green",
    "reachable": "green",
    "degraded": "yellow",
    "partial": "yellow",
    "at_capacity": "yellow",
    "unregistered": "red",
    "rejected": "red",
    "missing": "red",
    "down": "red",
    "unreachable": "red",
    "auth_failed": "red",
    "reconnecting": "yellow",
    "connecting": "yellow",
    "unknown": "dim",
}


def to_json(report: Report) -> str:
    return json.dumps(report, indent=2, sort_keys=False)


def _styled(value: Any) -> Text:
    if value is None:
        return Text("-", style="dim")
    text = str(value)
    return Text(text, style=_STYLE.get(text, ""))


def _registration_cell(trunk: Mapping[str, Any]) -> Text:
    """The trunk's registration state; with one registration per edge, each edge's below."""
    cell = _styled(trunk["registration"])
    regs = trunk.get("registrations") or []
    if len(regs) > 1:
        for r in regs:
            cell.append(f"\n{r['edge'] or r['name']}: ")
            cell.append_text(_styled(r["state"]))
    return cell


def _duration(seconds: float) -> str:
    s = int(seconds)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def render_tables(report: Report, *, max_calls: int = 200) -> RenderableType:
    """Per site: trunks and calls; then hosts and edges; then the problems."""
    parts: list[RenderableType] = []
    health = report["health"]
    parts.append(
        Text.assemble(
            ("siporch status ", "bold"),
            (health, _STYLE.get(health, "")),
            f"  {report['generated_at']}  {len(report['calls'])} call(s)",
        )
    )
    hosts = Table(title="Hosts", title_justify="left", expand=False)
    for col in ("host", "site", "role", "address", "state", "release", "version"):
        hosts.add_column(col)
    for h in report["hosts"]:
        hosts.add_row(
            h["name"],
            h["site"],
            h["role"],
            h["address"],
            _styled(h["state"]),
            _styled(h.get("release")),
            _styled(h.get("version")),
        )
    parts.append(hosts)

    for site in report["sites"]:
        trunks = [t for t in report["trunks"] if t["site"] == site]
        calls = [c for c in report["calls"] if c["site"] == site]
        if not trunks and not calls:
            continue
        table = Table(title=f"Trunks of site {site}", title_justify="left")
        for col in ("trunk", "kind", "health", "registration", "peers", "calls", "attempts/fail"):
            table.add_column(col)
        for t in trunks:
            peers = Text()
            for i, p in enumerate(t["peers"]):
                if i:
                    peers.append("\n")
                peers.append(f"{p['address']}:{p['port']} ")
                peers.append_text(_styled(p["state"]))
            cap = t["max_channels"] if t["max_channels"] is not None else "inf"
            counters = "-" if t["attempts"] is None else f"{t['attempts']}/{t['failures']}"
            table.add_row(
                t["name"],
                t["kind"],
                _styled(t["health"]),
                _registration_cell(t),
                peers,
                f"{t['active_calls']}/{cap}",
                counters,
            )
        parts.append(table)
        if calls:
            ct = Table(title=f"Calls at site {site}", title_justify="left")
            for col in ("host", "dir", "trunk", "caller", "callee", "state", "duration", "codec"):
                ct.add_column(col)
            for c in calls[:max_calls]:
                ct.add_row(
                    c["host"],
                    "in" if c["direction"] == "inbound" else "out",
                    _styled(c["trunk"]),
                    c["caller"] or "-",
                    c["callee"] or "-",
                    c["state"],
                    _duration(c["duration"]),
                    c["codec"] or "-",
                )
            if len(calls) > max_calls:
                ct.caption = f"{len(calls) - max_calls} more call(s) not shown"
            parts.append(ct)

    if report["edges"]:
        et = Table(title="Edges", title_justify="left")
        for col in ("edge", "kamailio", "dispatcher up/total", "dialogs", "rtpengine", "sessions"):
            et.add_column(col)
        for e in report["edges"]:
            k = e["kamailio"]
            r = e["rtpengine"]
            targets = k["targets"]
            up = sum(1 for t in targets if t["state"] == "up")
            dialogs = (k.get("dialogs") or {}).get("all")
            et.add_row(
                e["name"],
                _styled(k["state"]),
                f"{up}/{len(targets)}" if k["state"] == "up" else "-",
                "-" if dialogs is None else str(dialogs),
                _styled(r["state"]),
                "-" if r.get("sessions") is None else str(r["sessions"]),
            )
        parts.append(et)
        pairs = [e for e in report["edges"] if e.get("pair")]
        if pairs:
            pt = Table(title="Edge pairs", title_justify="left")
            for col in ("edge", "mode", "role", "DMQ peers", "Redis"):
                pt.add_column(col)
            for e in pairs:
                p = e["pair"]
                peers = p.get("dmq_peers")
                pt.add_row(
                    e["name"],
                    p["mode"] + (f" {p['vip']}" if p.get("vip") else ""),
                    p.get("role") or "-",
                    "-"
                    if peers is None
                    else ", ".join(f"{x['address']} {x['status']}" for x in peers) or "none",
                    p.get("redis") or "-",
                )
            parts.append(pt)

    for severity, message in problem_lines(report):
        style = "red" if severity == "unreachable" else "yellow"
        parts.append(Text(f"{severity}: {message}", style=style))
    return Group(*parts)


def problem_lines(report: Report) -> list[tuple[str, str]]:
    """(severity, message) per problem; the problems of one unreachable host (its Kamailio
    and its rtpengine, say) are joined into one line for that host."""
    out: list[tuple[str, str]] = []
    by_host: dict[str, int] = {}
    for p in report["problems"]:
        host = p.get("host")
        message = str(p["message"])
        if p["severity"] != "unreachable" or not host:
            out.append((p["severity"], message))
            continue
        if host in by_host:
            severity, first = out[by_host[host]]
            out[by_host[host]] = (severity, f"{first}; {message.removeprefix(f'{host}: ')}")
            continue
        if not message.startswith(f"{host}: "):
            message = f"{host}: {message}"
        by_host[host] = len(out)
        out.append(("unreachable", message))
    return out


# ------------------------------------------------------------------------------ Prometheus


def prometheus_families(report: Report) -> Iterator[Any]:
    """Metric families for prometheus-client's custom collector API."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

    active = GaugeMetricFamily(
        "siporch_trunk_active_calls",
        "Calls up or being set up on the trunk",
        labels=["trunk", "site"],
    )
    capacity = GaugeMetricFamily(
        "siporch_trunk_max_channels", "The trunk's channel limit", labels=["trunk", "site"]
    )
    utilisation = GaugeMetricFamily(
        "siporch_trunk_channel_utilisation",
        "Active calls over the trunk's max_channels (0..1; no series without a limit)",
        labels=["trunk", "site"],
    )
    attempts = CounterMetricFamily(
        "siporch_trunk_call_attempts",
        "Calls attempted on the trunk since the exporter started",
        labels=["trunk", "site"],
    )
    failures = CounterMetricFamily(
        "siporch_trunk_call_failures",
        "Calls on the trunk that failed (not answered for a non-user reason)",
        labels=["trunk", "site"],
    )
    registered = GaugeMetricFamily(
        "siporch_trunk_registered",
        "1 when the registration trunk is registered",
        labels=["trunk", "site"],
    )
    healthy = GaugeMetricFamily(
        "siporch_trunk_healthy", "1 when the trunk is ok", labels=["trunk", "site", "health"]
    )
    peer_up = GaugeMetricFamily(
        "siporch_trunk_peer_up",
        "1 when the peer is up, as seen by source (edge dispatcher or PJSIP qualify)",
        labels=["trunk", "peer", "source"],
    )
    for t in report["trunks"]:
        labels = [t["name"], t["site"]]
        active.add_metric(labels, t["active_calls"])
        if t["max_channels"] is not None:
            capacity.add_metric(labels, t["max_channels"])
            if t["max_channels"] > 0:
                utilisation.add_metric(labels, t["active_calls"] / t["max_channels"])
        if t["attempts"] is not None:
            attempts.add_metric(labels, t["attempts"])
            failures.add_metric(labels, t["failures"])
        if t["registration"] is not None:
            registered.add_metric(labels, 1 if t["registration"] == "registered" else 0)
        healthy.add_metric([*labels, t["health"]], 1 if t["health"] == "ok" else 0)
        for p in t["peers"]:
            peer = f"{p['address']}:{p['port']}"
            if p["edge"] is not None:
                peer_up.add_metric([t["name"], peer, "edge"], 1 if p["edge"] == "up" else 0)
            if p["pjsip"] not in (None, "unknown", "not_qualified"):
                peer_up.add_metric(
                    [t["name"], peer, "pjsip"], 1 if p["pjsip"] == "reachable" else 0
                )
    host_up = GaugeMetricFamily(
        "siporch_host_up", "1 when siporch reaches the host", labels=["host", "role", "site"]
    )
    release = InfoMetricFamily("siporch_host_release", "The release a host runs", labels=["host"])
    for h in report["hosts"]:
        host_up.add_metric([h["name"], h["role"], h["site"]], 1 if h["state"] == "up" else 0)
        if h.get("release"):
            release.add_metric([h["name"]], {"release": h["release"]})
    sessions = GaugeMetricFamily(
        "siporch_edge_rtpengine_sessions", "Media sessions in rtpengine", labels=["edge"]
    )
    dialogs = GaugeMetricFamily(
        "siporch_edge_dialogs", "Active dialogs in Kamailio", labels=["edge"]
    )
    for e in report["edges"]:
        if e["rtpengine"].get("sessions") is not None:
            sessions.add_metric([e["name"]], e["rtpengine"]["sessions"])
        d = (e["kamailio"].get("dialogs") or {}).get("all")
        if d is not None:
            dialogs.add_metric([e["name"]], d)
    status = GaugeMetricFamily(
        "siporch_status_exit_code", "What `siporch status` would exit with (0, 1, 2)"
    )
    status.add_metric([], report["exit_code"])
    yield from (
        active,
        capacity,
        utilisation,
        attempts,
        failures,
        registered,
        healthy,
        peer_up,
        host_up,
        release,
        sessions,
        dialogs,
        status,
    )


class ReportCollector:
    """A prometheus-client collector that asks for a fresh report on every scrape."""

    def __init__(self, get_report: Callable[[], Report]) -> None:
        self.get_report = get_report

    def collect(self) -> Iterator[Any]:
        yield from prometheus_families(self.get_report())

    def describe(self) -> list[Any]:
        return []
