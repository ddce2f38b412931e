"""Call records: what they cost the edge, and how fast `siporch calls --summary` reads them.

    sudo python bench/records_bench.py cps --calls 2000 --rounds 5 --json bench/results/records_cps.json
    sudo python bench/records_bench.py cps --variant no-record --variant worker-inserts
    sudo python bench/records_bench.py cps --at-once --calls 5000 --rounds 6 --root /var/cache/siporch/rootfs/<key>
    sudo python bench/records_bench.py cps --backend postgresql --root /var/cache/siporch/rootfs/<key>
    python bench/records_bench.py summary --records 1000000 --json bench/results/records_summary.json
    python bench/records_bench.py summary --records 1000000 --pg-url postgres://u:pw@host:5432/db
    python bench/records_bench.py exporter --records 1000000

``exporter``: a synthetic database as for ``summary`` (below), read as a restarted
`siporch exporter` reads an edge (the edge program of siporch/monitor/record_metrics.py,
chunk after chunk from id 0); wall time and the edge program's peak resident memory.

``cps``: the rendered edge of bench/cps_bench.py (1,000 generated trunks, its own network
namespace, SIPp UAC -> edge -> SIPp UAS, closed loop with ``--concurrency`` calls in flight,
no hold time), with ``records.enabled`` on (SQLite: one call record per call, written by
the edge's one writer process) and off, alternating in the same run, Kamailio restarted between the two.
``--variant``: a third edge in the same run, records on with one part taken out (VARIANTS),
to see where their cost goes. ``--backend postgresql``: the records go to a PostgreSQL
server of the bench's own (initdb'd in its namespace; Kamailio needs db_postgres: the lab
root's, ``--root``, or the package's module unpacked in a directory, ``--modules``). One run
at a time (its namespace).
After each run with records on, the records written are counted against the calls placed.
``--at-once``: records on and records off at the same time rather than alternately, each
edge in a network namespace of its own (the same addresses, its own rtpengine and SIPp
UAS), each driven by its own SIPp UAC: in each round both meet the same machine, so the
ratio of their CPU per call does not carry the machine's changes from round to round
(the alternating rounds' per-round ratios spread over 0.65x-1.42x on a quiet machine;
at once, 0.78x-0.96x). With one ``--variant`` (or ``--cfg-from``), that edge instead of
records on.
``--cfg-from FILE``: one more edge in the same run, records on with FILE as its kamailio.cfg
(e.g. an earlier commit's template). Kamailio runs with the rendered edge's memory manager
(kamailio.env) unless ``--mem``.
Reported per run: calls/s, and the CPU time of the edge's Kamailio processes per call (user +
system from /proc: what a CPU-bound edge's calls/s follow, hardly moved by other load);
and the busy CPU per call: the processes' schedstat time from the run's start until 6 s
after it (tm frees each transaction 5 s after its end), less the edge's idle CPU over that
time (measured for 2 s before the run), so that a run stalled on a lost packet's timeout
is not charged the timers of the stall.

``summary``: a records database with ``--records`` synthetic calls (5 trunks, 70% answered,
10% with a failed first leg) is written, then ``siporch calls --from-file DB --summary``
runs on it; wall time and the peak resident memory of the command (and of the reader it
starts) are reported. ``--pg-url``: the same calls loaded into that PostgreSQL database (as
edge ``bench-summary``, deleted at the end) and summarized as `siporch calls` does for a
PostgreSQL model (the server aggregates), and call by call for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import cps_bench as cb  # noqa: E402
from siporch import records  # noqa: E402

# --------------------------------------------------------------------------- cps

NS = "siporch-reccps"  # its own namespace (not sipo-*: the lab owns those names)


def netns_up(name: str = NS) -> None:
    # one run at a time: a second one would take the first one's namespace from under it
    if cb.sh("ip", "netns", "add", name, check=False).returncode != 0:
        raise RuntimeError(
            f"network namespace {name} exists: another run is in progress "
            f"(or a killed one left it: ip netns del {name})"
        )
    cb.sh(*cb.ns("ip", "link", "set", "lo", "up", netns=name))
    for a in (cb.EDGE, cb.PBX, cb.PEER_BYPASS):
        cb.sh(*cb.ns("ip", "addr", "add", f"{a}/32", "dev", "lo", netns=name))


def netns_down(name: str = NS) -> None:
    cb.sh("ip", "netns", "del", name, check=False)


def _count(db: Path) -> tuple[int, int]:
    con = sqlite3.connect(db, timeout=30)
    try:
        calls = con.execute("SELECT count(*) FROM calls").fetchone()[0]
        legs = con.execute("SELECT count(*) FROM legs").fetchone()[0]
    finally:
        con.close()
    return int(calls), int(legs)


# records.backend postgresql: a PostgreSQL server of the bench's own in its namespace
PG_BIN = Path("/usr/lib/postgresql")
PG_PORT = 5432
PG_PASSWORD = "bench-records"
PG_MODEL = {
    "backend": "postgresql",
    "postgresql": {"host": "127.0.0.1", "port": PG_PORT, "password": PG_PASSWORD},
}


def _pg_bin(tool: str) -> str:
    found = sorted(PG_BIN.glob(f"*/bin/{tool}"), key=lambda p: int(p.parts[-3]))
    if not found:
        raise RuntimeError(f"PostgreSQL's {tool} is not installed (package postgresql)")
    return str(found[-1])


def _psql(sql: str, user: str = "siporch", db: str = "siporch") -> str:
    env = {**os.environ, "PGPASSWORD": PG_PASSWORD}
    out = subprocess.run(
        cb.ns("psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
              "-p", str(PG_PORT), "-U", user, "-d", db, "-c", sql, netns=NS),
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"psql: {out.stderr.strip()[-500:]}")
    return out.stdout.strip()


def pg_up(base: Path, schema: str) -> subprocess.Popen[bytes]:
    """initdb and start a server in the namespace (127.0.0.1), the model's user and
    database, the records tables."""
    base.chmod(0o755)  # mkdtemp's 0700: the postgres user must reach its data directory
    data = base / "pgdata"
    data.mkdir()
    shutil.chown(data, "postgres", "postgres")
    data.chmod(0o700)
    pw = base / "pgpass"
    pw.write_text(PG_PASSWORD + "\n")
    shutil.chown(pw, "postgres", "postgres")
    cb.sh("runuser", "-u", "postgres", "--", _pg_bin("initdb"), "-D", str(data), "-U",
          "postgres", "--auth-host=md5", "--auth-local=trust", f"--pwfile={pw}", timeout=120)  # fmt: skip
    proc = cb.start(
        ["runuser", "-u", "postgres", "--", _pg_bin("postgres"), "-D", str(data),
         "-k", str(data), "-c", "listen_addresses=127.0.0.1", "-p", str(PG_PORT)],
        base / "postgres.log",
        netns=NS,
    )  # fmt: skip
    if not cb.wait_port("tcp", "127.0.0.1", PG_PORT, 60, netns=NS):
        raise RuntimeError("postgres did not start: " + (base / "postgres.log").read_text()[-800:])
    _psql(f"CREATE ROLE siporch LOGIN PASSWORD '{PG_PASSWORD}'", user="postgres", db="postgres")
    _psql("CREATE DATABASE siporch OWNER siporch", user="postgres", db="postgres")
    for stmt in (x.strip() for x in schema.split(";")):
        if stmt:
            _psql(stmt)
    return proc


def _count_pg() -> tuple[int, int]:
    out = _psql("SELECT (SELECT count(*) FROM calls), (SELECT count(*) FROM legs)")
    calls, legs = out.split("|")
    return int(calls), int(legs)


def _settled(db: Path | None, seconds: float = 15.0) -> tuple[int, int]:
    """The counts once they stop moving (records are written up to 0.1 s after a call
    ends; the last BYEs of a run may still be in flight)."""

    def count() -> tuple[int, int]:
        return _count_pg() if db is None else _count(db)

    last, deadline = count(), time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = count()
        if now == last:
            return now
        last = now
    return last


def _group_cpu(pgid: int) -> float:
    """CPU seconds (user + system) of the live processes of a process group: the edge's
    Kamailio and its children (started in a session of their own)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:  # pgrp; utime and stime follow at 11 and 12
            total += int(fields[11]) + int(fields[12])
    return total / tick


