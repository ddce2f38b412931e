"""The lab itself, for real: namespaces, overlays, sshd, Ansible over SSH, faults,
teardown. Needs root; every test here uses the session ``lab`` fixture."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from siporch.lab import hosts as hostfs
from siporch.lab import lab as lab_mod
from siporch.lab import procs, topology
from siporch.lab.spec import BRIDGE, HOSTS, LabPaths

pytestmark = pytest.mark.lab
F = TypeVar("F", bound=Callable[..., Any])

SIPORCH = [sys.executable, "-m", "siporch"]


def restarts_lab(fn: F) -> F:
    """Marks a test that takes the lab down and up: tests/conftest.py runs it last."""
    fn.lab_restarts = True  # type: ignore[attr-defined]
    return fn


def siporch(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SIPORCH, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def ping(lab, src: str, dst: str, count: int = 3, interval: float = 0.2, wait: float = 2):  # type: ignore[no-untyped-def]
    """(received, average rtt ms or None) of ``count`` pings from src to dst's address."""
    proc = lab.run(
        src,
        [
            "ping",
            "-n",
            "-q",
            "-c",
            str(count),
            "-i",
            str(interval),
            "-W",
            str(wait),
            lab.address(dst),
        ],
        timeout=count * (interval + wait) + 10,
    )
    received = re.search(r"(\d+) received", proc.stdout)
    rtt = re.search(r"= [\d.]+/([\d.]+)/", proc.stdout)
    assert received, proc.stdout + proc.stderr
    return int(received.group(1)), (float(rtt.group(1)) if rtt else None)


def test_every_host_is_up_with_its_own_namespace_root_and_name(lab) -> None:  # type: ignore[no-untyped-def]
    st = lab_mod.status()
    assert st.up, [h.problem() for h in st.hosts if not h.ok]
    assert sorted(lab.hosts) == sorted(h.name for h in HOSTS)
    for host in lab.hosts:
        proc = lab.run(host, "hostname; ip -4 -o addr show dev eth0", check=True)
        name, *addrs = proc.stdout.splitlines()
        assert name == host
        assert f"{lab.address(host)}/15" in "\n".join(addrs)
        # Its root is its own overlay: a file written there is not seen by another host.
        marker = lab.root(host) / "tmp" / "siporch-lab-identity"
        marker.write_text(host)
    for host in lab.hosts:
        seen = lab.run(host, "cat /tmp/siporch-lab-identity", check=True).stdout
        assert seen == host


