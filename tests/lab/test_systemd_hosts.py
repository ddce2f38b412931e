"""systemd lab hosts, for real: the edges and the PBX boot systemd as PID 1 in their own
namespaces, the deploy drives the packaged units through siporch's drop-ins, `lab down`
halts them, and `--init none` brings back hosts without init. Needs root and the lab."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import callkit as ck
import pytest
import yaml

from siporch.lab import hosts as hostfs
from siporch.lab import lab as lab_mod
from siporch.lab import systemd
from siporch.lab.spec import HOSTS, LabPaths

pytestmark = pytest.mark.lab

SYSTEMD_HOSTS = ("edge-central", "edge-central-2", "edge-branch", "pbx-central", "pbx-central-2")
UNITS = {
    "edge-central": ("kamailio.service", "rtpengine-daemon.service"),
    "edge-central-2": ("kamailio.service", "rtpengine-daemon.service"),
    "edge-branch": ("kamailio.service", "rtpengine-daemon.service"),
    "pbx-central": ("asterisk.service",),
    "pbx-central-2": ("asterisk.service",),
}


def _siporch(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "siporch", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _need_systemd_lab(lab: Any) -> None:
    if lab_mod.lab_init(LabPaths.default()) != "systemd":
        pytest.skip("the lab runs without init (SIPORCH_LAB_INIT=none)")


def test_edges_and_pbx_boot_systemd_in_their_own_namespaces(lab: Any) -> None:
    _need_systemd_lab(lab)
    info = json.loads((lab.inventory / "lab.json").read_text())["siporch_lab"]["hosts"]
    for host in SYSTEMD_HOSTS:
        assert info[host]["lab_init"] == "systemd"
        state = lab.run(host, ["systemctl", "is-system-running"]).stdout.strip()
        assert state in ("running", "degraded"), (host, state)
        if state == "degraded":  # say which unit, so a regression is easy to find
            failed = lab.run(host, ["systemctl", "--failed", "--no-legend"]).stdout
            pytest.fail(f"{host}: degraded: {failed}")
        # PID 1 is systemd and the host sees only its own processes.
        ps = lab.run(host, ["ps", "-e", "-o", "pid=,comm="], check=True).stdout.split("\n")
        procs = dict(line.split(None, 1) for line in ps if line.strip())
        assert procs["1"] == "systemd", procs
        assert "sshd" in procs.values()
        assert len(procs) < 120, procs  # not the machine's process table
        assert lab.run(host, "hostname", check=True).stdout.strip() == host
        # sshd is the packaged unit; what must not run does not.
        assert lab.run(host, ["systemctl", "is-active", "ssh.service"]).stdout.strip() == "active"
        for unit in ("systemd-networkd.service", "systemd-timesyncd.service", "getty@tty1.service"):
            active = lab.run(host, ["systemctl", "is-active", unit]).stdout.strip()
            assert active in ("inactive", "unknown"), (host, unit, active)
        # The namespace's network is the lab's: eth0 with the lab address, nothing else.
        addrs = lab.run(host, "ip -4 -o addr show", check=True).stdout
        assert f"{lab.address(host)}/15" in addrs
        assert {line.split()[1] for line in addrs.splitlines()} == {"lo", "eth0"}
        # The kernel settings of the machine are out of reach; the namespace's are not.
        ro = lab.run(host, "echo 1 > /proc/sys/kernel/printk_ratelimit")
        assert ro.returncode != 0 and "Read-only" in ro.stderr
        rw = lab.run(host, "cat /proc/sys/net/ipv4/ip_forward > /proc/sys/net/ipv4/ip_forward")
        assert rw.returncode == 0, rw.stderr
    for host in (h.name for h in HOSTS if h.name not in SYSTEMD_HOSTS):
        assert info[host]["lab_init"] == "none"
        assert lab.run(host, "test -d /run/systemd/system").returncode != 0


def test_deploy_enables_and_starts_the_packaged_units_with_the_drop_ins(
    lab: Any, tmp_path: Path
) -> None:
    _need_systemd_lab(lab)
    hosts = yaml.safe_load((lab.inventory / "hosts.yml").read_text())["all"]["children"]
    for group in ("siporch_edge", "siporch_pbx"):
        for name, hvars in hosts[group]["hosts"].items():
            assert hvars["siporch_process_manager"] == "systemd", name
    kit = ck.Lab(lab)
    with ck.deploy_lock(600):
        ck.ensure_deployed(kit, lab.inventory, SYSTEMD_HOSTS)
        for host, units in UNITS.items():
            for unit in units:
                show = lab.run(
                    host,
                    ["systemctl", "show", unit, "-p", "ActiveState,UnitFileState,DropInPaths,ExecStart,MainPID"],
                    check=True,
                ).stdout  # fmt: skip
                props = dict(line.split("=", 1) for line in show.splitlines() if "=" in line)
                assert props["ActiveState"] == "active", (host, unit, props)
                assert props["UnitFileState"] == "enabled", (host, unit, props)
                if unit == "asterisk.service":
                    # a shared PBX: the packaged unit runs the site's /etc/asterisk, which
                    # includes siporch's files from the current release; no drop-in
                    assert "siporch" not in props["DropInPaths"], props["DropInPaths"]
                    continue
                assert f"/etc/systemd/system/{unit}.d/siporch.conf" in props["DropInPaths"]
                assert "/etc/siporch/current/" in props["ExecStart"], props["ExecStart"]
            # The roles' pid files name the units' main processes.
            pidfile = {
                "kamailio.service": "/run/kamailio/kamailio.pid",
                "rtpengine-daemon.service": "/run/rtpengine/rtpengine.pid",
                "asterisk.service": "/run/asterisk/asterisk.pid",
            }
            for unit in units:
                main = lab.run(host, ["systemctl", "show", unit, "-p", "MainPID", "--value"])
                from_file = lab.run(host, ["cat", pidfile[unit]], check=True).stdout.strip()
                assert main.stdout.strip() == from_file, (host, unit)
        # Kamailio runs as its packaged user and still reads the TLS key of the edge.
        user = ck.Lab(lab).run("edge-central", "ps -o user= -p $(cat /run/kamailio/kamailio.pid)")
        assert user.strip() == "kamailio"


def _restarts(fn: Any) -> Any:
    fn.lab_restarts = True
    return fn


@_restarts
def test_down_halts_systemd_hosts_and_init_none_brings_back_hosts_without_init(
    lab: Any,
) -> None:
    paths = LabPaths.default()
    try:
        proc = _siporch("lab", "up", "--init", "none", "--json")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert json.loads(proc.stdout)["init"] == "none"
        # The systemd hosts were halted and removed: no systemd left, no cgroup left.
        base = systemd.cgroup2_mount()
        assert base is None or not (base / systemd.CGROUP_PARENT).exists()
        hosts = yaml.safe_load((lab.inventory / "hosts.yml").read_text())["all"]["children"]
        assert hosts["siporch_edge"]["hosts"]["edge-central"]["siporch_process_manager"] == "direct"
        for host in SYSTEMD_HOSTS:
            assert hostfs.init_pid(lab_mod.get_host(host), paths) is None
            assert lab.run(host, "test -d /run/systemd/system").returncode != 0
        st = lab_mod.status(paths)
        assert st.up and all(h.init == "none" for h in st.hosts)
        # Down from the no-init lab, then systemd again (the default).
        proc = _siporch("lab", "down")
        assert proc.returncode == 0, proc.stderr
    finally:
        proc = _siporch("lab", "up", "--init", "systemd", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    st = lab_mod.status(paths)
    assert st.up
    for h in st.hosts:
        assert h.init == ("systemd" if h.name in SYSTEMD_HOSTS else "none"), h
        if h.name in SYSTEMD_HOSTS:
            assert h.system in ("running", "degraded"), h
    # Halt: SIGRTMIN+3 to PID 1, the host's units stop, systemd exits; nothing is left.
    proc = _siporch("lab", "down", "--json")
    assert proc.returncode == 0, proc.stderr
    assert lab_mod.leftovers(paths) == {
        "namespaces": [],
        "links": [],
        "mounts": [],
        "processes": [],
    }
    base = systemd.cgroup2_mount()
    assert base is None or not (base / systemd.CGROUP_PARENT).exists()
    proc = _siporch("lab", "up")
    assert proc.returncode == 0, proc.stdout + proc.stderr
