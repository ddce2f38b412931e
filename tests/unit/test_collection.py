"""The Ansible collection siporch.trunks: built from roles/ and playbooks/, installed into a
collections path of its own and used from a project directory with no ansible.cfg."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from siporch import collection

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory" / "example"

pytestmark = pytest.mark.skipif(
    shutil.which("ansible-galaxy") is None, reason="ansible-galaxy is not installed"
)


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return collection.build(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def collections(tarball: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("collections")
    subprocess.run(
        ["ansible-galaxy", "collection", "install", "-p", str(path), str(tarball)],
        check=True, capture_output=True, text=True, timeout=120,
    )
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's project directory: an inventory, its vault password, no ansible.cfg."""
    shutil.copytree(EXAMPLE, tmp_path / "inventory")
    shutil.copy(EXAMPLE.parent / ".vault-pass", tmp_path / ".vault-pass")
    return tmp_path


def _env(collections: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "SIPORCH_"))}
    env.update(ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_NOCOLOR="1")
    return env


def test_the_tarball_holds_roles_playbooks_plugins_and_metadata(tarball: Path) -> None:
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    for name in (
        "galaxy.yml", "MANIFEST.json", "README.md", "meta/runtime.yml",
        "playbooks/deploy_trunk.yml", "playbooks/rollback_trunk.yml", "playbooks/releases.yml",
        "playbooks/tasks/render.yml", "playbooks/files/deploy_lock.py",
        "plugins/strategy/siporch_linear.py", "plugins/filter/siporch_release.py",
        "plugins/filter/siporch_rollout.py",
        *(f"roles/{r}/meta/argument_specs.yml" for r in collection.ROLES),
        *(f"plugins/action/{a}.py" for a in collection.ACTIONS),
    ):
        if name != "galaxy.yml":  # ansible-galaxy turns galaxy.yml into MANIFEST.json
            assert name in names, name
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    with tarfile.open(tarball) as tar:
        runtime = yaml.safe_load(tar.extractfile("meta/runtime.yml").read())  # type: ignore[union-attr]
        manifest = json.loads(tar.extractfile("MANIFEST.json").read())  # type: ignore[union-attr]
        deploy = tar.extractfile("playbooks/deploy_trunk.yml").read().decode()  # type: ignore[union-attr]
        quick = tar.extractfile("roles/siporch_release/tasks/quick.yml").read().decode()  # type: ignore[union-attr]
    # the roles call the vendored actions by their FQCN (the quick deploy's one call)
    assert "siporch.trunks.siporch_release_quick:" in quick
    # requires_ansible is the ansible-core range siporch itself depends on
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    core = next(d for d in deps if d.startswith("ansible-core"))
    assert runtime["requires_ansible"] == core.removeprefix("ansible-core")
    assert (manifest["collection_info"]["namespace"], manifest["collection_info"]["name"]) == (
        "siporch", "trunks"
    )
    # generated from the top-level playbook: only the strategy and the filters (the
    # rollout order) became their FQCN
    top = (REPO / "playbooks" / "deploy-trunk.yml").read_text()
    assert "strategy: siporch.trunks.siporch_linear" in deploy
    assert "| siporch.trunks.siporch_rollout_order(" in deploy
    assert re.sub(r"siporch\.trunks\.(siporch_\w+)", r"\1", deploy) == top


_PLACEHOLDER = re.compile(r"entry point of|^[A-Z][a-z]+( [a-z]+)?\.$")


