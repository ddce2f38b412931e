"""Per-trunk counters and histograms from the edges' call records (docs/monitoring.md).

`siporch exporter` reads each edge's records database (siporch/records.py) over SSH with the
inventory's settings, as `siporch calls` does, but never row by row: a small program on the
edge aggregates the calls written since the last id it was asked about (one GROUP BY per
trunk and direction) and prints one JSON object. The exporter adds it to its totals and
remembers the last id per edge, so its memory depends on the number of trunks only, and a
restarted exporter (which starts again from id 0) reports the same totals as before: the
records are the counters' source, not the events seen while running. Totals cover the
records an edge keeps (``records.retention_days``): when old records are trimmed, a restart
shows lower totals, which Prometheus takes as a counter reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from siporch import records
from siporch.hosts import Inventory, ssh_run

#: Post-dial delay buckets, seconds (setup to the first 18x, or to the answer).
PDD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0)
#: Talk time buckets, seconds (answer to BYE).
DURATION_BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 3600.0)
#: Failure classes of a call that was not answered: its final code's class, and "timeout"
#: for 408 (a silent peer, or the edge's own 408) and a call with no final code.
FAILURE_CLASSES = ("3xx", "4xx", "5xx", "6xx", "timeout")

# Run on an edge with python3 (standard library only): argv[1] the database, argv[2] the
# last calls.id already counted, argv[3] and argv[4] the PDD and duration buckets (JSON),
# argv[5] how many ids to read at most. Prints one JSON object: the highest id counted and
# the highest in the database, whether the database was started again (its highest id below
# the last one counted), per (trunk, direction) the sums, per trunk the failover legs.
_REMOTE = r"""
import json, os, sqlite3, sys
path, last = sys.argv[1], int(sys.argv[2])
pdd_b, dur_b = json.loads(sys.argv[3]), json.loads(sys.argv[4])
if len(sys.argv) > 7:  # records in PostgreSQL? (argv[6] the live host.cfg, argv[7] the edge)
    exec(PG)
if not os.path.exists(path):
    print(json.dumps({"missing": True}))
    sys.exit(0)
st = os.stat(path)
if os.getuid() == 0 and st.st_uid != 0:
    os.setgid(st.st_gid)
    os.setuid(st.st_uid)
con = sqlite3.connect("file:" + path + "?mode=ro", uri=True, timeout=10)
con.execute("BEGIN")  # one snapshot for both queries
top = con.execute("SELECT coalesce(max(id), 0) FROM calls").fetchone()[0]
restarted = top < last
if restarted:
    last = 0
newest, top = top, min(top, last + int(sys.argv[5]))  # at most a chunk of ids per read
cols = ["count(*)", "sum(code BETWEEN 200 AND 299)",
        "sum(code BETWEEN 300 AND 399)", "sum(code BETWEEN 400 AND 499 AND code <> 408)",
        "sum(code BETWEEN 500 AND 599)", "sum(code >= 600)",
        "sum(code = 408 OR code IS NULL OR code < 100)",
        "count(pdd)", "total(pdd)"]
cols += ["sum(pdd <= %r)" % float(b) for b in pdd_b]
cols += ["count(talk)", "total(talk)"]
cols += ["sum(talk <= %r)" % float(b) for b in dur_b]
inner = (
    "SELECT coalesce(trunk, '') AS trunk, coalesce(direction, '') AS direction, "
    "CAST(code AS INTEGER) AS code, "
    "CASE WHEN coalesce(nullif(ring, 0), nullif(answer, 0)) IS NOT NULL "
    "THEN max(0.0, coalesce(nullif(ring, 0), nullif(answer, 0)) - setup) END AS pdd, "
    "CASE WHEN answer > 0 AND CAST(code AS INTEGER) BETWEEN 200 AND 299 "
    "THEN max(0.0, max(setup + coalesce(duration, 0), answer) - answer) END AS talk "
    "FROM calls WHERE id > ? AND id <= ?"
)
rows = con.execute(
    "SELECT trunk, direction, " + ", ".join(cols) + " FROM (" + inner + ") GROUP BY 1, 2",
    (last, top),
).fetchall()
legs = con.execute(
    "SELECT coalesce(l.trunk, ''), count(*) FROM calls AS c JOIN legs AS l "
    "ON l.callid = c.callid WHERE c.id > ? AND c.id <= ? "
    "AND CAST(l.sip_code AS INTEGER) >= 300 AND l.leg < c.legs GROUP BY 1",
    (last, top),
).fetchall()
print(json.dumps({"top": top, "newest": newest, "restarted": restarted,
                  "rows": [[r[0], r[1]] + [x or 0 for x in r[2:]] for r in rows], "failover_legs": legs}))
