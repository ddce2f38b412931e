"""Deploys and rollbacks on the lab: real Kamailio, rtpengine and Asterisk, Ansible over SSH.

A fresh deploy, a no-op deploy, a peer added (dispatcher reload only), a routing change
planned as a restart, a bad model, a release that fails its on-host check, rollbacks, and
calls that survive it all. Two models are shared by the module: ``base`` (the lab's own)
and ``peer`` (one peer more), each rendered once; each test asks for the lab in the
state it starts from (``on_base``, ``on_peer``, ...), which deploys only when the hosts
are not in it already, so any test runs alone and the module in file order deploys no
more than its tests need.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import callkit as ck
import pairkit as pk
import pytest

from siporch.core import rollback_target
from siporch.deploy import runner

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
EDGE = "edge-central"
NEW_PEER = "198.18.1.12"
HELPER = "/usr/local/lib/siporch/siporch_kamailio.py"
#: the longest the calls of test_no_dropped_calls_through_deploy_and_rollback may last
HOLD_S = 300
PIDFILES = {
    "edge-central": {
        "kamailio": "/run/kamailio/kamailio.pid",
        "rtpengine": "/run/rtpengine/rtpengine.pid",
    },
    "edge-central-2": {
        "kamailio": "/run/kamailio/kamailio.pid",
        "rtpengine": "/run/rtpengine/rtpengine.pid",
    },
    "edge-branch": {"kamailio": "/run/kamailio/kamailio.pid"},
    "pbx-central": {"asterisk": "/var/run/asterisk/asterisk.pid"},
    "pbx-central-2": {"asterisk": "/var/run/asterisk/asterisk.pid"},
}
SIPORCH_HOSTS = (
    "edge-central",
    "edge-central-2",
    "edge-branch",
    "pbx-central",
    "pbx-central-2",
)


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


def _one_call(result: runner.RunResult) -> set[str]:
    """The hosts the run changed in one call on the host (quick_host.yml)."""
    hosts: set[str] = set()
    inside = False
    for line in result.output:
        if line.startswith("TASK ["):
            inside = line.startswith(
                "TASK [siporch_release : Check, switch, reload and gate in one"
            )
        elif inside and line.startswith("changed: ["):
            hosts.add(line[len("changed: [") :].split("]", 1)[0])
    return hosts


#: the first task of activate.yml: the host went step by step
STEP_BY_STEP = "Read the manifest of the release to activate"


def _current(lab: Any, host: str) -> str:
    """The release ``host`` runs ("" when it has none)."""
    proc = lab.run(host, "readlink /etc/siporch/current || true", check=True)
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


@dataclass(frozen=True)
class Model:
    """An inventory and the release its model renders to."""

    inv: Path
    release: str


def _render(inv: Path) -> str:
    """The id of the release of ``inv`` (rendered into its own state directory; a deploy
    of ``inv`` reuses it)."""
    proc = subprocess.run(
        [sys.executable, "-m", "siporch", "render", "-i", str(inv), "--json"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rid: str = json.loads(proc.stdout)["id"]
    return rid


def _after(release: str) -> None:
    """Wait until a release rendered now sorts after ``release`` (ids start with their
    UTC second)."""
    while time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) <= release.split("-", 1)[0]:
        time.sleep(0.05)


@pytest.fixture(scope="module")
def base(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Model:
    """The lab's own model."""
    inv = ck.copy_inventory(lab, tmp_path_factory.mktemp("base"))
    return Model(inv, _render(inv))


@pytest.fixture(scope="module")
def peer(lab: Any, base: Model, tmp_path_factory: pytest.TempPathFactory) -> Model:
    """The lab's model with one more peer on itsp-a; its release sorts after base's."""
    inv = ck.copy_inventory(lab, tmp_path_factory.mktemp("peer"))
    ck.edit_model(
        inv,
        lambda m: m["trunks"]["itsp-a"]["peers"].append(
            {"address": NEW_PEER, "port": 5060, "transport": "udp", "priority": 3}
        ),
    )
    _after(base.release)
    return Model(inv, _render(inv))


def _on(lab: Any, model: Model) -> bool:
    """Whether every host runs ``model``'s release."""
    return all(_current(lab, host) == model.release for host in SIPORCH_HOSTS)


def _deploy(lab: Any, model: Model) -> runner.RunResult:
    result = _run(model.inv)
    _ok(result)
    assert result.report is not None and result.report["release"] == model.release
    return result


def _releases(lab: Any, host: str) -> list[str]:
    return lab.run(host, "ls /etc/siporch/releases 2>/dev/null || true").stdout.split()


def _rollback_target(lab: Any, host: str) -> str:
    history = lab.run(host, "cat /etc/siporch/history 2>/dev/null || true").stdout
    return rollback_target(history, _current(lab, host), _releases(lab, host))


