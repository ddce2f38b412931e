"""Lab benchmarks: cold root file system build, `lab up` from the cache, memory per host.

Run as root from the repository root:

    python3 bench/lab_bench.py                 # warm up x3 + memory (idle and with daemons)
    python3 bench/lab_bench.py --cold          # also a cold debootstrap into a scratch cache

Prints Markdown for docs/benchmarks.md. It takes the lab down and up again (and leaves
it up); it does not touch the cached root in /var/cache/siporch/rootfs unless --cold is
given, and even then builds into a scratch directory that it removes afterwards.
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
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from siporch.lab import lab, procs, rootfs  # noqa: E402
from siporch.lab.spec import HOSTS, LabPaths  # noqa: E402

EXAMPLE = REPO / "inventory" / "example"
LAB_INV = REPO / "inventory" / "lab"


def pss_kib(pid: int) -> int:
    """Proportional set size of one process (shared pages split among their users)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def du_kib(path: Path) -> int:
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=False)
    return int(out.stdout.split()[0]) if out.returncode == 0 and out.stdout else 0


def mem_available_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    return 0


def host_memory(paths: LabPaths) -> dict[str, dict[str, int]]:
    """host -> {process name: PSS KiB summed}."""
    out: dict[str, dict[str, int]] = {}
    for host, plist in lab.lab_processes(paths).items():
        for p in plist:
            out.setdefault(host, {})
            out[host][p.comm] = out[host].get(p.comm, 0) + pss_kib(p.pid)
    return out


def bench_cold() -> tuple[float, int]:
    scratch = Path(tempfile.mkdtemp(prefix="siporch-cold-", dir="/var/tmp"))
    try:
        paths = LabPaths(state=scratch / "state", cache=scratch / "cache")
        t = time.monotonic()
        root = rootfs.ensure_rootfs(paths, rebuild=True)
        seconds = time.monotonic() - t
        return seconds, du_kib(root)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def bench_warm(runs: int) -> tuple[list[float], dict[str, float]]:
    times: list[float] = []
    timings: dict[str, float] = {}
    for _ in range(runs):
        lab.down()
        t = time.monotonic()
        result = lab.up(EXAMPLE, LAB_INV)
        times.append(time.monotonic() - t)
        if not result.ok:
            raise SystemExit(f"lab up failed: {[h.problem() for h in result.hosts if not h.ok]}")
        timings = result.timings
    return times, timings


def start_daemons(paths: LabPaths) -> None:
    """Install the release rendered from inventory/lab and start Asterisk, Kamailio and
    rtpengine as the model tests do."""
    from siporch.model import load_model
    from siporch.render import render_release
    from siporch.vault import find_password_file

    model = load_model(LAB_INV, find_password_file(LAB_INV)).model
    for host, files in render_release(model).items():
        base = paths.host_root(host) / "etc/siporch"
        rel = base / "releases" / "bench"
        for relpath, data in files.items():
            (rel / relpath).parent.mkdir(parents=True, exist_ok=True)
            (rel / relpath).write_bytes(data)
        (base / "current").unlink(missing_ok=True)
        (base / "current").symlink_to("releases/bench")
    ast = "/etc/asterisk/asterisk.conf"
    lab.run("pbx-central", ["asterisk", "-C", ast])
    for _ in range(100):
        if (
            lab.run(
                "pbx-central", ["asterisk", "-C", ast, "-rx", "core waitfullybooted"]
            ).returncode
            == 0
        ):
            break
        time.sleep(0.2)
    for edge in ("edge-central", "edge-branch"):
        lab.run(
            edge,
            [
                "rtpengine",
                "--config-file",
                "/etc/siporch/current/rtpengine/rtpengine.conf",
                "--pidfile",
                "/run/rtpengine/rtpengine.pid",
            ],
        )
        lab.run(
            edge,
            [
                "/bin/sh",
                "-c",
                "SHM_MB=64; PKG_MB=8; MEMORY_MANAGER=qm; "
                ". /etc/siporch/current/kamailio/kamailio.env; "
                "kamailio -P /run/kamailio/kamailio.pid -f /etc/siporch/current/kamailio/kamailio.cfg "
                '-m "$SHM_MB" -M "$PKG_MB" -x "$MEMORY_MANAGER" >/dev/null 2>&1',
            ],
        )
    time.sleep(3)


