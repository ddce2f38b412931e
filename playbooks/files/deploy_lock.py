#!/usr/bin/env python3
"""One deploy or rollback at a time per controller: a lock directory with its owner.

  deploy_lock.py acquire LOCK [--wait S]   prints the token it took ("" when the lock is
                                           already held by the caller's SIPORCH_DEPLOY_LOCK)
  deploy_lock.py release LOCK TOKEN [--report FILE]
                                           --report: first write stdin to FILE (mode 0644,
                                           replaced whole): the run's summary, in the same call

The owner is the ansible-playbook process (found among the caller's ancestors) or, for a
caller holding the lock across several runs, the process that took it; a lock whose owner
no longer runs is taken over. Exit status 1 when the lock stays held for --wait seconds.

Every look at the lock and every change of it (take, take over, release) happens under an
exclusive flock(2) of a guard file beside it (`.<name>.guard`), so two waiters that both
find the lock stale cannot both take it: the second sees the first one's fresh lock. The
kernel drops the flock when its process dies, so the guard itself never goes stale.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def owner_pid() -> int:
    """The ansible-playbook process this runs under, else the parent process. Its
    outermost one: a task runs in a worker forked from ansible-playbook (the same command
    line) that ends with the task, and a lock owned by it would look stale at once."""
    pid = os.getppid()
    probe = pid
    found = 0
    while probe > 1:
        try:
            cmdline = Path(f"/proc/{probe}/cmdline").read_bytes()
        except OSError:
            break
        if b"ansible-playbook" in cmdline:
            found = probe
        elif found:
            break
        probe = _parent(probe)
    return found or pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_owner(lock: Path) -> dict[str, object]:
    try:
        data = json.loads((lock / "owner.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@contextlib.contextmanager
def _guarded(lock: Path) -> Iterator[None]:
    """Hold the exclusive flock of the lock's guard file."""
    fd = os.open(lock.parent / f".{lock.name}.guard", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the flock


def _stale(lock: Path, owner: dict[str, object]) -> bool:
    owner_pid = owner.get("pid")
    raw_time = owner.get("time", 0)
    started = float(raw_time) if isinstance(raw_time, int | float) else 0.0
    if isinstance(owner_pid, int) and not _alive(owner_pid):
        return True
    try:
        unreadable = not owner and time.time() - lock.stat().st_mtime > 30
    except OSError:
        return True
    return unreadable or bool(started and time.time() - started > 6 * 3600)


def _take(lock: Path, pid: int, held: str) -> tuple[str | None, dict[str, object]]:
    """Under the guard: take the lock (its token), keep a held one (""), or None and the
    owner when another live process holds it."""
    try:
        lock.mkdir()
    except FileExistsError:
        owner = read_owner(lock)
        if held and owner.get("token") == held:
            return "", owner
        if not _stale(lock, owner):
            return None, owner
        shutil.rmtree(lock, ignore_errors=True)
        lock.mkdir()
    token = uuid.uuid4().hex
    tmp = lock / ".owner.json.new"
    tmp.write_text(json.dumps({"pid": pid, "token": token, "time": time.time()}))
    os.replace(tmp, lock / "owner.json")
    return token, {}


def acquire(lock: Path, wait: float, pid: int, held: str = "") -> str:
    deadline = time.monotonic() + wait
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        with _guarded(lock):
            token, owner = _take(lock, pid, held)
        if token is not None:
            return token
        if time.monotonic() > deadline:
            raw_time = owner.get("time", 0)
            started = float(raw_time) if isinstance(raw_time, int | float) else 0.0
            raise TimeoutError(
                f"another deploy (pid {owner.get('pid')}) holds {lock} since "
                f"{time.strftime('%H:%M:%S', time.localtime(started))}"
            )
        time.sleep(1.0)


def release(lock: Path, token: str) -> None:
    if not token:
        return
    with _guarded(lock):
        if read_owner(lock).get("token") == token:
            shutil.rmtree(lock, ignore_errors=True)


def write_report(path: Path, text: str) -> None:
    """Write the run's summary whole: a reader never sees half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("acquire", "release"):
        print(__doc__, file=sys.stderr)
        return 2
    lock = Path(argv[1])
    if argv[0] == "release":
        if "--report" in argv:
            i = argv.index("--report")
            write_report(Path(argv[i + 1]), sys.stdin.read())
            del argv[i : i + 2]
        release(lock, argv[2] if len(argv) > 2 else "")
        return 0
    wait = float(argv[argv.index("--wait") + 1]) if "--wait" in argv else 900.0
    try:
        print(acquire(lock, wait, owner_pid(), os.environ.get("SIPORCH_DEPLOY_LOCK", "")))
    except TimeoutError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
