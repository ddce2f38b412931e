"""What call records cost the edge in instructions per call, counted (callgrind), not timed.

    python bench/records_insn.py --root ROOT [--calls 1000] [--variant V] [--cfg-from FILE] [--json F]

The CPU benchmark (records_bench.py cps) times the edge; on a shared 2-core machine its
per-round ratios spread over 0.78x-0.96x, wider than the differences between two versions of
the records' routes. This one counts: the rendered edge of records_bench (1,000 generated
trunks by default) runs under valgrind's callgrind, records off, then records on (and any
``--variant`` or ``--cfg-from`` edge), each driven by the same SIPp UAC for ``--calls`` calls
(``--concurrency`` in flight), and every process of the edge has its instructions counted.

Per edge, two runs: one with ``--calls`` calls and one with ``--calls-base`` calls, the
second as long as the first (from the start to the stop, the transactions of the last
calls freed: tm keeps one 5 s after its end), so that the start, a warm-up of 50 calls and
the timers count the same in both; each process's instructions at its exit. The difference
of the two, divided by the difference of the calls answered, is the edge's instructions per
call; the same per process kind (SIP workers, the records writer, the rest). The SIP
workers' and the writer's counts repeat to within about 1% from run to run; the rest (the
timer processes: the probes of 1,000 trunks every few seconds) moves by up to 10% of a
call's total, so compare workers and writer, not the totals. A run in which SIPp lost a
call (the edge under valgrind starved of CPU by other work: a lost call is retransmitted
and counted in part) is refused: run it on a quiet machine. ``--writer-interval US``: the
writer's round for every edge in microseconds (default: the template's 0.1 s, at which,
at valgrind's speed, each round writes one or two rows a statement, where an edge at full
load writes 16: the writer's count is then an upper bound; about 5 s gives full load's
batches).

ROOT is a root file system with Kamailio (the lab's, /var/cache/siporch/rootfs/<key>) and
valgrind: the lab root has no valgrind, so use an overlay of it with valgrind installed:

    mount -t overlay overlay -o lowerdir=$LAB_ROOT,upperdir=U,workdir=W M
    mount --bind /proc M/proc; mount --bind /dev M/dev; cp /etc/resolv.conf M/etc/
    chroot M apt-get install -y valgrind

Instructions are not time: cache misses, lock waits and the kernel's work are not counted
(the kernel's share of the edge's CPU is about a quarter, and follows the packets, which
records do not change). Run as root; one run at a time (its network namespace).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import cps_bench as cb  # noqa: E402
from bench import records_bench as rb  # noqa: E402

WARMUP_CALLS = 50
CLEANUP_S = 7.0  # tm keeps a transaction 5 s after its end (wait timer)


def _totals(out: Path) -> dict[int, int]:
    """{pid: instructions} of the callgrind files in ``out`` (one per process, at exit)."""
    counts: dict[int, int] = {}
    for f in out.glob("cg.*"):
        m = re.fullmatch(r"cg\.(\d+)", f.name)
        if not m:
            continue
        total = None
        with f.open(errors="replace") as fh:
            for line in fh:
                if line.startswith(("summary:", "totals:")):
                    total = int(line.split()[1])
                    break
        if total is not None:
            counts[int(m.group(1))] = total
    return counts


def _functions(root: Path, inner_file: Path) -> dict[str, int]:
    """{function [object]: instructions} of one callgrind file (callgrind_annotate)."""
    out = subprocess.run(
        ["chroot", str(root), "callgrind_annotate", "--inclusive=no", "--threshold=100",
         str(inner_file)],
        capture_output=True, text=True, timeout=300, check=False,
    ).stdout  # fmt: skip
    found: dict[str, int] = {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(\S.*)$", line)
        if m and "PROGRAM TOTALS" not in line:
            name = re.sub(r"^.*:(?=[^:\[]+ \[)", "", m.group(2))
            found[name] = found.get(name, 0) + int(m.group(1).replace(",", ""))
    return found


def _process_kinds(root: Path, inner: Path) -> dict[int, str]:
    """{pid: what Kamailio says the process does} (kamcmd core.psx over the edge's ctl
    socket, as the edge in the root sees it; asked again until it answers: under
    valgrind the edge takes a while to serve RPCs)."""
    deadline = time.monotonic() + 90
    last: dict[int, str] = {}
    while True:
        out = subprocess.run(
            ["chroot", str(root), "kamcmd", "-s", f"unix:{inner}/run/kamailio_ctl", "core.psx"],
            capture_output=True, text=True, timeout=60, check=False,
        ).stdout  # fmt: skip
        kinds: dict[int, str] = {}
        pid = None
        for line in out.splitlines():
            m = re.match(r"\s*(?:PID|IDX):\s*(\d+)", line)
            if m and line.strip().startswith("PID"):
                pid = int(m.group(1))
            m = re.match(r"\s*DSC:\s*(.*)", line)
            if m and pid is not None:
                kinds[pid] = m.group(1).strip()
        # every process forked: the same list twice in a row, 2 s apart
        if (kinds and kinds == last and any("receiver" in k for k in kinds.values())) or (
            time.monotonic() > deadline
        ):
            if not kinds:
                raise RuntimeError("the edge did not list its processes (kamcmd core.psx)")
            return kinds
        last = kinds
        time.sleep(2.0)


def _kind(title: str) -> str:
    t = title.lower()
    if "recwrite" in t:
        return "writer"
    if "receiver" in t:
        return "sip workers"
    return "other"


def _writer_interval(args: argparse.Namespace) -> None:
    """Every edge of the run with the records writer's round every ``--writer-interval``
    microseconds instead of 0.1 s: under valgrind the edge runs some 50 times slower, so
    at 0.1 s each round writes one or two rows, each in a statement of its own, where an
    edge taking a thousand calls a second writes 16 rows a statement."""
    if not args.writer_interval:
        return
    start = cb.start

    def patched(argv: list[str], log: Path, netns: str = cb.NS) -> subprocess.Popen[bytes]:
        if "kamailio" in argv and "-f" in argv:
            cfg = args.root / argv[argv.index("-f") + 1].lstrip("/")
            text = cfg.read_text()
            old = "name=recwrite;interval=100000u;"
            if old in text:
                cfg.write_text(
                    text.replace(old, f"name=recwrite;interval={args.writer_interval}u;")
                )
        return start(argv, log, netns=netns)

    cb.start = patched  # type: ignore[assignment]


def _run(
    args: argparse.Namespace, label: str, base: Path, inner_base: Path, calls: int, until: float
) -> dict[str, Any]:
    """One edge under callgrind from its start to ``until`` seconds after it, with
    ``calls`` calls placed after a warm-up; its processes' instructions at exit."""
    sub = base / ("off" if label == "records off" else "on")
    inner = inner_base / sub.name
    out = sub.parent / f"{sub.name}-cg-{calls}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    prefix = [
        "chroot", str(args.root), "valgrind", "--tool=callgrind", "--vgdb=no",
        f"--callgrind-out-file={inner_base / out.name}/cg.%p",
    ]  # fmt: skip
    t0 = time.monotonic()
    edge, _mem = rb._start_edge(args, label, sub, inner, prefix, rb.NS)
    try:
        kinds = _process_kinds(args.root, inner)
        time.sleep(2.0)  # dispatcher's first probe of the PBX
        cb.run_uac(cb.PEER_BYPASS, cb.EDGE, cb.DID_BYPASS, WARMUP_CALLS, 2, netns=rb.NS)
        res = cb.run_uac(
            cb.PEER_BYPASS, cb.EDGE, cb.DID_BYPASS, calls, args.concurrency, netns=rb.NS
        )
        busy = time.monotonic() - t0
        time.sleep(max(CLEANUP_S, until - busy))
        records_written = None
        if label != "records off":
            records_written = rb._settled(sub / "records" / "records.sqlite")[0]
        wall = time.monotonic() - t0
    finally:
        cb.stop(edge)
    by_kind: dict[str, int] = {}
    functions: dict[str, dict[str, int]] = {}
    for pid, n in _totals(out).items():
        kind = _kind(kinds.get(pid, ""))
        by_kind[kind] = by_kind.get(kind, 0) + n
        if args.top:
            f = functions.setdefault(kind, {})
            for name, ir in _functions(args.root, inner_base / out.name / f"cg.{pid}").items():
                f[name] = f.get(name, 0) + ir
    return {
        "calls": res["successful"],
        "failed": res["failed"],
        "records": records_written,
        "busy_s": round(busy, 1),
        "wall_s": round(wall, 1),
        "by_kind": by_kind,
        "functions": functions,
    }


