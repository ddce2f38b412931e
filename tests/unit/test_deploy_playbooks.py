"""The playbooks parse, and a bad model stops a deploy before any host is contacted."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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


UNREACHABLE_PLAYBOOK = """
- name: Deploy host by host
  hosts: all
  gather_facts: false
  serial: 1
  max_fail_percentage: 0
  strategy: siporch_linear
  tasks:
    - name: Deploy
      block:
        - name: Reach the host
          ansible.builtin.ping:
      rescue:
        - name: Record the failure
          ansible.builtin.set_fact:
            failure: "{{ ansible_failed_result.unreachable | default(false) }}"

- name: Roll back
  hosts: all
  gather_facts: false
  tasks:
    - name: Report
      ansible.builtin.debug:
        msg: "{{ inventory_hostname }} unreachable={{ failure | default('no') }}"
"""


def test_an_unreachable_host_runs_its_rescue_and_the_playbook_goes_on(tmp_path: Path) -> None:
    """With siporch_linear, a host nothing answers for (a loopback port nobody listens on)
    fails its task: its rescue runs and the later plays run for every host. With Ansible's
    linear strategy the serial batch of that host alone would end the playbook."""
    inv = tmp_path / "hosts.yml"
    inv.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "hosts": {
                        "first": {"ansible_connection": "local"},
                        "gone": {"ansible_host": "127.0.0.1", "ansible_port": 9},
                        "last": {"ansible_connection": "local"},
                    },
                    "vars": {"ansible_python_interpreter": sys.executable},
                }
            }
        )
    )
    playbook = tmp_path / "play.yml"
    playbook.write_text(UNREACHABLE_PLAYBOOK)
    env = _env()
    env["ANSIBLE_SSH_RETRIES"] = "0"
    proc = subprocess.run(
        ["ansible-playbook", "-i", str(inv), str(playbook)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "gone unreachable=True" in out
    assert "first unreachable=no" in out and "last unreachable=no" in out
    linear = playbook.read_text().replace("strategy: siporch_linear", "strategy: linear")
    playbook.write_text(linear)
    proc = subprocess.run(
        ["ansible-playbook", "-i", str(inv), str(playbook)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "PLAY [Roll back]" not in out  # what siporch_linear is for


ROLES = (
    "asterisk_pbx",
    "keepalived_vip",
    "kamailio_edge",
    "rtpengine_media",
    "siporch_release",
)


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_are_written_once_per_role(role: str) -> None:
    """Every entry point of a role takes the same variables: they are written once (the
    YAML anchor ``&options``) and every other entry point refers to them."""
    path = REPO / "roles" / role / "meta" / "argument_specs.yml"
    text = path.read_text()
    specs = yaml.safe_load(text)["argument_specs"]
    assert text.count("options: &options") == 1
    assert text.count("options: *options") == len(specs) - 1
    options = specs["main"]["options"]
    assert all(spec["options"] == options for spec in specs.values())
    assert all(o.get("description") for o in options.values()), path
    tasks = {p.stem for p in (REPO / "roles" / role / "tasks").glob("*.yml")}
    assert set(specs) <= tasks, "an entry point without its tasks file"


@pytest.mark.parametrize(
    ("role", "entry", "variable"),
    [
        ("siporch_release", "discover", "siporch_release_keep"),
        ("kamailio_edge", "health", "kamailio_edge_install_packages"),
    ],
)
def test_an_entry_point_validates_the_shared_options(
    role: str, entry: str, variable: str, tmp_path: Path
) -> None:
    """Ansible resolves the alias: an entry point other than main refuses a wrong type."""
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "hosts": "localhost",
                    "gather_facts": False,
                    "connection": "local",
                    "tasks": [
                        {
                            "name": "Include with a wrong argument",
                            "ansible.builtin.include_role": {"name": role, "tasks_from": entry},
                            "vars": {variable: [1, 2]},
                        }
                    ],
                }
            ]
        )
    )
    proc = subprocess.run(
        ["ansible-playbook", "-i", "localhost,", str(playbook)],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"Validating arguments against arg spec '{entry}'" in out, out
    assert "Validation of arguments failed" in out and variable in out, out


def test_every_handler_is_notified() -> None:
    notified: set[tuple[str, str]] = set()
    for role in ROLES:
        for path in (REPO / "roles" / role / "tasks").glob("*.yml"):
            for line in path.read_text().splitlines():
                if line.strip().startswith("notify:"):
                    notified.add((role, line.split(":", 1)[1].strip()))
    for role in ROLES:
        path = REPO / "roles" / role / "handlers" / "main.yml"
        for handler in yaml.safe_load(path.read_text()) if path.exists() else []:
            assert (role, handler["name"]) in notified, (
                f"{path}: {handler['name']} is never notified"
            )


def test_the_pair_gate_needs_the_models_pair(tmp_path: Path) -> None:
    """keepalived_vip's pair gate (health.yml, and quick.yml's in the one call) is left out
    when the model names no pair at the edge's site: the rollback after a failed deploy of
    a model without the pair ran it with the new model and failed on ``edges`` undefined."""
    exprs = set()
    for name in ("health.yml", "quick.yml"):
        tasks = yaml.safe_load((REPO / "roles" / "keepalived_vip" / "tasks" / name).read_text())
        exprs |= {t["vars"]["__pair"] for t in tasks if "__pair" in t.get("vars", {})}
    assert len(exprs) == 1, "health.yml and quick.yml name the pair alike"
    expr = exprs.pop()
    pair = {"hosts": ["localhost", "e2"], "redis": {"address": "10.0.0.9"}}
    models = {
        "pair": {
            "hosts": {"localhost": {"site": "c"}, "e2": {"site": "c", "address": "10.0.0.2"}},
            "sites": {"c": {"edges": pair}},
        },
        "no-pair": {"hosts": {"localhost": {"site": "c"}}, "sites": {"c": {}}},
        "pair-none": {"hosts": {"localhost": {"site": "c"}}, "sites": {"c": {"edges": None}}},
        "host-not-in-model": {"hosts": {}, "sites": {"c": {"edges": pair}}},
    }
    plays = [
        {
            "hosts": "localhost",
            "gather_facts": False,
            "connection": "local",
            "vars": {"siporch": model},
            "tasks": [
                {
                    "name": case,
                    "vars": {
                        "__pair": expr,
                        "__peers": "{{ __pair.hosts | reject('equalto', inventory_hostname)"
                        " | map('extract', siporch.hosts) | map(attribute='address') | list }}",
                    },
                    "ansible.builtin.debug": {
                        "msg": "{{ ('gate ' ~ (__peers | join(','))) if __pair is mapping"
                        " else 'no gate' }}"
                    },
                }
            ],
        }
        for case, model in models.items()
    ]
    playbook = tmp_path / "pb.yml"
    playbook.write_text(yaml.safe_dump(plays))
    proc = subprocess.run(
        ["ansible-playbook", "-i", "localhost,", str(playbook)],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the project's callback prints "msg: ..." (ansible.cfg), the default one '"msg": "..."'
    msgs = [
        line.strip().split("msg", 1)[1].lstrip('": ').rstrip('"')
        for line in proc.stdout.splitlines()
        if line.strip().startswith(("msg:", '"msg":'))
    ]
    assert msgs == ["gate 10.0.0.2", "no gate", "no gate", "no gate"], proc.stdout
