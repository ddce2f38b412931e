"""The status report and its exit codes, built from replayed AMI streams and recorded
Kamailio and rtpengine answers; the reporters that read it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from siporch.monitor.handler import CallStateHandler
from siporch.monitor.kamailio import parse_dispatcher_list
from siporch.monitor.replay import events_only, load_stream, replay
from siporch.monitor.reporters import ReportCollector, render_tables, to_json
from siporch.monitor.status import SCHEMA, EdgeResult, PbxResult, build_report
from siporch.monitor.topology import EdgeTarget, PbxTarget, PeerInfo, Topology, TrunkInfo

DATA = Path(__file__).resolve().parents[1] / "data" / "ami"
NOW = 2_000_000_000.0


def topology(max_a: int | None = 30) -> Topology:
    return Topology(
        sites=("central",),
        trunks={
            "itsp-a": TrunkInfo(
                "itsp-a",
                "central",
                max_channels=max_a,
                peers=(PeerInfo("127.0.0.1", 5091), PeerInfo("127.0.0.1", 5070)),
                set_id=1,
            ),
            "itsp-b": TrunkInfo(
                "itsp-b", "central", auth="register", peers=(PeerInfo("127.0.0.1", 5095),)
            ),
        },
        pbxs=(PbxTarget("pbx-central", "central", "127.0.0.1", 5038, "siporch", "x"),),
        edges=(
            EdgeTarget(
                "edge-central",
                "central",
                "127.0.0.1",
                2223,
                "http://127.0.0.1:5071/RPC",
                ("127.0.0.1", 2223),
            ),
        ),
    )


def pbx_result(topo: Topology, stream: str, *, snapshot: bool = True) -> PbxResult:
    events = load_stream(DATA / f"{stream}.json")
    events = [e for e in events if "_action" in e] if snapshot else list(events_only(events))
    handler = replay(events, CallStateHandler("pbx-central", topo.trunks, clock=lambda: NOW))
    return PbxResult(topo.pbxs[0], handler, state="up", version="22.10.1")


def edge_result(topo: Topology) -> EdgeResult:
    dispatcher = json.loads((DATA / "kamailio-dispatcher-list.json").read_text())
    stats = json.loads((DATA / "rtpengine-statistics.json").read_text())
    r = EdgeResult(topo.edges[0])
    r.targets = parse_dispatcher_list(dispatcher)
    r.kamailio_state = "up"
    r.dialogs = {"all": 0, "ongoing": 0}
    r.rtpengine_state = "up"
    r.rtpengine_stats = {"sessions": stats["statistics"]["currentstatistics"]["sessionstotal"]}
    return r


def test_live_calls_are_listed_with_trunk_direction_and_codec() -> None:
    topo = topology()
    report = build_report(topo, [pbx_result(topo, "live")], [edge_result(topo)], now=NOW)
    assert report["schema"] == SCHEMA
    calls = report["calls"]
    assert len(calls) == 5
    assert sorted(c["direction"] for c in calls) == ["inbound"] * 3 + ["outbound"] * 2
    assert {c["trunk"] for c in calls} == {"itsp-a"}
    assert {c["codec"] for c in calls} == {"ulaw"}
    a = next(t for t in report["trunks"] if t["name"] == "itsp-a")
    assert a["active_calls"] == 5
    # dispatcher set 1 in the recorded Kamailio answer: both targets active
    assert [p["edge"] for p in a["peers"]] == ["up", "up"]
    # PJSIP qualify saw 127.0.0.1:5091 unreachable, but the edge's dispatcher decides
    assert [p["pjsip"] for p in a["peers"]] == ["unreachable", None]
    assert [p["state"] for p in a["peers"]] == ["up", "up"]
    assert a["health"] == "ok"
    b = next(t for t in report["trunks"] if t["name"] == "itsp-b")
    assert b["registration"] == "registered" and b["health"] == "ok"
    assert report["exit_code"] == 0 and report["health"] == "healthy"
    assert json.loads(to_json(report)) == report


def test_trunk_at_capacity_is_degraded() -> None:
    topo = topology(max_a=5)
    report = build_report(topo, [pbx_result(topo, "live")], [edge_result(topo)], now=NOW)
    a = next(t for t in report["trunks"] if t["name"] == "itsp-a")
    assert a["health"] == "at_capacity"
    assert report["exit_code"] == 1
    assert any("at capacity (5/5" in p["message"] for p in report["problems"])


def test_unregistered_trunk_is_degraded() -> None:
    topo = topology()
    result = pbx_result(topo, "registration")
    replay(events_only(load_stream(DATA / "unregistered.json")), result.handler)
    report = build_report(topo, [result], [edge_result(topo)], now=NOW)
    b = next(t for t in report["trunks"] if t["name"] == "itsp-b")
    assert (b["registration"], b["health"]) == ("unregistered", "unregistered")
    assert report["exit_code"] == 1


def test_registration_through_each_edge_is_shown_and_any_registers_the_trunk() -> None:
    """itsp-b registered through two edges (active-active): the trunk is registered while
    one of them is; each edge's state is listed, and one not registered is a problem."""
    topo = topology()
    result = PbxResult(
        topo.pbxs[0], CallStateHandler("pbx-central", topo.trunks, clock=lambda: NOW), state="up"
    )
    for edge, status in (("edge-central", "Rejected"), ("edge-central-2", "Registered")):
        result.handler.on_event(
            {
                "Event": "OutboundRegistrationDetail",
                "ObjectName": f"itsp-b-reg-{edge}",
                "ServerUri": "sip:127.0.0.1:5095",
                "ClientUri": "sip:examplecorp@127.0.0.1:5095",
                "Endpoint": "itsp-b",
                "Status": status,
            }
        )
    report = build_report(topo, [result], [edge_result(topo)], now=NOW)
    b = next(t for t in report["trunks"] if t["name"] == "itsp-b")
    assert (b["registration"], b["health"]) == ("registered", "ok")
    assert [(r["edge"], r["state"], r["host"]) for r in b["registrations"]] == [
        ("edge-central", "rejected", "pbx-central"),
        ("edge-central-2", "registered", "pbx-central"),
    ]
    assert [p["message"] for p in report["problems"] if p["trunk"] == "itsp-b"] == [
        "trunk itsp-b: registration through edge edge-central is rejected "
        "(registered through edge-central-2)"
    ]
    assert report["exit_code"] == 1
    table = _text(report)
    assert "edge-central: rejected" in table and "edge-central-2: registered" in table
    # one registration (active-standby, a single edge): listed without an edge
    single = build_report(topo, [pbx_result(topo, "live")], [edge_result(topo)], now=NOW)
    b = next(t for t in single["trunks"] if t["name"] == "itsp-b")
    assert [(r["edge"], r["state"]) for r in b["registrations"]] == [(None, "registered")]
    a = next(t for t in single["trunks"] if t["name"] == "itsp-a")
    assert a["registrations"] is None


