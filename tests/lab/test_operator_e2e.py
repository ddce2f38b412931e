"""An operator's first day, end to end, on the lab's systemd hosts.

From a project directory outside the source tree, with only siporch's wheel (a fresh venv)
and the collection siporch.trunks (installed with ansible-galaxy) — no PYTHONPATH, no
ANSIBLE_* variables: an INI inventory in two files (edges, PBX), group_vars and
host_vars, and the project's own ansible.cfg that logs in as the non-root account
``siporch-ops`` (the lab's key) and becomes root with sudo. Then:

1. ``siporch validate`` of both inventory files;
2. ``ansible-playbook siporch.trunks.deploy_trunk`` deploys the edges and the PBX;
3. an outbound call from the PBX reaches the ITSP through the edge;
4. ``siporch status`` shows every host up on that release; ``siporch drift`` reads the
   release files (root only) through sudo and finds none;
5. a model change, ``siporch deploy``; ``siporch releases`` lists both releases;
6. ``siporch rollback`` puts every host back, and ``siporch status`` says so;
7. the hosts' sshd logged in only siporch-ops, never root, and sudo ran the commands.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import callkit as ck
import pkgkit
import pytest

from siporch.lab.hosts import OPERATOR
from siporch.lab.spec import LabPaths

pytestmark = pytest.mark.lab

HOSTS = ("edge-central", "edge-central-2", "edge-branch", "pbx-central", "pbx-central-2")
INVENTORY = ("-i", "hosts.ini", "-i", "pbx.ini")
NEW_PEER = "198.18.1.12"  # no host answers there: the edge's dispatcher probes it down


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The installed siporch's bin directory and the installed collection's path."""
    bin_dir = pkgkit.shared_install(tmp_path_factory)
    collections = pkgkit.install_collection(bin_dir, tmp_path_factory.mktemp("galaxy"))
    return bin_dir, collections


def _write_project(lab: Any, root: Path, addresses: dict[str, str]) -> None:
    """The operator's project: the lab's model and vault, their own inventory files and
    ansible.cfg."""
    shutil.copytree(lab.inventory / "group_vars", root / "group_vars")
    shutil.copy(lab.inventory.parent / ".vault-pass", root / ".vault-pass")
    (root / "hosts.ini").write_text(
        "[siporch_edge]\n"
        f"edge-central ansible_host={addresses['edge-central']}\n"
        f"edge-central-2 ansible_host={addresses['edge-central-2']}\n"
        f"edge-branch ansible_host={addresses['edge-branch']}\n\n"
        "[siporch_edge:vars]\nsiporch_process_manager=systemd\n"
    )
    (root / "pbx.ini").write_text(
        f"[siporch_pbx]\npbx-central ansible_host={addresses['pbx-central']}\n"
        f"pbx-central-2 ansible_host={addresses['pbx-central-2']}\n"
    )
    (root / "host_vars").mkdir()
    for pbx in ("pbx-central", "pbx-central-2"):
        (root / "host_vars" / f"{pbx}.yml").write_text("siporch_process_manager: systemd\n")
    # every host becomes root (the controller's own plays never do)
    (root / "group_vars" / "all" / "operator.yml").write_text(
        "ansible_become: true\n"
        "# no registrar answers the lab's register trunk\n"
        "asterisk_pbx_health_registrations: false\n"
    )
    (root / "ansible.cfg").write_text(
        "[defaults]\n"
        f"remote_user = {OPERATOR}\n"
        f"private_key_file = {LabPaths.default().ssh_key}\n"
        "host_key_checking = False\n"
        "interpreter_python = auto_silent\n"
        "vault_password_file = .vault-pass\n"
        "[ssh_connection]\n"
        "pipelining = True\n"
        # lab hosts get new host keys on every start: keep them out of known_hosts
        "ssh_args = -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
        " -o ControlMaster=auto -o ControlPersist=30s\n"
    )
    root.chmod(0o755)  # Ansible ignores an ansible.cfg in a world-writable directory


