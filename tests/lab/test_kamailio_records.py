"""Call records written by the real edge (Kamailio into SQLite), on loopback.

The example edge runs as in test_kamailio_edge (tests/lab/edgekit.py: Debian 12's
Kamailio 5.6 on the host, and sid's 6.x from the lab root), with its own addresses (127.0.87.x) so that both modules can
run at once. SIPp places the calls; the records are read back with the same script
``siporch calls`` runs on an edge over SSH.

* an answered outbound call: one call record (trunk, peer, numbers after translation, code
  200, setup/answer/end times, release) and no leg record;
* a failover (503 from the first peer, 200 from the second): one call record (the second
  peer, two legs) and one leg record, the 503;
* an inbound call; a 486 relayed without failover;
* the edge's own final reply in the INVITE's transaction (403 after pstn-gw refused the
  edge's credentials) is the call's code;
* retention: a record older than ``records.retention_days`` is deleted by the edge.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from siporch import records
from tests.lab.edgekit import (
    SCENARIOS,
    UAC,
    Edge,
    _need_tools,
    _release,
    _running,
    _wait,
    loopback_model,
    received,
    reject_scenario,
)
from tests.lab.edgekit import (
    sipp_call as _sipp_call,
)

NET = "127.0.87"
EDGE, PBX, PEER1, PEER2, ITSP_B, GW, STRANGER = (f"{NET}.{n}" for n in (10, 20, 30, 31, 40, 50, 99))
NG_PORT = 22392
DB_SQLITE = "usr/lib/x86_64-linux-gnu/kamailio/modules/db_sqlite.so"

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module", params=["host", "lab-root"])
def edge(request: pytest.FixtureRequest) -> Iterator[Edge]:
    _need_tools()
    import shutil

    if request.param == "host":
        base = Path(tempfile.mkdtemp(prefix="siporch-rec-"))
        inner, prefix = base, []
    else:
        # this tree's root (its package list has kamailio-sqlite-modules), not whichever
        # root `current` points at
        from siporch.lab import rootfs
        from siporch.lab.spec import LabPaths

        found = rootfs.cached_root(LabPaths.default())
        if found is None or not (found / DB_SQLITE).exists():
            pytest.skip("no lab root with db_sqlite built (siporch lab up builds it)")
        root = found.resolve()
        base = Path(tempfile.mkdtemp(prefix="siporch-rec-", dir=root / "tmp"))
        inner, prefix = Path("/") / base.relative_to(root), ["chroot", str(root)]
    (base / "run").mkdir()
    e = Edge(base, inner, f"unix:{base}/run/kamailio_ctl")
    try:
        _release(e, "a", records_model())
        with _running([e], prefix, NG_PORT, base):
            yield e
    finally:
        shutil.rmtree(base, ignore_errors=True)


def records_model() -> Any:
    """The loopback example, and pstn-gw with credentials its gateway refuses, on a route
    of its own (+1666...): a call there ends with the edge's own 403 (failure_route)."""
    from siporch.model.schema import Model

    data: dict[str, Any] = loopback_model(net=NET, ng_port=NG_PORT).model_dump(mode="json")
    data["trunks"]["pstn-gw"]["credentials"] = {
        "username": "gw-user",
        "password": "gw-wrong-password",
        "realm": "gw.example",
    }
    data["routes"][:0] = [
        {"name": "to-gw", "sites": ["central"], "pattern": r"^\+1666\d{7}$", "trunks": ["pstn-gw"]}
    ]
    return Model.model_validate(data)


def sipp_call(edge: Edge, src: str, number: str, uas: dict[str, Path], timeout: int = 12) -> Any:
    return _sipp_call(edge, src, number, uas, timeout=timeout, target=EDGE)


def db(edge: Edge) -> Path:
    return edge.base / "records" / "records.sqlite"


def rows(edge: Edge, sql: str, *args: object) -> list[dict[str, Any]]:
    con = sqlite3.connect(db(edge), timeout=10)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(sql, args)]
    finally:
        con.close()


def call_record(edge: Edge, callid_hint: str, wait: float = 10) -> dict[str, Any]:
    """The call record whose called number contains ``callid_hint`` written last."""
    found: list[dict[str, Any]] = []

    def ready() -> bool:
        found[:] = rows(
            edge, "SELECT * FROM calls WHERE called LIKE ? ORDER BY id DESC", f"%{callid_hint}%"
        )
        return bool(found)

    assert _wait(ready, wait), (
        "no call record:\n" + (edge.base / "kamailio.log").read_text()[-3000:]
    )
    return found[0]


