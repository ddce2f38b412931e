"""The wheel works outside the source tree: installed into a fresh venv, run from a
directory of its own, it finds its templates, playbooks and roles inside the package and
writes releases beside the user's inventory, never into the installed package."""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import pkgkit
import pytest

from siporch.model import load_model
from siporch.render import render_release

EXAMPLE = pkgkit.REPO / "inventory" / "example"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pkgkit.build_wheel(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pkgkit.install(wheel, tmp_path_factory.mktemp("venv") / "v")


def _run(bin_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / "siporch"), *args], cwd=cwd, env=pkgkit.env(bin_dir),
        capture_output=True, text=True, timeout=120,
    )


def test_the_wheel_carries_templates_playbooks_roles_plugins_and_ansible_cfg(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in (
        "siporch/_data/ansible.cfg",
        "siporch/_data/templates/kamailio/kamailio.cfg",
        "siporch/_data/playbooks/deploy-trunk.yml",
        "siporch/_data/playbooks/tasks/render.yml",
        "siporch/_data/playbooks/files/deploy_lock.py",
        "siporch/_data/playbooks/strategy_plugins/siporch_linear.py",
        "siporch/_data/roles/siporch_release/filter_plugins/siporch_release.py",
        "siporch/_data/roles/asterisk_pbx/meta/argument_specs.yml",
        "siporch/resources.py",
        "siporch/sipp/uac_rr.xml",
    ):
        assert path in names, path
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_installed_siporch_validates_and_renders_outside_the_tree(
    installed: Path, tmp_path: Path
) -> None:
    where = _run(installed, tmp_path, "--version")
    assert where.returncode == 0, where.stderr
    probe = subprocess.run(
        [str(installed / "python"), "-c",
         "import siporch, siporch.resources as r; print(siporch.__file__); print(r.data_root())"],
        cwd=tmp_path, env=pkgkit.env(installed), capture_output=True, text=True, check=True,
    ).stdout.split()
    assert probe[0].startswith(str(installed.parent)), probe  # the wheel, not the tree
    assert probe[1] == str(Path(probe[0]).parent / "_data")

    inv = pkgkit.copy_inventory(EXAMPLE, tmp_path / "proj" / "inventory")
    ok = _run(installed, tmp_path, "validate", "-i", str(inv))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    out = _run(installed, tmp_path, "render", "-i", str(inv), "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    release = json.loads(out.stdout)
    path = Path(release["path"])
    # beside the inventory (<inventory parent>/build/releases), not in site-packages
    assert path.parent == tmp_path / "proj" / "build" / "releases"
    assert not list(installed.parent.rglob("build/releases"))
    # the installed templates render exactly what the source tree renders
    expected = render_release(load_model(EXAMPLE).model)
    for host, files in expected.items():
        for rel, data in files.items():
            assert (path / host / rel).read_bytes() == data, f"{host}/{rel}"


def test_state_directory_from_the_environment(installed: Path, tmp_path: Path) -> None:
    inv = pkgkit.copy_inventory(EXAMPLE, tmp_path / "inventory")
    env = {**pkgkit.env(installed), "SIPORCH_STATE": str(tmp_path / "state")}
    out = subprocess.run(
        [str(installed / "siporch"), "render", "-i", str(inv), "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    )
    assert Path(json.loads(out.stdout)["path"]).parent == tmp_path / "state" / "releases"


def test_installed_init_writes_an_inventory_that_validates(installed: Path, tmp_path: Path) -> None:
    made = _run(installed, tmp_path, "init", "site-a")
    assert made.returncode == 0, made.stdout + made.stderr
    ok = _run(installed, tmp_path, "validate", "-i", "site-a")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    again = _run(installed, tmp_path, "init", "site-a")
    assert again.returncode == 2 and "not empty" in again.stdout + again.stderr


def test_installed_playbooks_pass_ansible_syntax_check(installed: Path, tmp_path: Path) -> None:
    """ansible-playbook finds the shipped roles and strategy plugin through siporch's
    settings (no ansible.cfg in the working directory)."""
    code = (
        "import subprocess, sys; from pathlib import Path; from siporch.deploy import runner;"
        "from siporch import resources as r;"
        "env = runner.ansible_env(cwd=Path.cwd());"
        "rc = [subprocess.run(['ansible-playbook', '--syntax-check', '-i', sys.argv[1],"
        " str(r.playbook(p))], env=env).returncode"
        " for p in ('deploy-trunk.yml', 'rollback-trunk.yml', 'releases.yml')];"
        "sys.exit(max(rc))"
    )
    proc = subprocess.run(
        [str(installed / "python"), "-c", code, str(EXAMPLE)], cwd=tmp_path,
        env=pkgkit.env(installed), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
