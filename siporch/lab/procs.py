"""Find and stop lab processes: those whose root is a lab host's overlay or whose network
namespace is a lab namespace. That includes daemons started later inside a host (by a
deploy over SSH, say), which no pid file of the lab knows about."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class LabProcess:
    pid: int
    comm: str
    root: str
    netns_inode: int | None


def _read(pid: int, name: str) -> str | None:
    try:
        return (PROC / str(pid) / name).read_text()
    except OSError:
        return None


def all_pids() -> list[int]:
    return [int(p.name) for p in PROC.iterdir() if p.name.isdigit()]


def process_info(pid: int) -> LabProcess | None:
    try:
        root = os.readlink(PROC / str(pid) / "root")
    except OSError:
        return None
    comm = (_read(pid, "comm") or "").strip()
    try:
        inode: int | None = os.stat(PROC / str(pid) / "ns" / "net").st_ino
    except OSError:
        inode = None
    return LabProcess(pid, comm, root, inode)


def _under(path: str, roots: list[str]) -> str | None:
    for root in roots:
        if path == root or path.startswith(root + "/"):
            return root
    return None


def find_lab_processes(
    roots: dict[str, Path], netns_inodes: dict[str, int]
) -> dict[str, list[LabProcess]]:
    """Lab processes by host name: root under the host's overlay, or in its namespace."""
    by_root = {str(r): h for h, r in roots.items()}
    by_ns = {i: h for h, i in netns_inodes.items()}
    root_list = sorted(by_root, key=len, reverse=True)
    me = os.getpid()
    found: dict[str, list[LabProcess]] = {}
    for pid in all_pids():
        if pid == me:
            continue
        info = process_info(pid)
        if info is None:
            continue
        hit = _under(info.root, root_list)
        host = by_root[hit] if hit else by_ns.get(info.netns_inode or -1)
        if host is not None:
            found.setdefault(host, []).append(info)
    return found


def kill_processes(pids: list[int], grace: float = 3.0) -> list[int]:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL what is left. Returns the pids
    that were still alive after SIGKILL (should be empty)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if is_alive(p)]
        if alive:
            time.sleep(0.05)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if is_alive(p)]
        if alive:
            time.sleep(0.05)
    return alive


def is_alive(pid: int) -> bool:
    stat = _read(pid, "stat")
    if stat is None:
        return False
    # A zombie has exited; its parent will reap it.
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
