"""No stuck calls: calls whose far end is gone are ended, healthy calls are not.

The lab inventory with short timeouts set through the model (``calls``): dialog keepalives
every 30 s (Kamailio's shortest) ending a call after one failure, and an RTP timeout of 8 s
on the PBX. Three calls at once, all through edge-central, callers on SIPp's
``uac_media.xml`` (RTP for the whole call, keepalives answered):

* **edge**: itsp-a1 calls the fax DID, relayed to the direct trunk pstn-gw (SIPp, TCP; no
  PBX, so only the edge can notice); then edge-central and pstn-gw are partitioned. The
  edge's keepalive to pstn-gw goes unanswered: the dialog ends, with a BYE to itsp-a1,
  within interval x failures + 4 s (the transaction timeout) + 10 s (the dialog module's
  grace) + slack, and is gone 4 s later (its BYE to pstn-gw times out).
* **anchored**: itsp-a2 calls the HQ DID (the PBX answers, Echo), then its SIPp is killed
  (SIGKILL): no more RTP reaches the PBX, which hangs up after rtp_timeout; its BYE passes
  the edge, whose dialog ends too, long before any keepalive could have noticed.
* **healthy**: itsp-a1 calls the HQ DID for 42 s: past the RTP timeout and past the first
  keepalive (which it answers); it ends with its own BYE, answered.

Then the channel count of itsp-a on the edge (the dialog profile max_channels counts) is
back where it was. The figures (seconds from the loss to the dialog's and the channel's
end) are printed; docs/benchmarks.md quotes them.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import callkit as ck
import pytest

from siporch.sipp import scenario

pytestmark = pytest.mark.lab

EDGE = "edge-central"
EDGE_SIP = "198.18.0.10:5060"
HQ_DID = "2025550100"  # +12025550100, hq-main: the PBX answers (Echo)
FAX_DID = "2025550200"  # +12025550200, hq-fax: relayed to the direct trunk pstn-gw
GW_URI = "sip:198.18.0.50:5060;transport=tcp"

KA_INTERVAL = 30
KA_FAILURES = 1
RTP_TIMEOUT = 8
#: what the dialog module adds to interval x failures: the keepalive's transaction timeout
#: (tm fr_timer, 4 s), its 10 s of grace after the last failure, its 1 s timer step
KA_OVERHEAD = 4 + 10 + 1
#: the dialog is over when its BYE transactions are: the one to the side that is gone ends
#: with tm's 408 after fr_timer (4 s)
BYE_GONE = 4
SLACK = 5
HEALTHY_S = 42


@pytest.fixture(scope="module")
def kit(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ck.Lab]:
    k = ck.Lab(lab)
    inv = ck.copy_inventory(lab, tmp_path_factory.mktemp("stuck"))

    def short(model: dict[str, Any]) -> None:
        model["calls"] = {
            "keepalive": {"interval": KA_INTERVAL, "failures": KA_FAILURES},
            "rtp_timeout": RTP_TIMEOUT,
            "rtp_timeout_hold": 30,
        }

    ck.edit_model(inv, short)
    with ck.deploy_lock(wait=2400):
        ck.ensure_deployed(k, inv, ("edge-central", "edge-branch", "pbx-central"))
        subprocess.run(["siporch", "lab", "impair", "--clear"], capture_output=True, timeout=60)
        try:
            yield k
        finally:
            subprocess.run(["siporch", "lab", "impair", "--clear"], capture_output=True, timeout=60)


# --------------------------------------------------------------------------- helpers


@dataclass
class Caller:
    """A SIPp uac_media.xml caller in a lab host, its messages traced to a file."""

    proc: subprocess.Popen[str]
    trace: Path

    def received(self) -> list[tuple[float, str]]:
        try:
            text = self.trace.read_text(errors="replace")
        except OSError:
            return []
        return ck.timed_messages(text, "received")

    def call_id(self) -> str:
        try:
            text = self.trace.read_text(errors="replace")
        except OSError:
            return ""
        for _, msg in ck.timed_messages(text, "sent"):
            m = re.search(r"(?im)^Call-ID:\s*(\S+)", msg)
            if msg.startswith("INVITE ") and m:
                return m.group(1)
        return ""

    def answered(self) -> bool:
        return any(m.startswith("SIP/2.0 200") and "INVITE" in m for _, m in self.received())

    def requests(self, method: str) -> list[float]:
        return [t for t, m in self.received() if m.startswith(f"{method} ")]

    def keepalives(self) -> list[str]:
        """The OPTIONS received: the edge's keepalives, each in the call's own dialog."""
        return [m for _, m in self.received() if m.startswith("OPTIONS ")]


@contextlib.contextmanager
def caller(
    kit: ck.Lab, host: str, number: str, port: int, hold_ms: int, work: Path
) -> Iterator[Caller]:
    addr = kit.addr(host)
    trace = work / f"uac-{host}-{port}.msg"
    argv = [
        "ip", "netns", "exec", kit.ns(host), ck.sipp(),
        "-sf", str(scenario("uac_media")), "-s", number,
        "-i", addr, "-mi", addr, "-p", str(port), "-t", "u1",
        "-m", "1", "-l", "1", "-d", str(hold_ms), "-recv_timeout", "15000",
        "-timeout", f"{hold_ms // 1000 + 60}s", "-nostdin",
        "-trace_msg", "-message_file", str(trace), "-trace_stat", "-stf", str(work / f"{port}.csv"),
        EDGE_SIP,
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=work
    )
    try:
        yield Caller(proc, trace)
    finally:
        ck.stop(proc)


def dialogs(kit: ck.Lab) -> str:
    """The edge's dialogs not ended yet (dlg.list without state 5, deleted: one whose BYE
    transaction is still running), as text to look Call-IDs up in."""
    out = kit.rpc(EDGE, "dlg.list")
    items = out if isinstance(out, list) else []
    if isinstance(out, dict):
        items = next((v for v in out.values() if isinstance(v, list)), [out])
    if not items:
        return json.dumps(out)
    return json.dumps([d for d in items if not (isinstance(d, dict) and d.get("state") == 5)])


def trunk_id(kit: ck.Lab, name: str) -> int:
    """The trunk's id on the edge (htable trunks, n.<name>)."""
    text = json.dumps(kit.rpc(EDGE, "htable.get", "trunks", f"n.{name}"))
    value = re.search(r'"value":\s*"?(\d+)', text)
    return int(value.group(1)) if value else -1


