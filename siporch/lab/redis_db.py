"""The lab's Redis server on db-central, for the central edges' rtpengines.

The central edge pair (``sites.central.edges.redis`` in the example) keeps its media
sessions in it: each rtpengine writes its own database and subscribes to the keyspace
notifications of the other's, so the standby holds every call of the active one and
takes its media over with the floating address. Redis comes from the lab's root
(Debian's ``redis-server``); this module writes a configuration of its own (the lab
address, no persistence, keyspace notifications on) and starts the server, which
``lab up`` does when it does not run.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from siporch.errors import LabError
from siporch.lab import hosts as hostfs
from siporch.lab import procs
from siporch.lab.spec import REDIS_ADDRESS, REDIS_HOST, REDIS_PORT, LabHost, LabPaths, host_by_name

CONF = "/etc/redis/siporch-lab.conf"
PIDFILE = "/run/redis/siporch-lab.pid"
LOG = "/var/log/redis/siporch-lab.log"
READY_S = 20.0
#: Every keyspace event (K: keyspace channel, E: keyevent channel, A: every class), as
#: rtpengine's subscribe-keyspace needs.
NOTIFY = "KEA"


def _host() -> LabHost:
    host = host_by_name(REDIS_HOST)
    assert host is not None
    return host


def config_text() -> str:
    return (
        "# siporch lab: Redis for the central edges' rtpengines (siporch.lab.redis_db)\n"
        f"bind 127.0.0.1 {REDIS_ADDRESS}\n"
        f"port {REDIS_PORT}\n"
        "protected-mode no\n"
        "daemonize no\n"
        f"pidfile {PIDFILE}\n"
        # its log goes to stdout, which the lab appends to LOG
        'logfile ""\n'
        "databases 16\n"
        'save ""\n'
        "appendonly no\n"
        "dir /var/lib/redis\n"
        f'notify-keyspace-events "{NOTIFY}"\n'
    )


def pid(paths: LabPaths | None = None) -> int | None:
    """The server's pid while it runs in the host."""
    paths = paths or LabPaths.default()
    root = paths.host_root(REDIS_HOST)
    if not root.is_dir():
        return None
    number = hostfs.pid_alive(root, PIDFILE)
    if number is None:
        return None
    try:
        comm = Path(f"/proc/{number}/comm").read_text().strip()
    except OSError:
        return None
    return number if comm.startswith("redis") else None


def problems(paths: LabPaths | None = None) -> list[str]:
    paths = paths or LabPaths.default()
    return [] if pid(paths) is not None else ["redis-server not running"]


def ensure_running(paths: LabPaths | None = None) -> bool:
    """Start Redis on db-central unless it runs. Returns True when it had to start it."""
    paths = paths or LabPaths.default()
    if pid(paths) is not None:
        return False
    root = paths.host_root(REDIS_HOST)
    if not hostfs.is_mounted(root):
        raise LabError(f"the lab host {REDIS_HOST} is not up", hint="run `siporch lab up`")
    if not (root / "usr/bin/redis-server").exists():
        raise LabError(
            f"{REDIS_HOST}: redis-server is not in the lab root",
            hint="siporch lab up --rebuild (the root's package list has redis-server)",
        )
    ids = hostfs._passwd_ids(root, "redis")
    if ids is None:
        raise LabError(f"{REDIS_HOST}: no redis user in the lab root")
    conf = root / CONF.lstrip("/")
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(config_text())
    for d in (PIDFILE, LOG):
        directory = (root / d.lstrip("/")).parent
        directory.mkdir(parents=True, exist_ok=True)
        os.chown(directory, *ids)
    data = root / "var/lib/redis"
    data.mkdir(parents=True, exist_ok=True)
    os.chown(data, *ids)
    hostfs.spawn_in_host(
        _host(), paths, ["runuser", "-u", "redis", "--", "/usr/bin/redis-server", CONF], LOG
    )
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        if pid(paths) is not None and hostfs.tcp_open(REDIS_ADDRESS, REDIS_PORT, timeout=0.2):
            return True
        time.sleep(0.1)
    log = root / LOG.lstrip("/")
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
    raise LabError(
        f"Redis on {REDIS_HOST} did not answer in {READY_S:g} s" + (f": {tail[0]}" if tail else "")
    )


def stop(paths: LabPaths | None = None) -> None:
    paths = paths or LabPaths.default()
    running = pid(paths)
    if running is not None:
        procs.kill_processes([running], grace=5.0)
