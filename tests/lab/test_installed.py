"""siporch installed from its wheel, used from a directory outside the source tree against
the lab: validate, deploy, a check-mode deploy that finds nothing to change, and the same
check through the Ansible collection siporch.trunks from a project with no ansible.cfg."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import callkit as ck
import pkgkit
import pytest

pytestmark = pytest.mark.lab

HOSTS = ("edge-central", "edge-central-2", "edge-branch", "pbx-central", "pbx-central-2")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pkgkit.shared_install(tmp_path_factory)


@pytest.fixture(scope="module")
def project(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A user's project: a copy of the lab inventory and its vault password, no ansible.cfg."""
    root = tmp_path_factory.mktemp("project")
    ck.copy_inventory(lab, root)
    assert not (root / "ansible.cfg").exists()
    yield root


def _siporch(bin_dir: Path, cwd: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / "siporch"), *args], cwd=cwd, env=pkgkit.env(bin_dir),
        capture_output=True, text=True, timeout=timeout, check=False,
    )


def _current(lab: Any, host: str) -> str:
    return lab.run(host, "readlink /etc/siporch/current", check=True).stdout.strip().rsplit("/", 1)[-1]


def test_installed_siporch_deploys_the_lab_from_outside_the_tree(
    lab: Any, installed: Path, project: Path
) -> None:
    assert not str(project).startswith(str(pkgkit.REPO))
    ok = _siporch(installed, project, "validate", "-i", "inv")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    done = _siporch(installed, project, "deploy", "-i", "inv")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    (release,) = [p.name for p in (project / "build" / "releases").iterdir()]
    for host in HOSTS:
        assert _current(lab, host) == release
    # what was deployed is recorded beside the inventory, not in the installed package
    assert list((project / "build" / "state").glob("*.json"))
    assert not list(installed.parent.rglob("build/releases"))

    check = _siporch(installed, project, "deploy", "--check", "--diff", "-i", "inv")
    assert check.returncode == 0, check.stdout[-4000:] + check.stderr[-4000:]
    assert "nothing changed" in check.stdout, check.stdout[-4000:]
    for host in HOSTS:
        assert _current(lab, host) == release


def test_collection_check_mode_deploy_against_the_lab(
    lab: Any, installed: Path, project: Path, tmp_path: Path
) -> None:
    """`ansible-playbook siporch.trunks.deploy_trunk --check` from the user's project, the
    collection installed with ansible-galaxy, siporch (for the render) from the wheel."""
    tarball = subprocess.run(
        [str(installed / "siporch"), "collection", "build", "--out", str(tmp_path)],
        cwd=tmp_path, env=pkgkit.env(installed), capture_output=True, text=True, check=True,
    )
    (built,) = tmp_path.glob("siporch-trunks-*.tar.gz")
    collections = tmp_path / "collections"
    subprocess.run(
        ["ansible-galaxy", "collection", "install", "-p", str(collections), str(built)],
        env=pkgkit.env(installed), capture_output=True, text=True, check=True, timeout=120,
    )
    before = {h: _current(lab, h) for h in HOSTS}
    report = tmp_path / "report.json"
    env = {**pkgkit.env(installed), "ANSIBLE_COLLECTIONS_PATH": str(collections)}
    proc = subprocess.run(
        ["ansible-playbook", "siporch.trunks.deploy_trunk", "-i", "inv", "--check", "--diff",
         "--vault-password-file", ".vault-pass",
         "-e", json.dumps({"siporch_report_file": str(report)})],
        cwd=project, env=env, capture_output=True, text=True, timeout=900, check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:] + tarball.stdout
    data = json.loads(report.read_text())
    assert data["check_mode"] is True and not data["failed"]
    assert {h["host"]: h["current"] for h in data["hosts"]} == before
    assert {h: _current(lab, h) for h in HOSTS} == before


def test_wheel_python_is_not_the_tree(installed: Path) -> None:
    code = "import siporch; print(siporch.__file__)"
    out = subprocess.run(
        [str(installed / "python"), "-c", code], env=pkgkit.env(installed),
        capture_output=True, text=True, check=True, cwd="/",
    ).stdout.strip()
    assert out.startswith(str(installed.parent)) and not out.startswith(str(pkgkit.REPO)), out
    assert sys.executable != str(installed / "python")
    assert os.path.isdir(Path(out).parent / "_data" / "roles")
