"""`siporch drift` on the lab: a fresh deploy has no drift; a file edited on a host, then a
dispatcher destination removed at runtime, are each reported by name (exit 1); once healed,
no drift again.

Other tests deploy to the same lab; this file deploys the lab model first and checks right
after, so each step runs against the release it just deployed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from siporch.deploy import runner
from siporch.monitor import kamailio

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
EDGE = "edge-central"
EDITED = "rtpengine/rtpengine.conf"


def _deploy(lab: Any, timeout: float = 600) -> None:
    """Deploy the lab model (registration gate off: the lab has no registrar behind itsp-b),
    bounded in time: other tests deploy to the same lab and a run may wait on their locks."""
    cmd = runner.build_command(
        "deploy-trunk.yml",
        lab.inventory,
        vault_file=runner.vault_password_file(lab.inventory, None),
        extra_vars={"asterisk_pbx_health_registrations": False},
    )
    env = dict(lab.ansible_env)
    env["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
    env["ANSIBLE_NOCOLOR"] = "1"
    with tempfile.TemporaryDirectory(prefix="siporch-cp-") as control:
        env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = control
        try:
            proc = subprocess.run(
                cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"the deploy took longer than {timeout:g} s")
    assert proc.returncode == 0, proc.stdout[-4000:]


def _drift(lab: Any) -> tuple[int, dict[str, Any], str]:
    env = dict(lab.ansible_env)
    env.pop("SIPORCH_KAMAILIO_RPC", None)
    proc = subprocess.run(
        [sys.executable, "-m", "siporch", "drift", "-i", str(lab.inventory), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=env,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def _messages(report: dict[str, Any]) -> list[str]:
    return [f"{d['host']}: {d['message']}" for d in report["drift"]]


def _rpc(lab: Any, method: str, params: list[Any]) -> Any:
    import asyncio

    url = f"http://{lab.address(EDGE)}:5071/RPC"
    return asyncio.run(kamailio.rpc(url, method, params, timeout=3.0))


def _clean(lab: Any) -> None:
    """No drift. Other tests deploy other models to the same lab: when the difference is
    only another release or model on the hosts, deploy ours again and look again (3 times)."""
    for _ in range(3):
        rc, report, err = _drift(lab)
        kinds = {d["kind"] for d in report["drift"]}
        if rc == 0 or not kinds <= {"release", "undeployed change", "dispatcher"}:
            break
        _deploy(lab)
    assert rc == 0, f"{_messages(report)} {err}"
    assert report["drift"] == [] and report["errors"] == []
    assert set(report["hosts"]) == {
        "edge-central",
        "edge-central-2",
        "edge-branch",
        "pbx-central",
        "pbx-central-2",
    }
    assert report["hosts"][EDGE]["dispatcher_targets"] > 0
    assert report["hosts"]["pbx-central"]["pjsip_endpoints"] > 0


def test_deploy_then_no_drift(lab: Any) -> None:
    _deploy(lab)
    _clean(lab)


def test_file_edited_on_host_is_named(lab: Any) -> None:
    _deploy(lab)
    path = lab.root(EDGE) / "etc/siporch/current" / EDITED
    original = path.read_bytes()
    mode = path.stat().st_mode
    try:
        path.write_bytes(original + b"# edited by hand\n")
        rc, report, _ = _drift(lab)
        assert rc == 1
        lines = _messages(report)
        assert any(
            line.startswith(f"{EDGE}: {EDITED} modified on host (sha256 ") for line in lines
        ), lines
        assert [d["kind"] for d in report["drift"]] == ["modified"], lines
    finally:
        path.write_bytes(original)
        os.chmod(path, mode)
    _clean(lab)


def test_dispatcher_destination_removed_at_runtime(lab: Any) -> None:
    _deploy(lab)
    peer = f"sip:{lab.address('itsp-a2')}:5060;transport=udp"
    try:
        _rpc(lab, "dispatcher.remove", [1, peer])
        rc, report, _ = _drift(lab)
        assert rc == 1
        lines = _messages(report)
        assert any(
            line.startswith(f"{EDGE}: dispatcher set 1: destination {peer} (itsp-a)")
            and "not loaded in Kamailio" in line
            for line in lines
        ), lines
        assert {d["kind"] for d in report["drift"]} == {"dispatcher"}, lines
    finally:
        # heal: a deploy of an unchanged model reloads nothing, so reload the table itself
        for _ in range(10):
            try:
                _rpc(lab, "dispatcher.reload", [])
                break
            except Exception:  # Kamailio refuses reloads closer than its reload interval
                time.sleep(1)
    _deploy(lab)
    _clean(lab)
