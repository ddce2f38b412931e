"""The call-state handler, driven by AMI event streams recorded from a real Asterisk 22.

The streams in tests/data/ami/ were recorded with tests/data/ami/record_calls.sh: SIPp
calls through the PJSIP endpoints a siporch PBX has (`itsp-a` identified by
X-Siporch-Trunk, `siporch-edge-edge-central` toward the edge, a registration `itsp-b`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from siporch.errors import MonitorError
from siporch.monitor.handler import CallStateHandler, dialled_number, endpoint_of
from siporch.monitor.replay import events_only, load_stream, replay

DATA = Path(__file__).resolve().parents[1] / "data" / "ami"
TRUNKS = ("itsp-a", "itsp-b")


def stream(name: str) -> list[dict[str, object]]:
    return load_stream(DATA / f"{name}.json")


def snapshot_entries(name: str) -> list[dict[str, object]]:
    return [e for e in stream(name) if "_action" in e]


def handler() -> CallStateHandler:
    return CallStateHandler("pbx-central", TRUNKS, clock=lambda: 2_000_000_000.0)


def test_endpoint_and_number_parsing() -> None:
    assert endpoint_of("PJSIP/itsp-a-0000001d") == ("PJSIP", "itsp-a")
    assert endpoint_of("PJSIP/siporch-edge-edge-central-00000020") == (
        "PJSIP",
        "siporch-edge-edge-central",
    )
    assert endpoint_of("Local/100@ctx-00000001;1") == ("Local", "100@ctx")
    assert dialled_number("+12025550123@siporch-edge-edge-central") == "+12025550123"
    assert dialled_number("siporch-edge-x/sip:+4930123@198.18.0.10") == "+4930123"


def test_calls_stream_ends_with_no_calls_and_counts_attempts() -> None:
    h = replay(events_only(stream("calls")), handler())
    assert h.channels == {}
    a = h.counters["itsp-a"]
    assert (a.attempts, a.answered, a.failures) == (5, 5, 0)
    assert h.counters["itsp-b"].attempts == 0
    assert h.stats.missing == 0


def test_live_stream_shows_calls_with_trunks_and_directions() -> None:
    h = replay(events_only(stream("live")), handler())
    calls = h.calls()
    assert len(calls) == 5
    inbound = [c for c in calls if c.direction == "inbound"]
    outbound = [c for c in calls if c.direction == "outbound"]
    assert len(inbound) == 3 and len(outbound) == 2
    assert {c.trunk for c in calls} == {"itsp-a"}
    assert all(c.caller == "+15551230001" and c.callee == "+12025550100" for c in inbound)
    assert all(c.caller == "100" and c.callee == "+12025550123" for c in outbound)
    assert all(c.state == "Up" and c.answered is not None for c in calls)
    assert all(c.endpoint == "siporch-edge-edge-central" for c in outbound)
    assert h.active_calls() == {"itsp-a": 5}


def test_status_snapshot_alone_gives_the_same_calls() -> None:
    h = replay(snapshot_entries("live"), handler())
    calls = h.calls()
    assert len(calls) == 5
    assert sorted(c.direction for c in calls) == ["inbound"] * 3 + ["outbound"] * 2
    assert {c.trunk for c in calls} == {"itsp-a"}
    assert {c.codec for c in calls} == {"ulaw"}
    assert all(c.duration(h.clock()) >= 1 for c in calls)
    # an outgoing channel's caller id is the number dialled, its connected line the caller
    assert {(c.caller, c.callee) for c in calls if c.direction == "outbound"} == {
        ("100", "+12025550123")
    }
    assert {(c.caller, c.callee) for c in calls if c.direction == "inbound"} == {
        ("+15551230001", "+12025550100")
    }
    # the edge answered OPTIONS while the calls were up
    edge = [c for c in h.contacts.values() if c.aor == "siporch-edge-edge-central"]
    assert [c.status for c in edge] == ["Reachable"]
    # itsp-a's static contact had nobody answering OPTIONS
    assert [c.status for c in h.contacts_for("itsp-a")] == ["Unreachable"]
    assert h.endpoints["itsp-a"]


def test_events_and_snapshot_agree() -> None:
    events = replay(events_only(stream("live")), handler())
    snap = replay(snapshot_entries("live"), handler())
    assert {c.uniqueid: (c.direction, c.trunk) for c in events.calls()} == {
        c.uniqueid: (c.direction, c.trunk) for c in snap.calls()
    }


def test_joining_mid_call_is_tolerated() -> None:
    """Connected after the calls began (a reconnect): unknown channels do not break it."""
    events = list(events_only(stream("calls")))
    first_answer = next(i for i, e in enumerate(events) if e.get("Event") == "DialEnd")
    h = replay(events[first_answer + 1 :], handler())
    assert h.channels == {}
    assert h.stats.missing > 0


def test_reconnect_resets_then_snapshot_restores() -> None:
    h = replay(events_only(stream("live")), handler())
    h.on_event({"Event": "FullyBooted", "Status": "Fully Booted"})
    assert h.channels == {}
    replay(snapshot_entries("live"), h)
    assert len(h.calls()) == 5


def test_registration_state_follows_registry_events() -> None:
    h = replay(snapshot_entries("registration"), handler())
    reg = h.registration_for("itsp-b")
    assert reg is not None and reg.status == "Registered"
    replay(events_only(stream("unregistered")), h)
    reg = h.registration_for("itsp-b")
    assert reg is not None and reg.status == "Unregistered"
    assert h.registration_for("itsp-a") is None


def test_registry_event_from_registrar_coming_up() -> None:
    h = handler()
    h.on_event(
        {
            "Event": "OutboundRegistrationDetail",
            "ObjectName": "itsp-b",
            "ServerUri": "sip:127.0.0.1:5095",
            "ClientUri": "sip:examplecorp@127.0.0.1:5095",
            "Status": "Rejected",
        }
    )
    replay(events_only(stream("registration")), h)
    reg = h.registration_for("itsp-b")
    assert reg is not None and reg.status == "Registered"


def _per_edge(h: CallStateHandler, states: dict[str, str]) -> None:
    """itsp-b registered once per edge (``itsp-b-reg-<edge>``), as PJSIPShowRegistrationsOutbound
    lists them: the same client and server URI, one outbound proxy each."""
    for edge, status in states.items():
        h.on_event(
            {
                "Event": "OutboundRegistrationDetail",
                "ObjectName": f"itsp-b-reg-{edge}",
                "ServerUri": "sip:203.0.113.30:5061;transport=tls",
                "ClientUri": "sip:examplecorp@sip.itsp-b.example.com",
                "Endpoint": "itsp-b",
                "Status": status,
            }
        )


def test_registrations_through_each_edge_are_kept_by_name() -> None:
    """A `Registry` event names the client and server URI only, which a trunk's
    registrations through two edges share: it changes neither of them, and the
    registrations are marked to be read again by name (the transport does so)."""
    h = handler()
    _per_edge(h, {"edge-central": "Registered", "edge-central-2": "Registered"})
    regs = h.registrations_for("itsp-b")
    assert [(r.name, r.status) for r in regs] == [
        ("itsp-b-reg-edge-central", "Registered"),
        ("itsp-b-reg-edge-central-2", "Registered"),
    ]
    assert not h.registrations_unsure
    h.on_event(
        {
            "Event": "Registry",
            "ChannelType": "PJSIP",
            "Username": "sip:examplecorp@sip.itsp-b.example.com",
            "Domain": "sip:203.0.113.30:5061;transport=tls",
            "Status": "Rejected",
        }
    )
    assert h.registrations_unsure
    assert {r.status for r in h.registrations_for("itsp-b")} == {"Registered"}
    _per_edge(h, {"edge-central": "Rejected", "edge-central-2": "Registered"})
    assert [r.status for r in h.registrations_for("itsp-b")] == ["Rejected", "Registered"]
    assert h.registrations_for("itsp-a") == []


def test_failures_are_counted() -> None:
    h = handler()
    h.on_event(
        {
            "Event": "Newchannel",
            "Channel": "PJSIP/siporch-edge-edge-central-00000001",
            "Uniqueid": "1.1",
            "ChannelStateDesc": "Down",
        }
    )
    h.on_event(
        {"Event": "VarSet", "Uniqueid": "1.1", "Variable": "SIPORCH_TRUNK", "Value": "itsp-b"}
    )
    h.on_event({"Event": "DialEnd", "DestUniqueid": "1.1", "DialStatus": "CONGESTION"})
    h.on_event({"Event": "Hangup", "Uniqueid": "1.1", "Cause": "34"})
    c = h.counters["itsp-b"]
    assert (c.attempts, c.answered, c.failures) == (1, 0, 1)
    assert h.channels == {}


def test_bad_stream_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(MonitorError, match="not JSON"):
        load_stream(bad)
    with pytest.raises(MonitorError, match="cannot read"):
        load_stream(tmp_path / "missing.json")


def test_channelvars_give_the_trunk_without_dialplan_events() -> None:
    """manager.conf as siporch renders it: `channelvars`, no `dialplan` read class."""
    events = list(events_only(stream("chanvars-calls")))
    assert not any(e["Event"] == "VarSet" for e in events)
    last_dial = max(i for i, e in enumerate(events) if e["Event"] == "DialEnd")
    h = replay(events[: last_dial + 1], handler())
    calls = h.calls()
    assert sorted(c.direction for c in calls) == ["inbound"] * 3 + ["outbound"] * 2
    assert {c.trunk for c in calls} == {"itsp-a"}
    replay(events[last_dial + 1 :], h)
    assert h.channels == {}
    assert (h.counters["itsp-a"].attempts, h.counters["itsp-a"].answered) == (5, 5)


def test_calls_refused_before_the_trunk_are_not_trunk_calls() -> None:
    """chanvars-live: the edge did not answer OPTIONS yet, so Asterisk refused the phone's
    outbound calls (cause 3) before any channel toward the edge existed."""
    events = stream("chanvars-live")
    refused = [i for i, e in enumerate(events) if e["Event"] == "Hangup"]
    h = replay(events[: refused[-1] + 1], handler())

    def edge() -> list[str]:
        return [c.status for c in h.contacts.values() if c.aor == "siporch-edge-edge-central"]

    assert edge() == ["Unreachable"]
    assert all(events[i]["Cause"] == "3" for i in refused)
    replay(events[refused[-1] + 1 :], h)
    assert [c.direction for c in h.calls()] == ["inbound"] * 3
    assert h.counters["itsp-a"].failures == 0
    assert edge() == ["Reachable"]


def test_hangup_during_a_sync_is_not_undone_by_the_older_status_entry() -> None:
    """Watching: events go on while the answers to the sync's actions come in."""
    h = handler()
    entries = snapshot_entries("live")
    gone = next(e for e in entries if e["Event"] == "Status" and "itsp-a" in str(e["Channel"]))
    h.begin_sync()
    h.on_event({"Event": "Hangup", "Uniqueid": gone["Uniqueid"], "Cause": "16"})
    replay(entries, h)
    h.end_sync()
    assert gone["Uniqueid"] not in h.channels
    assert len(h.calls()) == 4
    # outside a sync, a Status entry describes the channel as it is
    replay(entries, h)
    assert len(h.calls()) == 5