def _group_cpu_ns(pgid: int) -> int:
    """As :func:`_group_cpu`, in nanoseconds from each thread's schedstat (the kernel's
    count of time on a CPU, not clock ticks)."""
    total = 0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if int((d / "stat").read_text().rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for task in (d / "task").iterdir():
                total += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            continue
    return total


def _start_edge(
    args: argparse.Namespace, label: str, sub: Path, inner: Path, prefix: list[str], netns: str
) -> tuple[subprocess.Popen[bytes], str]:
    """The edge of ``label`` (records on or off, a variant, --cfg-from) rendered into a
    fresh ``sub`` (``inner``: ``sub`` as Kamailio sees it), started in ``netns`` and
    listening; with the memory manager it runs."""
    on = label != "records off"
    shutil.rmtree(sub, ignore_errors=True)
    sub.mkdir()
    cfg = cb.write_edge(
        sub, args.trunks, records=on, inner=inner,
        records_model=PG_MODEL if args.backend == "postgresql" else None,
    )  # fmt: skip
    if label == CFG_FROM:
        # records on, with another kamailio.cfg (e.g. the one of an earlier
        # commit: git show REV:templates/kamailio/kamailio.cfg > FILE)
        shutil.copyfile(args.cfg_from, sub / "current" / "kamailio" / "kamailio.cfg")
    elif label.startswith("records on, "):
        _variant(sub / "current" / "kamailio" / "kamailio.cfg", label[12:])
    # the memory manager of the rendered edge (kamailio.env), unless --mem
    mem = args.mem or _env(sub / "current" / "kamailio" / "kamailio.env").get(
        "MEMORY_MANAGER", "qm"
    )
    # --modules: a directory searched first (e.g. db_postgres unpacked there)
    mpath = ["-L", f"{args.modules}:{MODULES}"] if args.modules else []
    edge = cb.start(
        [*prefix, "kamailio", "-DD", "-E", "-f", str(cfg), "-m", str(cb.SHM_MB),
         "-M", str(cb.PKG_MB), "-x", mem, *mpath],
        sub / "edge.log",
        netns=netns,
    )  # fmt: skip
    if not cb.wait_port("udp", cb.EDGE, 5060, 60, netns=netns):
        cb.stop(edge)
        raise RuntimeError("the edge did not start: " + (sub / "edge.log").read_text()[-1500:])
    return edge, mem


def _db_errors(log: Path) -> int:
    return sum(
        1
        for line in log.read_text(errors="replace").splitlines()
        if ("db_sqlite" in line or "db_postgres" in line or "sqlops" in line) and "ERROR" in line
    )


def _chroot(args: argparse.Namespace) -> tuple[Path, Path, list[str]]:
    """The run's directory, that directory as Kamailio sees it, and the command prefix
    (chroot into --root, or none)."""
    if args.root:
        # Kamailio from that root file system (the lab's: Kamailio 6), with chroot
        chroot = args.root.resolve()
        base = Path(tempfile.mkdtemp(prefix="siporch-reccps-", dir=chroot / "tmp"))
        return base, Path("/") / base.relative_to(chroot), ["chroot", str(chroot)]
    base = Path(tempfile.mkdtemp(prefix="siporch-reccps-"))
    return base, base, []


def _run_facts(args: argparse.Namespace, prefix: list[str], managers: set[str]) -> dict[str, Any]:
    """What a cps run's result says of its setup."""
    return {
        "trunks": args.trunks,
        "calls": args.calls,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "kamailio": {
            "shm_mb": cb.SHM_MB,
            "pkg_mb": cb.PKG_MB,
            "children": cb.CHILDREN,
            "version": _version(prefix),
            "memory_manager": ", ".join(sorted(managers)),
        },
        "backend": args.backend,
        "cfg_from": str(args.cfg_from) if args.cfg_from else None,
    }


def _summary(runs: dict[str, list[dict[str, Any]]], on: str) -> dict[str, Any]:
    """Each edge's medians over its rounds, each against records off of the same run, and
    ``on`` (records on, or the edge compared at once) against records off round by round."""
    rows = [
        {
            "label": label,
            "cps": statistics.median(x["cps"] for x in results),
            "cpu_ms_per_call": statistics.median(x["cpu_ms_per_call"] for x in results),
            "busy_cpu_ms_per_call": statistics.median(x["busy_cpu_ms_per_call"] for x in results),
            "failed": sum(x["failed"] for x in results),
            "runs": results,
        }
        for label, results in runs.items()
    ]
    off_row = next(row for row in rows if row["label"] == "records off")
    for row in rows:
        # each edge against records off, same run: calls/s and CPU per call (off / this)
        row["ratio_cps"] = round(row["cps"] / (off_row["cps"] or 1.0), 3)
        row["ratio_cpu"] = round(off_row["cpu_ms_per_call"] / (row["cpu_ms_per_call"] or 1), 3)
        row["ratio_busy_cpu"] = round(
            off_row["busy_cpu_ms_per_call"] / (row["busy_cpu_ms_per_call"] or 1), 3
        )
    on_row = next(row for row in rows if row["label"] == on)
    pairs = list(zip(runs[on], runs["records off"], strict=True))
    per_round_busy = [
        off["busy_cpu_ms_per_call"] / (one["busy_cpu_ms_per_call"] or 1) for one, off in pairs
    ]
    return {
        "rows": rows,
        "ratio_on_off": on_row["ratio_cps"],
        # each round's pair ran back to back (or at once): the median of the per-round
        # ratios is less moved by the machine's load changing during the run than the
        # ratio of medians
        "ratio_paired_median": round(
            statistics.median(one["cps"] / (off["cps"] or 1.0) for one, off in pairs), 3
        ),
        # calls/s a CPU-bound edge keeps with records on: CPU per call off / on
        "ratio_cpu": on_row["ratio_cpu"],
        # the same with the busy CPU (idle taken out, the transactions' freeing counted)
        "ratio_busy_cpu": on_row["ratio_busy_cpu"],
        "ratio_busy_cpu_paired_median": round(statistics.median(per_round_busy), 3),
        # every round's busy CPU of records off over that of the edge compared
        "ratio_busy_cpu_pooled": round(
            sum(off["busy_cpu_ms_per_call"] for _, off in pairs)
            / (sum(one["busy_cpu_ms_per_call"] for one, _ in pairs) or 1),
            3,
        ),
        "ratio_busy_cpu_per_round": [round(x, 3) for x in per_round_busy],
    }


# tm keeps a transaction 5 s after its final reply (wait timer) and frees it then: the busy
# CPU of a run is counted until that much after its last call
CLEANUP_S = 6.0
IDLE_S = 2.0


def cps(args: argparse.Namespace) -> dict[str, Any]:
    base, inner_base, prefix = _chroot(args)
    procs: list[subprocess.Popen[bytes]] = []
    labels = ["records on", "records off", *(f"records on, {v}" for v in args.variant or [])]
    if args.cfg_from:
        labels.append(CFG_FROM)
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    managers: set[str] = set()
    pg = args.backend == "postgresql"
    netns_up()  # before the try: a namespace of another run is not this one's to remove
    try:
        if pg:
            from siporch.records import SCHEMA_PG

            procs.append(pg_up(base, SCHEMA_PG))
        procs.append(cb.start_rtpengine(base, cb.EDGE, netns=NS))
        procs.append(cb.start_pbx(base, netns=NS))
        for r in range(args.rounds):
            # interleaved, the order turned round every other round
            order = labels if r % 2 == 0 else labels[::-1]
            for label in order:
                on = label != "records off"
                sub = base / ("on" if on else "off")
                edge, mem = _start_edge(args, label, sub, inner_base / sub.name, prefix, NS)
                managers.add(mem)
                try:
                    time.sleep(2.0)  # dispatcher's first probe of the PBX
                    cb.run_uac(
                        cb.PEER_BYPASS, cb.EDGE, cb.DID_BYPASS, 200, args.concurrency, netns=NS
                    )
                    db = None if pg else sub / "records" / "records.sqlite"
                    c0 = _settled(db) if on else (0, 0)
                    # the edge's idle CPU (timers, the writer's polling), once the warm-up's
                    # transactions are freed: taken out of the busy CPU per call below
                    time.sleep(CLEANUP_S)
                    idle0, t_idle = _group_cpu_ns(edge.pid), time.monotonic()
                    time.sleep(IDLE_S)
                    idle_ns_per_s = (_group_cpu_ns(edge.pid) - idle0) / (time.monotonic() - t_idle)
                    busy0, t_busy = _group_cpu_ns(edge.pid), time.monotonic()
                    cpu0 = _group_cpu(edge.pid)
                    res = cb.run_uac(
                        cb.PEER_BYPASS,
                        cb.EDGE,
                        cb.DID_BYPASS,
                        args.calls,
                        args.concurrency,
                        netns=NS,
                    )
                    # Kamailio's CPU per call: unlike calls/s, hardly moved by what else
                    # runs on the machine (the calls/s of a CPU-bound edge follow it)
                    res["cpu_ms_per_call"] = round(
                        (_group_cpu(edge.pid) - cpu0) * 1000 / max(1, res["successful"]), 4
                    )
                    # busy CPU per call: the run and the freeing of its transactions after
                    # it, less the idle CPU of that time (a run that stalls on a lost packet's
                    # 10 s timeout is not charged the timers' CPU of those 10 s)
                    time.sleep(max(0.0, CLEANUP_S - (time.monotonic() - t_busy - res["seconds"])))
                    busy_ns = float(_group_cpu_ns(edge.pid) - busy0)
                    busy_ns -= idle_ns_per_s * (time.monotonic() - t_busy)
                    res["idle_cpu_ms_per_s"] = round(idle_ns_per_s / 1e6, 3)
                    res["busy_cpu_ms_per_call"] = round(
                        busy_ns / 1e6 / max(1, res["successful"]), 4
                    )
                    if on:
                        c1 = _settled(db)  # the last calls' records
                        res["call_records"] = c1[0] - c0[0]
                        res["leg_records"] = c1[1] - c0[1]
                        res["db_errors_logged"] = _db_errors(sub / "edge.log")
                finally:
                    cb.stop(edge)
                runs[label].append(res)
        return {**_run_facts(args, prefix, managers), **_summary(runs, "records on")}
    finally:
        for p in reversed(procs):
            cb.stop(p)
        netns_down()
        if args.keep:
            print(f"logs kept in {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)


NS_B = NS + "-b"  # --at-once: the second edge's namespace, a copy of the first's


def cps_at_once(args: argparse.Namespace) -> dict[str, Any]:
    """Records on and records off at the same time: each edge in a namespace of its own
    (the same addresses, its own rtpengine and SIPp UAS), both driven at once by a SIPp
    UAC each, ``--calls`` calls with ``--concurrency`` in flight. Each round both edges
    meet the same machine (the same other load, the same CPU clock): the ratio of their
    CPU per call does not carry the round-to-round changes of the machine that alternate
    rounds do. SQLite: the namespaces swap every other round; PostgreSQL: records on in
    the first namespace, where the server runs. With ``--variant`` (one) or ``--cfg-from``,
    that edge instead of records on, against records off."""
    base, inner_base, prefix = _chroot(args)
    procs: list[subprocess.Popen[bytes]] = []
    pg = args.backend == "postgresql"
    # records off against one other edge: records on, or one variant, or --cfg-from
    other = (
        f"records on, {args.variant[0]}"
        if args.variant
        else CFG_FROM
        if args.cfg_from
        else "records on"
    )
    labels = (other, "records off")
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    managers: set[str] = set()
    netns_up(NS)  # before the try: a namespace of another run is not this one's to remove
    try:
        netns_up(NS_B)
    except RuntimeError:
        netns_down(NS)
        raise
    try:
        if pg:
            from siporch.records import SCHEMA_PG

            procs.append(pg_up(base, SCHEMA_PG))
        for netns in (NS, NS_B):
            (base / netns).mkdir()
            procs.append(cb.start_rtpengine(base / netns, cb.EDGE, netns=netns))
            procs.append(cb.start_pbx(base / netns, netns=netns))
        for r in range(args.rounds):
            where = {other: NS, "records off": NS_B}
            if not pg and r % 2 == 1:
                where = {other: NS_B, "records off": NS}
            edges: dict[str, subprocess.Popen[bytes]] = {}
            try:
                for label in labels:
                    sub = base / ("off" if label == "records off" else "on")
                    edges[label], mem = _start_edge(
                        args, label, sub, inner_base / sub.name, prefix, where[label]
                    )
                    managers.add(mem)
                time.sleep(2.0)  # dispatcher's first probe of the PBX
                for label in labels:
                    cb.run_uac(
                        cb.PEER_BYPASS, cb.EDGE, cb.DID_BYPASS, 200, args.concurrency,
                        netns=where[label],
                    )  # fmt: skip
                db = None if pg else base / "on" / "records" / "records.sqlite"
                c0 = _settled(db)
                time.sleep(CLEANUP_S)
                idle0 = {k: _group_cpu_ns(e.pid) for k, e in edges.items()}
                t_idle = time.monotonic()
                time.sleep(IDLE_S)
                idle = {
                    k: (_group_cpu_ns(e.pid) - idle0[k]) / (time.monotonic() - t_idle)
                    for k, e in edges.items()
                }
                busy0 = {k: _group_cpu_ns(e.pid) for k, e in edges.items()}
                cpu0 = {k: _group_cpu(e.pid) for k, e in edges.items()}
                t_busy = time.monotonic()
                # both UACs at once
                with ThreadPoolExecutor(len(labels)) as pool:
                    futures = {
                        label: pool.submit(
                            cb.run_uac,
                            cb.PEER_BYPASS,
                            cb.EDGE,
                            cb.DID_BYPASS,
                            args.calls,
                            args.concurrency,
                            netns=where[label],
                        )
                        for label in labels
                    }
                    out = {label: f.result() for label, f in futures.items()}
                # both edges' busy CPU over the same window: until the later run's end and
                # the freeing of its transactions
                last = max(x["seconds"] for x in out.values())
                time.sleep(max(0.0, CLEANUP_S - (time.monotonic() - t_busy - last)))
                window = time.monotonic() - t_busy
                for label, edge in edges.items():
                    res = out[label]
                    ok = max(1, res["successful"])
                    res["cpu_ms_per_call"] = round(
                        (_group_cpu(edge.pid) - cpu0[label]) * 1000 / ok, 4
                    )
                    busy_ns = float(_group_cpu_ns(edge.pid) - busy0[label]) - idle[label] * window
                    res["idle_cpu_ms_per_s"] = round(idle[label] / 1e6, 3)
                    res["busy_cpu_ms_per_call"] = round(busy_ns / 1e6 / ok, 4)
                    res["netns"] = where[label]
                c1 = _settled(db)
                out[other]["call_records"] = c1[0] - c0[0]
                out[other]["leg_records"] = c1[1] - c0[1]
                out[other]["db_errors_logged"] = _db_errors(base / "on" / "edge.log")
            finally:
                for edge in edges.values():
                    cb.stop(edge)
            for label in labels:
                runs[label].append(out[label])
        return {"mode": "at-once", **_run_facts(args, prefix, managers), **_summary(runs, other)}
    finally:
        for p in reversed(procs):
            cb.stop(p)
        netns_down(NS_B)
        netns_down(NS)
        if args.keep:
            print(f"logs kept in {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)


CFG_FROM = "records on, --cfg-from"
# Kamailio's own module directory (Debian's, on the host and in the lab root)
MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules"

# Variants of the edge with records on, to see where their cost goes (--variant): the same
# rendered configuration with one part of the records taken out.
VARIANTS: dict[str, tuple[tuple[str, str], ...]] = {
    # SQLite and PostgreSQL (one writer for both): no call record queued (the dialog
    # variables are still set on every call)
    "no-record": (("route[RECORD_ROW] {\n", "route[RECORD_ROW] {\n\treturn;\n"),),
    # no per-call state for the records (routes ACC_START, ACC_LEG, ACC_REPLY do nothing;
    # no record queued); sqlops, the timers and the dialog event routes remain
    "no-state": (
        ("route[ACC_START] {\n", "route[ACC_START] {\n\treturn;\n"),
        ("route[ACC_LEG] {\n", "route[ACC_LEG] {\n\treturn;\n"),
        ("route[ACC_REPLY] {\n", "route[ACC_REPLY] {\n\treturn;\n"),
    ),
    # SQLite only: the rows queued and fetched by the writer as in the product, no INSERT
    # run (what SQLite itself costs; PostgreSQL's writer takes an INSERT not run for a
    # failed one)
    "no-insert": (("route[RECORD_INSERT] {\n", "route[RECORD_INSERT] {\n\treturn;\n"),),
    # no 2xx/18x state (route ACC_REPLY does nothing: no answer time, no code)
    "no-reply": (("route[ACC_REPLY] {\n", "route[ACC_REPLY] {\n\treturn;\n"),),
    # the reply state kept in the transaction but not put in the dialog (route ACC_RC sets
    # no dialog variable: no record either, as route RECORD_ROW finds none)
    "no-dlgvar": (("\t$dlg_var(rr) = $var(rrow);\n", ""),),
    # no leg state (route ACC_LEG does nothing: no trunk, peer, leg numbers)
    "no-leg": (("route[ACC_LEG] {\n", "route[ACC_LEG] {\n\treturn;\n"),),
    # SQLite only: each call record inserted (and committed) by the SIP worker that ends the
    # call, instead of queued for route RECORDS_WRITE's batches (PostgreSQL drops it, logged)
    "worker-inserts": (
        ("\tif ($mq_size(records) < ACC_QUEUE_MAX) {\n", "\tif ($mq_size(records) < 0) {\n"),
    ),
    # SQLite's own checkpoints, in the SIP worker whose commit fills the WAL to 1,000 pages,
    # instead of route RECORDS_CHECKPOINT's every second
    "worker-checkpoints": (
        ('\t\tsql_query("rec", "PRAGMA wal_autocheckpoint=0");\n', ""),
        ('modparam("rtimer", "timer", "name=recckpt;interval=1;mode=1;")\n', ""),
        ('modparam("rtimer", "exec", "timer=recckpt;route=RECORDS_CHECKPOINT")\n', ""),
    ),
}


def _variant(cfg: Path, name: str) -> None:
    text = cfg.read_text()
    for old, new in VARIANTS[name]:
        if old not in text:
            raise RuntimeError(f"variant {name}: {old!r} is not in {cfg}")
        text = text.replace(old, new)
    cfg.write_text(text)


def _env(path: Path) -> dict[str, str]:
    """A rendered kamailio.env: NAME=value lines."""
    return dict(line.split("=", 1) for line in path.read_text().split())


def _version(prefix: list[str]) -> str:
    out = cb.sh(*prefix, "kamailio", "-v", check=False).stdout
    return out.splitlines()[0] if out else "?"


def cps_markdown(r: dict[str, Any]) -> str:
    lines = [
        f"Records on vs off, {r['calls']} calls per run, {r['concurrency']} in flight, "
        f"median of {r['rounds']} rounds, media bypass, {r['kamailio']['version']}, "
        f"records in {r['backend']}, memory manager {r['kamailio']['memory_manager']}; "
        f"ratio on/off = {r['ratio_on_off']:.2f}x (median of the per-round ratios "
        f"{r['ratio_paired_median']:.2f}x); Kamailio CPU per call off/on = {r['ratio_cpu']:.2f}x; "
        f"busy CPU per call off/on = {r['ratio_busy_cpu']:.2f}x (median of the per-round "
        f"ratios {r['ratio_busy_cpu_paired_median']:.2f}x)",
        "",
        "| edge | cps (median) | Kamailio CPU ms per call (median) | busy CPU ms per call "
        "(median) | failed calls | runs (cps) | runs (busy CPU ms per call) "
        "| call / leg records per run | to off: cps, CPU, busy CPU |",
        "|---|---:|---:|---:|---:|---|---|---|---|",
    ]
    if r.get("mode") == "at-once":
        lines[0] = "Records on and off at once, each in a namespace of its own; " + lines[0]
        lines.insert(
            1,
            f"busy CPU per call off/on, every round pooled = {r['ratio_busy_cpu_pooled']:.2f}x "
            f"(per round: {', '.join(f'{x:.2f}' for x in r['ratio_busy_cpu_per_round'])})",
        )
    for row in r["rows"]:
        each = ", ".join(f"{x['cps']:g}" for x in row["runs"])
        recs = ", ".join(
            f"{x['call_records']}/{x['leg_records']} of {x['successful']}"
            for x in row["runs"]
            if "call_records" in x
        )
        busy = ", ".join(f"{x['busy_cpu_ms_per_call']:g}" for x in row["runs"])
        lines.append(
            f"| {row['label']} | {row['cps']:g} | {row['cpu_ms_per_call']:g} "
            f"| {row['busy_cpu_ms_per_call']:g} | {row['failed']} | {each} | {busy} | {recs} "
            f"| {row['ratio_cps']:.2f}x, {row['ratio_cpu']:.2f}x, {row['ratio_busy_cpu']:.2f}x |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- summary


def synth(db: Path, n: int, seed: int = 7) -> None:
    """``n`` calls over 30 days on 5 trunks, with their legs, as the edge writes them."""
    db.unlink(missing_ok=True)
    con = sqlite3.connect(db)
    con.executescript(records.SCHEMA)
    con.execute("PRAGMA synchronous=OFF")
    calls: list[tuple[Any, ...]] = []
    legs: list[tuple[Any, ...]] = []
    for call, call_legs in _synth_rows(n, seed):
        calls.append(call)
        legs.extend(call_legs)
        if len(calls) >= 50000:
            _flush(con, calls, legs)
    _flush(con, calls, legs)
    con.commit()
    con.close()


def _synth_rows(n: int, seed: int = 7) -> Iterator[tuple[tuple[Any, ...], list[tuple[Any, ...]]]]:
    """The synthetic calls, each with its leg rows (see :func:`synth`)."""
    rng = random.Random(seed)
    trunks = ["itsp-a", "itsp-b", "itsp-c", "pstn-gw", "itsp-branch"]
    t0 = time.time() - 30 * 86400
    step = 30 * 86400 / n
    for i in range(n):
        setup = t0 + i * step
        trunk = trunks[i % 5]
        failover = rng.random() < 0.1
        answered = rng.random() < 0.7
        ring = setup + rng.uniform(0.5, 4.0)
        answer = ring + rng.uniform(1, 10) if answered else None
        dur = (answer - setup + rng.uniform(5, 600)) if answer else rng.uniform(1, 30)
        code, reason = (200, "OK") if answered else rng.choice(
            [(486, "Busy Here"), (480, "Temporarily Unavailable"), (503, "Service Unavailable"),
             (404, "Not Found"), (487, "Request Terminated")]
        )  # fmt: skip
        cid = f"c{i}"
        call = (
            cid, "outbound" if i % 3 else "inbound", trunk, "203.0.113.10", "2125550111",
            f"1312555{i % 10000:04d}", code, reason, setup, ring, answer, dur,
            2 if failover else 1, "20261205T000000Z-abcdef12",
        )  # fmt: skip
        legs: list[tuple[Any, ...]] = []
        if failover:
            legs.append((cid, "503", "Service Unavailable", setup + 0.2, trunk, 1))
        legs.append((cid, str(code), reason, answer or setup + dur, trunk, 2 if failover else 1))
        yield call, legs


def _flush(
    con: sqlite3.Connection, calls: list[tuple[Any, ...]], legs: list[tuple[Any, ...]]
) -> None:
    con.executemany(
        "INSERT INTO calls (callid, direction, trunk, peer, calling, called, code, reason, "
        "setup, ring, answer, duration, legs, release) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        calls,
    )
    con.executemany(
        "INSERT INTO legs (callid, sip_code, sip_reason, ts, trunk, leg) VALUES (?,?,?,?,?,?)",
        legs,
    )
    calls.clear()
    legs.clear()


def summary(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="siporch-recsum-") as tmp:
        db = Path(tmp) / "edge-central.sqlite"
        t0 = time.monotonic()
        synth(db, args.records)
        build_s = time.monotonic() - t0
        size = db.stat().st_size
        cmd = [sys.executable, "-m", "siporch", "calls", "--from-file", str(db), "--summary",
               "--json"]  # fmt: skip
        t0 = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=3600)
        wall = time.monotonic() - t0
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-2000:])
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        rows = [json.loads(line) for line in proc.stdout.splitlines()]
    return {
        "records": args.records,
        "db_mb": round(size / 1e6, 1),
        "build_seconds": round(build_s, 1),
        "summary_seconds": round(wall, 2),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "trunks": rows,
    }


PG_EDGE = "bench-summary"  # the edge name of the synthetic records (removed afterwards)

# The summary over the PostgreSQL reader (records._REMOTE_PG, as `siporch calls` runs it on
# an edge), run here in a process of its own: argv[1] a host.cfg naming the server, argv[2]
# the edge whose records are read, argv[3] "server" (the server aggregates, as `siporch
# calls --summary` does) or "calls" (every call read and summarized here). Prints the
# summary as JSON lines.
_PG_SUMMARY = r"""
import json, sys
from siporch import records
problems = []
server = sys.argv[3] == "server"
argv = records.remote_command_pg(sys.argv[1], records.Filters(), [sys.argv[2]], server)
argv[0] = sys.executable
if server:
    rows = records.summary_from_lines(records.stream_lines(argv, "pg", 3600, problems))
else:
    rows = records.summarize(records.read_calls([("pg", argv)], records.Filters(), 3600, problems))
for row in rows:
    print(json.dumps(row.as_dict()))
if problems:
    sys.exit("; ".join(problems))
"""


def _copy_pg(url: tuple[str, str, str, str, str], n: int, seed: int = 7) -> None:
    """``n`` synthetic calls (as :func:`synth`) into the server's tables with COPY, edge
    ``PG_EDGE``."""
    import csv

    user, password, host, port, db = url
    env = {**os.environ, "PGPASSWORD": password}
    base = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", host, "-p", port, "-U", user,
            "-d", db]  # fmt: skip
    tables = {
        "calls": "callid, edge, direction, trunk, peer, calling, called, code, reason, setup, "
        "ring, answer, duration, legs, release",
        "legs": "callid, edge, sip_code, sip_reason, ts, trunk, leg",
    }
    procs = {
        t: subprocess.Popen(
            [*base, "-c", f"COPY {t} ({cols}) FROM STDIN WITH (FORMAT csv)"],
            stdin=subprocess.PIPE,
            text=True,
            env=env,
        )
        for t, cols in tables.items()
    }
    assert procs["calls"].stdin is not None and procs["legs"].stdin is not None
    wc, wl = csv.writer(procs["calls"].stdin), csv.writer(procs["legs"].stdin)
    for call, legs in _synth_rows(n, seed):
        (cid, direction, trunk, peer, calling, called, code, reason, setup, ring, answer, dur,
         nlegs, release) = call  # fmt: skip
        wc.writerow([cid, PG_EDGE, direction, trunk, peer, calling, called, code, reason,
                     setup, ring, "" if answer is None else answer, dur, nlegs, release])  # fmt: skip
        for cid2, code2, reason2, ts, trunk2, leg in legs:
            wl.writerow([cid2, PG_EDGE, code2, reason2, ts, trunk2, leg])
    for t, proc in procs.items():
        assert proc.stdin is not None
        proc.stdin.close()
        if proc.wait() != 0:
            raise RuntimeError(f"COPY into {t} failed")


