"""`siporch init`: a starting inventory that validates as written; bad options are one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _siporch(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "siporch", *args], cwd=cwd, env=env,
        capture_output=True, text=True, timeout=60, check=False,
    )


def test_init_writes_an_inventory_that_validates(tmp_path: Path) -> None:
    made = _siporch(tmp_path, "init", "inv", "--site", "hq", "--edge-address", "10.1.0.10",
                    "--pbx-address", "10.1.0.20", "--itsp-address", "203.0.113.99")
    assert made.returncode == 0, made.stdout + made.stderr
    hosts = yaml.safe_load((tmp_path / "inv" / "hosts.yml").read_text())
    children = hosts["all"]["children"]
    assert children["siporch_edge"]["hosts"] == {"edge-1": {"ansible_host": "10.1.0.10"}}
    assert children["siporch_pbx"]["hosts"] == {"pbx-1": {"ansible_host": "10.1.0.20"}}
    vault = tmp_path / "inv" / "group_vars" / "all" / "vault.yml"
    assert oct(vault.stat().st_mode & 0o777) == "0o600"
    assert len(yaml.safe_load(vault.read_text())["vault_ami_secret"]) == 32
    ok = _siporch(tmp_path, "validate", "-i", "inv")
    assert ok.returncode == 0 and ok.stderr == "", ok.stdout + ok.stderr
    assert "1 sites, 2 hosts, 1 trunks, 1 routes, 1 DID entries" in ok.stdout
    route = _siporch(tmp_path, "route", "+12025550123", "-i", "inv")
    assert route.returncode == 0 and "itsp" in route.stdout, route.stdout + route.stderr


def test_init_refuses_a_directory_in_use_and_bad_options(tmp_path: Path) -> None:
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "hosts.yml").write_text("all: {}\n")
    busy = _siporch(tmp_path, "init", "used")
    assert busy.returncode == 2 and "not empty" in busy.stdout + busy.stderr
    assert (tmp_path / "used" / "hosts.yml").read_text() == "all: {}\n"
    for args, word in ((["--edge-address", "10.1.0"], "not an IP address"),
                       (["--did-start", "2025550100"], "E.164"),
                       (["--site", "Main Site"], "lowercase")):
        bad = _siporch(tmp_path, "init", "fresh", *args)
        out = bad.stdout + bad.stderr
        assert bad.returncode == 2 and word in out and "Traceback" not in out, out
        assert not (tmp_path / "fresh").exists()
