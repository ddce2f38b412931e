"""The playbooks parse, and a bad model stops a deploy before any host is contacted."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory" / "example"

pytestmark = pytest.mark.skipif(
    shutil.which("ansible-playbook") is None, reason="ansible-playbook is not installed"
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
    env["ANSIBLE_NOCOLOR"] = "1"
    return env


@pytest.mark.parametrize("playbook", ["deploy-trunk.yml", "rollback-trunk.yml", "releases.yml"])
def test_syntax(playbook: str) -> None:
    proc = subprocess.run(
        ["ansible-playbook", "--syntax-check", "-i", str(EXAMPLE), f"playbooks/{playbook}"],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_bad_model_contacts_no_host(tmp_path: Path) -> None:
    """The hosts point at a loopback port nothing listens on: a contact would fail loudly."""
    inv = tmp_path / "bad"
    shutil.copytree(EXAMPLE, inv)
    hosts = yaml.safe_load((inv / "hosts.yml").read_text())
    hosts["all"]["vars"] = {"ansible_host": "127.0.0.1", "ansible_port": 9, "ansible_user": "x"}
    for group in hosts["all"]["children"].values():
        for name in group["hosts"]:
            group["hosts"][name] = {}
    (inv / "hosts.yml").write_text(yaml.safe_dump(hosts))
    model_file = inv / "group_vars" / "all" / "siporch.yml"
    model = model_file.read_text().replace(
        "site: central\n      kind: itsp", "site: nowhere\n      kind: itsp", 1
    )
    assert model != model_file.read_text()
    model_file.write_text(model)
    vault_pass = EXAMPLE.parent / ".vault-pass"
    cmd = ["ansible-playbook", "-i", str(inv), "playbooks/deploy-trunk.yml"]
    if vault_pass.exists():
        shutil.copy(vault_pass, tmp_path / ".vault-pass")
        cmd += ["--vault-password-file", str(vault_pass)]
    cmd += ["-e", f"siporch_release_out={tmp_path / 'build'}"]
    cmd += ["-e", f"siporch_deploy_lock={tmp_path / 'lock'}"]
    proc = subprocess.run(
        cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120, check=False
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "nowhere" in out  # the model error is shown
    assert "PLAY [Read the release each host runs]" not in out
    for host in ("edge-central", "edge-branch", "pbx-central"):
        assert f"[{host}]" not in out
    assert not (tmp_path / "build").exists() or not any((tmp_path / "build").iterdir())
