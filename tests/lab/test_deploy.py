"""Deploys and rollbacks on the lab: real Kamailio, rtpengine and Asterisk, Ansible over SSH.

The tests run in file order and build on each other: a fresh deploy, a no-op deploy, a
peer added (dispatcher reload only), a routing change planned as a restart, a bad model,
a release that fails its on-host check, rollbacks, and calls that survive it all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import callkit as ck
import pytest

from siporch.deploy import runner

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
EDGE = "edge-central"
NEW_PEER = "198.18.1.12"
HELPER = "/usr/local/lib/siporch/siporch_kamailio.py"
PIDFILES = {
    "edge-central": {
        "kamailio": "/run/kamailio/kamailio.pid",
        "rtpengine": "/run/rtpengine/rtpengine.pid",
    },
    "edge-branch": {"kamailio": "/run/kamailio/kamailio.pid"},
    "pbx-central": {"asterisk": "/var/run/asterisk/asterisk.pid"},
    "pbx-central-2": {"asterisk": "/var/run/asterisk/asterisk.pid"},
}
SIPORCH_HOSTS = ("edge-central", "edge-branch", "pbx-central", "pbx-central-2")


def _run(inv: Path, playbook: str = "deploy-trunk.yml", **kw: Any) -> runner.RunResult:
    report = runner.report_path()
    vault = runner.vault_password_file(inv, None)
    # The lab has no registrar behind itsp-b: the registration gate is off there.
    extra = {"asterisk_pbx_health_registrations": False, **kw.pop("extra_vars", {})}
    cmd = runner.build_command(
        playbook, inv, vault_file=vault, report_file=report, extra_vars=extra, **kw
    )
    try:
        return runner.run(cmd, report)
    finally:
        report.unlink(missing_ok=True)


def _reloads(result: runner.RunResult) -> dict[str, list[str]]:
    assert result.report is not None, "\n".join(result.output[-40:])
    return {h["host"]: h["reloads"] for h in result.report["hosts"]}


def _current(lab: Any, host: str) -> str:
    proc = lab.run(host, "readlink /etc/siporch/current", check=True)
    return Path(proc.stdout.strip()).name


def _pids(lab: Any) -> dict[str, str]:
    pids = {}
    for host, files in PIDFILES.items():
        for daemon, pidfile in files.items():
            pid = lab.run(host, f"cat {pidfile}", check=True).stdout.strip()
            assert lab.run(host, f"kill -0 {pid}").returncode == 0, f"{host} {daemon} not running"
            pids[f"{host}/{daemon}"] = pid
    return pids


def _dispatcher_uris(lab: Any) -> set[str]:
    proc = lab.run(EDGE, [HELPER, "rpc", "dispatcher.list"], check=True)
    data = json.loads(proc.stdout)
    return {t["DEST"]["URI"].split(";")[0] for r in data["RECORDS"] for t in r["SET"]["TARGETS"]}


def _ok(result: runner.RunResult) -> None:
    assert result.ok, "\n".join(result.output[-60:])


@pytest.fixture(scope="module", autouse=True)
def exclusive() -> Iterator[None]:
    """Hold the controller's deploy lock across the module: other deploys wait for it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "deploy_lock", REPO / "playbooks" / "files" / "deploy_lock.py"
    )
    assert spec and spec.loader
    lock_mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lock_mod)
    lock = Path("/tmp/siporch-deploy.lock")
    token = lock_mod.acquire(lock, 1200, os.getpid())
    os.environ["SIPORCH_DEPLOY_LOCK"] = token
    try:
        yield
    finally:
        os.environ.pop("SIPORCH_DEPLOY_LOCK", None)
        lock_mod.release(lock, token)


@pytest.fixture(scope="module")
def state() -> dict[str, Any]:
    return {}