def stop_daemons(paths: LabPaths) -> None:
    found = lab.lab_processes(paths)
    pids = [
        p.pid
        for ps in found.values()
        for p in ps
        if p.comm in ("asterisk", "kamailio", "rtpengine")
    ]
    procs.kill_processes(pids, grace=5)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cold", action="store_true", help="also time a cold debootstrap")
    parser.add_argument("--runs", type=int, default=3, help="warm `lab up` runs")
    parser.add_argument("--no-daemons", action="store_true", help="skip the daemon memory run")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/lab_bench.py needs root", file=sys.stderr)
        return 2
    paths = LabPaths.default()
    lines = [
        "## Lab",
        "",
        f"Machine: {os.cpu_count()} CPUs, {platform.release()} kernel, "
        f"{mem_available_kib() // 1024} MiB available; measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        " with `python3 bench/lab_bench.py" + (" --cold" if args.cold else "") + "`.",
        "",
        "| measure | value |",
        "|---|---|",
    ]
    current = paths.cache / "current"
    marker = current / rootfs.MARKER
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("build_seconds"):
            lines.append(
                f"| cold build of the cached root (debootstrap, recorded) | {info['build_seconds']:.0f} s |"
            )
        lines.append(
            f"| cached root size | {du_kib(current.resolve()) // 1024} MiB, {len(info['packages'])} packages requested |"
        )
    if args.cold:
        seconds, kib = bench_cold()
        lines.append(
            f"| cold build now (debootstrap + finalize, scratch cache) | {seconds:.0f} s, {kib // 1024} MiB |"
        )
    lab.down()
    times, timings = bench_warm(args.runs)
    lab.down()
    t = time.monotonic()
    cli = subprocess.run(
        [sys.executable, "-m", "siporch", "lab", "up"], capture_output=True, check=False
    )
    cli_seconds = time.monotonic() - t
    if cli.returncode != 0:
        raise SystemExit(f"siporch lab up failed: {cli.stderr.decode(errors='replace')}")
    lines.append(
        f"| `lab up` from the cache ({len(HOSTS)} hosts, {args.runs} runs) | "
        f"median {statistics.median(times):.2f} s, min {min(times):.2f} s, max {max(times):.2f} s |"
    )
    lines.append(
        f"| `siporch lab up` from the cache, whole command (Python start included) | {cli_seconds:.2f} s |"
    )
    lines.append(
        "| of which | "
        + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items() if k != "total")
        + " |"
    )
    idle = host_memory(paths)
    idle_pss = [sum(v.values()) for v in idle.values()]
    lines.append(
        f"| memory per idle host (sshd; PSS) | median {statistics.median(idle_pss) / 1024:.1f} MiB |"
    )
    uppers = [du_kib(paths.host_dir(h.name) / "upper") for h in HOSTS]
    lines.append(
        f"| disk per host (overlay upper layer) | median {statistics.median(uppers):.0f} KiB |"
    )
    if not args.no_daemons:
        start_daemons(paths)
        busy = host_memory(paths)
        for host in ("pbx-central", "edge-central"):
            parts = ", ".join(f"{k} {v / 1024:.1f}" for k, v in sorted(busy.get(host, {}).items()))
            total = sum(busy.get(host, {}).values()) / 1024
            lines.append(
                f"| memory of {host} with its rendered daemons (PSS MiB) | {total:.1f} ({parts}) |"
            )
        stop_daemons(paths)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
