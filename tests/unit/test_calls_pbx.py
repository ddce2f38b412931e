"""The PBX side of `siporch calls`: Asterisk CDRs joined to the edges' records by Call-ID.

The PBX rows are what Asterisk 22.10's cdr_sqlite3_custom wrote with the rendered mapping
(an inbound call answered by Echo, and an outbound call from a Local channel dialled to the
edge: its CDR is the one whose destination channel is the PJSIP channel to the edge); the
edge rows use the edges' schema (tests/unit/test_records.py).
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
from siporch.model import load_model
from siporch.render import asterisk

T0 = 1_796_493_699.0
ROOT = Path(__file__).resolve().parents[2]


def edge_db(path: Path) -> Path:
    con = sqlite3.connect(path)
    con.executescript(records.SCHEMA)
    rows = [
        # inbound, answered by the PBX
        dict(callid="1-25167@198.18.0.30", direction="inbound", trunk="itsp-a",
             calling="+13125550199", called="+12025550100", code=200, reason="OK",
             setup=T0, ring=T0 + 0.01, answer=T0 + 0.02, duration=1.0, legs=1),
        # outbound from the PBX: the edge keeps the PBX's Call-ID
        dict(callid="d0e0cd1a-aeff-42be-893e-0cef8805e58d", direction="outbound",
             trunk="itsp-a", calling="2025550100", called="13125550100", code=200,
             reason="OK", setup=T0 + 1.1, ring=T0 + 1.2, answer=T0 + 1.3, duration=2.0,
             legs=1),
        # a DID sent to the direct trunk: never reaches the PBX
        dict(callid="direct-1", direction="inbound", trunk="itsp-a", calling="+13125550199",
             called="+12025550200", code=200, reason="OK", setup=T0 + 5, answer=T0 + 5.5,
             duration=3.0, legs=1),
    ]  # fmt: skip
    for r in rows:
        con.execute(
            f"INSERT INTO calls ({', '.join(r)}) VALUES ({', '.join('?' * len(r))})",
            list(r.values()),
        )
    con.commit()
    con.close()
    return path


def cdr(**kw: Any) -> dict[str, Any]:
    row = dict.fromkeys(asterisk.CDR_COLUMNS, "")
    row.update(kw)
    return row


PBX_ROWS = [
    cdr(callid="1-25167@198.18.0.30", start=str(T0 + 0.005), answer=str(T0 + 0.006),
        end=str(T0 + 1.01), clid='"" <+13125550199>', src="+13125550199",
        dst="+12025550100", dcontext="from-trunk", channel="PJSIP/itsp-a-00000000",
        lastapp="Echo", disposition="ANSWERED", duration="1", billsec="1",
        accountcode="itsp-a", uniqueid="1796493699.0", linkedid="1796493699.0"),
    # the originating Local channel's own CDR: no Call-ID (not siporch's leg)
    cdr(callid="", start=str(T0 + 1.0), answer=str(T0 + 1.35), end=str(T0 + 3.3),
        clid='"" <3125550100>', src="3125550100", dst="3125550100",
        dcontext="siporch-outbound", channel="Local/3125550100@siporch-outbound-00000000;1",
        lastapp="Wait", disposition="ANSWERED", duration="2", billsec="2",
        uniqueid="1796493700.1", linkedid="1796493700.1"),
    cdr(callid="d0e0cd1a-aeff-42be-893e-0cef8805e58d", start=str(T0 + 1.0),
        answer=str(T0 + 1.35), end=str(T0 + 3.3), clid='"" <>', dst="3125550100",
        dcontext="siporch-outbound", channel="Local/3125550100@siporch-outbound-00000000;2",
        dstchannel="PJSIP/siporch-edge-edge-central-00000001", lastapp="Dial",
        disposition="ANSWERED", duration="2", billsec="2", uniqueid="1796493700.2",
        linkedid="1796493700.1"),
]  # fmt: skip


def pbx_db(path: Path, rows: list[dict[str, Any]] = PBX_ROWS) -> Path:
    con = sqlite3.connect(path)
    # as cdr_sqlite3_custom creates it: the mapping's columns, no types, no index
    con.execute(f"CREATE TABLE {asterisk.CDR_TABLE} ({', '.join(asterisk.CDR_COLUMNS)})")
    for r in rows:
        con.execute(
            f"INSERT INTO {asterisk.CDR_TABLE} VALUES ({', '.join('?' * len(r))})",
            [r[c] for c in asterisk.CDR_COLUMNS],
        )
    con.commit()
    con.close()
    return path


@pytest.fixture
def dbs(tmp_path: Path) -> tuple[Path, Path]:
    return edge_db(tmp_path / "edge-central.sqlite"), pbx_db(tmp_path / "pbx-central.db")


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, ["calls", *args])


def test_json_shows_the_pbx_side_of_inbound_and_outbound(dbs: tuple[Path, Path]) -> None:
    edge, pbx = dbs
    r = run("--from-file", str(edge), "--pbx-file", str(pbx), "--json")
    assert r.exit_code == 0, r.output
    rows = {x["callid"]: x for x in map(json.loads, r.output.splitlines())}
    inbound = rows["1-25167@198.18.0.30"]["pbx"]
    assert [(p["host"], p["channel"], p["disposition"], p["billsec"]) for p in inbound] == [
        ("pbx-central", "PJSIP/itsp-a-00000000", "ANSWERED", 1)
    ]
    assert inbound[0]["dcontext"] == "from-trunk" and inbound[0]["start"].endswith("Z")
    out = rows["d0e0cd1a-aeff-42be-893e-0cef8805e58d"]["pbx"]
    assert len(out) == 1  # the Local;1 CDR has no Call-ID: not joined
    assert out[0]["dstchannel"] == "PJSIP/siporch-edge-edge-central-00000001"
    assert out[0]["lastapp"] == "Dial"
    assert rows["direct-1"]["pbx"] == []


def test_mask_covers_the_numbers_in_cdr_fields(dbs: tuple[Path, Path]) -> None:
    edge, pbx = dbs
    r = run("--from-file", str(edge), "--pbx-file", str(pbx), "--json", "--mask")
    assert r.exit_code == 0, r.output
    assert "3125550199" not in r.output and "3125550100" not in r.output
    rows = {x["callid"]: x for x in map(json.loads, r.output.splitlines())}
    p = rows["1-25167@198.18.0.30"]["pbx"][0]
    assert p["src"] == "+131******99" and p["dst"] == "+120******00"
    assert p["clid"] == '"" <+131******99>'
    assert p["channel"] == "PJSIP/itsp-a-00000000"  # the channel's own suffix stays
    assert p["uniqueid"] == "1796493699.0"
    q = rows["d0e0cd1a-aeff-42be-893e-0cef8805e58d"]["pbx"][0]
    assert q["channel"] == "Local/312*****00@siporch-outbound-00000000;2"


def test_csv_and_table_carry_the_pbx_columns(dbs: tuple[Path, Path]) -> None:
    edge, pbx = dbs
    r = run("--from-file", str(edge), "--pbx-file", str(pbx), "--csv", "--mask")
    assert r.exit_code == 0, r.output
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(r.output)))
    by = {x["callid"]: x for x in rows}
    assert by["1-25167@198.18.0.30"]["pbx_channel"] == "PJSIP/itsp-a-00000000"
    assert by["1-25167@198.18.0.30"]["pbx_disposition"] == "ANSWERED"
    assert by["1-25167@198.18.0.30"]["pbx_billsec"] == "1"
    assert by["d0e0cd1a-aeff-42be-893e-0cef8805e58d"]["pbx_channel"].startswith("Local/312***")
    assert by["direct-1"]["pbx_host"] == "" and by["direct-1"]["pbx_cdrs"] == ""
    r = run("--from-file", str(edge), "--pbx-file", str(pbx))
    assert r.exit_code == 0, r.output
    assert "pbx channel" in r.output and "PJSIP/itsp-a-00000000" in r.output
    assert "ANSWERED" in r.output


def test_without_pbx_file_the_records_have_no_pbx_side(dbs: tuple[Path, Path]) -> None:
    edge, _ = dbs
    r = run("--from-file", str(edge), "--json")
    assert r.exit_code == 0, r.output
    assert all(json.loads(x)["pbx"] == [] for x in r.output.splitlines())
    r = run("--pbx-file", str(dbs[1]))
    assert r.exit_code == 2 and "--from-file" in r.output


def test_missing_pbx_database_is_a_note_not_a_failure(dbs: tuple[Path, Path], tmp_path: Path) -> None:
    edge, _ = dbs
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()  # no table yet: Asterisk has written no CDR
    r = CliRunner().invoke(
        cli, ["calls", "--from-file", str(edge), "--pbx-file", str(empty), "--json"]
    )
    assert r.exit_code == 0, r.output
    assert len(r.stdout.splitlines()) == 3


def test_reader_adds_a_call_id_index_and_answers_batches(tmp_path: Path) -> None:
    pbx = pbx_db(tmp_path / "p.db")
    problems: list[str] = []
    reader = records.PbxReader(records.pbx_file_sources([pbx]), problems)
    try:
        first = reader.lookup(["1-25167@198.18.0.30", "nope"])
        second = reader.lookup(["d0e0cd1a-aeff-42be-893e-0cef8805e58d"])
        assert reader.lookup([]) == {}
    finally:
        reader.close()
    assert list(first) == ["1-25167@198.18.0.30"] and list(second) == [
        "d0e0cd1a-aeff-42be-893e-0cef8805e58d"
    ]
    assert problems == []
    con = sqlite3.connect(pbx)
    names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='index'")]
    assert f"{asterisk.CDR_TABLE}_callid" in names


def test_join_asks_one_batch_at_a_time_and_keeps_the_order() -> None:
    calls = [
        records.call_from_row({"callid": f"c{i}", "setup": T0 + i, "code": 200})
        for i in range(7)
    ]
    asked: list[list[str]] = []

    def lookup(ids: list[str]) -> dict[str, list[records.PbxCdr]]:
        asked.append(list(ids))
        return {
            i: [records.pbx_cdr_from_row("pbx", {"callid": i, "disposition": "ANSWERED"})]
            for i in ids
            if i in ("c1", "c5")
        }

    out = list(records.join_pbx(iter(calls), lookup, batch=3))
    assert [c.callid for c in out] == [f"c{i}" for i in range(7)]
    assert [len(x) for x in asked] == [3, 3, 1]
    assert [c.callid for c in out if c.pbx] == ["c1", "c5"]


def test_pbx_main_is_the_answered_cdr_with_the_longest_billsec() -> None:
    def c(disp: str, bill: int) -> records.PbxCdr:
        return records.pbx_cdr_from_row("p", {"disposition": disp, "billsec": bill})

    call = records.call_from_row({"callid": "x", "setup": T0, "code": 200})
    import dataclasses

    assert call.pbx_main is None
    many = dataclasses.replace(call, pbx=(c("NO ANSWER", 0), c("ANSWERED", 5), c("ANSWERED", 2)))
    assert many.pbx_main is not None and many.pbx_main.billsec == 5
    none = dataclasses.replace(call, pbx=(c("BUSY", 0), c("NO ANSWER", 0)))
    assert none.pbx_main is not None and none.pbx_main.disposition == "NO ANSWER"


def test_mask_text() -> None:
    assert records.mask_text("PJSIP/+12025550100-0000001f") == "PJSIP/+120******00-0000001f"
    assert records.mask_text('"Alice" <2125550111>') == '"Alice" <212*****11>'
    assert records.mask_text("PJSIP/siporch-edge-edge-central-00000001") == (
        "PJSIP/siporch-edge-edge-central-00000001"
    )
    assert records.mask_text("") == ""


def test_rendered_pbx_records_the_call_id_in_its_own_cdr_database() -> None:
    model = load_model(ROOT / "inventory" / "example").model
    files = asterisk.render(model, "pbx-central")
    ext = files[f"asterisk/{asterisk.EXTENSIONS_FILE}"]
    cdr_conf = files[f"asterisk/{asterisk.CDR_FILE}"]
    assert "Set(CDR(siporch_callid)=${PJSIP_HEADER(read,Call-ID)})" in ext
    assert "b(siporch-outbound-dialing^s^1)" in ext
    assert "Set(CDR(siporch_callid)=${CHANNEL(pjsip,call-id)})" in ext
    assert f"[{asterisk.CDR_DB}]" in cdr_conf
    assert asterisk.CDR_DB.endswith(".db")  # cdr_sqlite3_custom adds .db to other names
    assert len(asterisk.CDR_COLUMNS) == len(asterisk.CDR_FIELDS)
    assert asterisk.SITE_INCLUDES["cdr_sqlite3_custom.conf"] == asterisk.CDR_FILE
    assert ("asterisk/" + asterisk.CDR_FILE, "asterisk:cdr reload") in asterisk.RELOADS
