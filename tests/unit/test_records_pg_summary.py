"""`siporch calls --summary` from PostgreSQL, aggregated by the server (records.SUMMARY_SQL_PG),
against the same summary computed from the same records read call by call: from a SQLite
copy (the `--from-file` path, as for SQLite edges) and from PostgreSQL (the streaming reader).

A real PostgreSQL server of the test's own (the host's postgresql package, run as the
``postgres`` user on 127.0.0.1, in a temporary directory); needs root.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from siporch import records

pytestmark = pytest.mark.lab

PASSWORD = "summary-test"


def _pg_bin(tool: str) -> str | None:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{tool}"), key=lambda p: p.parts[-3])
    return str(found[-1]) if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def pg() -> Iterator[dict[str, Any]]:
    if os.geteuid() != 0 or not _pg_bin("initdb") or shutil.which("psql") is None:
        pytest.skip("needs root, PostgreSQL's server (postgresql) and psql")
    # not under pytest's own temporary directory (0700, root's): postgres must reach it
    base = Path(tempfile.mkdtemp(prefix="siporch-pgsum-"))
    base.chmod(0o755)
    data, pw = base / "data", base / "pw"
    data.mkdir(mode=0o700)
    pw.write_text(PASSWORD + "\n")
    for p in (data, pw):
        shutil.chown(p, "postgres", "postgres")
    subprocess.run(
        ["runuser", "-u", "postgres", "--", str(_pg_bin("initdb")), "-D", str(data), "-U",
         "postgres", "--auth-host=md5", "--auth-local=trust", f"--pwfile={pw}"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    port = _free_port()
    log = open(base / "log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        ["runuser", "-u", "postgres", "--", str(_pg_bin("postgres")), "-D", str(data),
         "-k", str(data), "-c", "listen_addresses=127.0.0.1", "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    env = {**os.environ, "PGPASSWORD": PASSWORD}

    def psql(sql: str, user: str = "siporch", db: str = "siporch") -> str:
        out = subprocess.run(
            ["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p",
             str(port), "-U", user, "-d", db, "-c", sql],
            capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return out.stdout

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, (base / "log").read_text()
                time.sleep(0.2)
        for _ in range(50):  # accepting connections a little after the port opens
            ok = subprocess.run(
                ["psql", "-X", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c", "SELECT 1"],
                capture_output=True, env=env,
            )  # fmt: skip
            if ok.returncode == 0:
                break
            time.sleep(0.2)
        psql(f"CREATE ROLE siporch LOGIN PASSWORD '{PASSWORD}'", "postgres", "postgres")
        psql("CREATE DATABASE siporch OWNER siporch", "postgres", "postgres")
        for stmt in records.SCHEMA_PG.split(";"):
            if stmt.strip():
                psql(stmt)
        cfg = base / "host.cfg"
        cfg.write_text(
            f'#!define ACC_DB_URL "postgres://siporch:{PASSWORD}@127.0.0.1:{port}/siporch"\n'
        )
        yield {"psql": psql, "cfg": cfg}
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
        shutil.rmtree(base, ignore_errors=True)


CALL_COLS = (
    "callid, edge, direction, trunk, peer, calling, called, code, reason, setup, ring, answer, "
    "duration, legs, release"
)
LEG_COLS = "callid, edge, sip_code, sip_reason, ts, trunk, leg"


def _records(n: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Calls with what the summary must get right: failovers answered and failed (the last
    failed leg of a failed call is no failover), a failover on a trunk with no call of its
    own, ties between failure codes (first call first), no ring (PDD to the answer), an
    answer with no duration, no trunk, no code, two edges."""
    rng = random.Random(3)
    calls: list[tuple[Any, ...]] = []
    legs: list[tuple[Any, ...]] = []
    t0 = 1_790_000_000.0
    trunks = ["itsp-a", "itsp-b", "pstn-gw", None]
    failures = [(486, "Busy Here"), (480, "Temporarily Unavailable"), (503, "Service Unavailable"),
                (404, "Not Found"), (487, "Request Terminated")]  # fmt: skip
    for i in range(n):
        cid, edge = f"c{i}", ("edge-a", "edge-b")[i % 2]
        setup = round(t0 + i * 7.25 + rng.random(), 6)
        trunk = trunks[i % len(trunks)]
        answered = rng.random() < 0.6
        ring = round(setup + rng.uniform(0.1, 5), 6) if rng.random() < 0.8 else None
        answer = round((ring or setup) + rng.uniform(0.5, 9), 6) if answered else None
        duration = round(rng.uniform(1, 400), 3) if not (answered and i % 17 == 0) else None
        code, reason = (200, "OK") if answered else failures[rng.randrange(len(failures))]
        if i % 29 == 0 and not answered:
            code, reason = None, None
        nlegs = 1
        if i % 7 == 0:  # a failover: one or two failed legs before the last one
            nlegs = 2 + (i % 2)
            for k in range(nlegs - 1):
                other = "itsp-c" if k == 1 else trunk
                legs.append((cid, edge, "503", "Service Unavailable", setup + 0.1 * (k + 1),
                             other, k + 1))  # fmt: skip
        if not answered and code is not None:
            legs.append((cid, edge, str(code), reason, setup + 2.0, trunk, nlegs))
        calls.append((cid, edge, "outbound", trunk, "203.0.113.7", "2125550111",
                      f"1312555{i:04d}", code, reason, setup, ring, answer, duration, nlegs,
                      "r1"))  # fmt: skip
    return calls, legs


