"""The records writer's SQL alone: CPU per row of the edge's batch INSERT, and of other ways to write it.

    python3 bench/records_sql.py [--rows 20000] [--repeat 5] [--per 16 4 1]
    chroot $LAB_ROOT python3 /tmp/records_sql.py --schema /tmp/records.sql   # the lab's SQLite

The edge's writer (route RECORDS_WRITE in templates/kamailio/kamailio.cfg) sends each batch
of queued rows as one statement: ``INSERT INTO calls (...) SELECT ... FROM (VALUES (...),
...)``, what the peers sent as ``CAST(X'<hex>' AS TEXT)`` (sqlops has no bound parameters,
and sql.val.str's backslash escapes are not SQLite's). This times that statement against
two other forms of the same rows, in one process, alternating, on a fresh WAL database with
the edge's schema and pragmas (synchronous=NORMAL, no autocheckpoint), one transaction per
96 rows:

* ``edge``: the template's statement;
* ``cast-once``: the hex values as bare blobs ``X'<hex>'``, cast to text once in the SELECT
  (one CAST per column of the statement instead of one per value of each row);
* ``json``: the whole batch as one JSON text, ``json_each`` and ``->>`` per column, the hex
  values decoded with ``unhex()`` (needs SQLite 3.41: the lab root's, not Debian 12's).

Every form stores the same row (checked). Reported: process CPU per row, median of
``--repeat`` runs, and each form's ratio to ``edge``.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "tests" / "golden" / "kamailio" / "edge-central" / "records.sql"

COLUMNS = (
    "callid, setup, release, source, direction, calling, called, trunk, peer, legs, code, "
    "reason, ring, answer, duration, start_time, end_time, edge"
)
EDGE = (
    f"INSERT INTO calls ({COLUMNS}) SELECT column1, column2, column3, column4, column5, "
    "CASE WHEN column12 > 0 THEN column10 ELSE column6 END, CASE WHEN column12 > 0 THEN "
    "column11 ELSE column7 END, column8, column9, column12, column13, column14, column15, "
    "column16, round(column17 - column2, 6), datetime(column2, 'unixepoch'), "
    "datetime(column17, 'unixepoch'), 'edge-central' FROM (VALUES {})"
)
CAST_ONCE = (
    f"INSERT INTO calls ({COLUMNS}) SELECT CAST(column1 AS TEXT), column2, column3, column4, "
    "column5, CAST(CASE WHEN column12 > 0 THEN column10 ELSE column6 END AS TEXT), "
    "CAST(CASE WHEN column12 > 0 THEN column11 ELSE column7 END AS TEXT), column8, column9, "
    "column12, column13, CAST(column14 AS TEXT), column15, column16, round(column17 - "
    "column2, 6), datetime(column2, 'unixepoch'), datetime(column17, 'unixepoch'), "
    "'edge-central' FROM (VALUES {})"
)
JSON = (
    f"INSERT INTO calls ({COLUMNS}) SELECT CAST(unhex(v->>0) AS TEXT), v->>1, v->>2, v->>3, "
    "v->>4, CAST(unhex(CASE WHEN v->>11 > 0 THEN v->>9 ELSE v->>5 END) AS TEXT), "
    "CAST(unhex(CASE WHEN v->>11 > 0 THEN v->>10 ELSE v->>6 END) AS TEXT), v->>7, v->>8, "
    "v->>11, v->>12, CAST(unhex(v->>13) AS TEXT), v->>14, v->>15, round(v->>16 - v->>1, 6), "
    "datetime(v->>1, 'unixepoch'), datetime(v->>16, 'unixepoch'), 'edge-central' "
    "FROM (SELECT value AS v FROM json_each('[{}]'))"
)


def _values(i: int) -> list[str]:
    """Row i's texts as the edge has them: Call-ID, numbers, reason (from the peers) and
    the rest, with times."""
    t = 1_700_000_000 + i * 0.001
    return [
        f"call-{i}-a84b4c76e66710@192.0.2.10", f"{t:.6f}", "rel-20261207", "192.0.2.10",
        "inbound", "+15551230000", "+15559870000", "trunk-00001", "198.51.100.7",
        "+15551230000", "+15559870000", "1", "200", "OK", f"{t + 0.5:.6f}", f"{t + 1:.6f}",
        f"{t + 30:.6f}",
    ]  # fmt: skip


FROM_PEER = {0, 5, 6, 9, 10, 13}  # hex-encoded by the edge
TEXT = {2, 3, 4, 7, 8}  # quoted by the edge


def _sql_row(i: int, hexed: Callable[[str], str]) -> str:
    out = []
    for k, v in enumerate(_values(i)):
        if k in FROM_PEER:
            out.append(hexed(v.encode().hex()))
        elif k in TEXT:
            out.append(f"'{v}'")
        else:
            out.append(v)
    return "(" + ",".join(out) + ")"


def _json_row(i: int) -> str:
    out = []
    for k, v in enumerate(_values(i)):
        if k in FROM_PEER:
            out.append(f'"{v.encode().hex()}"')
        elif k in TEXT:
            out.append(f'"{v}"')
        else:
            out.append(v)
    return "[" + ",".join(out) + "]"


def statements(form: str, rows: int, per: int) -> list[str]:
    batches = [range(i, min(rows, i + per)) for i in range(0, rows, per)]
    if form == "edge":
        return [
            EDGE.format(",".join(_sql_row(i, lambda h: f"CAST(X'{h}' AS TEXT)") for i in b))
            for b in batches
        ]
    if form == "cast-once":
        return [
            CAST_ONCE.format(",".join(_sql_row(i, lambda h: f"X'{h}'") for i in b)) for b in batches
        ]
    return [JSON.format(",".join(_json_row(i) for i in b)) for b in batches]


def run(form: str, schema: str, rows: int, per: int) -> tuple[float, tuple[object, ...]]:
    """CPU seconds per row of writing ``rows`` rows in ``form``, ``per`` rows a statement;
    and the first row as stored."""
    with tempfile.TemporaryDirectory(prefix="siporch-recsql-") as tmp:
        con = sqlite3.connect(os.path.join(tmp, "records.sqlite"), isolation_level=None)
        con.executescript(schema)
        con.execute("PRAGMA synchronous=NORMAL")
        con.execute("PRAGMA wal_autocheckpoint=0")
        stmts = statements(form, rows, per)
        per_txn = max(1, 96 // per)
        t0 = time.process_time()
        for k in range(0, len(stmts), per_txn):
            con.execute("BEGIN IMMEDIATE")
            for s in stmts[k : k + per_txn]:
                con.execute(s)
            con.execute("COMMIT")
        cpu = time.process_time() - t0
        first = con.execute(
            "SELECT callid, calling, called, reason, typeof(callid), setup, legs, code, "
            "duration, start_time FROM calls ORDER BY id LIMIT 1"
        ).fetchone()
        con.close()
    return cpu / rows, first


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=20000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--per", type=int, nargs="+", default=[16, 4, 1])
    p.add_argument("--form", nargs="+", default=["edge", "cast-once", "json"])
    p.add_argument("--schema", type=Path, default=SCHEMA)
    args = p.parse_args(argv)
    schema = args.schema.read_text()
    print(f"SQLite {sqlite3.sqlite_version}, {args.rows} rows, median of {args.repeat}")
    print(
        "| rows a statement | "
        + " | ".join(f"{f} (µs per row)" for f in args.form)
        + " | to edge |"
    )
    print("|---:|" + "---:|" * len(args.form) + "---|")
    for per in args.per:
        times: dict[str, list[float]] = {f: [] for f in args.form}
        stored = set()
        for r in range(args.repeat):
            for form in args.form if r % 2 == 0 else args.form[::-1]:
                cpu, first = run(form, schema, args.rows, per)
                times[form].append(cpu)
                stored.add(first)
        if len(stored) != 1:
            raise SystemExit(f"the forms stored different rows: {stored}")
        med = {f: statistics.median(v) for f, v in times.items()}
        base = med.get("edge") or next(iter(med.values()))
        ratios = ", ".join(f"{f} {med[f] / base:.2f}x" for f in args.form)
        print(
            f"| {per} | " + " | ".join(f"{med[f] * 1e6:.1f}" for f in args.form) + f" | {ratios} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