def summary_pg(args: argparse.Namespace) -> dict[str, Any]:
    """The summary read from PostgreSQL: the synthetic calls loaded into the server of
    ``--pg-url`` (edge ``PG_EDGE``), the summary timed, the calls removed again."""
    m = re.fullmatch(r"postgres://([^:@/]+):([^@/]*)@([^/:]+)(?::(\d+))?/(\w+)", args.pg_url)
    if not m:
        raise RuntimeError("--pg-url must be postgres://user:password@host[:port]/database")
    user, password, host, port, db = m.groups()
    port = port or "5432"
    url = (user, password, host, port, db)
    env = {**os.environ, "PGPASSWORD": password}
    psql = ["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h", host, "-p", port,
            "-U", user, "-d", db]  # fmt: skip

    def sql(q: str) -> str:
        out = subprocess.run([*psql, "-c", q], capture_output=True, text=True, env=env,
                             timeout=3600)  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"psql: {out.stderr.strip()[-500:]}")
        return out.stdout.strip()

    def remove() -> None:
        for table in ("calls", "legs"):
            sql(f"DELETE FROM {table} WHERE edge = '{PG_EDGE}'")

    remove()  # a run killed before its end left them
    with tempfile.TemporaryDirectory(prefix="siporch-recsum-pg-") as tmp:
        cfg = Path(tmp) / "host.cfg"
        cfg.write_text(f'#!define ACC_DB_URL "postgres://{user}:{password}@{host}:{port}/{db}"\n')
        try:
            t0 = time.monotonic()
            _copy_pg(url, args.records)
            sql("ANALYZE calls")
            sql("ANALYZE legs")
            build_s = time.monotonic() - t0
            size = sql("SELECT pg_total_relation_size('calls') + pg_total_relation_size('legs')")
            ways: dict[str, dict[str, Any]] = {}
            for way in ("server", "calls"):
                t0 = time.monotonic()
                proc = subprocess.run(
                    ["/usr/bin/time", "-f", "%M", sys.executable, "-c", _PG_SUMMARY, str(cfg),
                     PG_EDGE, way],
                    capture_output=True, text=True, cwd=REPO, timeout=3600,
                    env={**os.environ, "PYTHONPATH": str(REPO)},
                )  # fmt: skip
                wall = time.monotonic() - t0
                if proc.returncode != 0:
                    raise RuntimeError(proc.stderr[-2000:])
                ways[way] = {
                    "seconds": round(wall, 2),
                    "peak_rss_mb": round(int(proc.stderr.strip().splitlines()[-1]) / 1024, 1),
                    "trunks": [json.loads(line) for line in proc.stdout.splitlines()],
                }
        finally:
            remove()
    return {
        "records": args.records,
        "backend": "postgresql",
        "server": f"{host}:{port}",
        "db_mb": round(int(size) / 1e6, 1),
        "build_seconds": round(build_s, 1),
        # as `siporch calls --summary` reads PostgreSQL: the server aggregates
        "summary_seconds": ways["server"]["seconds"],
        # /usr/bin/time: the largest resident size of the process and the ones it started
        "peak_rss_mb": ways["server"]["peak_rss_mb"],
        "trunks": ways["server"]["trunks"],
        # every call read and summarized on this side (the SQLite way)
        "call_by_call": {k: v for k, v in ways["calls"].items() if k != "trunks"},
        "same_figures_exact_quantiles_aside": _same_but_pdd(
            ways["server"]["trunks"], ways["calls"]["trunks"]
        ),
    }


