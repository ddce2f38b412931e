"""The controller's deploy lock: one holder, and a stale lock taken over by one waiter only."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def mod() -> Any:
    spec = importlib.util.spec_from_file_location(
        "deploy_lock_under_test", REPO / "playbooks" / "files" / "deploy_lock.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _stale_lock(lock: Path) -> None:
    lock.mkdir()
    owner = {"pid": _dead_pid(), "token": "stale", "time": time.time()}
    (lock / "owner.json").write_text(json.dumps(owner))


def test_take_hold_release(mod: Any, tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    token = mod.acquire(lock, 1, os.getpid())
    assert token and mod.read_owner(lock)["token"] == token
    with pytest.raises(TimeoutError, match="holds"):
        mod.acquire(lock, 0.1, os.getpid())
    assert mod.acquire(lock, 0.1, os.getpid(), held=token) == ""  # the holder keeps it
    mod.release(lock, "not-the-token")
    assert lock.exists()
    mod.release(lock, token)
    assert not lock.exists()


def test_a_dead_owner_is_taken_over(mod: Any, tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    _stale_lock(lock)
    token = mod.acquire(lock, 1, os.getpid())
    assert token != "stale" and mod.read_owner(lock)["token"] == token


def test_a_stale_lock_is_taken_over_by_one_waiter_only(
    mod: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight waiters find the same stale lock at once; reading the owner is slowed down so
    that, without the guard, each would decide to take it over. Exactly one gets it."""
    lock = tmp_path / "lock"
    _stale_lock(lock)
    slow_read = mod.read_owner

    def read_owner(path: Path) -> dict[str, object]:
        owner: dict[str, object] = slow_read(path)
        time.sleep(0.2)
        return owner

    monkeypatch.setattr(mod, "read_owner", read_owner)
    start = threading.Barrier(8)
    tokens: list[str] = []
    timeouts: list[str] = []

    def wait_for_lock() -> None:
        start.wait()
        try:
            tokens.append(mod.acquire(lock, 2.5, os.getpid()))
        except TimeoutError as exc:
            timeouts.append(str(exc))

    threads = [threading.Thread(target=wait_for_lock) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(tokens) == 1, tokens
    assert len(timeouts) == 7
    assert slow_read(lock)["token"] == tokens[0]


def test_cli_acquire_and_release(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    script = REPO / "playbooks" / "files" / "deploy_lock.py"
    run = [sys.executable, str(script)]
    got = subprocess.run(
        [*run, "acquire", str(lock), "--wait", "1"], capture_output=True, text=True
    )
    assert got.returncode == 0 and got.stdout.strip()
    # its owner (this test's python, the caller's parent) still runs: a second waiter waits
    busy = subprocess.run(
        [*run, "acquire", str(lock), "--wait", "0"], capture_output=True, text=True
    )
    assert busy.returncode == 1 and "holds" in busy.stderr
    subprocess.run([*run, "release", str(lock), got.stdout.strip()], check=True)
    assert not lock.exists()
    bad = subprocess.run([*run, "frobnicate"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_cli_release_writes_the_report_first(tmp_path: Path) -> None:
    """The report play's one call: the summary written whole (stdin), then the lock released;
    with no token (a caller holding the lock across runs) only the summary."""
    lock = tmp_path / "lock"
    report = tmp_path / "report.json"
    script = REPO / "playbooks" / "files" / "deploy_lock.py"
    run = [sys.executable, str(script)]
    got = subprocess.run([*run, "acquire", str(lock)], capture_output=True, text=True)
    token = got.stdout.strip()
    subprocess.run(
        [*run, "release", str(lock), token, "--report", str(report)],
        input='{"failed": false}\n', text=True, check=True,
    )  # fmt: skip
    assert report.read_text() == '{"failed": false}\n'
    assert oct(report.stat().st_mode & 0o777) == "0o644"
    assert not lock.exists()
    subprocess.run(
        [*run, "release", str(lock), "", "--report", str(report)],
        input="{}\n", text=True, check=True,
    )  # fmt: skip
    assert report.read_text() == "{}\n"
    assert not list(tmp_path.glob(".*.tmp"))


def test_render_takes_the_deploy_lock_in_the_same_command(mod: Any, tmp_path: Path) -> None:
    """`siporch render --deploy-lock` (the deploy playbook's render): once rendered, the
    lock is taken and its token is in the JSON; a lock another live process holds makes it
    fail after --lock-wait with the holder named; a bad model fails before any lock."""
    inv = tmp_path / "inv"
    shutil.copytree(REPO / "inventory" / "example", inv)
    shutil.copy(REPO / "inventory" / ".vault-pass", tmp_path / ".vault-pass")
    lock = tmp_path / "lock"
    env = {**os.environ, "PYTHONPATH": str(REPO), "SIPORCH_STATE": str(tmp_path / "state")}
    env.pop("SIPORCH_DEPLOY_LOCK", None)

    def render(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "siporch", "render", "--json", "-i", str(inv), *extra],
            capture_output=True, text=True, timeout=120, env=env, check=False,
        )  # fmt: skip

    done = render("--deploy-lock", str(lock), "--lock-wait", "1")
    assert done.returncode == 0, done.stderr
    token = json.loads(done.stdout)["lock_token"]
    assert token and mod.read_owner(lock)["token"] == token
    # held by a live process (this test): the next render waits, then fails
    owner = {**mod.read_owner(lock), "pid": os.getpid()}
    (lock / "owner.json").write_text(json.dumps(owner))
    busy = render("--deploy-lock", str(lock), "--lock-wait", "0.2")
    assert busy.returncode != 0 and f"pid {os.getpid()}" in busy.stderr, busy.stderr
    assert "lock_token" not in json.loads(render().stdout)  # no lock asked for
    mod.release(lock, token)
    (inv / "group_vars" / "all" / "siporch.yml").write_text("siporch: {trunks: 3}\n")
    bad = render("--deploy-lock", str(lock), "--lock-wait", "1")
    assert bad.returncode == 2 and not lock.exists()


def test_the_owner_is_ansible_playbook_not_its_worker(mod: Any, tmp_path: Path) -> None:
    """A task runs in a worker forked from ansible-playbook (the same command line) that
    ends with the task: the lock belongs to the outermost ansible-playbook, which lives as
    long as the run, so that another deploy does not find it stale and take it over."""
    lock = tmp_path / "lock"
    fake = tmp_path / "ansible-playbook"
    fake.write_text(
        "import os, subprocess, sys\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        f"    subprocess.run([sys.executable, {str(REPO / 'playbooks' / 'files' / 'deploy_lock.py')!r},\n"
        f"                    'acquire', {str(lock)!r}, '--wait', '1'], check=True)\n"
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "print(os.getpid())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SIPORCH_DEPLOY_LOCK"}
    out = subprocess.run(
        [sys.executable, str(fake)], capture_output=True, text=True, env=env, timeout=60, check=True
    )
    assert mod.read_owner(lock)["pid"] == int(out.stdout.split()[-1])