def legs_of(edge: Edge, callid: str) -> list[dict[str, Any]]:
    return rows(edge, "SELECT * FROM legs WHERE callid = ? ORDER BY ts", callid)


def test_answered_outbound_call_is_recorded(edge: Edge) -> None:
    before = time.time()
    call = sipp_call(edge, PBX, "3125550100", {PEER1: SCENARIOS / "uas_rr.xml"})
    assert call.rc == 0, call.uac[-2000:]
    rec = call_record(edge, "13125550100")
    assert rec["direction"] == "outbound"
    assert rec["trunk"] == "itsp-a"
    assert rec["peer"] == PEER1
    # after translation: route "national" strips the '+' for itsp-a
    assert rec["called"] == "13125550100"
    assert rec["calling"] == "2125550111"
    assert int(rec["code"]) == 200
    assert rec["reason"] == "OK"
    assert rec["release"] == "release-a"
    assert before - 1 <= rec["setup"] <= rec["answer"] <= time.time()
    # the peer's 180 came before its 200
    assert rec["ring"] is not None and rec["setup"] <= rec["ring"] <= rec["answer"]
    assert rec["duration"] > 0
    assert int(rec["legs"]) == 1
    assert legs_of(edge, rec["callid"]) == [], "an answered first leg is the call's own record"


def test_failover_records_one_call_and_two_legs(edge: Edge) -> None:
    call = sipp_call(
        edge,
        PBX,
        "3125550101",
        {PEER1: reject_scenario(edge, 503), PEER2: SCENARIOS / "uas_rr.xml"},
    )
    assert call.rc == 0, call.uac[-2000:]
    rec = call_record(edge, "13125550101")
    assert int(rec["code"]) == 200
    assert rec["peer"] == PEER2
    assert int(rec["legs"]) == 2
    legs = legs_of(edge, rec["callid"])
    # the failed leg has its own row; the answered one is the call record
    assert [(int(leg["sip_code"]), leg["peer"], int(leg["leg"])) for leg in legs] == [
        (503, PEER1, 1),
    ]
    assert all(leg["trunk"] == "itsp-a" and leg["direction"] == "outbound" for leg in legs)
    # when the leg failed: after the call's setup, before its end
    assert all(rec["setup"] <= leg["ts"] <= rec["setup"] + rec["duration"] for leg in legs)


def test_inbound_call_is_recorded(edge: Edge) -> None:
    call = sipp_call(edge, PEER1, "2025550123", {PBX: SCENARIOS / "uas_rr.xml"})
    assert call.rc == 0, call.uac[-2000:]
    rec = call_record(edge, "+12025550123")
    assert rec["direction"] == "inbound"
    assert rec["trunk"] == "itsp-a"
    assert rec["peer"] == PEER1
    assert rec["called"] == "+12025550123"
    assert int(rec["code"]) == 200


def _quoted(edge: Edge, callid: str, caller: str) -> dict[str, Any]:
    """SIPp's arguments for a Call-ID of ``callid`` + its own, and a From user ``caller``."""
    uac = Path(tempfile.mkdtemp(prefix="uac-", dir=edge.base)) / "uac.xml"
    uac.write_text(UAC.read_text().replace("<sip:2125550111@", f"<sip:{caller}@"))
    return {"uac_scenario": uac, "uac_args": ("-cid_str", f"{callid}%u-%p@%s")}


def test_quotes_and_backslashes_are_recorded_as_sent(edge: Edge) -> None:
    """Call-IDs may hold ' " and \\ (RFC 3261's word), a user part a ': the record keeps
    them byte for byte, and the other records of the batch are written too (a quote that
    broke the SQL would lose the whole batch)."""
    odd_id = "it's-a\\back\"-"
    call = _sipp_call(
        edge, PEER1, "2025550124", {PBX: SCENARIOS / "uas_rr.xml"}, target=EDGE,
        **_quoted(edge, odd_id, "o'brien"),
    )  # fmt: skip
    assert call.rc == 0, call.uac[-2000:]
    rec = call_record(edge, "+12025550124")
    assert rec["callid"].startswith(odd_id), rec["callid"]
    assert rec["calling"] == "o'brien"
    assert int(rec["code"]) == 200
    # a failed leg (486 from itsp-a's first peer) with such a Call-ID: its row in legs
    _sipp_call(
        edge, PBX, "3125550125",
        {PEER1: reject_scenario(edge, 486), PEER2: SCENARIOS / "uas_rr.xml"},
        timeout=6, target=EDGE, **_quoted(edge, "l'eg-", "2125550111"),
    )  # fmt: skip
    rec = call_record(edge, "13125550125")
    assert rec["callid"].startswith("l'eg-"), rec["callid"]
    assert [int(leg["sip_code"]) for leg in legs_of(edge, rec["callid"])] == [486]