def _same_but_pdd(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    """The two summaries agree but for the PDD quantiles (sampled above 20,000 calls per
    trunk on the call-by-call side, exact on the server)."""

    def strip(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if not k.startswith("pdd")} for r in rows]

    return strip(a) == strip(b)


def exporter_read(args: argparse.Namespace) -> dict[str, Any]:
    """The exporter's first read of an edge's records (a restarted exporter): the edge
    program run locally on a synthetic database, chunk after chunk, until the newest id."""
    import re

    from siporch.monitor import record_metrics as rm

    with tempfile.TemporaryDirectory(prefix="siporch-recexp-") as tmp:
        db = Path(tmp) / "records.sqlite"
        synth(db, args.records)
        last, runs, peak_kb, calls = 0, 0, 0, 0
        t0 = time.monotonic()
        while True:
            proc = subprocess.run(
                ["/usr/bin/time", "-v", sys.executable, *rm.remote_command(str(db), last)[1:]],
                capture_output=True, text=True, timeout=3600, check=True,
            )  # fmt: skip
            data = json.loads(proc.stdout)
            m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
            peak_kb = max(peak_kb, int(m.group(1)) if m else 0)
            runs += 1
            calls += sum(int(r[2]) for r in data["rows"])
            last = data["top"]
            if data["newest"] <= data["top"]:
                break
        wall = time.monotonic() - t0
    return {
        "records": args.records,
        "calls_counted": calls,
        "runs": runs,
        "seconds": round(wall, 2),
        "peak_rss_mb": round(peak_kb / 1024, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cps")
    c.add_argument("--trunks", type=int, default=1000)
    c.add_argument("--calls", type=int, default=3000)
    c.add_argument("--concurrency", type=int, default=50)
    c.add_argument("--rounds", type=int, default=3)
    c.add_argument("--json", type=Path)
    c.add_argument("--keep", action="store_true")
    c.add_argument(
        "--at-once",
        action="store_true",
        help="run records on and records off at the same time, each edge in a namespace of "
        "its own with its own SIPp (not alternately): the same machine for both in each round",
    )
    c.add_argument(
        "--backend",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="where the records go; postgresql: a server of the bench's own in its namespace "
        "(needs Kamailio's db_postgres: the lab root's, --root)",
    )
    c.add_argument(
        "--variant",
        action="append",
        choices=sorted(VARIANTS),
        help="also run the edge with records on and this part of them taken out (repeatable)",
    )
    c.add_argument(
        "--cfg-from",
        type=Path,
        help="also run the edge with records on and this kamailio.cfg instead of the rendered "
        "one (the template of another commit), in the same run",
    )
    c.add_argument(
        "--mem",
        choices=("qm", "fm", "tlsf"),
        help="Kamailio's memory manager (kamailio -x), every edge of the run; default: the "
        "rendered edge's (kamailio.env's MEMORY_MANAGER, the model's memory_manager)",
    )
    c.add_argument(
        "--root",
        type=Path,
        help="run Kamailio from this root file system with chroot (e.g. the lab's, "
        "/var/cache/siporch/rootfs/<key>, for Kamailio 6)",
    )
    c.add_argument(
        "--modules",
        type=Path,
        help="a directory of Kamailio modules searched before Kamailio's own (kamailio -L), "
        "as Kamailio sees it: e.g. db_postgres of kamailio-postgres-modules unpacked with "
        "dpkg -x, for --backend postgresql with the host's Kamailio",
    )
    s = sub.add_parser("summary")
    s.add_argument("--records", type=int, default=1_000_000)
    s.add_argument(
        "--pg-url",
        help="read from PostgreSQL instead: postgres://user:password@host[:port]/database "
        "(the records are loaded there as edge bench-summary, and removed at the end)",
    )
    s.add_argument("--json", type=Path)
    e = sub.add_parser("exporter")
    e.add_argument("--records", type=int, default=1_000_000)
    e.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    try:
        if args.cmd == "cps":
            if os.geteuid() != 0:
                print("records_bench cps needs root (a network namespace)", file=sys.stderr)
                return 2
            if not 1 <= args.calls <= 100000 or not 1 <= args.concurrency <= 1000:
                print("--calls must be 1..100000 and --concurrency 1..1000", file=sys.stderr)
                return 2
            if args.at_once and len(args.variant or []) + bool(args.cfg_from) > 1:
                print("--at-once runs records off against one other edge: records on, one "
                      "--variant or --cfg-from", file=sys.stderr)  # fmt: skip
                return 2
            if cb.missing_tool("kamailio", "rtpengine", "sipp"):
                return 2
            result = cps_at_once(args) if args.at_once else cps(args)
            print(cps_markdown(result))
        elif args.cmd == "exporter":
            if not 1 <= args.records <= 20_000_000:
                print("--records must be 1..20000000", file=sys.stderr)
                return 2
            result = exporter_read(args)
            print(
                f"{result['records']} records: the exporter's first read took "
                f"{result['runs']} run(s) of the edge program, {result['seconds']} s, peak RSS "
                f"{result['peak_rss_mb']} MB ({result['calls_counted']} calls counted)"
            )
        else:
            if not 1 <= args.records <= 20_000_000:
                print("--records must be 1..20000000", file=sys.stderr)
                return 2
            result = summary_pg(args) if args.pg_url else summary(args)
            print(
                f"{result['records']} records ({result['db_mb']} MB): siporch calls --summary "
                f"{result['summary_seconds']} s, peak RSS {result['peak_rss_mb']} MB"
                + (
                    f"; call by call: {result['call_by_call']['seconds']} s, peak RSS "
                    f"{result['call_by_call']['peak_rss_mb']} MB"
                    if "call_by_call" in result
                    else ""
                )
            )
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"records_bench: {exc}", file=sys.stderr)
        return 1
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
