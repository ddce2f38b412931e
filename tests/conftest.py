"""Shared fixtures. ``lab``: the lab, brought up once per session for tests marked
``lab`` (root only); left up at the end unless SIPORCH_LAB_TEARDOWN=1."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
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
    # The lab's modules deploy models of their own, each from a copy of the inventory with
    # no release history: a model with other trunks (ITSP C's) numbers the trunks otherwise
    # than the one the hosts run, which a deploy refuses by default. The tests of that
    # refusal (tests/lab/test_trunk_ids_lab.py) take this away.
    os.environ.setdefault("SIPORCH_RENUMBER_TRUNKS", "1")
    yield handle
    if os.environ.get("SIPORCH_LAB_TEARDOWN") == "1":
        lab_mod.down()


#: The lab's active-standby pair: the floating address rests on the first edge (the higher
#: VRRP priority; ``nopreempt`` keeps it on the second after a failover).
PAIR_HOME, PAIR_OTHER, PAIR_VIP = "edge-central", "edge-central-2", "198.18.0.9"
_homed_modules: set[str] = set()


def _holds_vip(lab: LabHandle, edge: str) -> bool:
    proc = lab.run(edge, ["ip", "-o", "-4", "addr", "show", "dev", "eth0"])
    return f" {PAIR_VIP}/" in proc.stdout


def vip_home(lab: LabHandle, wait_s: float = 20.0) -> None:
    """The floating address back on edge-central when edge-central-2 holds it and
    edge-central runs its daemons: edge-central-2's keepalived restarts, and the address is
    awaited on edge-central (polled). A module that ends with a failover, or a stall of the
    machine that failed a keepalived check, would otherwise leave every later module with
    edge-central refusing new calls (503, standby). Nothing is done in any other state
    (no pair, the address on edge-central, edge-central's daemons down)."""
    try:
        if _holds_vip(lab, PAIR_HOME) or not _holds_vip(lab, PAIR_OTHER):
            return
        daemons = lab.run(
            PAIR_HOME, "pgrep -x kamailio >/dev/null && pgrep -x rtpengine >/dev/null"
        )
        if daemons.returncode != 0:
            return
        lab.run(PAIR_OTHER, "systemctl restart keepalived.service")
        end = time.monotonic() + wait_s
        while time.monotonic() < end and not _holds_vip(lab, PAIR_HOME):
            time.sleep(0.2)
    except (KeyError, OSError, subprocess.SubprocessError):
        return  # a lab without the pair, or a host not up: the module's own fixtures say


@pytest.fixture(autouse=True)
def _floating_address_home(request: pytest.FixtureRequest) -> None:
    """Once per module that uses the shared lab, before its first test: ``vip_home``."""
    module = request.node.nodeid.split("::", 1)[0]
    if module in _homed_modules or "lab" not in request.fixturenames:
        return
    _homed_modules.add(module)
    if request.node.get_closest_marker("lab") is None or os.geteuid() != 0:
        return
    vip_home(request.getfixturevalue("lab"))


#: The xdist group of the tests that use the shared lab (the ``lab`` fixture): one worker
#: runs them all, one after another, in collection order.
SHARED_LAB_GROUP = "shared-lab"
#: The xdist group of the other ``lab`` tests: real daemons from the lab's root filesystem
#: in private network namespaces, or on the controller's loopback with fixed ports. They
#: run one after another, beside the shared lab.
DAEMONS_GROUP = "daemons"
#: Where workers leave the group of each test for the scheduler (set by the controller).
GROUPS_ENV = "SIPORCH_TEST_GROUPS"


def uses_shared_lab(item: pytest.Item) -> bool:
    """The test asks for the ``lab`` fixture, directly or through another fixture, or its
    module drives the shared lab itself (``USES_SHARED_LAB = True``, for example the version
    matrix, which brings the lab up with other roots)."""
    module = getattr(item, "module", None)
    if getattr(module, "USES_SHARED_LAB", False):
        return True
    return "lab" in getattr(item, "fixturenames", ())


def xdist_group_of(item: pytest.Item) -> str:
    """Which group ``item`` runs in under ``--dist loadgroup``: the shared lab, the private
    daemons, or its own module (a module's tests stay together on one worker, so module
    fixtures are built once and no module runs beside itself)."""
    if item.get_closest_marker("lab") is not None:
        return SHARED_LAB_GROUP if uses_shared_lab(item) else DAEMONS_GROUP
    return item.nodeid.split("::", 1)[0]


class GroupScheduling:
    """``--dist loadgroup`` by ``xdist_group_of``: the workers write each test's group to
    a file when they collect; the controller's scheduler hands out whole groups, biggest
    first, and a worker with more than two tests pending gets no more (the worker that has
    the shared lab gets nothing else until its last tests)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @pytest.hookimpl(tryfirst=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        from xdist.scheduler import LoadScopeScheduling

        directory = self.directory

        class Scheduler(LoadScopeScheduling):  # type: ignore[misc]
            groups: dict[str, str] | None = None

            def _split_scope(self, nodeid: str) -> str:
                if self.groups is None:  # every worker has collected by now
                    self.groups = {}
                    for path in sorted(directory.glob("*.json")):
                        self.groups.update(json.loads(path.read_text()))
                return self.groups.get(nodeid) or nodeid.split("::", 1)[0]

        return Scheduler(config, log)


def pytest_configure(config: pytest.Config) -> None:
    workers = getattr(config.option, "numprocesses", None)
    if hasattr(config, "workerinput") or not workers or config.getvalue("dist") != "loadgroup":
        return
    directory = Path(tempfile.mkdtemp(prefix="siporch-test-groups-"))
    os.environ[GROUPS_ENV] = str(directory)  # the workers inherit it
    config.pluginmanager.register(GroupScheduling(directory), "siporch-test-groups")
    config.add_cleanup(lambda: shutil.rmtree(directory, ignore_errors=True))


@pytest.hookimpl(tryfirst=True)  # before -m reads the marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that take the lab (or a host's daemons) down and up again run last, so they
    never pull the lab away from tests, or session fixtures, that use it. Such tests set
    ``lab_restarts = True`` on their function (see ``restarts_lab`` in tests/lab).

    Every ``lab`` test that uses the shared lab is also marked ``shared_lab``. An xdist
    worker (``-n N --dist loadgroup``, as scripts/test runs) writes each test's group
    (``xdist_group_of``) for the scheduler: the shared lab's tests all run on one worker,
    in this order, beside the rest."""
    items.sort(
        key=lambda item: bool(getattr(getattr(item, "function", None), "lab_restarts", False))
    )
    for item in items:
        if item.get_closest_marker("lab") is not None and uses_shared_lab(item):
            item.add_marker(pytest.mark.shared_lab)
    directory = os.environ.get(GROUPS_ENV)
    workerinput = getattr(config, "workerinput", None)
    if directory and workerinput is not None:
        groups = {item.nodeid: xdist_group_of(item) for item in items}
        path = Path(directory) / f"{workerinput['workerid']}.json"
        path.write_text(json.dumps(groups))