@pytest.fixture
def on_base(lab: Any, base: Model) -> Model:
    """Every host runs the base release (deployed unless it already does)."""
    if not _on(lab, base):
        _deploy(lab, base)
    return base


@pytest.fixture
def on_peer(lab: Any, base: Model, peer: Model) -> Model:
    """Every host runs the peer release, went live over the base one (a rollback goes
    back to base)."""
    if _on(lab, peer) and all(_rollback_target(lab, h) == base.release for h in SIPORCH_HOSTS):
        return peer
    if not _on(lab, base):
        _deploy(lab, base)
    _deploy(lab, peer)
    return peer


@pytest.fixture
def on_base_holding_peer(lab: Any, base: Model, peer: Model) -> Model:
    """Every host runs the base release and holds the peer one."""
    if not all(peer.release in _releases(lab, h) for h in SIPORCH_HOSTS):
        _deploy(lab, peer)
    if not _on(lab, base):
        _deploy(lab, base)
    return base


def test_fresh_deploy(lab: Any, base: Model) -> None:
    result = _deploy(lab, base)
    for host in SIPORCH_HOSTS:
        assert _current(lab, host) == base.release
    _pids(lab)  # every daemon runs
    assert result.report is not None


def test_second_deploy_changes_nothing(lab: Any, on_base: Model) -> None:
    before = _pids(lab)
    result = _run(on_base.inv)
    _ok(result)
    assert result.changed == 0, result.recap
    assert all(not r for r in _reloads(result).values())
    assert _pids(lab) == before


def test_check_mode_touches_nothing(lab: Any, on_base: Model, tmp_path: Path) -> None:
    """A routing-level change (Kamailio children, in host.cfg) is planned as a restart."""
    inv = ck.copy_inventory(lab, tmp_path)
    ck.edit_model(inv, lambda m: m["hosts"][EDGE].setdefault("kamailio", {}).update(children=3))
    before = _pids(lab)
    result = _run(inv, check=True, diff=True)
    _ok(result)
    assert "kamailio:restart" in _reloads(result)[EDGE]
    assert _current(lab, EDGE) == on_base.release
    assert _pids(lab) == before


def test_adding_a_peer_reloads_dispatcher_only(lab: Any, on_base: Model, peer: Model) -> None:
    before = _pids(lab)
    result = _deploy(lab, peer)
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
    assert _current(lab, EDGE) == peer.release != on_base.release


def test_release_failing_its_check_leaves_the_previous_active(
    lab: Any, on_peer: Model, tmp_path: Path
) -> None:
    """A release whose kamailio.cfg Kamailio rejects never goes live."""
    inv = on_peer.inv
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
        assert _current(lab, host) == on_peer.release
    assert _pids(lab) == before
    lab.run(EDGE, [HELPER, "options", lab.address(EDGE), "5060"], check=True)


def test_rollback_to_previous(lab: Any, base: Model, on_peer: Model) -> None:
    """A change that reloads apply is rolled back in one call on each host, as deployed:
    the release on the host checked and switched to, the history line of kind `back`."""
    before = _pids(lab)
    result = _run(base.inv, "rollback-trunk.yml")
    _ok(result)
    assert _one_call(result) == set(SIPORCH_HOSTS), "\n".join(result.output[-60:])
    assert not any(STEP_BY_STEP in line for line in result.output)
    for host in SIPORCH_HOSTS:
        assert _current(lab, host) == base.release
        last = lab.run(host, "tail -n 1 /etc/siporch/history", check=True).stdout.split()
        assert last[1:] == ["back", base.release], (host, last)
    assert "kamailio:dispatcher.reload" in _reloads(result)[EDGE]
    assert "kamailio:restart" not in _reloads(result)[EDGE]
    assert f"sip:{NEW_PEER}:5060" not in _dispatcher_uris(lab)
    assert _pids(lab) == before


def test_rollback_to_named_release(lab: Any, on_base_holding_peer: Model, peer: Model) -> None:
    """-e siporch_quick=false: every host step by step (activate.yml), as before the one
    call."""
    base = on_base_holding_peer
    before = _pids(lab)
    result = _run(
        base.inv,
        "rollback-trunk.yml",
        extra_vars={"siporch_release": peer.release, "siporch_quick": False},
    )
    _ok(result)
    assert not _one_call(result)
    assert any(STEP_BY_STEP in line for line in result.output)
    assert "kamailio:dispatcher.reload" in _reloads(result)[EDGE]
    assert _pids(lab) == before
    for host in SIPORCH_HOSTS:
        assert _current(lab, host) == peer.release
    assert f"sip:{NEW_PEER}:5060" in _dispatcher_uris(lab)


