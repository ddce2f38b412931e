"""The oldest supported versions at the edge: Debian 12 edges (Kamailio 5.6, rtpengine
10.5, systemd 252) in front of the sid PBX (Asterisk 22), deployed from the example and
carrying real calls.

The module brings the lab up with ``edge_root="bookworm"`` (the Debian 12 root is built
once per machine, a few minutes), deploys, places an inbound and an outbound call, and at
the end brings the normal lab (every host on sid) back up, deployable as before. Its tests
restart the lab, so they run after every other lab test of a session.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import callkit as ck
import pytest

from siporch.lab import lab as lab_mod
from siporch.lab.inventory import read_lab_json

pytestmark = [pytest.mark.lab, pytest.mark.matrix]
#: It brings the shared lab up with other roots: it runs with the shared lab's tests
#: (tests/conftest.py), never beside them.
USES_SHARED_LAB = True

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory" / "example"
LAB_INVENTORY = REPO / "inventory" / "lab"
EDGES = ("edge-central", "edge-branch")
EDGE = "198.18.0.10:5060"
EDGE_IP = "198.18.0.10"
VIP = "198.18.0.9"  # the central pair's floating address: edge-central's media address
PBX_IP = "198.18.0.20"
HQ_DID = "2025550100"  # itsp-a's national format of hq-main -> from-trunk on the PBX


class _Handle:
    """What callkit needs of the lab (as tests/conftest.py's LabHandle)."""

    def __init__(self) -> None:
        self.inventory = LAB_INVENTORY
        self.info = read_lab_json(LAB_INVENTORY / "lab.json")

    def netns(self, host: str) -> str:
        return str(self.info["hosts"][host]["netns"])

    def address(self, host: str) -> str:
        return str(self.info["hosts"][host]["address"])

    def run(self, host: str, cmd: str | list[str], timeout: float = 60.0):  # type: ignore[no-untyped-def]
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        return lab_mod.run(host, argv, timeout=timeout)


def _restarts_lab(fn):  # type: ignore[no-untyped-def]
    fn.lab_restarts = True  # tests/conftest.py runs these last
    return fn


@pytest.fixture(scope="module")
def kit() -> Iterator[ck.Lab]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    try:
        up = lab_mod.up(EXAMPLE, LAB_INVENTORY, edge_root="bookworm")
        problems = "; ".join(f"{h.name}: {h.problem()}" for h in up.hosts if not h.ok)
        assert up.ok, f"the lab with Debian 12 edges did not come up: {problems}"
        assert up.edge_root == "bookworm"
        k = ck.Lab(_Handle())
        with ck.deploy_lock(wait=2400):
            ck.ensure_deployed(k, LAB_INVENTORY, (*EDGES, "pbx-central"))
            yield k
    finally:
        back = lab_mod.up(EXAMPLE, LAB_INVENTORY)  # every host on sid again
        assert back.ok and back.edge_root == "sid", [h.problem() for h in back.hosts]


@_restarts_lab
def test_edges_run_debian_12_and_the_pbx_sid(kit: ck.Lab) -> None:
    for edge in EDGES:
        assert kit.run(edge, "cat /etc/debian_version").startswith("12."), edge
        assert re.search(r"kamailio 5\.6\.", kit.run(edge, "kamailio -v")), edge
        assert "Version: 10.5." in kit.run(edge, "rtpengine --version"), edge
        # systemd is the edge's PID 1 and runs the packaged units with siporch's drop-ins
        units = kit.run(edge, "systemctl is-active kamailio.service rtpengine-daemon.service")
        assert units.split() == ["active", "active"], (edge, units)
    assert "Asterisk 2" in kit.run("pbx-central", "asterisk -V")
    assert not kit.run("pbx-central", "cat /etc/debian_version").startswith("12.")


@_restarts_lab
def test_inbound_call_through_a_debian_12_edge_is_answered(kit: ck.Lab) -> None:
    """itsp-a1 -> edge-central (5.6) -> pbx-central: answered in from-trunk; the media of
    both legs goes through the edge's rtpengine 10.5, on the central pair's floating
    address (edge-central holds it)."""
    a1 = kit.addr("itsp-a1")
    seen: list[list[str]] = []

    def answered() -> bool:
        out = kit.asterisk("core show channels concise")
        seen[:] = [c.split("!") for c in out.splitlines() if "+12025550100" in c]
        return any(c[1] == "from-trunk" and c[4] == "Up" for c in seen if len(c) > 5)

    with (
        ck.capture(kit, "edge-central", "udp portrange 30000-39999") as cap,
        ThreadPoolExecutor(1) as pool,
    ):
        call = pool.submit(ck.uac, kit, "itsp-a1", EDGE, HQ_DID, name="uac_rtp", duration_ms=5000)
        assert ck.wait_for(answered, 10), f"no answered channel in from-trunk: {seen}"
        result = call.result(timeout=60)
    try:
        assert (result.successful, result.failed) == (1, 0), result.stderr
        flows: dict[tuple[str, str], int] = {}
        for src, dst in cap.read("udp", ["ip.src", "ip.dst"]):
            flows[(src, dst)] = flows.get((src, dst), 0) + 1
        for flow in ((a1, VIP), (VIP, PBX_IP), (PBX_IP, VIP), (VIP, a1)):
            assert flows.get(flow, 0) >= 100, f"RTP {flow}: {flows}"
    finally:
        ck.cleanup_capture(cap)


@_restarts_lab
def test_outbound_call_through_a_debian_12_edge_is_answered(kit: ck.Lab) -> None:
    """pbx-central originates 3125550100 -> edge-central (5.6) -> itsp-a1, which answers;
    the BYE comes through and no internal address reaches the ITSP."""
    with ck.uas(kit, "itsp-a1") as a1:
        ck.originate(kit, "3125550100", seconds=3)
        assert ck.wait_for(lambda: any(m.startswith("BYE ") for m in a1.messages()), 20)
        assert a1.invite_users() == ["13125550100"]
        assert any(m.startswith("SIP/2.0 200") for m in a1.sent()), a1.sent()
        leaked = [m for m in a1.messages() if PBX_IP in m or "198.18.0.11" in m]
    assert leaked == [], f"internal address sent to the ITSP:\n{leaked[0]}"
