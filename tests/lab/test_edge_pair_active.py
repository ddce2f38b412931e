"""Two active-active edges share the channel count of a trunk over Kamailio DMQ.

The lab inventory with the central pair in ``active-active`` mode (no floating address:
each edge takes calls at its own address, DMQ between them). ITSP A (``max_channels:
30``) sends 15 calls to each edge (SIPp on itsp-a1, held up, the PBX answers); the 31st
call is refused with 503 by either edge, although each one carries only 15 of the 30: the
dialog profile ``trunk`` counts the other edge's dialogs too (``dialog`` with
``enable_dmq``).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import callkit as ck
import pytest

from siporch.sipp import scenario

pytestmark = pytest.mark.lab

EDGES = {"edge-central": "198.18.0.10", "edge-central-2": "198.18.0.12"}
ITSP = "itsp-a1"
ITSP_ADDRESS = "198.18.1.10"
HQ_DID = "2025550100"
PER_EDGE = 15
MAX = 30
HOLD_S = 25


@pytest.fixture(scope="module")
def kit(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ck.Lab]:
    k = ck.Lab(lab)
    inv = ck.copy_inventory(lab, tmp_path_factory.mktemp("active"))

    def active_active(model: dict[str, Any]) -> None:
        edges = model["sites"]["central"]["edges"]
        edges["mode"] = "active-active"
        edges.pop("vip", None)
        edges.pop("network", None)
        assert model["trunks"]["itsp-a"]["max_channels"] == MAX

    ck.edit_model(inv, active_active)
    with ck.deploy_lock(wait=2400):
        ck.ensure_deployed(k, inv, (*EDGES, "edge-branch", "pbx-central", "pbx-central-2"))
        yield k


def _hold(k: ck.Lab, edge_address: str, port: int, workdir: Path) -> subprocess.Popen[str]:
    argv = [
        "ip", "netns", "exec", k.ns(ITSP), ck.sipp(),
        "-sf", str(scenario("uac_rr")), "-s", HQ_DID,
        "-i", ITSP_ADDRESS, "-mi", ITSP_ADDRESS, "-p", str(port), "-t", "u1",
        "-m", str(PER_EDGE), "-l", str(PER_EDGE), "-r", "10", "-d", str(HOLD_S * 1000),
        "-recv_timeout", "20000", "-timeout", f"{HOLD_S + 60}s", "-timeout_error",
        "-nostdin", "-trace_msg", "-message_file", str(workdir / f"msg-{port}.log"),
        "-max_socket", "100", f"{edge_address}:5060",
    ]  # fmt: skip
    return subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True, cwd=workdir
    )


def _answered(trace: Path) -> int:
    try:
        text = trace.read_text(errors="replace")
    except OSError:
        return 0
    ids = set()
    for _, m in ck.timed_messages(text, "received"):
        if m.startswith("SIP/2.0 200") and re.search(r"(?im)^CSeq:\s*1 INVITE", m):
            cid = re.search(r"(?im)^Call-ID:\s*(\S+)", m)
            if cid:
                ids.add(cid.group(1))
    return len(ids)


def _profile(k: ck.Lab, edge: str) -> Any:
    return k.rpc(edge, "dlg.profile_get_size", "trunk", "1")


def test_max_channels_holds_across_two_active_edges(kit: ck.Lab) -> None:
    k = kit
    workdir = Path(tempfile.mkdtemp(prefix="siporch-aa-"))
    procs = []
    try:
        for i, address in enumerate(EDGES.values()):
            procs.append(_hold(k, address, 25093 + i, workdir))
        traces = [workdir / f"msg-{25093 + i}.log" for i in range(len(EDGES))]
        assert ck.wait_for(lambda: all(_answered(t) == PER_EDGE for t in traces), 60), [
            _answered(t) for t in traces
        ]
        sizes = {e: _profile(k, e) for e in EDGES}
        refused = {}
        for i, (edge, address) in enumerate(EDGES.items()):
            r = ck.uac(
                k, ITSP, f"{address}:5060", HQ_DID, name="uac_expect_reject",
                address=ITSP_ADDRESS, port=25095 + i, timeout_s=20,
            )  # fmt: skip
            refused[edge] = [m.split("\n", 1)[0] for m in r.messages if m.startswith("SIP/2.0 ")]
        print(f"EDGE-PAIR-AA held={[_answered(t) for t in traces]} profiles={sizes} 31st={refused}")
        for edge, replies in refused.items():
            assert any(x.startswith("SIP/2.0 503") for x in replies), (edge, replies)
    finally:
        for p in procs:  # the held calls end with their BYE
            try:
                p.wait(timeout=HOLD_S + 60)
            except subprocess.TimeoutExpired:
                ck.stop(p)
