"""Private lab instances (siporch/lab/isolate.py): what a command run in one sees of its own,
and that nothing of it is left on the machine afterwards. No lab is brought up here (the lab
groups of scripts/lab-groups do that); these checks take a second."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from siporch.lab import isolate

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]

PROBE = r"""
import json, os, subprocess
from pathlib import Path
links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
mounts = [l.split()[4] for l in open("/proc/self/mountinfo")]
print(json.dumps({
    "pid": os.getpid(),
    "links": [l.split(":")[1].strip() for l in links.splitlines()],
    "netns": sorted(os.listdir("/run/netns")),
    "tmp": sorted(os.listdir("/tmp")),
    "inventory": sorted(os.listdir("inventory")),
    "under_machine_lab": [m for m in mounts if m.startswith("/var/lib/siporch/lab/")],
    "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    "env": {k: v for k, v in os.environ.items() if k.startswith("SIPORCH_LAB_")},
}))
Path("/tmp/marker").write_text("x")
"""


@pytest.fixture
def root() -> None:
    if os.geteuid() != 0:
        pytest.skip("private lab instances need root")


def _run(name: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "siporch.lab.isolate", name, "--", *argv],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )  # fmt: skip


def test_an_instance_sees_only_its_own_network_processes_and_files(root: None) -> None:
    proc = _run("t-probe", [sys.executable, "-c", PROBE])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["links"] == ["lo"]
    assert seen["netns"] == []
    # nothing of the machine's /tmp but the repository's own path when it lives there
    # (a CI clone in /tmp/ci), kept so that the instance runs the same code
    repo = Path(__file__).resolve().parents[2]
    kept = [repo.relative_to("/tmp").parts[0]] if repo.is_relative_to("/tmp") else []
    assert seen["tmp"] == kept
    assert "lab" not in seen["inventory"] and "example" in seen["inventory"]
    assert seen["under_machine_lab"] == []
    assert seen["pids"][0] == 1 and len(seen["pids"]) < 10, seen["pids"]
    assert seen["env"]["SIPORCH_LAB_STATE"].endswith("/t-probe/state")
    assert seen["env"]["SIPORCH_LAB_CGROUP"] == "sipo-lab-t-probe"
    # the machine's /tmp never saw the instance's file
    assert not Path("/tmp/marker").exists() or Path("/tmp/marker").read_text() != "x"


def test_the_exit_code_comes_back_and_nothing_is_left(root: None) -> None:
    # a process left running in the background dies with the instance
    proc = _run("t-exit", ["sh", "-c", "sleep 3131 & exit 7"])
    assert proc.returncode == 7, proc.stderr
    left = subprocess.run(["pgrep", "-f", "^sleep 3131$"], capture_output=True, text=True)
    assert left.stdout.strip() == "", left.stdout
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(isolate.base_dir() / "t-exit") not in mounts


def test_a_signal_stops_the_whole_instance(root: None) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "siporch.lab.isolate", "t-signal", "--",
         "sh", "-c", "sleep 3132 & sleep 3133"],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and subprocess.run(
        ["pgrep", "-f", "^sleep 3133$"], capture_output=True
    ).returncode:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    left = subprocess.run(["pgrep", "-f", "^sleep 313[23]$"], capture_output=True, text=True)
    assert left.stdout.strip() == "", left.stdout


def test_bad_use_is_a_one_line_error(root: None) -> None:
    assert isolate.main(["only-a-name"]) == 2
    with pytest.raises(SystemExit, match="instance name"):
        isolate.run("Bad Name", ["true"])
