"""How siporch reaches a host by itself (`siporch.hosts`): the ssh settings Ansible would
use (inventory variables, the project's ansible.cfg) and become for root-only reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
from siporch.hosts import host_access
inv = sys.argv[1:]
out = {}
for host in ("edge", "pbx", "rooted"):
    a = host_access([__import__("pathlib").Path(p) for p in inv], host, "192.0.2.99", 3)
    out[host] = {"ssh": a.ssh, "become": a.become, "root": a.argv("id", root=True)}
print(json.dumps(out))
"""


def _project(tmp_path: Path, cfg: str) -> Path:
    root = tmp_path / "project"
    root.mkdir(mode=0o755)
    (root / "edges.ini").write_text(
        "[siporch_edge]\nedge ansible_host=192.0.2.10\n"
        "rooted ansible_host=192.0.2.12 ansible_user=root\n"
    )
    (root / "pbx.ini").write_text(
        "[siporch_pbx]\npbx ansible_host=192.0.2.11 ansible_port=2222\n"
        "[siporch_pbx:vars]\n"
        "ansible_ssh_common_args='-o ProxyJump=jump@192.0.2.1'\n"
        "ansible_become_user=admin\n"
    )
    (root / "ansible.cfg").write_text(cfg)
    return root


def _probe(root: Path, *inventories: str) -> dict[str, dict[str, list[str]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["PYTHONPATH"] = str(REPO)
    env["HOME"] = str(root)
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *inventories], cwd=root, env=env,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    data: dict[str, dict[str, list[str]]] = json.loads(proc.stdout)
    return data


CFG = """[defaults]
remote_user = ops
private_key_file = ~/keys/ops_ed25519
host_key_checking = False
[privilege_escalation]
become = True
[ssh_connection]
ssh_args = -o ServerAliveInterval=7
"""


def test_the_projects_ansible_cfg_and_inventory_settings_are_used(tmp_path: Path) -> None:
    root = _project(tmp_path, CFG)
    out = _probe(root, "edges.ini", "pbx.ini")
    edge, pbx, rooted = out["edge"]["ssh"], out["pbx"]["ssh"], out["rooted"]["ssh"]
    # ansible.cfg: remote user, key, ssh_args, host key checking
    assert "User=ops" in edge and f"IdentityFile={root}/keys/ops_ed25519" in edge
    assert edge[1:3] == ["-o", "ServerAliveInterval=7"]
    assert "StrictHostKeyChecking=no" in edge
    assert edge[-1] == "192.0.2.10"
    # the inventory's own: port, jump host (from the second -i source), become user
    assert "Port=2222" in pbx and "ProxyJump=jump@192.0.2.1" in pbx and pbx[-1] == "192.0.2.11"
    assert out["pbx"]["become"] == ["sudo", "-n", "-u", "admin", "--"]
    # siporch's own options come after the user's (ssh keeps the first value)
    assert pbx.index("ProxyJump=jump@192.0.2.1") < pbx.index("BatchMode=yes")
    # become (ansible.cfg): root-only reads go through sudo -n; a root login needs none
    assert out["edge"]["root"][-1] == "sudo -n -u root -- sh -c id"
    assert "User=root" in rooted and out["rooted"]["become"] == []
    assert out["rooted"]["root"][-1] == "id"


def test_without_become_nothing_is_wrapped(tmp_path: Path) -> None:
    root = _project(tmp_path, CFG.replace("become = True", "become = False"))
    out = _probe(root, "edges.ini", "pbx.ini")
    assert out["edge"]["become"] == [] and out["edge"]["root"][-1] == "id"


def test_a_host_missing_from_the_inventory_is_named(tmp_path: Path) -> None:
    from siporch.errors import SiporchError
    from siporch.hosts import host_access

    root = _project(tmp_path, CFG)
    with pytest.raises(SiporchError, match="nowhere: not in the inventory"):
        host_access([root / "edges.ini"], "nowhere", "192.0.2.1", 3)