def measure(args: argparse.Namespace, label: str, base: Path, inner_base: Path) -> dict[str, Any]:
    """Instructions per call of ``label``'s edge: a run with --calls calls and one with
    --calls-base calls, each as long as the first took plus the cleanup; the difference is
    what the extra calls cost (the start, the warm-up and the timers cancel out)."""
    big = _run(args, label, base, inner_base, args.calls, 0.0)
    small = _run(args, label, base, inner_base, args.calls_base, big["wall_s"])
    for run, calls in ((big, args.calls), (small, args.calls_base)):
        if run["failed"] or run["calls"] != calls or run["wall_s"] > big["wall_s"] + 30:
            # a call SIPp gave up on (the edge under valgrind starved of CPU by other
            # work) is retransmitted and counted in part: the difference means nothing
            raise SystemExit(
                f"{label}: {run['calls']} of {calls} calls answered, {run['failed']} failed, "
                f"{run['wall_s']} s: run again on a quieter machine"
            )
    extra = big["calls"] - small["calls"]
    kinds = sorted(set(big["by_kind"]) | set(small["by_kind"]))
    per_kind = {
        k: round((big["by_kind"].get(k, 0) - small["by_kind"].get(k, 0)) / max(1, extra))
        for k in kinds
    }
    top = {}
    for k in kinds:
        b, sm = big["functions"].get(k, {}), small["functions"].get(k, {})
        diff = {f: (b.get(f, 0) - sm.get(f, 0)) / max(1, extra) for f in set(b) | set(sm)}
        top[k] = [
            [f, round(v)] for f, v in sorted(diff.items(), key=lambda x: -abs(x[1]))[: args.top]
        ]
    for r in (big, small):
        r.pop("functions")
    return {
        "label": label,
        "top_functions_per_call": top,
        "insn_per_call": sum(per_kind.values()),
        "insn_per_call_by_kind": per_kind,
        "runs": [big, small],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--trunks", type=int, default=1000)
    p.add_argument("--calls", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--calls-base", type=int, default=100)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--variant", action="append", choices=sorted(rb.VARIANTS))
    p.add_argument("--cfg-from", type=Path)
    p.add_argument("--backend", choices=("sqlite",), default="sqlite")
    p.add_argument("--json", type=Path)
    p.add_argument(
        "--writer-interval", type=int, default=0,
        help="the records writer's round in microseconds for every edge of the run (default "
        "0: the template's 0.1 s); about 5000000 gives the rows per statement of full load",
    )  # fmt: skip
    p.add_argument(
        "--top", type=int, default=0,
        help="also the N functions whose instructions per call differ most, per process kind",
    )  # fmt: skip
    args = p.parse_args(argv)
    _writer_interval(args)
    args.mem = None
    args.modules = None
    labels = ["records off", "records on"]
    labels += [f"records on, {v}" for v in args.variant or []]
    if args.cfg_from:
        labels.append(rb.CFG_FROM)
    base, inner_base, _prefix = rb._chroot(args)
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    rb.netns_up()
    try:
        procs = [
            cb.start_rtpengine(base, cb.EDGE, netns=rb.NS),
            cb.start_pbx(base, netns=rb.NS),
        ]
        try:
            for _ in range(args.rounds):
                for label in labels:
                    r = measure(args, label, base, inner_base)
                    print(json.dumps(r), flush=True)
                    runs[label].append(r)
        finally:
            for proc in reversed(procs):
                cb.stop(proc)
    finally:
        rb.netns_down()
    off = statistics.median(r["insn_per_call"] for r in runs["records off"])
    print()
    print("| edge | instructions per call (median) | to records off | by process kind |")
    print("|---|---:|---:|---|")
    for label, rs in runs.items():
        med = statistics.median(r["insn_per_call"] for r in rs)
        kinds = ", ".join(f"{k} {v:,}" for k, v in rs[-1]["insn_per_call_by_kind"].items())
        print(f"| {label} | {med:,.0f} | {off / med:.3f}x | {kinds} |")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