def test_rollback_returns_to_what_the_host_ran(
    lab: Any, on_base: Model, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Deploy X, roll back (to r1), deploy Y, roll back: the host goes back to r1, which it
    ran before Y, not to X, which sorts between them but was rolled back from."""
    r1 = on_base.release
    models = []
    for channels in (31, 32):
        inv = ck.copy_inventory(lab, tmp_path_factory.mktemp(f"ch{channels}"))
        ck.edit_model(inv, lambda m, n=channels: m["trunks"]["itsp-a"].update(max_channels=n))
        models.append(inv)
    _ok(_run(models[0], limit=EDGE))
    rx = _current(lab, EDGE)
    _ok(_run(on_base.inv, "rollback-trunk.yml", limit=EDGE))
    assert _current(lab, EDGE) == r1
    _ok(_run(models[1], limit=EDGE))
    ry = _current(lab, EDGE)
    assert r1 < rx < ry, (r1, rx, ry)

    listing = subprocess.run(
        [sys.executable, "-m", "siporch", "releases", "-i", str(on_base.inv),
         "--limit", EDGE, "--json"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert listing.returncode == 0, listing.stderr
    rows = {r["id"]: r for r in json.loads(listing.stdout)["hosts"][EDGE]}
    assert rows[ry]["current"] and rows[r1]["rollback"], rows
    assert not rows[rx]["rollback"]

    history = lab.run(EDGE, "cat /etc/siporch/history", check=True).stdout.splitlines()
    assert [line.split()[1:] for line in history[-3:]] == [
        ["deploy", rx], ["back", r1], ["deploy", ry]
    ], history[-3:]  # fmt: skip

    _ok(_run(on_base.inv, "rollback-trunk.yml", limit=EDGE))
    assert _current(lab, EDGE) == r1


def test_bad_model_contacts_no_host(lab: Any, on_base: Model, tmp_path: Path) -> None:
    inv = ck.copy_inventory(lab, tmp_path)
    ck.edit_model(inv, lambda m: m["trunks"]["itsp-a"].update(site="nowhere"))
    result = _run(inv)
    assert not result.ok
    text = "\n".join(result.output)
    assert "nowhere" in text
    assert "PLAY [Read the release each host runs]" not in text
    for host in SIPORCH_HOSTS:
        assert f"[{host}]" not in text
        assert _current(lab, host) == on_base.release


def test_no_dropped_calls_through_deploy_and_rollback(
    lab: Any, on_base: Model, peer: Model
) -> None:
    """Long calls through the edge survive a trunk-change deploy and a rollback. The calls
    (SIPp ``uac_media.xml`` on itsp-a1, RTP for the whole call, the PBX answers with Echo)
    could last 300 s; they hang up as soon as the deploy and the rollback are done (a
    HANGUP request to SIPp ends its wait), each with its BYE through the edge answered.
    300 s: the deploy and the rollback of the five hosts (the central pair one edge at a
    time) took up to 2 min on a loaded 2-core machine; the calls must outlast both."""
    calls = 10
    k = ck.Lab(lab)
    workdir = Path(tempfile.mkdtemp(prefix="siporch-deploy-calls-"))
    held = pk.callers(
        k, "itsp-a1", lab.address("itsp-a1"), f"{lab.address(EDGE)}:5060", "+12025550100",
        workdir, tag="held", port=25095, media_port=6000, calls=calls, rate=5,
        hold_s=HOLD_S,
    )  # fmt: skip
    hung_up = 0
    try:
        # every call established (answered, in the edge's dialogs) before the deploy
        def established() -> bool:
            assert held.proc.poll() is None, held.diagnose()
            out = lab.run(EDGE, [HELPER, "rpc", "dlg.stats_active"], check=True).stdout
            return int(json.loads(out)["ongoing"]) >= calls

        assert ck.wait_for(established, 60, step=0.5), "the calls were not all established"
        assert held.answered() == calls, held.diagnose()
        started = time.monotonic()
        _ok(_run(peer.inv))
        assert _current(lab, EDGE) == peer.release
        _ok(_run(on_base.inv, "rollback-trunk.yml",
                 extra_vars={"siporch_release": on_base.release}))  # fmt: skip
        assert _current(lab, EDGE) == on_base.release
        took = time.monotonic() - started
        assert took < HOLD_S - 10, f"the deploy and the rollback took {took:.0f} s"
        # the calls lived through both: still up on the edge and in SIPp now, and each
        # ends with its BYE answered (below)
        assert established(), "calls ended during the deploy or the rollback"
        assert held.current_calls() in (calls, -1), held.diagnose()
    finally:
        hung_up = held.hang_up(k, "itsp-a1")
        code = held.wait(120)
    successful, failed = held.result()
    assert hung_up == calls, (hung_up, held.diagnose())
    assert (successful, failed) == (calls, 0), f"exit {code}\n{held.diagnose()}"
    assert not held.refused(), held.refused()
    shutil.rmtree(workdir, ignore_errors=True)