def test_trunk_with_every_peer_down_is_degraded() -> None:
    topo = topology()
    edge = edge_result(topo)
    edge.targets = [t for t in edge.targets if t.set_id != 1]
    # PJSIP sees itsp-a's contact unreachable, no edge view of its peers
    report = build_report(topo, [pbx_result(topo, "live")], [edge], now=NOW)
    a = next(t for t in report["trunks"] if t["name"] == "itsp-a")
    assert [p["pjsip"] for p in a["peers"]] == ["unreachable", None]
    assert [p["state"] for p in a["peers"]] == ["down", "unknown"]
    assert a["health"] == "down"
    assert report["exit_code"] == 1


def test_unreachable_host_is_exit_2_and_the_rest_is_still_shown() -> None:
    topo = topology()
    down = PbxResult(
        topo.pbxs[0],
        CallStateHandler("pbx-central", topo.trunks),
        state="auth_failed",
        error="pbx-central: AMI at 127.0.0.1:5038 refused user 'siporch': Authentication failed",
    )
    report = build_report(topo, [down], [edge_result(topo)], now=NOW)
    assert report["exit_code"] == 2 and report["health"] == "unreachable"
    assert report["hosts"][0]["state"] == "auth_failed"
    assert "Authentication failed" in report["problems"][0]["message"]
    # the edge is still reported
    assert report["edges"][0]["kamailio"]["state"] == "up"
    assert report["edges"][0]["rtpengine"]["sessions"] == 0


def _text(report: dict[str, Any]) -> str:
    from rich.console import Console

    console = Console(width=160, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(render_tables(report))
    return console.export_text()


def test_table_shows_sites_calls_and_problems() -> None:
    topo = topology(max_a=5)
    report = build_report(topo, [pbx_result(topo, "live")], [edge_result(topo)], now=NOW)
    text = _text(report)
    assert "Trunks of site central" in text
    assert "Calls at site central" in text
    assert text.count("+12025550100") == 3
    assert "at_capacity" in text
    assert "degraded: trunk itsp-a: at capacity" in text


def test_prometheus_metrics() -> None:
    topo = topology()
    report = build_report(topo, [pbx_result(topo, "live")], [edge_result(topo)], now=NOW)
    registry = CollectorRegistry()
    registry.register(ReportCollector(lambda: report))
    text = generate_latest(registry).decode()
    assert 'siporch_trunk_active_calls{site="central",trunk="itsp-a"} 5.0' in text
    assert 'siporch_trunk_registered{site="central",trunk="itsp-b"} 1.0' in text
    assert 'siporch_trunk_peer_up{peer="127.0.0.1:5070",source="edge",trunk="itsp-a"} 1.0' in text
    assert 'siporch_host_up{host="pbx-central",role="pbx",site="central"} 1.0' in text
    assert "siporch_status_exit_code 0.0" in text
