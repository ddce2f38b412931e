"""Benchmarks of `siporch status`; prints Markdown for docs/benchmarks.md.

1. Call-state handler throughput: a recorded AMI stream (tests/data/ami/*.json, recorded
   from Asterisk 22) replayed through `CallStateHandler` until --seconds have passed.
   Goal: at least 20,000 events/s.
2. Optional, `--calls N`: `siporch status --json` wall time while N calls are up. SIPp
   (tests/data/ami/sipp/trunk_uac.xml) places N inbound trunk calls to --target from inside
   --sipp-netns and holds them; once status lists N calls, status runs --runs times.
   Goal: under 1 s with 1,000 calls.

    python bench/status_bench.py
    python bench/status_bench.py --calls 1000 --inventory inventory/lab \\
        --sipp-netns sipo-edge-central --target 198.18.0.20:5060 --did +12025550100
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "ami"
sys.path.insert(0, str(REPO))

from siporch.monitor.handler import CallStateHandler  # noqa: E402
from siporch.monitor.replay import events_only, load_stream  # noqa: E402


def handler_throughput(
    stream: str, seconds: float, *, handled_only: bool = False
) -> tuple[int, float, int]:
    events = list(events_only(load_stream(DATA / f"{stream}.json")))
    handler = CallStateHandler("bench", ("itsp-a", "itsp-b"))
    if handled_only:  # only the events the handler has a method for: the costly ones
        events = [e for e in events if e["Event"] in handler.HANDLERS]
    on_event = handler.on_event
    n = 0
    rounds = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for event in events:
            on_event(event)
        n += len(events)
        rounds += 1
    elapsed = time.perf_counter() - start
    assert not handler.channels, "every call of the stream ends; none may be left over"
    return n, elapsed, rounds


def wire_throughput(stream: str, seconds: float) -> tuple[int, float]:
    """The stream as Asterisk sends it (AMI text), parsed by panoramisk and handled."""
    from panoramisk.ami_protocol import AMIProtocol

    events = list(events_only(load_stream(DATA / f"{stream}.json")))
    chunks = []
    for e in events:
        lines = []
        for k, v in e.items():
            if k.startswith("_") or k == "content":
                continue
            for item in v if isinstance(v, list) else [v]:
                lines.append(f"{k}: {item}")
        chunks.append("\r\n".join(lines) + "\r\n\r\n")
    data = "".join(chunks).encode()
    handler = CallStateHandler("bench", ("itsp-a", "itsp-b"))

    class Factory:
        save_stream = None

        def dispatch(self, message: object) -> None:
            handler.on_event(message)  # type: ignore[arg-type]

    proto = AMIProtocol()
    proto.connection_made(None)
    proto.factory = Factory()
    proto.version = "bench"
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for i in range(0, len(data), 65536):  # socket-sized reads
            proto.data_received(data[i : i + 65536])
        n += len(events)
    return n, time.perf_counter() - start


def status_json(inventory: Path, netns: str | None, extra: list[str]) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "siporch", "status", "--json", "-i", str(inventory), *extra]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    elapsed = time.perf_counter() - start
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise SystemExit(
            f"status printed no JSON (exit {proc.returncode}): {proc.stderr}"
        ) from None
    return elapsed, report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0, help="handler benchmark duration")
    ap.add_argument("--stream", default="calls", help="recorded stream under tests/data/ami")
    ap.add_argument("--calls", type=int, default=0, help="also time status with N calls up")
    ap.add_argument("--inventory", type=Path, default=REPO / "inventory" / "lab")
    ap.add_argument("--status-netns", default=None, help="run status inside this netns")
    ap.add_argument("--status-arg", action="append", default=[], help="extra status option")
    ap.add_argument("--sipp-netns", default=None, help="netns SIPp runs in")
    ap.add_argument("--sipp-source", default=None, help="SIPp local address (-i)")
    ap.add_argument("--sipp-port", type=int, default=5098)
    ap.add_argument("--target", default="198.18.0.20:5060", help="the PBX's SIP address")
    ap.add_argument("--trunk", default="itsp-a")
    ap.add_argument("--did", default="+12025550100")
    ap.add_argument("--rate", type=int, default=200, help="calls per second")
    ap.add_argument("--hold", type=int, default=40, help="seconds each call is held")
    ap.add_argument("--caller", default="2025559877", help="caller number of the calls")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    print("## siporch status\n")
    print(
        f"Machine: {platform.platform()}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs.\n"
    )
    print("| measurement | result | goal |")
    print("|---|---|---|")
    for handled_only, what in ((False, "every event"), (True, "only events it handles")):
        n, elapsed, rounds = handler_throughput(
            args.stream, args.seconds, handled_only=handled_only
        )
        print(
            f"| call-state handler, stream `{args.stream}.json` ({what}) replayed {rounds} "
            f"times: {n} events in {elapsed:.2f} s | {n / elapsed:,.0f} events/s "
            "| >= 20,000 events/s |"
        )
    n, elapsed = wire_throughput(args.stream, args.seconds)
    print(
        f"| AMI text of `{args.stream}.json` parsed by panoramisk 1.4 and handled: "
        f"{n} events in {elapsed:.2f} s | {n / elapsed:,.0f} events/s | >= 20,000 events/s |"
    )
    if args.calls:
        print(measure_status(args))
    return 0


def measure_status(args: argparse.Namespace) -> str:
    if shutil.which("sipp") is None:
        raise SystemExit("sipp is not installed")
    scenario = DATA / "sipp" / "trunk_uac.xml"
    host, _, port = args.target.rpartition(":")
    sipp = [
        "sipp",
        "-nostdin",
        "-sf",
        str(scenario),
        "-key",
        "trunk",
        args.trunk,
        "-key",
        "caller",
        args.caller,
        "-s",
        args.did,
        "-m",
        str(args.calls),
        "-l",
        str(args.calls),
        "-r",
        str(args.rate),
        "-d",
        str(args.hold * 1000),
        "-p",
        str(args.sipp_port),
        "-mp",
        "40000",
        "-max_socket",
        "4096",
        f"{host}:{port}",
    ]
    if args.sipp_source:
        sipp[1:1] = ["-i", args.sipp_source]
    if args.sipp_netns:
        sipp = ["ip", "netns", "exec", args.sipp_netns, *sipp]
    proc = subprocess.Popen(sipp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    try:
        deadline = time.monotonic() + max(60.0, args.calls / args.rate * 4)
        seen = 0
        while time.monotonic() < deadline:
            _, report = status_json(args.inventory, args.status_netns, args.status_arg)
            seen = sum(1 for c in report["calls"] if c["caller"].endswith(args.caller))
            if seen >= args.calls or proc.poll() is not None:
                break
            time.sleep(1)
        times = []
        for _ in range(args.runs):
            t, report = status_json(args.inventory, args.status_netns, args.status_arg)
            times.append(t)
        listed = sum(1 for c in report["calls"] if c["caller"].endswith(args.caller))
        rows.append(
            f"| `siporch status --json` with {listed} calls listed ({args.calls} placed), "
            f"median of {args.runs} | {statistics.median(times):.2f} s "
            f"(min {min(times):.2f}, max {max(times):.2f}) | < 1 s with 1,000 calls |"
        )
    finally:
        # SIPp hangs its calls up itself (BYE) once --hold has passed
        try:
            proc.wait(timeout=args.hold + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            hangup(args)
    return "\n".join(rows)


def hangup(args: argparse.Namespace) -> None:
    """Last resort when SIPp did not end its calls: hang up, on every PBX, the inbound
    channels of the trunk whose caller is the benchmark's (and no other call)."""
    code = f"""
import asyncio
from pathlib import Path
from siporch.model import load_model
from siporch.monitor.topology import from_model
from siporch.monitor.handler import CallStateHandler
from siporch.monitor.transport import AmiConnection, _events
topo = from_model(load_model(Path({str(args.inventory)!r})).model)
async def main():
    for t in topo.pbxs:
        c = AmiConnection(t, CallStateHandler(t.name, ()), timeout=10)
        await c.open()
        for e in _events(await c.action({{"Action": "Status"}})):
            chan = e.get("Channel", "")
            if chan.startswith("PJSIP/{args.trunk}-") and e.get("CallerIDNum", "").endswith(
                {args.caller!r}
            ):
                await c.action({{"Action": "Hangup", "Channel": chan}})
        c.close()
asyncio.run(main())
"""
    cmd = [sys.executable, "-c", code]
    if args.status_netns:
        cmd = ["ip", "netns", "exec", args.status_netns, *cmd]
    subprocess.run(cmd, timeout=60, check=False, cwd=REPO)


if __name__ == "__main__":
    sys.exit(main())