def test_fresh_deploy(
    lab: Any, state: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = ck.copy_inventory(lab, tmp_path_factory.mktemp("base"))
    state["base"] = base
    result = _run(base)
    _ok(result)
    assert result.report is not None
    release = result.report["release"]
    state["r1"] = release
    for host in SIPORCH_HOSTS:
        assert _current(lab, host) == release
    _pids(lab)  # every daemon runs


def test_second_deploy_changes_nothing(lab: Any, state: dict[str, Any]) -> None:
    before = _pids(lab)
    result = _run(state["base"])
    _ok(result)
    assert result.changed == 0, result.recap
    assert all(not r for r in _reloads(result).values())
    assert _pids(lab) == before


def test_check_mode_touches_nothing(lab: Any, state: dict[str, Any], tmp_path: Path) -> None:
    """A routing-level change (Kamailio children, in host.cfg) is planned as a restart."""
    inv = ck.copy_inventory(lab, tmp_path)
    ck.edit_model(inv, lambda m: m["hosts"][EDGE].setdefault("kamailio", {}).update(children=3))
    before = _pids(lab)
    result = _run(inv, check=True, diff=True)
    _ok(result)
    assert "kamailio:restart" in _reloads(result)[EDGE]
    assert _current(lab, EDGE) == state["r1"]
    assert _pids(lab) == before


def test_adding_a_peer_reloads_dispatcher_only(
    lab: Any, state: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    inv = ck.copy_inventory(lab, tmp_path_factory.mktemp("peer"))
    ck.edit_model(
        inv,
        lambda m: m["trunks"]["itsp-a"]["peers"].append(
            {"address": NEW_PEER, "port": 5060, "transport": "udp", "priority": 3}
        ),
    )
    state["peer"] = inv
    before = _pids(lab)
    result = _run(inv)
    _ok(result)
    state["r2"] = result.report["release"] if result.report else ""
    reloads = _reloads(result)
    # The peer's address is also a trusted source of the trunk: the address table changes
    # with the dispatcher table. No restart, nothing else.
    assert "kamailio:dispatcher.reload" in reloads[EDGE], reloads
    assert set(reloads[EDGE]) <= {
        "kamailio:dispatcher.reload",
        "kamailio:permissions.addressReload",
    }
    assert not reloads["edge-branch"]
    assert not reloads["pbx-central"]
    assert not reloads["pbx-central-2"]
    assert _pids(lab) == before
    assert f"sip:{NEW_PEER}:5060" in _dispatcher_uris(lab)
    assert _current(lab, EDGE) == state["r2"] != state["r1"]


def test_release_failing_its_check_leaves_the_previous_active(
    lab: Any, state: dict[str, Any], tmp_path: Path
) -> None:
    """A release whose kamailio.cfg Kamailio rejects never goes live."""
    inv = state["peer"]
    out = tmp_path / "releases"
    render = subprocess.run(
        [sys.executable, "-m", "siporch", "render", "-i", str(inv), "--out", str(out), "--json"],
        capture_output=True, text=True, check=True, cwd=REPO,
    )  # fmt: skip
    rid = json.loads(render.stdout)["id"]
    cfg = out / rid / EDGE / "kamailio" / "kamailio.cfg"
    cfg.write_text(cfg.read_text() + "\nrequest_route { no_such_function(); }\n")
    manifest_path = out / rid / EDGE / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    import hashlib

    manifest["files"]["kamailio/kamailio.cfg"]["sha256"] = hashlib.sha256(
        cfg.read_bytes()
    ).hexdigest()
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    before = _pids(lab)
    result = _run(inv, extra_vars={"siporch_release_out": str(out)})
    assert not result.ok
    failures = result.failures()
    assert failures and failures[0]["host"] == EDGE, result.output[-40:]
    assert "Kamailio tree" in failures[0]["step"]
    assert "kamailio -c failed" in failures[0]["reason"]
    for host in SIPORCH_HOSTS:
        assert _current(lab, host) == state["r2"]
    assert _pids(lab) == before
    lab.run(EDGE, [HELPER, "options", lab.address(EDGE), "5060"], check=True)


def test_rollback_to_previous(lab: Any, state: dict[str, Any]) -> None:
    before = _pids(lab)
    result = _run(state["base"], "rollback-trunk.yml")
    _ok(result)
    for host in SIPORCH_HOSTS:
        assert _current(lab, host) == state["r1"]
    assert "kamailio:dispatcher.reload" in _reloads(result)[EDGE]
    assert "kamailio:restart" not in _reloads(result)[EDGE]
    assert f"sip:{NEW_PEER}:5060" not in _dispatcher_uris(lab)
    assert _pids(lab) == before


def test_rollback_to_named_release(lab: Any, state: dict[str, Any]) -> None:
    result = _run(state["base"], "rollback-trunk.yml", extra_vars={"siporch_release": state["r2"]})
    _ok(result)
    for host in SIPORCH_HOSTS:
        assert _current(lab, host) == state["r2"]
    assert f"sip:{NEW_PEER}:5060" in _dispatcher_uris(lab)
    # and back to the base model for the tests that follow
    _ok(_run(state["base"]))
    assert _current(lab, EDGE) == state["r1"]


def test_rollback_returns_to_what_the_host_ran(
    lab: Any, state: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Deploy X, roll back (to r1), deploy Y, roll back: the host goes back to r1, which it
    ran before Y, not to X, which sorts between them but was rolled back from."""
    models = []
    for channels in (31, 32):
        inv = ck.copy_inventory(lab, tmp_path_factory.mktemp(f"ch{channels}"))
        ck.edit_model(inv, lambda m, n=channels: m["trunks"]["itsp-a"].update(max_channels=n))
        models.append(inv)
    _ok(_run(models[0], limit=EDGE))
    rx = _current(lab, EDGE)
    _ok(_run(state["base"], "rollback-trunk.yml", limit=EDGE))
    assert _current(lab, EDGE) == state["r1"]
    _ok(_run(models[1], limit=EDGE))
    ry = _current(lab, EDGE)
    assert state["r1"] < rx < ry, (state["r1"], rx, ry)

    listing = subprocess.run(
        [sys.executable, "-m", "siporch", "releases", "-i", str(state["base"]),
         "--limit", EDGE, "--json"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert listing.returncode == 0, listing.stderr
    rows = {r["id"]: r for r in json.loads(listing.stdout)["hosts"][EDGE]}
    assert rows[ry]["current"] and rows[state["r1"]]["rollback"], rows
    assert not rows[rx]["rollback"]

    history = lab.run(EDGE, "cat /etc/siporch/history", check=True).stdout.splitlines()
    assert [line.split()[1:] for line in history[-3:]] == [
        ["deploy", rx], ["back", state["r1"]], ["deploy", ry]
    ], history[-3:]  # fmt: skip

    _ok(_run(state["base"], "rollback-trunk.yml", limit=EDGE))
    assert _current(lab, EDGE) == state["r1"]


def test_bad_model_contacts_no_host(lab: Any, state: dict[str, Any], tmp_path: Path) -> None:
    inv = ck.copy_inventory(lab, tmp_path)
    ck.edit_model(inv, lambda m: m["trunks"]["itsp-a"].update(site="nowhere"))
    result = _run(inv)
    assert not result.ok
    text = "\n".join(result.output)
    assert "nowhere" in text
    assert "PLAY [Read the release each host runs]" not in text
    for host in SIPORCH_HOSTS:
        assert f"[{host}]" not in text
        assert _current(lab, host) == state["r1"]


def test_no_dropped_calls_through_deploy_and_rollback(lab: Any, state: dict[str, Any]) -> None:
    """Long calls through the edge survive a trunk-change deploy and a rollback."""
    calls = 10
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "siporch", "call", "+12025550100",
            "-i", str(state["base"]), "--from", "itsp-a1",
            "--calls", str(calls), "--rate", "5", "--duration", "120",
            "--timeout", "360", "--json",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        # every call established (answered, in the edge's dialogs) before the deploy
        def established() -> bool:
            assert proc.poll() is None, proc.communicate()
            out = lab.run(EDGE, [HELPER, "rpc", "dlg.stats_active"], check=True).stdout
            return int(json.loads(out)["ongoing"]) >= calls

        assert ck.wait_for(established, 60, step=0.5), "the calls were not all established"
        _ok(_run(state["peer"]))
        assert _current(lab, EDGE) == state["r2"]
        _ok(_run(state["base"], "rollback-trunk.yml", extra_vars={"siporch_release": state["r1"]}))
        assert _current(lab, EDGE) == state["r1"]
        # the calls lived through both: still up on the edge now, and each ends with its BYE
        # answered (below)
        assert established(), "calls ended during the deploy or the rollback"
        out, err = proc.communicate(timeout=360)
    finally:
        if proc.poll() is None:
            proc.kill()
    result = json.loads(out)
    assert proc.returncode == 0, (out, err)
    assert result["attempted"] == calls
    assert result["successful"] == calls, result
    assert result["failed"] == 0, result