def _received_at(log: str, first_line: str, cseq: str) -> float:
    """When SIPp (-trace_msg) received the message that starts with ``first_line`` and
    carries ``cseq``, in epoch seconds: SIPp writes the local time on the line above each
    message."""
    stamps = re.split(r"^-{20,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\s*$", log, flags=re.M)
    for stamp, text in zip(stamps[1::2], stamps[2::2], strict=True):
        if "message received" not in text:
            continue
        message = text.split("\n", 2)[2].lstrip()
        if message.startswith(first_line) and f"CSeq: {cseq}" in message:
            return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()
    raise AssertionError(f"no {first_line!r} with CSeq {cseq} in:\n{log[-2000:]}")


def test_a_reinvite_leaves_the_calls_code_and_answer(edge: Edge) -> None:
    """A re-INVITE through an anchored call (its replies pass the reply route the first
    INVITE's passed) changes neither the call's code nor its answer time: the record keeps
    the first 200's, from before the peer received the re-INVITE."""
    call = _sipp_call(
        edge, PBX, "3125550141", {PEER1: SCENARIOS / "uas_reinvite.xml"}, target=EDGE,
        uac_scenario=SCENARIOS / "uac_reinvite.xml",
    )  # fmt: skip
    assert call.rc == 0, call.uac[-2000:]
    reinvite_at = _received_at(call.uas[PEER1], "INVITE ", "2 INVITE")
    rec = call_record(edge, "13125550141")
    assert (int(rec["code"]), rec["reason"], rec["trunk"]) == (200, "OK", "itsp-a"), rec
    assert rec["setup"] <= rec["answer"] < reinvite_at, (rec, reinvite_at)
    assert rec["ring"] is None or rec["ring"] <= rec["answer"], rec
    assert rec["setup"] + rec["duration"] > reinvite_at, "the call ends after its re-INVITE"


def test_busy_call_is_recorded_with_its_code(edge: Edge) -> None:
    sipp_call(
        edge,
        PBX,
        "3125550102",
        {PEER1: reject_scenario(edge, 486), PEER2: SCENARIOS / "uas_rr.xml"},
        timeout=6,
    )
    rec = call_record(edge, "13125550102")
    assert int(rec["code"]) == 486
    assert rec["answer"] is None
    legs = legs_of(edge, rec["callid"])
    assert [int(leg["sip_code"]) for leg in legs] == [486]


def test_a_call_no_peer_takes_carries_the_edges_own_reply(edge: Edge) -> None:
    """Both of itsp-a's peers answer 503, and itsp-b (next in route national) is silent:
    three failed legs, and the call's code is the final reply the caller got."""
    call = sipp_call(
        edge,
        PBX,
        "3125550103",
        {PEER1: reject_scenario(edge, 503), PEER2: reject_scenario(edge, 503)},
        timeout=25,
    )
    rec = call_record(edge, "13125550103")
    legs = legs_of(edge, rec["callid"])
    assert [(int(leg["sip_code"]), leg["peer"]) for leg in legs] == [
        (503, PEER1),
        (503, PEER2),
        (408, ITSP_B),
    ]
    got = [m.splitlines()[0] for m in received(call.uac) if re.match(r"SIP/2.0 [3-6]", m)]
    assert got, call.uac[-1500:]
    assert f"SIP/2.0 {int(rec['code'])} {rec['reason']}" == got[-1].strip()
    assert rec["answer"] is None and int(rec["legs"]) == 3
    assert rec["trunk"] == "itsp-b"


def test_the_edges_own_reply_in_the_transaction_is_the_calls_code(edge: Edge) -> None:
    """pstn-gw challenges the edge's answer again (a wrong password): the edge's failure
    route replies 403 itself (t_reply). The record carries that 403, not the gateway's last
    401: the dialog fails, and its record is made, when tm has the reply ready, before it
    is sent, so the code is set before the reply."""
    uas = edge.base / "uas_auth_401_gw.xml"
    text = (SCENARIOS / "uas_auth_401.xml").read_text()
    for key, value in {
        "REALM": "gw.example",
        "USER": "gw-user",
        "PASS": "gw-right-password",
    }.items():
        text = text.replace(f"__{key}__", value)
    uas.write_text(text)
    call = sipp_call(edge, PBX, "6665550100", {GW: uas}, timeout=8)
    got = [m.splitlines()[0] for m in received(call.uac) if re.match(r"SIP/2.0 [3-6]", m)]
    assert got and got[-1].strip() == "SIP/2.0 403 Trunk Authentication Failed", call.uac[-1500:]
    rec = call_record(edge, "6665550100")
    assert (int(rec["code"]), rec["reason"]) == (403, "Trunk Authentication Failed")
    assert rec["trunk"] == "pstn-gw" and rec["answer"] is None and int(rec["legs"]) == 2
    legs = legs_of(edge, rec["callid"])
    assert [(int(leg["sip_code"]), int(leg["leg"])) for leg in legs] == [(401, 1), (401, 2)]