def test_ansible_reaches_every_host_over_ssh(lab) -> None:  # type: ignore[no-untyped-def]
    proc = subprocess.run(
        ["ansible", "-i", str(lab.inventory), "all", "-m", "ansible.builtin.ping"],
        capture_output=True,
        text=True,
        timeout=120,
        env=lab.ansible_env,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for host in lab.hosts:
        assert re.search(rf"^{re.escape(host)} \| SUCCESS", proc.stdout, re.M), proc.stdout


def test_ansible_facts_come_from_the_lab_host(lab) -> None:  # type: ignore[no-untyped-def]
    proc = subprocess.run(
        [
            "ansible",
            "-i",
            str(lab.inventory),
            "pbx-central",
            "-m",
            "ansible.builtin.setup",
            "-a",
            "filter=ansible_hostname,ansible_default_ipv4,ansible_all_ipv4_addresses",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=lab.ansible_env,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The default callback prints JSON or YAML depending on configuration: YAML reads both.
    facts = yaml.safe_load(proc.stdout.split("=>", 1)[1])["ansible_facts"]
    assert facts["ansible_hostname"] == "pbx-central"
    assert facts["ansible_all_ipv4_addresses"] == [lab.address("pbx-central")]


def test_shell_runs_a_command_inside_a_host(lab) -> None:  # type: ignore[no-untyped-def]
    proc = siporch("lab", "shell", "pbx-central", "--", "asterisk", "-V")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Asterisk 2")
    proc = siporch("lab", "shell", "edge-central", "--", "sh", "-c", "exit 7")
    assert proc.returncode == 7


def test_impair_delay_adds_latency_both_ways_and_clears(lab) -> None:  # type: ignore[no-untyped-def]
    received, base = ping(lab, "edge-central", "pbx-central")
    assert received == 3 and base is not None and base < 50
    proc = siporch("lab", "impair", "edge-central", "pbx-central", "--delay", "200ms")
    assert proc.returncode == 0, proc.stderr
    try:
        received, rtt = ping(lab, "edge-central", "pbx-central", wait=3)
        assert received == 3
        assert rtt is not None and 390 <= rtt < 600, rtt  # 200 ms each way
        # Other pairs are untouched.
        received, other = ping(lab, "edge-central", "itsp-a1")
        assert received == 3 and other is not None and other < 50
        st = siporch("lab", "status", "--json")
        assert any("delay 200 ms" in i for i in json.loads(st.stdout)["impairments"])
    finally:
        proc = siporch("lab", "impair", "edge-central", "pbx-central", "--clear")
    assert proc.returncode == 0, proc.stderr
    received, rtt = ping(lab, "edge-central", "pbx-central")
    assert received == 3 and rtt is not None and rtt < 50


def test_impair_partition_cuts_only_that_pair(lab) -> None:  # type: ignore[no-untyped-def]
    proc = siporch("lab", "impair", "edge-central", "itsp-a1", "--partition")
    assert proc.returncode == 0, proc.stderr
    try:
        assert ping(lab, "edge-central", "itsp-a1", wait=1)[0] == 0
        assert ping(lab, "itsp-a1", "edge-central", wait=1)[0] == 0
        assert ping(lab, "edge-central", "itsp-a2")[0] == 3
        # The second address of itsp-a1 (ITSP A's origination address) is cut too.
        probe = lab.run("edge-central", "ping -n -q -c 2 -i 0.2 -W 1 198.18.1.20")
        assert " 0 received" in probe.stdout
        # Silent, as a real partition: the sender's send succeeds, the packet never arrives.
        send = lab.run(
            "edge-central",
            "python3 -c \"import socket; socket.socket(2, 2).sendto(b'x', ('198.18.1.10', 9))\"",
        )
        assert send.returncode == 0, send.stderr
    finally:
        proc = siporch("lab", "impair", "--clear")
    assert proc.returncode == 0, proc.stderr
    assert ping(lab, "edge-central", "itsp-a1")[0] == 3


def test_impair_loss_drops_a_share(lab) -> None:  # type: ignore[no-untyped-def]
    proc = siporch("lab", "impair", "pbx-central", "pstn-gw", "--loss", "50%", "--one-way")
    assert proc.returncode == 0, proc.stderr
    try:
        received, _ = ping(lab, "pbx-central", "pstn-gw", count=60, interval=0.02, wait=1)
    finally:
        siporch("lab", "impair", "pbx-central", "pstn-gw", "--clear")
    # Binomial(60, 0.5): outside [10, 50] has a probability below 1e-6.
    assert 10 <= received <= 50, received
    assert ping(lab, "pbx-central", "pstn-gw")[0] == 3


def test_status_reports_a_killed_sshd_and_up_repairs_it(lab) -> None:  # type: ignore[no-untyped-def]
    pid_file = lab.root("itsp-branch") / "run" / "sshd.pid"
    pid = int(pid_file.read_text())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}/root").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc = siporch("lab", "status", "--json")
    assert proc.returncode == 1
    hosts = json.loads(proc.stdout)["hosts"]
    assert not hosts["itsp-branch"]["ok"]
    assert "sshd not running" in hosts["itsp-branch"]["problem"]
    assert all(h["ok"] for name, h in hosts.items() if name != "itsp-branch")
    text = siporch("lab", "status")
    assert "itsp-branch" in text.stdout and "sshd not running" in text.stdout
    proc = siporch("lab", "up")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "restarted sshd on: itsp-branch" in proc.stdout
    assert lab_mod.status().up


def _snapshot() -> dict[str, set[str]]:
    """What of the machine the lab could touch: namespaces, mounts, links, routes."""
    ns = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    mounts = set(hostfs.mount_points())
    links = set(
        subprocess.run(
            ["ip", "-o", "link", "show"], capture_output=True, text=True, check=True
        ).stdout.split("\n")
    )
    links = {re.sub(r"^\d+: ", "", line).split(":")[0].split("@")[0] for line in links if line}
    routes = set(
        subprocess.run(
            ["ip", "route", "show", "table", "all"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
    )
    return {"netns": ns, "mounts": mounts, "links": links, "routes": routes}


def _lab_processes() -> list[str]:
    found = lab_mod.lab_processes(LabPaths.default())
    return sorted(f"{h}:{p.comm}" for h, ps in found.items() for p in ps)


@restarts_lab
def test_up_down_up_leaves_no_leftovers_and_cleans_a_half_built_lab(lab) -> None:  # type: ignore[no-untyped-def]
    paths = LabPaths.default()
    before_up = _snapshot()
    before_procs = [p for p in _lab_processes() if p.endswith(":sshd")]
    assert len(before_procs) >= len(HOSTS)
    # Something a crashed run could leave: an unknown lab namespace with a process in it.
    ghost = subprocess.run(["ip", "netns", "add", "sipo-ghost"], check=False)
    assert ghost.returncode == 0
    sleeper = subprocess.Popen(
        ["ip", "netns", "exec", "sipo-ghost", "sleep", "300"], start_new_session=True
    )
    try:
        # A daemon started inside a host after `lab up`, as a deploy would.
        lab.run("itsp-a2", "setsid sleep 300 >/dev/null 2>&1 < /dev/null &", check=True)
        # An impairment, with its delay processes.
        proc = siporch("lab", "impair", "itsp-a2", "itsp-b", "--delay", "10ms")
        assert proc.returncode == 0, proc.stderr
        delayers = [int(p.read_text()) for p in paths.impair_dir.glob("*.pid")]
        assert len(delayers) == 2 and all(Path(f"/proc/{pid}").exists() for pid in delayers)
        proc = siporch("lab", "down")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert sleeper.wait(timeout=10) != 0  # killed by `lab down`
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
        subprocess.run(["ip", "netns", "del", "sipo-ghost"], capture_output=True, check=False)
    down = _snapshot()
    assert not [pid for pid in delayers if procs.is_alive(pid)]  # exited (a zombie at most)
    left = lab_mod.leftovers(paths)
    assert left == {"namespaces": [], "links": [], "mounts": [], "processes": []}, left
    assert not [n for n in down["netns"] if n.startswith("sipo-")]
    assert BRIDGE not in down["links"]
    assert not [m for m in down["mounts"] if m.startswith(str(paths.state))]
    # Nothing outside the lab changed: same other links, mounts, namespaces and routes.
    lab_links = {BRIDGE, *(h.veth for h in HOSTS)}
    assert down["links"] == before_up["links"] - lab_links
    assert down["netns"] == {n for n in before_up["netns"] if not n.startswith("sipo-")}
    assert down["mounts"] == {
        m
        for m in before_up["mounts"]
        if not m.startswith((str(paths.state) + "/", "/run/netns/sipo-"))
    }
    other_routes = {
        r for r in before_up["routes"] if not any(f"dev {link}" in r for link in lab_links)
    }
    assert down["routes"] == other_routes
    # Down again: idempotent.
    again = siporch("lab", "down")
    assert again.returncode == 0 and "nothing to remove" in again.stdout
    proc = siporch("lab", "up")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    after_up = _snapshot()
    assert after_up["netns"] == before_up["netns"]
    assert after_up["links"] == before_up["links"]
    assert after_up["mounts"] == before_up["mounts"]

    # IPv6 routes on lab links come and go with link-local autoconfiguration (random
    # addresses, assigned after the link is up): compare every other route exactly.
    def shape(routes: set[str]) -> list[str]:
        return sorted(
            r for r in routes if not (":" in r and any(f"dev {link} " in r for link in lab_links))
        )

    assert shape(after_up["routes"]) == shape(before_up["routes"])
    after_procs = [p for p in _lab_processes() if p.endswith(":sshd")]
    assert sorted(set(after_procs)) == sorted(set(before_procs))
    assert topology.lab_namespaces() == sorted(h.netns for h in HOSTS)


@restarts_lab
def test_a_host_that_fails_to_start_is_named_with_its_reason_and_down_cleans_up(lab) -> None:  # type: ignore[no-untyped-def]
    paths = LabPaths.default()
    proc = siporch("lab", "down", "--keep-state")
    assert proc.returncode == 0, proc.stderr
    # A broken sshd configuration left in one host's overlay layer.
    conf = paths.host_dir("itsp-a2") / "upper" / "etc" / "ssh" / "sshd_config"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("ThisIsNotAnOption yes\n")
    try:
        proc = siporch("lab", "up", "--json")
        assert proc.returncode == 1, proc.stdout + proc.stderr
        hosts = json.loads(proc.stdout)["hosts"]
        assert not hosts["itsp-a2"]["ok"]
        assert "ThisIsNotAnOption" in hosts["itsp-a2"]["problem"], hosts["itsp-a2"]
        assert all(h["ok"] for name, h in hosts.items() if name != "itsp-a2")
        status = json.loads(siporch("lab", "status", "--json").stdout)
        assert "ThisIsNotAnOption" in status["hosts"]["itsp-a2"]["problem"]
        text = siporch("lab", "status")
        assert text.returncode == 1 and "itsp-a2" in text.stdout
    finally:
        proc = siporch("lab", "down")
    assert proc.returncode == 0, proc.stderr
    assert lab_mod.leftovers(paths) == {
        "namespaces": [],
        "links": [],
        "mounts": [],
        "processes": [],
    }
    assert not paths.host_dir("itsp-a2").exists()
    proc = siporch("lab", "up")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert lab_mod.status().up