def channels_of_trunk(kit: ck.Lab, tid: int) -> int:
    """The dialog profile that max_channels counts: the trunk's calls on the edge."""
    text = json.dumps(kit.rpc(EDGE, "dlg.profile_get_size", "trunk", str(tid)))
    count = re.search(r'"count":\s*"?(\d+)', text)
    if count:
        return int(count.group(1))
    found = re.findall(r"\d+", text)
    return int(found[-1]) if found else -1


def pbx_channels(kit: ck.Lab) -> list[str]:
    out = kit.asterisk("core show channels concise")
    return [line.split("!", 1)[0] for line in out.splitlines() if "!from-trunk!" in line]


def impair(*args: str) -> None:
    subprocess.run(["siporch", "lab", "impair", *args], check=True, capture_output=True, timeout=60)


# ----------------------------------------------------------------------------- test


def test_rendered_timeouts_are_live(kit: ck.Lab) -> None:
    """What the model asked for is what the daemons run: the PBX's itsp-a endpoint has the
    RTP timeouts, the edge's dialog module the keepalive interval."""
    ep = kit.asterisk("pjsip show endpoint itsp-a")
    assert re.search(rf"rtp_timeout\s+:\s+{RTP_TIMEOUT}\b", ep), ep
    assert re.search(r"rtp_timeout_hold\s+:\s+30\b", ep), ep
    cfg = kit.run(EDGE, "cat /etc/siporch/current/kamailio/host.cfg")
    assert f"#!define KA_INTERVAL {KA_INTERVAL}" in cfg, cfg
    assert f"#!define KA_FAILURES {KA_FAILURES}" in cfg, cfg