def test_calls_the_edge_refuses_are_recorded(edge: Edge) -> None:
    """A DID nobody serves: 404 from the edge itself, no dialog; the record says so. A
    source the edge does not know leaves no record (scanners would fill the database)."""
    sipp_call(edge, PEER1, "3125550177", {PBX: SCENARIOS / "uas_rr.xml"}, timeout=5)
    rec = call_record(edge, "3125550177")
    assert (rec["direction"], rec["trunk"], int(rec["code"])) == ("inbound", "itsp-a", 404)
    assert rec["reason"] == "No Such Number"
    assert int(rec["legs"]) == 0 and rec["answer"] is None
    assert rec["release"] == "release-a"
    sipp_call(edge, STRANGER, "3125550178", {PEER1: SCENARIOS / "uas_rr.xml"}, timeout=5)
    sipp_call(edge, PBX, "3125550179", {PEER1: SCENARIOS / "uas_rr.xml"})  # a marker
    call_record(edge, "13125550179")
    assert not rows(edge, "SELECT id FROM calls WHERE called LIKE '%3125550178%'")


def test_records_read_as_siporch_calls_does(edge: Edge) -> None:
    """The script ``siporch calls`` runs on each edge, run here on the same database (an
    answered itsp-a call placed first: the test needs none of the tests before)."""
    for _ in range(3):  # the module's first call may find the edge still starting
        call = sipp_call(edge, PBX, "3125550102", {PEER1: SCENARIOS / "uas_rr.xml"})
        if call.rc == 0:
            break
    assert call.rc == 0, call.uac[-2000:]
    call_record(edge, "13125550102")
    flt = records.Filters(trunk="itsp-a")
    out = subprocess.run(
        [sys.executable, "-c", records.remote_script(), str(db(edge)), flt.as_json()],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    calls = list(records.parse_lines(out.splitlines(), edge="edge-central"))
    assert calls, out
    by_called = {c.called: c for c in calls}
    assert "13125550102" in by_called, sorted(by_called)
    if "13125550101" in by_called:
        fo = by_called["13125550101"]
        assert [leg["code"] for leg in fo.failed_legs] == ["503"]
    summary = {s.trunk: s for s in records.summarize(calls)}
    s = summary["itsp-a"]
    assert s.attempts == len(calls)
    assert s.answered == sum(1 for c in calls if c.result == "answered")


def test_old_records_are_deleted(edge: Edge) -> None:
    """The example keeps 90 days: a record of 91 days ago goes at the next trim (15 s); one
    of 89 days ago stays (both written here: the test needs no call of the tests before)."""
    now = time.time()
    con = sqlite3.connect(db(edge), timeout=10)
    with con:
        for callid, setup in (("old-call", now - 91 * 86400), ("recent-call", now - 89 * 86400)):
            con.execute(
                "INSERT INTO calls (callid, trunk, setup, code) VALUES (?, 'itsp-a', ?, 200)",
                (callid, setup),
            )
            con.execute(
                "INSERT INTO legs (callid, ts, sip_code) VALUES (?, ?, '200')", (callid, setup)
            )
    con.close()

    def gone() -> bool:
        return not rows(edge, "SELECT id FROM calls WHERE callid = 'old-call'") and not rows(
            edge, "SELECT id FROM legs WHERE callid = 'old-call'"
        )

    assert _wait(gone, 40), "the old record is still there"
    assert rows(edge, "SELECT id FROM calls WHERE callid = 'recent-call'"), (
        "recent records went too"
    )
    assert rows(edge, "SELECT id FROM legs WHERE callid = 'recent-call'"), "recent legs went too"
    con = sqlite3.connect(db(edge), timeout=10)
    with con:
        con.execute("DELETE FROM legs WHERE callid = 'recent-call'")
        con.execute("DELETE FROM calls WHERE callid = 'recent-call'")
    con.close()
