"""The lab's PostgreSQL server for call records, on db-central (docs/calls.md).

A model with ``records.backend: postgresql`` points its edges at it (host 198.18.0.30,
database and user ``siporch``, password :data:`LAB_PASSWORD`); the edges create the tables
themselves (the kamailio_edge role). PostgreSQL comes from the lab's root (Debian's
``postgresql``, whose package made a cluster ``main``); this module makes the host's copy
listen on its lab address, accept the lab network with a password (scram-sha-256), creates
the role and the database, and starts the server, which ``lab up`` does when it does not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

from siporch.errors import LabError
from siporch.lab import hosts as hostfs
from siporch.lab import procs
from siporch.lab.spec import (
    LAB_NETWORK,
    RECORDS_DB_ADDRESS,
    RECORDS_DB_HOST,
    LabHost,
    LabPaths,
    host_by_name,
)

PORT = 5432
DATABASE = "siporch"
USER = "siporch"
#: The lab's own password (a lab of documentation addresses, never a secret elsewhere).
LAB_PASSWORD = "lab-records-2026"
READY_S = 30.0
LOG = "/var/log/postgresql/siporch-lab.log"


def _host() -> LabHost:
    host = host_by_name(RECORDS_DB_HOST)
    assert host is not None
    return host


def _root(paths: LabPaths) -> Path:
    return paths.host_root(RECORDS_DB_HOST)


def version(root: Path) -> str | None:
    """The newest PostgreSQL major version in the host's root."""
    base = root / "usr/lib/postgresql"
    found = sorted(
        (p.name for p in base.iterdir() if p.name.isdigit() and (p / "bin/postgres").exists()),
        key=int,
    ) if base.is_dir() else []  # fmt: skip
    return found[-1] if found else None


def _data_dir(ver: str) -> str:
    return f"/var/lib/postgresql/{ver}/main"


def pid(paths: LabPaths | None = None) -> int | None:
    """The postmaster's pid (first line of postmaster.pid) while it runs in the host."""
    paths = paths or LabPaths.default()
    root = _root(paths)
    ver = version(root) if root.is_dir() else None
    if ver is None:
        return None
    try:
        first = (root / _data_dir(ver).lstrip("/") / "postmaster.pid").read_text().split()[0]
        number = int(first)
    except (OSError, ValueError, IndexError):
        return None
    try:
        if Path(f"/proc/{number}/root").resolve() != root.resolve():
            return None
        comm = Path(f"/proc/{number}/comm").read_text().strip()
    except OSError:
        return None
    return number if comm.startswith("postgres") else None


def problems(paths: LabPaths | None = None) -> list[str]:
    paths = paths or LabPaths.default()
    return [] if pid(paths) is not None else ["postgresql not running"]


def _configure(root: Path, ver: str) -> None:
    conf = root / f"etc/postgresql/{ver}/main"
    if not (conf / "postgresql.conf").exists():
        raise LabError(
            f"{RECORDS_DB_HOST}: PostgreSQL {ver} has no cluster in {conf}",
            hint="rebuild the lab root: siporch lab up --rebuild",
        )
    (conf / "conf.d").mkdir(exist_ok=True)
    (conf / "conf.d/siporch-lab.conf").write_text(
        f"listen_addresses = '127.0.0.1,{RECORDS_DB_ADDRESS}'\n"
        f"port = {PORT}\n"
        "unix_socket_directories = '/run/postgresql'\n"
        "max_connections = 200\n"
    )
    hba = conf / "pg_hba.conf"
    line = f"host all all {LAB_NETWORK} scram-sha-256"
    text = hba.read_text()
    if line not in text:
        hba.write_text(text.rstrip("\n") + f"\n# siporch lab: the lab network\n{line}\n")


def _psql(paths: LabPaths, sql: str) -> subprocess.CompletedProcess[str]:
    return hostfs.run_in_host(
        _host(),
        paths,
        ["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1",
         "-h", "/run/postgresql", "-p", str(PORT), "-d", "postgres", "-c", sql],
        timeout=30,
    )  # fmt: skip


def _start(paths: LabPaths, ver: str) -> None:
    root = _root(paths)
    run = root / "run/postgresql"
    run.mkdir(parents=True, exist_ok=True)
    (root / LOG.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
    ids = hostfs._passwd_ids(root, "postgres")
    if ids is None:
        raise LabError(f"{RECORDS_DB_HOST}: no postgres user in the lab root")
    os.chown(run, *ids)
    os.chmod(run, 0o2775)
    hostfs.spawn_in_host(
        _host(),
        paths,
        ["runuser", "-u", "postgres", "--", f"/usr/lib/postgresql/{ver}/bin/postgres",
         "-D", _data_dir(ver), "-c", f"config_file=/etc/postgresql/{ver}/main/postgresql.conf"],
        LOG,
    )  # fmt: skip
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        if pid(paths) is not None and hostfs.tcp_open(RECORDS_DB_ADDRESS, PORT, timeout=0.2):
            return
        time.sleep(0.1)
    log = root / LOG.lstrip("/")
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
    raise LabError(
        f"PostgreSQL on {RECORDS_DB_HOST} did not answer in {READY_S:g} s"
        + (f": {tail[0]}" if tail else "")
    )


def _provision(paths: LabPaths) -> None:
    """The role and the database (idempotent)."""
    sql = (
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{USER}') THEN "
        f"CREATE ROLE {USER} LOGIN PASSWORD '{LAB_PASSWORD}'; ELSE "
        f"ALTER ROLE {USER} LOGIN PASSWORD '{LAB_PASSWORD}'; END IF; END $$;"
    )
    proc = _psql(paths, sql)
    if proc.returncode != 0:
        raise LabError(f"{RECORDS_DB_HOST}: role {USER}: {proc.stderr.strip()}")
    proc = _psql(paths, f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'")
    if proc.returncode == 0 and not re.search(r"\b1\b", proc.stdout):
        proc = _psql(paths, f"CREATE DATABASE {DATABASE} OWNER {USER}")
    if proc.returncode != 0:
        raise LabError(f"{RECORDS_DB_HOST}: database {DATABASE}: {proc.stderr.strip()}")


def ensure_running(paths: LabPaths | None = None) -> bool:
    """Start the server on db-central unless it runs (configured, provisioned). Returns
    True when it had to start it."""
    paths = paths or LabPaths.default()
    if pid(paths) is not None:
        return False
    root = _root(paths)
    if not hostfs.is_mounted(root):
        raise LabError(f"the lab host {RECORDS_DB_HOST} is not up", hint="run `siporch lab up`")
    ver = version(root)
    if ver is None:
        raise LabError(
            f"{RECORDS_DB_HOST}: PostgreSQL is not in the lab root",
            hint="siporch lab up --rebuild (the root's package list has postgresql)",
        )
    _configure(root, ver)
    _start(paths, ver)
    _provision(paths)
    return True


def stop(paths: LabPaths | None = None) -> None:
    paths = paths or LabPaths.default()
    running = pid(paths)
    if running is not None:
        procs.kill_processes([running], grace=5.0)