"""


# The same answer from PostgreSQL (records.backend postgresql): this edge's rows of the
# shared database (column edge), read with psql and the URL of the edge's live host.cfg
# (the password in psql's environment). Run by the program above (exec) first: when the
# host.cfg names no PostgreSQL server, the program reads the SQLite database.
_REMOTE_PG = r"""
import re, shutil, subprocess
def pg_read():
    cfg, edge = sys.argv[6], sys.argv[7]
    try:
        text = open(cfg).read()
    except OSError:
        text = ""
    m = re.search(r'#!define ACC_DB_URL "postgres://([^:@/]+):([^@/]*)@([^/:"]+)(?::(\d+))?/([^"]+)"', text)
    if not m:
        return  # no PostgreSQL records URL: the SQLite database, if any
    user, password, host, port, db = m.groups()
    psql = shutil.which("psql")
    if psql is None:
        sys.stderr.write("psql is not installed on this edge (postgresql-client)\n")
        sys.exit(3)
    E = "'" + edge.replace("'", "''") + "'"
    chunk = int(sys.argv[5])
    ok = "code BETWEEN 200 AND 299"
    cols = ["count(*)", "count(*) FILTER (WHERE %s)" % ok,
            "count(*) FILTER (WHERE code BETWEEN 300 AND 399)",
            "count(*) FILTER (WHERE code BETWEEN 400 AND 499 AND code <> 408)",
            "count(*) FILTER (WHERE code BETWEEN 500 AND 599)",
            "count(*) FILTER (WHERE code >= 600)",
            "count(*) FILTER (WHERE code = 408 OR code IS NULL OR code < 100)",
            "count(pdd)", "coalesce(sum(pdd), 0)"]
    cols += ["count(*) FILTER (WHERE pdd <= %r)" % float(b) for b in pdd_b]
    cols += ["count(talk)", "coalesce(sum(talk), 0)"]
    cols += ["count(*) FILTER (WHERE talk <= %r)" % float(b) for b in dur_b]
    sql = (
        "SET standard_conforming_strings = on;\n"
        "BEGIN ISOLATION LEVEL REPEATABLE READ;\n"
        "CREATE TEMP TABLE t ON COMMIT DROP AS SELECT n.newest, "
        "CASE WHEN n.newest < %d THEN 0 ELSE %d END AS last FROM "
        "(SELECT coalesce(max(id), 0) AS newest FROM calls WHERE edge = %s) AS n;\n" % (last, last, E)
        + "CREATE TEMP TABLE c ON COMMIT DROP AS SELECT coalesce(trunk, '') AS trunk, "
        "coalesce(direction, '') AS direction, code, legs, callid, "
        "CASE WHEN coalesce(nullif(ring, 0), nullif(answer, 0)) IS NOT NULL "
        "THEN greatest(0.0, coalesce(nullif(ring, 0), nullif(answer, 0)) - setup) END AS pdd, "
        "CASE WHEN answer > 0 AND %s THEN greatest(0.0, greatest(setup + coalesce(duration, 0), "
        "answer) - answer) END AS talk FROM calls, t WHERE edge = %s AND id > t.last "
        "AND id <= least(t.newest, t.last + %d);\n" % (ok, E, chunk)
        + "SELECT 'T', newest, last, least(newest, last + %d) FROM t;\n" % chunk
        + "SELECT 'R', trunk, direction, " + ", ".join(cols) + " FROM c GROUP BY 2, 3;\n"
        "SELECT 'F', coalesce(l.trunk, ''), count(*) FROM c JOIN legs AS l ON l.callid = c.callid "
        "AND l.edge = %s WHERE l.sip_code ~ '^[0-9]+$' AND l.sip_code::integer >= 300 "
        "AND l.leg < c.legs GROUP BY 2;\nCOMMIT;\n" % E
    )
    env = dict(os.environ, PGPASSWORD=password, PGCONNECT_TIMEOUT="10", PGAPPNAME="siporch-exporter")
    argv = [psql, "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1",
            "-h", host, "-p", port or "5432", "-U", user, "-d", db, "-f", "-"]
    proc = subprocess.run(argv, input=sql, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        sys.exit(proc.returncode)
    def num(v):
        return float(v) if "." in v or "e" in v else int(v)
    out = {"rows": [], "failover_legs": []}
    for line in proc.stdout.splitlines():
        f = line.split("\t")
        if f[0] == "T":
            newest, base, top = int(f[1]), int(f[2]), int(f[3])
            out.update(top=top, newest=newest, restarted=newest < last)
        elif f[0] == "R":
            out["rows"].append([f[1], f[2]] + [num(v) for v in f[3:]])
        elif f[0] == "F":
            out["failover_legs"].append([f[1], int(f[2])])
    print(json.dumps(out))
    sys.exit(0)
pg_read()
"""

#: Ids read at most by one run of the edge program (about 6 s for 500,000 calls on this
#: project's 2-core machine): a first read of a large database takes several runs.
CHUNK = 500_000


def remote_command(
    db_path: str, last: int, chunk: int = CHUNK, edge: str | None = None
) -> list[str]:
    """The edge program; with ``edge`` (the edge's name in the records), an edge without a
    SQLite database is read from the PostgreSQL server its live host.cfg names."""
    argv = [
        "python3",
        "-c",
        _REMOTE if edge is None else "PG = " + repr(_REMOTE_PG) + "\n" + _REMOTE,
        db_path,
        str(last),
        json.dumps(PDD_BUCKETS),
        json.dumps(DURATION_BUCKETS),
        str(chunk),
    ]
    if edge is not None:
        argv += [records.live_host_cfg(), edge]
    return argv


@dataclass
class Histogram:
    bounds: tuple[float, ...]
    buckets: list[int] = field(default_factory=list)  # cumulative, one per bound
    count: int = 0
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.buckets:
            self.buckets = [0] * len(self.bounds)

    def add(self, count: int, total: float, buckets: Sequence[int]) -> None:
        self.count += int(count)
        self.total += float(total)
        for i, n in enumerate(buckets):
            self.buckets[i] += int(n)

    def prometheus(self) -> list[tuple[str, float]]:
        out = [(_le(b), float(n)) for b, n in zip(self.bounds, self.buckets, strict=True)]
        return [*out, ("+Inf", float(self.count))]


def _le(b: float) -> str:
    return str(int(b)) if b == int(b) else repr(b)


@dataclass
class TrunkTotals:
    attempts: int = 0
    answered: int = 0
    failures: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAILURE_CLASSES, 0))
    pdd: Histogram = field(default_factory=lambda: Histogram(PDD_BUCKETS))
    duration: Histogram = field(default_factory=lambda: Histogram(DURATION_BUCKETS))


@dataclass
class EdgeState:
    name: str
    site: str
    last_id: int = 0
    up: bool = False
    read_at: float | None = None
    error: str | None = None


class RecordTotals:
    """Totals per (edge, trunk, direction) and failover legs per (edge, trunk), fed by what
    the edge program prints (:meth:`add`); read from another thread (:meth:`snapshot`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.edges: dict[str, EdgeState] = {}
        self.trunks: dict[tuple[str, str, str], TrunkTotals] = {}
        self.failover_legs: dict[tuple[str, str], int] = {}

    def edge(self, name: str, site: str) -> EdgeState:
        with self._lock:
            st = self.edges.get(name)
            if st is None:
                st = self.edges[name] = EdgeState(name, site)
            return st

    def add(self, edge: str, site: str, data: dict[str, Any]) -> None:
        """Fold one answer of the edge program into the totals (its rows are the calls
        after the edge's last id: each call counted once)."""
        np, nd = len(PDD_BUCKETS), len(DURATION_BUCKETS)
        with self._lock:
            st = self.edges.setdefault(edge, EdgeState(edge, site))
            st.up, st.read_at, st.error = True, time.time(), None
            if data.get("missing"):
                return
            for row in data.get("rows", []):
                trunk, direction, attempts, answered = row[0] or "none", row[1], row[2], row[3]
                t = self.trunks.setdefault((edge, trunk, direction), TrunkTotals())
                t.attempts += int(attempts)
                t.answered += int(answered)
                for cls, n in zip(FAILURE_CLASSES, row[4:9], strict=True):
                    t.failures[cls] += int(n)
                i = 9
                t.pdd.add(row[i], row[i + 1], row[i + 2 : i + 2 + np])
                i += 2 + np
                t.duration.add(row[i], row[i + 1], row[i + 2 : i + 2 + nd])
            for trunk, n in data.get("failover_legs", []):
                key = (edge, trunk or "none")
                self.failover_legs[key] = self.failover_legs.get(key, 0) + int(n)
            st.last_id = int(data.get("top", st.last_id))

    def failed(self, edge: str, site: str, error: str) -> None:
        with self._lock:
            st = self.edges.setdefault(edge, EdgeState(edge, site))
            st.up, st.error = False, error

    def snapshot(
        self,
    ) -> tuple[
        list[EdgeState], list[tuple[tuple[str, str, str], TrunkTotals]], dict[tuple[str, str], int]
    ]:
        import copy

        with self._lock:
            return (
                [copy.copy(e) for e in self.edges.values()],
                [(k, copy.deepcopy(v)) for k, v in sorted(self.trunks.items())],
                dict(self.failover_legs),
            )

    def families(self) -> Iterator[Any]:
        """Prometheus metric families of the totals."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        edges, trunks, legs = self.snapshot()
        site_of = {e.name: e.site for e in edges}
        labels = ["trunk", "site", "edge", "direction"]
        calls = CounterMetricFamily(
            "siporch_trunk_calls",
            "Calls on the trunk (its last leg), from the edge's call records",
            labels=labels,
        )
        answered = CounterMetricFamily(
            "siporch_trunk_answered_calls",
            "Calls on the trunk answered (2xx), from the edge's call records",
            labels=labels,
        )
        failed = CounterMetricFamily(
            "siporch_trunk_failed_calls",
            "Calls on the trunk not answered, by class of the final code (timeout: 408 or none)",
            labels=[*labels, "class"],
        )
        pdd = HistogramMetricFamily(
            "siporch_trunk_pdd_seconds",
            "Post-dial delay: setup to the first 18x (or the answer), from the call records",
            labels=labels,
        )
        duration = HistogramMetricFamily(
            "siporch_trunk_call_duration_seconds",
            "Talk time of answered calls (answer to BYE), from the call records",
            labels=labels,
        )
        for (edge, trunk, direction), t in trunks:
            lv = [trunk, site_of.get(edge, ""), edge, direction]
            calls.add_metric(lv, t.attempts)
            answered.add_metric(lv, t.answered)
            for cls in FAILURE_CLASSES:
                failed.add_metric([*lv, cls], t.failures[cls])
            pdd.add_metric(lv, t.pdd.prometheus(), t.pdd.total)
            duration.add_metric(lv, t.duration.prometheus(), t.duration.total)
        failover = CounterMetricFamily(
            "siporch_trunk_failover_legs",
            "Failed legs on the trunk that another leg of the call followed (a failover)",
            labels=["trunk", "site", "edge"],
        )
        for (edge, trunk), n in sorted(legs.items()):
            failover.add_metric([trunk, site_of.get(edge, ""), edge], n)
        up = GaugeMetricFamily(
            "siporch_edge_records_up",
            "1 when the exporter's last read of the edge's call records succeeded",
            labels=["edge", "site"],
        )
        last = GaugeMetricFamily(
            "siporch_edge_records_last_id",
            "The highest call record id of the edge counted in the totals",
            labels=["edge", "site"],
        )
        for e in edges:
            if e.read_at is None and e.error is None:
                continue  # not read yet
            up.add_metric([e.name, e.site], 1 if e.up else 0)
            last.add_metric([e.name, e.site], e.last_id)
        yield from (calls, answered, failed, pdd, duration, failover, up, last)


async def read_edge(
    totals: RecordTotals,
    inventory: Inventory | None,
    edge: str,
    site: str,
    address: str,
    *,
    db_path: str,
    timeout: float,
) -> None:
    """Read an edge's new records into ``totals``, a chunk of ids at a time until the
    newest record is counted."""
    st = totals.edge(edge, site)
    while True:
        res = await ssh_run(
            inventory,
            edge,
            address,
            remote_command(db_path, st.last_id, edge=edge),
            timeout=timeout,
            root=True,
        )
        if res is None:
            totals.failed(edge, site, f"{edge}: call records not read (no SSH access or timeout)")
            return
        if res.returncode != 0:
            totals.failed(edge, site, f"{edge}: call records not read: {res.last_error()}")
            return
        try:
            data = json.loads(res.stdout.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            totals.failed(edge, site, f"{edge}: call records: unreadable answer")
            return
        totals.add(edge, site, data)
        if data.get("missing") or int(data.get("newest", 0)) <= int(data.get("top", 0)):
            return


async def poll(
    totals: RecordTotals,
    inventory: Inventory | None,
    edges: Sequence[Any],
    stop: asyncio.Event,
    *,
    interval: float,
    timeout: float,
    db_path: str = records.db_path(),
) -> None:
    """Read every edge's new records every ``interval`` seconds until ``stop``."""
    while not stop.is_set():
        await asyncio.gather(
            *(
                read_edge(
                    totals, inventory, e.name, e.site, e.address, db_path=db_path, timeout=timeout
                )
                for e in edges
            )
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


class RecordsCollector:
    """A prometheus-client collector of :class:`RecordTotals` (read at each scrape)."""

    def __init__(self, totals: RecordTotals) -> None:
        self.totals = totals

    def collect(self) -> Iterator[Any]:
        yield from self.totals.families()

    def describe(self) -> list[Any]:
        return []