@pytest.fixture(scope="module")
def role_docs(collections: Path) -> dict[str, Any]:
    proc = subprocess.run(
        ["ansible-doc", "-t", "role", "--json", *(f"siporch.trunks.{r}" for r in collection.ROLES)],
        env=_env(collections), capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    docs: dict[str, Any] = json.loads(proc.stdout)
    return docs


@pytest.mark.parametrize("role", collection.ROLES)
def test_ansible_doc_describes_every_argument(role_docs: dict[str, Any], role: str) -> None:
    doc = role_docs[f"siporch.trunks.{role}"]
    assert doc["entry_points"]
    for entry, spec in doc["entry_points"].items():
        short = spec["short_description"]
        assert not _PLACEHOLDER.search(short) and len(short.split()) >= 5, (entry, short)
        assert spec["options"], entry
        for name, option in spec["options"].items():
            text = option["description"]
            text = " ".join(text) if isinstance(text, list) else text
            words = name.split("_", 2)[-1].replace("_", " ")
            assert not _PLACEHOLDER.match(text), (entry, name, text)
            assert text.rstrip(".").lower() != words and len(text.split()) >= 6, (entry, name, text)


@pytest.mark.parametrize("playbook", ["deploy_trunk", "rollback_trunk", "releases"])
def test_collection_playbooks_pass_syntax_check(
    collections: Path, project: Path, playbook: str
) -> None:
    proc = subprocess.run(
        ["ansible-playbook", "--syntax-check", "-i", "inventory", f"siporch.trunks.{playbook}"],
        cwd=project, env=_env(collections), capture_output=True, text=True, timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"/ansible_collections/siporch/trunks/playbooks/{playbook}.yml" in proc.stdout


def test_collection_deploy_renders_then_handles_unreachable_hosts(
    collections: Path, project: Path
) -> None:
    """The whole deploy playbook from the collection, from a project with no ansible.cfg:
    it renders the release beside the inventory (the siporch command), takes the lock, and
    loads the siporch_release role and the siporch_linear strategy from the collection;
    every host is a loopback port nothing listens on, so each one fails its read with its
    rescue, and the report names each host as unreachable."""
    hosts = {
        "all": {
            "children": {
                "siporch_edge": {
                    "hosts": {"edge-central": None, "edge-central-2": None, "edge-branch": None}
                },
                "siporch_pbx": {"hosts": {"pbx-central": None, "pbx-central-2": None}},
            },
            "vars": {
                "ansible_host": "127.0.0.1",
                "ansible_port": 9,
                "siporch_management_address": "127.0.0.1",
            },
        }
    }
    (project / "inventory" / "hosts.yml").write_text(yaml.safe_dump(hosts))
    report = project / "report.json"
    variables = {
        "siporch_command": [sys.executable, "-m", "siporch"],
        "siporch_report_file": str(report),
        "siporch_deploy_lock": str(project / "deploy.lock"),
    }
    env = _env(collections)
    env.update(PYTHONPATH=str(REPO), ANSIBLE_SSH_RETRIES="0")
    proc = subprocess.run(
        ["ansible-playbook", "siporch.trunks.deploy_trunk", "-i", "inventory", "--check",
         "--vault-password-file", ".vault-pass", "-e", json.dumps(variables)],
        cwd=project, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "Record that the host could not be read" in out, out  # the rescue ran
    releases = list((project / "build" / "releases").iterdir())
    assert len(releases) == 1 and (releases[0] / "manifest.json").is_file(), out
    data = json.loads(report.read_text())
    assert data["check_mode"] is True
    assert {h["host"] for h in data["hosts"]} == {
        "edge-central",
        "edge-central-2",
        "edge-branch",
        "pbx-central",
        "pbx-central-2",
    }
    for h in data["hosts"]:
        assert h["failure"]["reason"].startswith("unreachable"), h


def test_collection_filters_work_by_fqcn_without_siporch(collections: Path, project: Path) -> None:
    """Collection roles resolve filters only by FQCN: the copies call them so, and the filter
    plugin imports nothing of siporch (Ansible's Python may not have it)."""
    root = collections / "ansible_collections" / "siporch" / "trunks"
    names = collection.filter_names()
    short = re.compile(r"\|\s*(" + "|".join(names) + r")\b")
    for path in (root / "roles").rglob("*.yml"):
        assert not short.search(path.read_text()), path
    assert not (root / "roles" / "siporch_release" / "filter_plugins").exists()
    for path in (root / "plugins").rglob("*.py"):
        assert not re.search(r"^\s*(from|import) siporch\b", path.read_text(), re.M), path
    old = {"files": {"kamailio/kamailio.cfg": {"sha256": "a", "reload": "kamailio:restart"},
                     "asterisk/pjsip.conf": {"sha256": "b", "reload": "asterisk:pjsip reload"}}}
    new = {"files": {"kamailio/kamailio.cfg": {"sha256": "a", "reload": "kamailio:restart"},
                     "asterisk/pjsip.conf": {"sha256": "c", "reload": "asterisk:pjsip reload"}}}
    play = [{
        "hosts": "localhost", "gather_facts": False,
        "vars": {"old": old, "new": new},
        "tasks": [{"ansible.builtin.copy": {"dest": str(project / "out.json"), "mode": "0644",
                   "content": (
            "{{ {'daemons': new | siporch.trunks.siporch_daemons,"
            " 'reloads': new | siporch.trunks.siporch_reload_actions(old),"
            " 'changed': new | siporch.trunks.siporch_changed_files(old)} | to_json }}"
        )}}],
    }]
    (project / "play.yml").write_text(yaml.safe_dump(play))
    proc = subprocess.run(
        ["ansible-playbook", "-i", "localhost,", "-c", "local", "play.yml",
         "-e", f"ansible_python_interpreter={sys.executable}"],
        cwd=project, env=_env(collections), capture_output=True, text=True, timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    msg = json.loads((project / "out.json").read_text())
    from siporch.plan import changed_files, reload_actions

    assert msg == {
        "daemons": ["asterisk", "kamailio"],
        "reloads": reload_actions(old, new),
        "changed": changed_files(old["files"], new["files"]),
    }
    assert msg["reloads"] == ["asterisk:pjsip reload"]
