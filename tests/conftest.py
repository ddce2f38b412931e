"""Shared fixtures. ``lab``: the lab, brought up once per session for tests marked
``lab`` (root only); left up at the end unless SIPORCH_LAB_TEARDOWN=1."""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "inventory" / "example"
LAB_INVENTORY = REPO / "inventory" / "lab"


@dataclass
class LabHandle:
    """What tests need of the running lab."""

    inventory: Path
    info: dict[str, Any]

    @property
    def hosts(self) -> list[str]:
        return list(self.info["hosts"])

    def address(self, host: str) -> str:
        address: str = self.info["hosts"][host]["address"]
        return address

    def root(self, host: str) -> Path:
        """The host's root as seen from the controller (its overlay's merged view)."""
        return Path(self.info["hosts"][host]["root"])

    def netns(self, host: str) -> str:
        netns: str = self.info["hosts"][host]["netns"]
        return netns

    def run(
        self, host: str, cmd: str | Sequence[str], timeout: float = 60.0, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` (a shell string or an argv) inside ``host``."""
        from siporch.lab import lab as lab_mod

        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        proc: subprocess.CompletedProcess[str] = lab_mod.run(host, argv, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{host}: {shlex.join(argv)} exited {proc.returncode}\n{proc.stdout}{proc.stderr}"
            )
        return proc

    @property
    def ansible_env(self) -> dict[str, str]:
        """Environment for ansible commands against the lab inventory."""
        env = dict(os.environ)
        vault_pass = self.inventory.parent / ".vault-pass"
        if vault_pass.exists():
            env.setdefault("ANSIBLE_VAULT_PASSWORD_FILE", str(vault_pass))
        env.setdefault("ANSIBLE_DEPRECATION_WARNINGS", "False")
        return env


@pytest.fixture(scope="session")
def lab() -> Iterator[LabHandle]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces, mounts, chroot); run as root")
    from siporch.lab import lab as lab_mod
    from siporch.lab.inventory import read_lab_json

    result = lab_mod.up(EXAMPLE, LAB_INVENTORY)
    if not result.ok:
        problems = "; ".join(f"{h.name}: {h.problem()}" for h in result.hosts if not h.ok)
        pytest.fail(f"the lab did not come up: {problems}")
    # A lab brought up before the lab PBX had its own dialplan gets it now (lab up writes it
    # when it starts a host; it keeps the file once written).
    from siporch.lab.hosts import install_site_dialplan
    from siporch.lab.spec import HOSTS, LabPaths

    paths = LabPaths.default()
    for host in HOSTS:
        if host.role == "pbx" and (paths.host_root(host.name) / "etc").is_dir():
            install_site_dialplan(paths.host_root(host.name))
    handle = LabHandle(LAB_INVENTORY, read_lab_json(LAB_INVENTORY / "lab.json"))
    yield handle
    if os.environ.get("SIPORCH_LAB_TEARDOWN") == "1":
        lab_mod.down()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that take the lab (or a host's daemons) down and up again run last, so they
    never pull the lab away from tests, or session fixtures, that use it. Such tests set
    ``lab_restarts = True`` on their function (see ``restarts_lab`` in tests/lab)."""
    items.sort(
        key=lambda item: bool(getattr(getattr(item, "function", None), "lab_restarts", False))
    )
