"""Deploy faults on the lab: a host lost mid-run, hand-edited files, the registration gate.

Real daemons, Ansible over SSH. Each test starts from the lab inventory deployed (release
R1); the module leaves the lab on it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import callkit as ck
import pytest

from siporch.deploy import runner

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
SIPORCH_HOSTS = (
    "edge-central",
    "edge-central-2",
    "edge-branch",
    "pbx-central",
    "pbx-central-2",
)
EDGE = "edge-central"
PBX = "pbx-central"


def _current(lab: Any, host: str) -> str:
    proc = lab.run(host, "readlink /etc/siporch/current", check=True)
    return Path(proc.stdout.strip()).name


def _ok(result: runner.RunResult) -> None:
    assert result.ok, "\n".join(result.output[-60:])


def _siporch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "siporch", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module", autouse=True)
def exclusive() -> Iterator[None]:
    """Hold the controller's deploy lock across the module: other deploys wait for it."""
    with ck.deploy_lock(wait=2400):
        yield


@pytest.fixture(scope="module")
def restore(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The lab inventory deployed again once every test of the module has run (each test
    starts by deploying it: deploying it after each test as well would do it twice)."""
    inv = ck.copy_inventory(lab, tmp_path_factory.mktemp("restore"))
    yield
    _ok(ck.deploy(inv, extra_vars={"siporch_force": True}))


@pytest.fixture
def base(lab: Any, restore: None, tmp_path: Path) -> tuple[Path, str]:
    """The lab inventory deployed (release R1): left as it is when every host already runs
    it with its daemons up (as the test before may leave it), else deployed. Forced: with
    the deploy lock held no test call runs, and media sessions left by an earlier run must
    not stop an rtpengine restart that a changed lab model needs."""
    inv = ck.copy_inventory(lab, tmp_path / "base")
    kit = ck.Lab(lab)
    want = ck.model_hash(inv)
    running = {host: Path(ck.current_release(kit, host)).name for host in SIPORCH_HOSTS}
    on_r1 = all(r.endswith(f"-{want}") for r in running.values())
    if (
        on_r1
        and len(set(running.values())) == 1
        and all(ck._daemons_up(kit, host) for host in SIPORCH_HOSTS)
    ):
        return inv, running[EDGE]
    result = ck.deploy(inv, extra_vars={"siporch_force": True})
    _ok(result)
    assert result.report is not None
    return inv, str(result.report["release"])


def _rename_ami_user(model: dict[str, Any]) -> None:
    model["hosts"][PBX]["ami"]["user"] = "siporch-ami"  # pbx-central's manager_siporch.conf


def _add_peer(model: dict[str, Any]) -> None:
    model["trunks"]["itsp-a"]["peers"].append(
        {"address": "198.18.1.12", "port": 5060, "transport": "udp", "priority": 3}
    )


def test_unreachable_host_mid_run_rolls_every_other_host_back(
    lab: Any, base: tuple[Path, str], tmp_path: Path
) -> None:
    """pbx-central drops every packet from the controller once edge-central has switched
    to the new release: the run fails naming pbx-central, its step and "unreachable", and
    the edges go back to R1. The change reaches pbx-central too (its AMI user: a manager
    reload), so that it is deployed in a batch after edge-central's: a host the release
    leaves unchanged goes with the first batch, beside edge-central."""
    _, r1 = base
    inv = ck.copy_inventory(lab, tmp_path / "changed")
    ck.edit_model(inv, _add_peer)
    ck.edit_model(inv, _rename_ami_user)
    partitioned = threading.Event()
    stop = threading.Event()
    problems: list[str] = []

    def partition_when_edge_switched() -> None:
        deadline = time.monotonic() + 600
        while not stop.is_set() and time.monotonic() < deadline:
            if _current(lab, EDGE) != r1:
                proc = _siporch("lab", "impair", "controller", PBX, "--partition")
                if proc.returncode != 0:
                    problems.append(proc.stdout + proc.stderr)
                partitioned.set()
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=partition_when_edge_switched, daemon=True)
    watcher.start()
    started = time.monotonic()
    try:
        cli = _siporch("deploy", "-i", str(inv))
        took = time.monotonic() - started
    finally:
        stop.set()
        watcher.join(30)
        cleared = _siporch("lab", "impair", "controller", PBX, "--clear")
    assert not problems, problems
    assert partitioned.is_set(), "edge-central never switched:\n" + cli.stdout + cli.stderr
    assert cleared.returncode == 0 and "cleared" in cleared.stdout, cleared.stdout + cleared.stderr
    print(f"siporch deploy with pbx-central lost mid-run: {took:.1f} s, exit {cli.returncode}")
    print(cli.stderr)

    # siporch deploy names the host, the step and "unreachable", and every host's fate
    assert cli.returncode == 1, cli.stdout + cli.stderr
    err = cli.stderr
    assert re.search(rf'^  {PBX} failed at "[^"]+": unreachable: ', err, re.M), err
    assert f"  edge-central: rolled back to {r1}" in err, err
    assert f"  edge-branch: rolled back to {r1}" in err, err
    assert f"  {PBX}: unreachable, not rolled back: it runs {r1} or " in err, err
    # edge-central-2 goes in the pair's play after the host-by-host batches: the run may
    # fail before it is reached (then it is still on R1, never touched) or after
    assert re.search(rf"  edge-central-2: (rolled back to|still on) {r1}", err), err
    touched = err.count(f": rolled back to {r1}")
    untouched = len(SIPORCH_HOSTS) - 1 - touched
    summary = f"siporch: deploy failed on {PBX} (unreachable); {touched} host(s) rolled back, "
    if untouched:
        summary += f"{untouched} unchanged, "
    assert summary + f"NOT rolled back: {PBX}" in err, err
    assert "Traceback" not in cli.stdout + err
    for host in SIPORCH_HOSTS:
        assert _current(lab, host) == r1, host  # pbx-central was never reached
    # the edge serves again on R1
    lab.run(EDGE, [ck.KAMAILIO_HELPER, "options", lab.address(EDGE), "5060"], check=True)

    # With the host back in reach, the same deploy goes through.
    again = ck.deploy(inv)
    _ok(again)
    assert again.report is not None
    for host in SIPORCH_HOSTS:
        assert _current(lab, host) == again.report["release"] != r1


def _reloads(result: runner.RunResult) -> dict[str, list[str]]:
    assert result.report is not None, "\n".join(result.output[-40:])
    return {h["host"]: h["reloads"] for h in result.report["hosts"]}


def test_redeploy_restores_files_edited_on_the_host(lab: Any, base: tuple[Path, str]) -> None:
    """A file of the running release edited by hand, and another one lost: the same deploy
    again puts both back, reloads only what they need (dispatcher), and drift is gone."""
    inv, r1 = base
    dispatcher = "/etc/siporch/current/kamailio/db/dispatcher"
    dids = "/etc/siporch/current/kamailio/db/dids"
    original = lab.run(EDGE, f"cat {dispatcher}", check=True).stdout
    original_dids = lab.run(EDGE, f"cat {dids}", check=True).stdout
    pid = lab.run(EDGE, "cat /run/kamailio/kamailio.pid", check=True).stdout.strip()
    lab.run(EDGE, f"echo '# edited by hand' >> {dispatcher} && rm {dids}", check=True)
    lab.run(EDGE, "touch /etc/siporch/current/kamailio/db/stray", check=True)
    drift = _siporch("drift", "-i", str(inv), "--files-only")
    assert drift.returncode == 1, drift.stdout + drift.stderr
    assert "kamailio/db/dispatcher modified on host" in drift.stdout, drift.stdout

    result = ck.deploy(inv)
    _ok(result)
    assert result.report is not None
    edge = next(h for h in result.report["hosts"] if h["host"] == EDGE)
    assert edge["current"] == r1
    assert edge["changed_files"] == {
        "kamailio/db/dispatcher": "restored",
        "kamailio/db/dids": "restored",
        "kamailio/db/stray": "removed (not in the release)",
    }, edge
    reloads = _reloads(result)
    assert sorted(reloads[EDGE]) == [
        "kamailio:dispatcher.reload",
        "kamailio:htable.reload:dids",
    ], reloads
    assert not reloads["edge-branch"] and not reloads["pbx-central"], reloads
    assert lab.run(EDGE, f"cat {dispatcher}", check=True).stdout == original
    assert lab.run(EDGE, f"cat {dids}", check=True).stdout == original_dids
    assert lab.run(EDGE, "test -e /etc/siporch/current/kamailio/db/stray").returncode == 1
    assert lab.run(EDGE, "cat /run/kamailio/kamailio.pid", check=True).stdout.strip() == pid

    drift = _siporch("drift", "-i", str(inv), "--files-only")
    assert drift.returncode == 0, drift.stdout + drift.stderr
    full = _siporch("drift", "-i", str(inv))
    print(f"siporch drift (full) after the heal: exit {full.returncode}\n{full.stdout}")

    # and a clean redeploy changes and reloads nothing
    again = ck.deploy(inv)
    _ok(again)
    assert again.changed == 0, again.recap
    assert all(not r for r in _reloads(again).values())


def _itsp_b_auth(lab: Any) -> tuple[str, str]:
    from siporch.model import load_model
    from siporch.model.schema import RegisterAuth

    model = load_model(lab.inventory, vault_password_file=lab.inventory.parent / ".vault-pass")
    auth = model.model.trunks["itsp-b"].auth
    assert isinstance(auth, RegisterAuth) and auth.realm
    return auth.realm, auth.password.get_secret_value()


def test_registration_gate_passes_with_the_registrar_and_rolls_back_without(
    lab: Any, base: tuple[Path, str], tmp_path: Path
) -> None:
    """The PBX's outbound registration (itsp-b, TLS through the edge) is part of the health
    gate. With a registrar answering on itsp-b a deploy with the gate on passes; with it
    gone, the gate fails within its timeout and every host of the run goes back."""
    _, r1 = base
    kit = ck.Lab(lab)
    realm, password = _itsp_b_auth(lab)
    gate = {"asterisk_pbx_health_registrations": True, "asterisk_pbx_registration_timeout": 20}
    changed = ck.copy_inventory(lab, tmp_path / "changed")
    ck.edit_model(changed, _add_peer)

    with ck.tls_registrar(kit, "itsp-b", realm=realm, password=password, expires=60) as reg:
        started = time.monotonic()
        result = ck.deploy(changed, extra_vars=gate)
        took = time.monotonic() - started
        entries = reg.entries()
    _ok(result)
    assert result.report is not None
    r2 = str(result.report["release"])
    assert any(e["ok"] for e in entries), entries  # the PBX registered with it
    # the gate is one of the quick call's gates (no task of its own: its name shows only
    # when it fails, below); the registrar saw the PBX register through the edge
    for host in SIPORCH_HOSTS:
        assert _current(lab, host) == r2
    print(f"deploy with the registration gate, registrar up: {took:.1f} s")

    # No registrar: the PBX's registration lapses, and a deploy (back to the base model)
    # fails at the gate and goes back to r2 everywhere.
    kit.asterisk("pjsip send unregister *all")
    base_inv, _ = base
    started = time.monotonic()
    failed = ck.deploy(base_inv, extra_vars=gate)
    took = time.monotonic() - started
    print(
        f"deploy with the registration gate, no registrar: {took:.1f} s, exit {failed.returncode}"
    )
    assert not failed.ok
    failures = failed.failures()
    assert [f["host"] for f in failures] == [PBX], failures
    assert "Outbound registrations are registered" in failures[0]["step"], failures
    assert "registrations not Registered after 20s" in failures[0]["reason"], failures
    assert "itsp-b-reg" in failures[0]["reason"], failures
    assert failed.report is not None
    rollbacks = {h["host"]: h.get("rollback", "") for h in failed.report["hosts"]}
    # the hosts deployed up to pbx-central's failure are rolled back (the first batch has
    # the hosts the change leaves as they are); those of later batches and of the pair's
    # play were never touched
    assert rollbacks[PBX] == f"rolled back to {r2}", rollbacks
    for host in SIPORCH_HOSTS:
        assert rollbacks[host] in (f"rolled back to {r2}", f"still on {r2}"), rollbacks
        assert _current(lab, host) == r2, host
    assert f'{PBX} at "{failures[0]["step"]}": registrations' in "\n".join(failed.output)
    assert r1 != r2
