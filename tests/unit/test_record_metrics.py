"""Per-trunk metrics from call records: the edge program run on a records database built
with the edges' schema, folded into totals incrementally; a fresh reader (a restarted
exporter) reports the same totals."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from siporch import records
from siporch.monitor import record_metrics as rm

T0 = 1_764_900_000.0


def make_db(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path)
    con.executescript(records.SCHEMA)
    return con


def add_call(
    con: sqlite3.Connection,
    cid: str,
    trunk: str,
    code: int,
    *,
    direction: str = "inbound",
    ring: float | None = 1.0,
    answer: float | None = None,
    duration: float = 0.0,
    failed_legs: list[tuple[str, int]] = (),  # type: ignore[assignment]
) -> None:
    setup = T0
    legs = len(failed_legs) + (0 if code >= 300 and failed_legs else 1)
    for n, (ltrunk, lcode) in enumerate(failed_legs, start=1):
        con.execute(
            "INSERT INTO legs (callid, sip_code, sip_reason, ts, trunk, leg) VALUES (?,?,?,?,?,?)",
            (cid, str(lcode), "x", setup, ltrunk, n),
        )
    con.execute(
        "INSERT INTO calls (callid, direction, trunk, code, reason, setup, ring, answer, "
        "duration, legs) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (
            cid,
            direction,
            trunk,
            code,
            "r",
            setup,
            None if ring is None else setup + ring,
            None if answer is None else setup + answer,
            duration,
            legs,
        ),
    )
    con.commit()


def read(
    totals: rm.RecordTotals, db: Path, edge: str = "edge-central", chunk: int = rm.CHUNK
) -> dict[str, Any]:
    st = totals.edge(edge, "central")
    proc = subprocess.run(
        [sys.executable, *rm.remote_command(str(db), st.last_id, chunk)[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    data: dict[str, Any] = json.loads(proc.stdout)
    totals.add(edge, "central", data)
    return data


def scrape(totals: rm.RecordTotals) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(rm.RecordsCollector(totals))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: dict[Any, float], name: str, **labels: str) -> float:
    want = set(labels.items())
    found = [v for (n, lv), v in m.items() if n == name and want <= set(lv)]
    assert found, (name, labels)
    return sum(found)


def fill(con: sqlite3.Connection) -> None:
    # answered, 2 s PDD, 30 s talk (setup to BYE = 2.5 + 30)
    add_call(con, "a1", "itsp-a", 200, ring=2.0, answer=2.5, duration=32.5)
    # answered after a failover from itsp-a1 (503) on the same trunk
    add_call(con, "a2", "itsp-a", 200, ring=0.3, answer=1.0, duration=11.0,
             failed_legs=[("itsp-a", 503)])  # fmt: skip
    add_call(con, "a3", "itsp-a", 486, ring=None)
    add_call(con, "a4", "itsp-a", 408, ring=None, failed_legs=[("itsp-a", 408), ("itsp-a", 408)])
    add_call(con, "b1", "itsp-b", 603, direction="outbound", ring=None)
    add_call(con, "b2", "itsp-b", 503, direction="outbound", ring=None)


def test_totals_from_records(tmp_path: Path) -> None:
    db = tmp_path / "records.sqlite"
    con = make_db(db)
    fill(con)
    totals = rm.RecordTotals()
    data = read(totals, db)
    assert data["top"] == 6 and not data["restarted"]
    m = scrape(totals)
    a = {"trunk": "itsp-a", "edge": "edge-central", "direction": "inbound", "site": "central"}
    assert value(m, "siporch_trunk_calls_total", **a) == 4
    assert value(m, "siporch_trunk_answered_calls_total", **a) == 2
    assert value(m, "siporch_trunk_failed_calls_total", **a, **{"class": "4xx"}) == 1
    assert value(m, "siporch_trunk_failed_calls_total", **a, **{"class": "timeout"}) == 1
    assert value(m, "siporch_trunk_failed_calls_total", **a, **{"class": "5xx"}) == 0
    b = {"trunk": "itsp-b", "direction": "outbound"}
    assert value(m, "siporch_trunk_failed_calls_total", **b, **{"class": "6xx"}) == 1
    assert value(m, "siporch_trunk_failed_calls_total", **b, **{"class": "5xx"}) == 1
    # PDD: 2.0 s and 0.3 s (the ring); calls without ring or answer have none
    assert value(m, "siporch_trunk_pdd_seconds_count", **a) == 2
    assert value(m, "siporch_trunk_pdd_seconds_sum", **a) == pytest.approx(2.3)
    assert value(m, "siporch_trunk_pdd_seconds_bucket", **a, le="0.5") == 1
    assert value(m, "siporch_trunk_pdd_seconds_bucket", **a, le="2") == 2
    # talk time: 30 s and 10 s
    assert value(m, "siporch_trunk_call_duration_seconds_count", **a) == 2
    assert value(m, "siporch_trunk_call_duration_seconds_sum", **a) == pytest.approx(40.0)
    assert value(m, "siporch_trunk_call_duration_seconds_bucket", **a, le="15") == 1
    assert value(m, "siporch_trunk_call_duration_seconds_bucket", **a, le="+Inf") == 2
    # failover legs: a2's 503 (followed by the answered leg) and a4's first 408; a4's
    # last 408 was the call's final attempt
    assert value(m, "siporch_trunk_failover_legs_total", trunk="itsp-a") == 2
    assert value(m, "siporch_edge_records_up", edge="edge-central") == 1
    assert value(m, "siporch_edge_records_last_id", edge="edge-central") == 6


def test_incremental_reads_equal_a_fresh_read(tmp_path: Path) -> None:
    """Each call is counted once across reads, and a restarted exporter (a fresh reader,
    from id 0) reports exactly the totals of the one that read incrementally."""
    db = tmp_path / "records.sqlite"
    con = make_db(db)
    running = rm.RecordTotals()
    read(running, db)  # empty database
    fill(con)
    read(running, db)
    read(running, db)  # nothing new: nothing added
    add_call(con, "c1", "itsp-a", 200, ring=0.1, answer=0.2, duration=100.0)
    add_call(con, "c2", "itsp-b", 480, direction="outbound", ring=None)
    read(running, db)
    fresh = rm.RecordTotals()
    read(fresh, db)
    m1, m2 = scrape(running), scrape(fresh)
    assert m1 == m2
    assert value(m1, "siporch_trunk_calls_total", trunk="itsp-a") == 5
    assert value(m1, "siporch_trunk_calls_total", trunk="itsp-b") == 3


def test_a_new_database_is_read_from_its_start(tmp_path: Path) -> None:
    db = tmp_path / "records.sqlite"
    con = make_db(db)
    fill(con)
    totals = rm.RecordTotals()
    read(totals, db)
    con.close()
    db.unlink()
    con = make_db(db)
    add_call(con, "n1", "itsp-a", 200, ring=0.5, answer=1.0, duration=5.0)
    data = read(totals, db)
    assert data["restarted"] and data["top"] == 1
    # counters only grow: the new database's call is added to the totals
    assert value(scrape(totals), "siporch_trunk_calls_total", trunk="itsp-a") == 5


def test_missing_database_and_failed_read(tmp_path: Path) -> None:
    totals = rm.RecordTotals()
    totals.edge("edge-central", "central")
    # not read yet: no sample (neither up nor down)
    assert not [k for k in scrape(totals) if k[0] == "siporch_edge_records_up"]
    data = read(totals, tmp_path / "none.sqlite")
    assert data == {"missing": True}
    assert value(scrape(totals), "siporch_edge_records_up", edge="edge-central") == 1
    totals.failed("edge-central", "central", "edge-central: call records not read: x")
    assert value(scrape(totals), "siporch_edge_records_up", edge="edge-central") == 0


def test_memory_is_bounded_by_trunks(tmp_path: Path) -> None:
    """20,000 calls on 3 trunks: totals hold 3 entries, whatever the number of calls."""
    db = tmp_path / "records.sqlite"
    con = make_db(db)
    con.executemany(
        "INSERT INTO calls (callid, direction, trunk, code, setup, ring, answer, duration, legs) "
        "VALUES (?,?,?,?,?,?,?,?,1)",
        [
            (f"x{i}", "inbound", f"t{i % 3}", 200 if i % 2 else 486, T0, T0 + 1, T0 + 2, 10.0)
            for i in range(20000)
        ],
    )
    con.commit()
    totals = rm.RecordTotals()
    read(totals, db)
    assert len(totals.trunks) == 3
    assert sum(t.attempts for t in totals.trunks.values()) == 20000
    assert sum(t.answered for t in totals.trunks.values()) == 10000


def test_chunked_reads_add_up(tmp_path: Path) -> None:
    """Read 2 ids at a time (as a first read of a large database goes, by chunks): the
    totals equal those of one read."""
    db = tmp_path / "records.sqlite"
    fill(make_db(db))
    chunked = rm.RecordTotals()
    while True:
        data = read(chunked, db, chunk=2)
        if data["newest"] <= data["top"]:
            break
    assert data["top"] == 6
    whole = rm.RecordTotals()
    read(whole, db)
    assert scrape(chunked) == scrape(whole)