def test_far_end_gone_is_cleaned_and_healthy_call_stays(kit: ck.Lab) -> None:
    tid = trunk_id(kit, "itsp-a")
    assert tid > 0, kit.rpc(EDGE, "htable.get", "trunks", "n.itsp-a")
    # a partition of pstn-gw has its probes fail: put it back active at the end
    gw_set = trunk_id(kit, "pstn-gw")
    base = channels_of_trunk(kit, tid)
    base_pbx = set(pbx_channels(kit))
    work = Path(tempfile.mkdtemp(prefix="siporch-stuck-"))
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: subprocess.run(["rm", "-rf", str(work)], check=False))
        stack.callback(
            lambda: subprocess.run(
                ["siporch", "lab", "impair", EDGE, "pstn-gw", "--clear"],
                capture_output=True, timeout=60,
            )
        )  # fmt: skip
        stack.callback(lambda: kit.set_active(EDGE, gw_set, GW_URI))
        gw = stack.enter_context(ck.uas(kit, "pstn-gw", transport="t1"))

        # anchored call first, to know its PBX channel
        anchored = stack.enter_context(caller(kit, "itsp-a2", HQ_DID, 25171, 120_000, work))
        assert ck.wait_for(anchored.answered, 15), anchored.received()
        found: list[str] = []

        def new_channel() -> bool:
            found[:] = [c for c in pbx_channels(kit) if c not in base_pbx]
            return len(found) == 1

        assert ck.wait_for(new_channel, 10), pbx_channels(kit)
        anchored_channel = found[0]
        edge_call = stack.enter_context(caller(kit, "itsp-a1", FAX_DID, 25172, 120_000, work))
        healthy = stack.enter_context(caller(kit, "itsp-a1", HQ_DID, 25173, HEALTHY_S * 1000, work))
        assert ck.wait_for(lambda: edge_call.answered() and healthy.answered(), 15)
        assert ck.wait_for(lambda: gw.invites() != [], 5)
        ids = {"edge": edge_call.call_id(), "anchored": anchored.call_id()}
        assert all(ids.values()), ids
        assert ck.wait_for(lambda: all(i in dialogs(kit) for i in ids.values()), 10), ids
        assert ck.wait_for(lambda: channels_of_trunk(kit, tid) == base + 3, 10), (
            channels_of_trunk(kit, tid),
            base,
        )

        # the far ends vanish: a partition behind the edge, a caller killed outright
        impair(EDGE, "pstn-gw", "--partition")
        t_partition = time.time()
        anchored.proc.send_signal(signal.SIGKILL)
        t_kill = time.time()

        figures: dict[str, float] = {}

        def anchored_gone() -> bool:
            if "pbx" not in figures and anchored_channel not in pbx_channels(kit):
                figures["pbx"] = time.time() - t_kill
            if "pbx_dialog" not in figures and ids["anchored"] not in dialogs(kit):
                figures["pbx_dialog"] = time.time() - t_kill
            return "pbx" in figures and "pbx_dialog" in figures

        assert ck.wait_for(anchored_gone, RTP_TIMEOUT + SLACK + 5, step=0.25), figures
        # the PBX's RTP timeout did it, not a keepalive (none is due before 30 s)
        assert figures["pbx"] <= RTP_TIMEOUT + SLACK, figures
        assert anchored_channel not in pbx_channels(kit)

        bound = KA_INTERVAL * KA_FAILURES + KA_OVERHEAD + SLACK

        def edge_gone() -> bool:
            if "bye" not in figures and edge_call.requests("BYE"):
                figures["bye"] = edge_call.requests("BYE")[0] - t_partition
            if "dialog" not in figures and ids["edge"] not in dialogs(kit):
                figures["dialog"] = time.time() - t_partition
            return "bye" in figures and "dialog" in figures

        assert ck.wait_for(edge_gone, bound + BYE_GONE + 5, step=0.5), (
            figures,
            edge_call.received(),
        )
        assert figures["bye"] <= bound and figures["dialog"] <= bound + BYE_GONE, figures
        # the keepalive found pstn-gw gone: nothing came from it after the partition
        assert figures["bye"] >= KA_INTERVAL * KA_FAILURES - 5, figures
        # itsp-a1, still there, got keepalives before the BYE, in its own dialog (the
        # Call-ID it chose, not topology hiding's), and answered them
        assert edge_call.keepalives(), edge_call.received()
        assert all(ids["edge"] in m for m in edge_call.keepalives()), edge_call.keepalives()

        # the healthy call: up past the RTP timeout and the first keepalive, then its own
        # BYE, answered; never a BYE from the network
        healthy.proc.wait(timeout=HEALTHY_S + 40)
        assert healthy.proc.returncode == 0, (
            healthy.proc.stderr.read() if healthy.proc.stderr else ""
        )
        assert healthy.keepalives(), healthy.received()
        assert all(healthy.call_id() in m for m in healthy.keepalives()), healthy.keepalives()
        assert healthy.requests("BYE") == [], healthy.received()

        # every channel of the trunk given back
        assert ck.wait_for(lambda: channels_of_trunk(kit, tid) == base, 20), (
            channels_of_trunk(kit, tid),
            base,
        )
        assert ck.wait_for(lambda: set(pbx_channels(kit)) <= base_pbx, 10), pbx_channels(kit)
    print(
        "\nstuck calls: anchored caller killed -> PBX channel gone "
        f"{figures['pbx']:.1f} s, edge dialog gone {figures['pbx_dialog']:.1f} s "
        f"(rtp_timeout {RTP_TIMEOUT} s); partition behind the edge -> BYE to the caller "
        f"{figures['bye']:.1f} s, dialog gone {figures['dialog']:.1f} s "
        f"(keepalive {KA_INTERVAL} s x {KA_FAILURES})"
    )
