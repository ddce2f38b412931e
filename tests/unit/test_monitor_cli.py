"""`siporch status` / `siporch exporter` on bad input and unreachable hosts: a clear
message and exit code 2, never a traceback. Only loopback is contacted."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "siporch", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )


def loopback_inventory(tmp_path: Path, ami_port: int) -> Path:
    inv = tmp_path / "inventory"
    shutil.copytree(REPO / "inventory" / "example", inv)
    shutil.copy(REPO / "inventory" / ".vault-pass", tmp_path / ".vault-pass")
    model = inv / "group_vars" / "all" / "siporch.yml"
    text = model.read_text().replace("address: 192.0.2.20\n", "address: 127.0.0.1\n")
    model.write_text(text.replace("port: 5038", f"port: {ami_port}"))
    hosts = inv / "hosts.yml"  # the inventory and the model name the same address
    hosts.write_text(hosts.read_text().replace("ansible_host: 192.0.2.20", "ansible_host: 127.0.0.1"))
    return inv


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unknown_host() -> None:
    proc = run("status", "--host", "nope")
    assert proc.returncode == 2
    assert "unknown host(s): nope" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_options() -> None:
    assert run("status", "--timeout", "0").returncode == 2
    for bad in ("nope", "127.0.0.1:99999", "host.example:80"):
        proc = run("exporter", "--listen", bad)
        assert proc.returncode == 2, bad
        assert "Traceback" not in proc.stderr


def test_missing_inventory() -> None:
    proc = run("status", "-i", "/nonexistent/inventory")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


def test_refused_ami_is_exit_2_and_printed(tmp_path: Path) -> None:
    port = closed_port()
    inv = loopback_inventory(tmp_path, port)
    proc = run("status", "--json", "--no-edges", "--no-releases", "-i", str(inv))
    assert proc.returncode == 2
    report = json.loads(proc.stdout)
    assert report["hosts"][0]["state"] == "unreachable"
    assert f"pbx-central: cannot connect to AMI at 127.0.0.1:{port}" in proc.stderr
    # the table shows the rest and the problem
    proc = run("status", "--no-edges", "--no-releases", "-i", str(inv))
    assert proc.returncode == 2
    assert "Trunks of site central" in proc.stdout
    assert f"unreachable: pbx-central: cannot connect to AMI at 127.0.0.1:{port}" in proc.stdout


def test_silent_ami_times_out_cleanly(tmp_path: Path) -> None:
    """A port that accepts but never answers the login: a timeout, not a traceback."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        inv = loopback_inventory(tmp_path, port)
        proc = run("status", "--json", "--no-edges", "--no-releases", "--timeout", "0.5",
                   "-i", str(inv))  # fmt: skip
    assert proc.returncode == 2
    assert f"AMI at 127.0.0.1:{port} did not answer within 0.5 s" in proc.stderr
    assert "Traceback" not in proc.stderr and "Exception" not in proc.stderr