def test_an_unsure_registry_event_reads_the_registrations_again() -> None:
    """Watching (``status --watch``, the exporter): after a `Registry` event that could be
    either edge's registration, the connection asks for the registrations by name and the
    handler takes each one's state from the answer."""
    import asyncio

    from panoramisk.message import Message

    from siporch.monitor.topology import PbxTarget
    from siporch.monitor.transport import AmiConnection

    h = handler()
    _per_edge(h, {"edge-central": "Registered", "edge-central-2": "Registered"})
    conn = AmiConnection(PbxTarget("pbx-central", "central", "127.0.0.1", 5038, "u", "s"), h)
    asked: list[str] = []

    async def action(a: dict[str, str]) -> list[Message]:
        asked.append(a["Action"])
        base = {
            "Event": "OutboundRegistrationDetail",
            "ServerUri": "sip:203.0.113.30:5061;transport=tls",
            "ClientUri": "sip:examplecorp@sip.itsp-b.example.com",
            "Endpoint": "itsp-b",
        }
        return [
            Message({**base, "ObjectName": "itsp-b-reg-edge-central", "Status": "Rejected"}),
            Message({**base, "ObjectName": "itsp-b-reg-edge-central-2", "Status": "Registered"}),
            Message({"Event": "OutboundRegistrationDetailComplete"}),
        ]

    conn.action = action  # type: ignore[method-assign,assignment]

    async def run() -> None:
        conn._on_event(
            None,
            Message(
                {
                    "Event": "Registry",
                    "Username": "sip:examplecorp@sip.itsp-b.example.com",
                    "Domain": "sip:203.0.113.30:5061;transport=tls",
                    "Status": "Rejected",
                }
            ),
        )
        await asyncio.gather(*conn._tasks)

    asyncio.run(run())
    assert asked == ["PJSIPShowRegistrationsOutbound"]
    assert [r.status for r in h.registrations_for("itsp-b")] == ["Rejected", "Registered"]
    assert not h.registrations_unsure
