"""Call records: parsing, filters, summary and `siporch calls` over a records database.

The rows are as the edge writes them (columns of tests/lab/test_kamailio_records.py's
real Kamailio runs); the database is built with the schema the edges use.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from siporch import records
from siporch.cli import cli

T0 = 1_796_000_000.0  # 2026-11-30 00:53:20 UTC


def call_row(**kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "start_time": "2026-11-29 00:53:20",
        "end_time": "2026-11-29 00:54:20",
        "duration": 62.5,
        "callid": "c1",
        "direction": "outbound",
        "trunk": "itsp-a",
        "peer": "203.0.113.10",
        "source": "192.0.2.20",
        "calling": "2125550111",
        "called": "13125550100",
        "code": 200,
        "reason": "OK",
        "setup": T0,
        "ring": T0 + 1.5,
        "answer": T0 + 2.5,
        "legs": 1,
        "release": "20261129T000000Z-abcdef12",
    }
    row.update(kw)
    return row


def leg_row(callid: str, ts: float, code: int, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "method": "INVITE",
        "callid": callid,
        "sip_code": str(code),
        "sip_reason": {200: "OK", 503: "Service Unavailable", 486: "Busy Here"}.get(code, "X"),
        "ts": ts,
        "direction": "outbound",
        "trunk": "itsp-a",
        "peer": "203.0.113.10",
        "called": "13125550100",
        "leg": 1,
    }
    row.update(kw)
    return row


def make_db(path: Path, calls: list[dict[str, Any]], legs: list[dict[str, Any]]) -> Path:
    con = sqlite3.connect(path)
    con.executescript(records.SCHEMA)
    for table, rows in (("calls", calls), ("legs", legs)):
        for r in rows:
            cols = ", ".join(r)
            con.execute(
                f"INSERT INTO {table} ({cols}) VALUES ({', '.join('?' * len(r))})", list(r.values())
            )
    con.commit()
    con.close()
    return path


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    calls = [
        call_row(),  # answered, 60 s talk
        call_row(  # failover: 503 on itsp-a's first peer, answered on the second
            callid="c2",
            called="13125550101",
            setup=T0 + 100,
            ring=T0 + 101,
            answer=T0 + 103,
            duration=33.0,
            legs=2,
            peer="203.0.113.11",
        ),
        call_row(  # busy
            callid="c3",
            called="13125550102",
            code=486,
            reason="Busy Here",
            setup=T0 + 200,
            ring=None,
            answer=None,
            duration=0.5,
        ),
        call_row(  # inbound on itsp-b, failed after failover to nothing
            callid="c4",
            direction="inbound",
            trunk="itsp-b",
            calling="+33140000000",
            called="+12025550123",
            code=503,
            reason="Service Unavailable",
            setup=T0 + 300,
            ring=None,
            answer=None,
            duration=4.0,
        ),
    ]
    legs = [
        leg_row("c1", T0 + 2.5, 200),
        leg_row("c2", T0 + 100.2, 503, called="13125550101"),
        leg_row("c2", T0 + 103, 200, peer="203.0.113.11", leg=2),
        leg_row("c3", T0 + 200.4, 486),
        leg_row("c4", T0 + 304, 503, trunk="itsp-b", direction="inbound"),
    ]
    return make_db(tmp_path / "edge-central.sqlite", calls, legs)


def read(db: Path, flt: records.Filters | None = None) -> list[records.Call]:
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-c",
            records.remote_script(),
            str(db),
            (flt or records.Filters()).as_json(),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return list(records.parse_lines(out.splitlines(), edge="edge-central"))


def test_rows_become_calls(sample: Path) -> None:
    calls = read(sample)
    assert [c.callid for c in calls] == ["c1", "c2", "c3", "c4"]
    c1 = calls[0]
    assert c1.result == "answered"
    assert c1.pdd == pytest.approx(1.5)
    assert c1.duration == pytest.approx(60.0)  # setup + 62.5 s (the BYE) - answer
    assert c1.failed_legs == []
    c2 = calls[1]
    assert [leg["code"] for leg in c2.failed_legs] == ["503"]
    assert calls[2].result == "busy" and calls[2].duration is None
    assert calls[3].result == "failed"


def test_filters_on_the_edge_and_here(sample: Path) -> None:
    assert [c.callid for c in read(sample, records.Filters(trunk="itsp-b"))] == ["c4"]
    assert [c.callid for c in read(sample, records.Filters(number="5550101"))] == ["c2"]
    assert [c.callid for c in read(sample, records.Filters(since=T0 + 150))] == ["c3", "c4"]
    assert [c.callid for c in read(sample, records.Filters(until=T0 + 150))] == ["c1", "c2"]
    flt = records.Filters(result="busy")
    assert [c.callid for c in read(sample) if flt.match(c)] == ["c3"]


def test_summary_per_trunk(sample: Path) -> None:
    s = {x.trunk: x.as_dict() for x in records.summarize(read(sample))}
    a = s["itsp-a"]
    assert a["attempts"] == 3
    assert a["answered"] == 2
    assert a["asr"] == pytest.approx(2 / 3, abs=1e-4)
    assert a["acd"] == pytest.approx((60.0 + 30.0) / 2)
    assert a["pdd_median"] == pytest.approx(1.25)  # c1 1.5 s, c2 1.0 s, c3 none
    assert a["failovers"] == 1  # c2's 503 was followed by a second leg
    assert a["top_failures"] == ["486 Busy Here x1"]
    b = s["itsp-b"]
    assert (b["attempts"], b["answered"], b["asr"], b["acd"]) == (1, 0, 0.0, None)
    assert b["failovers"] == 0  # its only leg was the last attempt


def test_quantiles_are_exact_below_the_sample_size_and_close_above() -> None:
    q = records.Quantiles(size=1000)
    for v in range(1, 102):
        q.add(float(v))
    assert q.quantile(0.5) == 51.0
    assert q.quantile(0.95) == pytest.approx(96.0)
    big = records.Quantiles(size=2000)
    for v in range(100_000):
        big.add(float(v % 1000))
    assert big.quantile(0.5) == pytest.approx(500, abs=40)


def test_mask_keeps_the_shape() -> None:
    assert records.mask_number("+13125550100") == "+131******00"
    assert records.mask_number("2125550111") == "212*****11"
    assert records.mask_number("1234") == "****"
    assert records.mask_number("") == ""


def test_parse_time() -> None:
    now = 2_000_000_000.0
    assert records.parse_time("2h", now) == now - 7200
    assert records.parse_time("7d", now) == now - 7 * 86400
    assert records.parse_time("2026-11-30T00:53:20Z", now) == T0
    assert records.parse_time("2026-11-30 00:53:20", now) == T0
    with pytest.raises(ValueError, match="not a time"):
        records.parse_time("yesterday", now)


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, ["calls", *args])


def test_cli_json_csv_table_and_mask(sample: Path) -> None:
    r = run("--from-file", str(sample), "--json", "--mask")
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert [x["callid"] for x in rows] == ["c1", "c2", "c3", "c4"]
    assert rows[0]["called"] == "131******00"
    assert rows[0]["setup"] == "2026-11-30T00:53:20.000Z"
    assert rows[1]["failed_legs"][0]["called"] == "131******01"
    r = run("--from-file", str(sample), "--csv", "--result", "answered")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].startswith("edge,setup,direction,trunk")
    assert len(lines) == 3
    r = run("--from-file", str(sample), "--trunk", "itsp-a")
    assert r.exit_code == 0, r.output
    assert "13125550101" in r.output and "+12025550123" not in r.output


def test_cli_summary(sample: Path) -> None:
    r = run("--from-file", str(sample), "--summary", "--json")
    assert r.exit_code == 0, r.output
    s = {x["trunk"]: x for x in map(json.loads, r.output.splitlines())}
    assert s["itsp-a"]["answered"] == 2 and s["itsp-b"]["attempts"] == 1
    r = run("--from-file", str(sample), "--summary")
    assert r.exit_code == 0, r.output
    assert "itsp-a" in r.output and "66.7%" in r.output


def test_cli_bad_input_is_one_line_exit_2(sample: Path) -> None:
    r = run("--from-file", str(sample), "--since", "yesterday")
    assert r.exit_code == 2
    assert "not a time" in r.output
    r = run("--from-file", str(sample), "--json", "--csv")
    assert r.exit_code == 2


def test_role_helper_creates_the_database_private(tmp_path: Path) -> None:
    """records-init (the kamailio_edge role's helper): schema applied twice (idempotent),
    directory 0700 and file 0600; the rows already there stay."""
    import importlib.util

    helper = Path(__file__).resolve().parents[2] / "roles/kamailio_edge/files/siporch_kamailio.py"
    spec = importlib.util.spec_from_file_location("siporch_kamailio", helper)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sql = tmp_path / "records.sql"
    sql.write_text(records.SCHEMA)
    db = tmp_path / "state" / "records" / "records.sqlite"
    mod.records_init(db, sql, "")
    con = sqlite3.connect(db)
    con.execute("INSERT INTO calls (callid, setup) VALUES ('kept', 1)")
    con.commit()
    con.close()
    assert mod.main(["records-init", str(db), str(sql)]) == 0
    assert (db.parent.stat().st_mode & 0o777, db.stat().st_mode & 0o777) == (0o700, 0o600)
    con = sqlite3.connect(db)
    assert con.execute("SELECT callid FROM calls").fetchall() == [("kept",)]
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
