"""keepalived's helper on an edge of a pair (roles/keepalived_vip/files/siporch_vrrp.sh):
its check of the edge's daemons (a running daemon passes, a missing one fails at once
unless a planned restart marked it a moment ago) and its notifications (Kamailio told
whether the edge holds the floating address; the new holder's dispatcher reloaded)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HELPER = REPO / "roles" / "keepalived_vip" / "files" / "siporch_vrrp.sh"
MISSING = "siporch-nodaemon"  # no process of that name runs


def _run(
    mark_dir: Path, *args: str, kamcmd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SIPORCH_VRRP_RUN_DIR": str(mark_dir)}
    if kamcmd is not None:
        env["SIPORCH_VRRP_KAMCMD"] = str(kamcmd)
    return subprocess.run(
        ["sh", str(HELPER), *args], env=env, capture_output=True, text=True, timeout=10
    )


@pytest.fixture
def sleeper() -> Iterator[str]:
    """A process of a known name (``sleep``) running while the test runs."""
    proc = subprocess.Popen(["sleep", "30"])
    try:
        yield "sleep"
    finally:
        proc.kill()
        proc.wait()


def test_a_running_daemon_passes(tmp_path: Path, sleeper: str) -> None:
    assert _run(tmp_path, "check", sleeper).returncode == 0


def test_a_missing_daemon_fails_without_a_mark(tmp_path: Path) -> None:
    assert _run(tmp_path, "check", MISSING).returncode == 1


def test_a_fresh_mark_covers_a_planned_restart(tmp_path: Path) -> None:
    (tmp_path / f"{MISSING}-restart").write_text(f"{int(time.time())}\n")
    assert _run(tmp_path, "check", MISSING).returncode == 0


@pytest.mark.parametrize("age", [6, 60, -30])
def test_an_old_or_future_mark_does_not(tmp_path: Path, age: int) -> None:
    mark = tmp_path / f"{MISSING}-restart"
    mark.write_text("0\n")
    then = time.time() - age
    os.utime(mark, (then, then))
    assert _run(tmp_path, "check", MISSING).returncode == 1


def test_a_mark_of_another_daemon_does_not(tmp_path: Path) -> None:
    (tmp_path / "rtpengine-restart").write_text(f"{int(time.time())}\n")
    assert _run(tmp_path, "check", MISSING).returncode == 1


def _kamcmd(tmp_path: Path, fail: bool = False) -> Path:
    """A stand-in for kamcmd: writes its arguments to ``calls``, fails when asked to."""
    exe = tmp_path / "kamcmd"
    exe.write_text(f'#!/bin/sh\necho "$*" >> {tmp_path / "calls"}\nexit {1 if fail else 0}\n')
    exe.chmod(0o755)
    return exe


def _calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "calls"
    return path.read_text().splitlines() if path.exists() else []


def test_the_new_holder_is_told_and_reloads_its_peers(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = _run(run, "notify", "master", "unix:/ctl", kamcmd=_kamcmd(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert _calls(tmp_path) == [
        "-s unix:/ctl pv.shvSet vipheld int 1",
        "-s unix:/ctl dispatcher.reload",
    ]
    assert (run / "vrrp-state").read_text().startswith("master ")


@pytest.mark.parametrize("state", ["backup", "fault", "stop"])
def test_an_edge_without_the_address_is_told(tmp_path: Path, state: str) -> None:
    proc = _run(tmp_path / "run", "notify", state, "unix:/ctl", kamcmd=_kamcmd(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert _calls(tmp_path) == ["-s unix:/ctl pv.shvSet vipheld int 0"]


def test_a_notification_gives_way_to_a_newer_one(tmp_path: Path) -> None:
    """Kamailio down (kamcmd fails): the notification tries again only while it is the
    latest state; a newer one makes it give up (it would set an old value)."""
    run = tmp_path / "run"
    run.mkdir()
    kamcmd = _kamcmd(tmp_path, fail=True)
    env = {**os.environ, "SIPORCH_VRRP_RUN_DIR": str(run), "SIPORCH_VRRP_KAMCMD": str(kamcmd)}
    proc = subprocess.Popen(["sh", str(HELPER), "notify", "fault", "unix:/ctl"], env=env)
    try:
        deadline = time.monotonic() + 5
        while len(_calls(tmp_path)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        (run / "vrrp-state").write_text("master 1\n")
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()
    tries = len(_calls(tmp_path))
    assert 2 <= tries < 20, tries


@pytest.mark.parametrize(
    "args", [[], ["check"], ["bogus", "kamailio"], ["notify", "master"], ["notify", "x", "y"]]
)
def test_bad_usage_says_so(tmp_path: Path, args: list[str]) -> None:
    proc = _run(tmp_path, *args)
    assert proc.returncode == 2 and "usage:" in proc.stderr