def _sqlite(path: Path, calls: list[tuple[Any, ...]], legs: list[tuple[Any, ...]]) -> None:
    con = sqlite3.connect(path)
    con.executescript(records.SCHEMA)
    con.executemany(f"INSERT INTO calls ({CALL_COLS}) VALUES ({', '.join('?' * 15)})", calls)
    con.executemany(f"INSERT INTO legs ({LEG_COLS}) VALUES ({', '.join('?' * 7)})", legs)
    con.commit()
    con.close()


def _pg_load(pg: dict[str, Any], calls: list[tuple[Any, ...]], legs: list[tuple[Any, ...]]) -> None:
    def lit(v: Any) -> str:
        if v is None:
            return "NULL"
        if isinstance(v, str):
            return "'" + v.replace("'", "''") + "'"
        return repr(v)

    pg["psql"]("DELETE FROM calls; DELETE FROM legs")
    for table, cols, rows in (("calls", CALL_COLS, calls), ("legs", LEG_COLS, legs)):
        values = ",\n".join("(" + ", ".join(lit(v) for v in r) + ")" for r in rows)
        pg["psql"](f"INSERT INTO {table} ({cols}) VALUES {values}")


def _pg_summary(pg: dict[str, Any], flt: records.Filters, server: bool) -> list[dict[str, Any]]:
    argv = records.remote_command_pg(str(pg["cfg"]), flt, [], summary=server)
    argv[0] = sys.executable
    problems: list[str] = []
    lines = list(records.stream_lines(argv, "pg", 120, problems))
    assert not problems
    if server:
        rows = records.summary_from_lines(lines)
    else:
        rows = records.summarize(c for c in records.parse_lines(lines) if flt.match(c))
    return [r.as_dict() for r in rows]


def _sqlite_summary(db: Path, flt: records.Filters) -> list[dict[str, Any]]:
    problems: list[str] = []
    calls = records.read_calls(records.file_sources([db], flt), flt, 120, problems)
    out = [r.as_dict() for r in records.summarize(calls)]
    assert not problems
    return out


@pytest.mark.parametrize(
    "flt",
    [
        records.Filters(),
        records.Filters(since=1_790_000_000.0 + 7.25 * 100, until=1_790_000_000.0 + 7.25 * 400),
        records.Filters(trunk="itsp-a"),
        records.Filters(number="5550"),
    ],
    ids=["all", "time-range", "trunk", "number"],
)
def test_server_summary_equals_the_call_by_call_summary(
    pg: dict[str, Any], tmp_path: Path, flt: records.Filters
) -> None:
    calls, legs = _records(600)
    db = tmp_path / "edge.sqlite"
    _sqlite(db, calls, legs)
    _pg_load(pg, calls, legs)
    from_sqlite = _sqlite_summary(db, flt)
    assert from_sqlite and any(r["failovers"] for r in from_sqlite)
    assert _pg_summary(pg, flt, server=False) == from_sqlite
    assert _pg_summary(pg, flt, server=True) == from_sqlite


def test_server_summary_of_no_calls_is_empty(pg: dict[str, Any]) -> None:
    pg["psql"]("DELETE FROM calls; DELETE FROM legs")
    assert _pg_summary(pg, records.Filters(), server=True) == []
    assert json.dumps(_pg_summary(pg, records.Filters(), server=False)) == "[]"
