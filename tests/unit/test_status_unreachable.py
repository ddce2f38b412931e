"""`siporch status` against hosts nothing answers: exit 2, one line per host, no traceback.

The hosts get addresses in 198.18.0.0/15 that no lab host has; the command runs in a network
namespace of its own where that range sits on one end of a veth pair whose other end has no
address: nobody answers ARP, the connection attempts time out (as towards a host that is
down) and nothing leaves the namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EDGE, PBX = "198.19.255.1", "198.19.255.2"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None,
    reason="needs root, unshare and ip for a private network namespace",
)


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    inv = tmp_path_factory.mktemp("offline") / "inventory"
    subprocess.run(
        [sys.executable, "-m", "siporch", "init", str(inv), "--edge-address", EDGE,
         "--pbx-address", PBX, "--itsp-address", "198.19.255.3"],
        check=True, capture_output=True, cwd=inv.parent,
    )
    return inv


def _status(inventory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    netns = (
        "ip link set lo up && ip link add v0 type veth peer name v1 && ip link set v0 up && "
        "ip link set v1 up && ip addr add 198.18.255.254/15 dev v0 && exec \"$@\""
    )
    cmd = [
        "unshare", "--net", "sh", "-c", netns, "sh", sys.executable, "-m", "siporch",
        "status", "--timeout", "1", "-i", str(inventory), *args,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, cwd=inventory.parent)


def test_text_one_line_per_host_and_a_quiet_stderr(inventory: Path) -> None:
    proc = _status(inventory)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr == "", proc.stderr
    lines = [x for x in proc.stdout.splitlines() if x.startswith("unreachable: ")]
    assert [x.split(":")[1].strip() for x in lines] == ["pbx-1", "edge-1"], proc.stdout
    assert f"AMI at {PBX}:5038 did not answer within 1 s" in lines[0]
    assert "Kamailio RPC" in lines[1] and "rtpengine" in lines[1]


def test_json_report_and_one_stderr_line_per_host(inventory: Path) -> None:
    proc = _status(inventory, "--json")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout.startswith("{"), proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert {h["name"]: h["state"] for h in report["hosts"]} == {
        "pbx-1": "unreachable", "edge-1": "unreachable"
    }
    assert "Traceback" not in proc.stderr and "Exception in callback" not in proc.stderr
    err = proc.stderr.splitlines()
    assert len(err) == 2 and all(x.startswith("siporch: ") for x in err), proc.stderr
    assert err[0].startswith("siporch: pbx-1: ") and err[1].startswith("siporch: edge-1: ")