@pytest.fixture(scope="module")
def project(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("operator")
    assert not str(root).startswith(str(pkgkit.REPO))
    _write_project(lab, root, {h: lab.address(h) for h in HOSTS})
    return root


def _run(
    installed: tuple[Path, Path], cwd: Path, *argv: str, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    bin_dir, collections = installed
    env = {**pkgkit.env(bin_dir), "ANSIBLE_COLLECTIONS_PATH": str(collections)}
    env["HOME"] = str(cwd)  # nothing from the machine's ~/.ansible.cfg or ~/.ssh/config
    # the hosts may run trunk ids another module's model gave them: renumber as the lab's
    # other modules do (tests/conftest.py); the refusal has its own tests (test_trunk_ids_lab)
    if "SIPORCH_RENUMBER_TRUNKS" in os.environ:
        env["SIPORCH_RENUMBER_TRUNKS"] = os.environ["SIPORCH_RENUMBER_TRUNKS"]
    exe = shutil.which(argv[0], path=env["PATH"]) or argv[0]
    return subprocess.run(
        [exe, *argv[1:]], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"{proc.args}\n{proc.stdout[-5000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _current(lab: Any, host: str) -> str:
    out = lab.run(host, "readlink /etc/siporch/current", check=True).stdout
    return str(out).strip().rsplit("/", 1)[-1]


def _status(installed: tuple[Path, Path], project: Path) -> dict[str, Any]:
    proc = _run(installed, project, "siporch", "status", *INVENTORY, "--json", "--timeout", "5")
    # 1: degraded is fine here (a lab trunk with no registrar); 2 would be a host unreachable
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


def _assert_status(report: dict[str, Any], release: str) -> None:
    hosts = {h["name"]: h for h in report["hosts"]}
    assert set(hosts) == set(HOSTS), hosts
    for name, host in hosts.items():
        assert host["state"] == "up", (name, host)
        assert host["release"] == release, (name, host)


def _journal(lab: Any, host: str, since: float, *match: str) -> str:
    cmd = ["journalctl", "--no-pager", "-o", "cat", "--since", f"@{int(since)}", *match]
    return str(lab.run(host, cmd, timeout=60).stdout)


def test_operator_deploys_checks_and_rolls_back_as_a_non_root_user(
    lab: Any, installed: tuple[Path, Path], project: Path
) -> None:
    if lab.info.get("init") != "systemd":
        pytest.skip("the operator's hosts run systemd: the lab runs without (SIPORCH_LAB_INIT)")
    started = time.time() - 1

    out = _ok(_run(installed, project, "siporch", "validate", *INVENTORY))
    assert out.startswith("ok: ") and "5 hosts" in out, out

    # 2. the collection's playbook, as the operator would run it from their project
    report_file = project / "deploy-report.json"
    _ok(_run(
        installed, project, "ansible-playbook", "siporch.trunks.deploy_trunk", *INVENTORY,
        "-e", json.dumps({"siporch_report_file": str(report_file)}),
    ))  # fmt: skip
    report = json.loads(report_file.read_text())
    assert not report["failed"], report
    (first,) = {h["current"] for h in report["hosts"]}
    assert {h["host"] for h in report["hosts"]} == set(HOSTS)
    for host in HOSTS:
        assert _current(lab, host) == first
        owner = lab.run(host, "stat -c %U /etc/siporch/releases/" + first, check=True)
        assert owner.stdout.strip() == "root"  # written through sudo, not as the operator

    # 3. a call through what was deployed: PBX -> edge -> ITSP A
    kit = ck.Lab(lab)
    with ck.uas(kit, "itsp-a1") as a1:
        ck.originate(kit, "3125550100", seconds=2)
        assert ck.wait_for(lambda: any(m.startswith("BYE ") for m in a1.messages()), 30), (
            a1.messages()
        )

    # 4. status and drift with the project's settings
    _assert_status(_status(installed, project), first)
    drift = _run(installed, project, "siporch", "drift", *INVENTORY, "--files-only")
    assert drift.returncode == 0, drift.stdout[-3000:] + drift.stderr[-3000:]
    assert "no drift (5 hosts)" in drift.stdout, drift.stdout

    # 5. a model change, deployed with siporch itself
    ck.edit_model(
        project,
        lambda m: m["trunks"]["itsp-a"]["peers"].append(
            {"address": NEW_PEER, "port": 5060, "transport": "udp", "priority": 3}
        ),
    )
    out = _ok(_run(installed, project, "siporch", "deploy", *INVENTORY))
    second = _current(lab, "edge-central")
    assert second != first and second in out, out
    for host in HOSTS:
        assert _current(lab, host) == second
    listing = json.loads(
        _ok(_run(installed, project, "siporch", "releases", *INVENTORY, "--json"))
    )
    for host in HOSTS:
        rows = {r["id"]: r["current"] for r in listing["hosts"][host]}
        assert rows.get(first) is False and rows.get(second) is True, (host, rows)

    # 6. one command back to the release before
    out = _ok(_run(installed, project, "siporch", "rollback", *INVENTORY))
    for host in HOSTS:
        assert _current(lab, host) == first, out
    _assert_status(_status(installed, project), first)

    # 7. who logged in, and how
    for host in HOSTS:
        logins = _journal(lab, host, started, "-u", "ssh.service")
        assert f"Accepted publickey for {OPERATOR}" in logins, (host, logins[-2000:])
        assert "Accepted publickey for root" not in logins, (host, logins[-2000:])
        sudo = _journal(lab, host, started, "_COMM=sudo")
        assert f"{OPERATOR} : " in sudo and "USER=root" in sudo, (host, sudo[-2000:])
    # the project's state beside its inventory; nothing of the run in the installed package
    assert (project / "build" / "releases" / first).is_dir()
    # the rollback is recorded: the hosts' files are the release's, and the model (with
    # the peer the rollback took away) is an undeployed change of the edges it concerns
    # (both central edges run itsp-a)
    drift = _run(installed, project, "siporch", "drift", *INVENTORY, "--files-only")
    assert drift.returncode == 1, drift.stdout[-3000:] + drift.stderr[-3000:]
    lines = drift.stdout.splitlines()
    assert lines[0] == f"reference: last deploy {first}", drift.stdout
    changes = [line for line in lines[1:-1] if line.strip()]
    assert changes and all(
        line.split(": ", 1)[0] in ("edge-central", "edge-central-2")
        and line.split(": ", 1)[1].startswith("undeployed change: kamailio/db/")
        for line in changes
    ), drift.stdout
    assert {line.split(": ", 1)[0] for line in changes} == {"edge-central", "edge-central-2"}
    assert not list(installed[0].parent.rglob("build/releases"))
