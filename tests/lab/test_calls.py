"""Real calls through the deployed trunks: SIPp as the ITSP peers in the lab's ITSP hosts,
the lab's Asterisk as the PBX, the deployed Kamailio and rtpengine on the edges.

The module holds the controller's deploy lock (no deploy changes the lab under the calls)
and deploys the lab inventory first when a host does not run its current model.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import callkit as ck
import pytest

pytestmark = pytest.mark.lab

EDGE = "198.18.0.10:5060"
EDGE_IP = "198.18.0.10"
#: the central pair's floating address: the address edge-central (the pair's active edge at
#: rest) gives the calls' media and its registrations' Contact
VIP = "198.18.0.9"
BRANCH_EDGE = "198.18.0.11:5060"
PBX_IP = "198.18.0.20"
HQ_DID = "2025550100"  # itsp-a's national format; +12025550100 is hq-main -> from-trunk
FAX_DID = "2025550200"  # +12025550200 is hq-fax -> the direct trunk pstn-gw
BRANCH_DID = "+12065550100"  # branch-office -> from-trunk-branch
STRANGER = "itsp-branch"  # 198.18.1.50: no trunk of edge-central's site
FAILOVER_TIMEOUT_S = 10  # the routes' failover_timeout (model default)
UAC_PORT = 25070  # callers placed from pbx-central's namespace stay off Asterisk's 5060


@pytest.fixture(scope="module")
def kit(lab: Any) -> Iterator[ck.Lab]:
    k = ck.Lab(lab)
    with ck.deploy_lock(wait=2400):
        hosts = ("edge-central", "edge-central-2", "edge-branch", "pbx-central", "pbx-central-2")
        ck.ensure_deployed(k, lab.inventory, hosts)
        subprocess.run(["siporch", "lab", "impair", "--clear"], capture_output=True, timeout=60)
        try:
            yield k
        finally:
            subprocess.run(["siporch", "lab", "impair", "--clear"], capture_output=True, timeout=60)
            k.unban("edge-central", k.addr(STRANGER))


def pbx_channels(kit: ck.Lab) -> list[list[str]]:
    out = kit.asterisk("core show channels concise")
    return [line.split("!") for line in out.splitlines() if "!" in line]


def _route(number: str, *extra: str) -> dict[str, Any]:
    proc = subprocess.run(
        ["siporch", "route", number, "-i", "inventory/lab", "--json", *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


# ------------------------------------------------------------------------------ inbound


def test_inbound_call_is_answered_in_the_dids_context(kit: ck.Lab) -> None:
    """itsp-a1 -> edge-central -> pbx-central: the PBX answers in from-trunk (hq-main)."""
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(ck.uac, kit, "itsp-a1", EDGE, HQ_DID, duration_ms=5000)
        seen: list[list[str]] = []

        def answered() -> bool:
            seen[:] = [c for c in pbx_channels(kit) if "+12025550100" in c]
            # Up with Echo running: Answer() sets Up a moment before the next priority runs.
            return any(c[1] == "from-trunk" and c[4] == "Up" and c[5] == "Echo" for c in seen)

        assert ck.wait_for(answered, 8), f"no channel in from-trunk's Echo: {seen}"
        result = call.result(timeout=60)
    assert (result.successful, result.failed) == (1, 0), result.stderr
    chan = next(c for c in seen if c[1] == "from-trunk" and c[5] == "Echo")
    assert chan[0].startswith("PJSIP/"), chan
    ok = [m for m in result.messages if m.startswith("SIP/2.0 200") and "INVITE" in m]
    assert ok and "X-Siporch-" not in ok[0]


def test_did_to_direct_trunk_reaches_the_gateway(kit: ck.Lab) -> None:
    """hq-fax goes to the direct trunk pstn-gw (TCP), not to the PBX."""
    with ck.uas(kit, "pstn-gw", transport="t1") as gw:
        result = ck.uac(kit, "itsp-a1", EDGE, FAX_DID, duration_ms=1000)
        assert (result.successful, result.failed) == (1, 0), result.stderr
        invites = gw.invites()
    assert len(invites) == 1
    assert invites[0].startswith("INVITE sip:+12025550200@198.18.0.50:5060;transport=tcp")
    assert "X-Siporch-Trunk: itsp-a" in invites[0]


def test_media_is_anchored_on_rtpengine_both_legs(kit: ck.Lab) -> None:
    """RTP from the ITSP reaches the PBX only through rtpengine, and the PBX's echo comes
    back the same way: four flows through the media ports of the central pair's floating
    address on the edge that holds it, none end to end."""
    a1 = kit.addr("itsp-a1")
    active = next(
        (e for e in ("edge-central", "edge-central-2")
         if f" {VIP}/" in kit.run(e, ["ip", "-o", "-4", "addr", "show", "dev", "eth0"])),
        "edge-central",
    )  # fmt: skip
    with (
        ck.capture(kit, active, "udp portrange 30000-39999") as edge_cap,
        ck.capture(kit, "pbx-central", f"udp and host {a1}") as pbx_cap,
    ):
        result = ck.uac(kit, "itsp-a1", EDGE, HQ_DID, name="uac_rtp", duration_ms=6000)
    try:
        assert (result.successful, result.failed) == (1, 0), result.stderr
        rows = edge_cap.read("udp", ["ip.src", "ip.dst"])
        flows: dict[tuple[str, str], int] = {}
        for src, dst in rows:
            flows[(src, dst)] = flows.get((src, dst), 0) + 1
        for flow in ((a1, VIP), (VIP, PBX_IP), (PBX_IP, VIP), (VIP, a1)):
            assert flows.get(flow, 0) >= 100, f"RTP {flow}: {flows}"
        assert pbx_cap.read("udp", ["ip.src"]) == [], "media went around the edge"
    finally:
        ck.cleanup_capture(edge_cap)
        ck.cleanup_capture(pbx_cap)


# ----------------------------------------------------------------------------- outbound


def test_outbound_call_from_the_pbx_reaches_itsp_a1(kit: ck.Lab) -> None:
    """Asterisk originates 3125550100: route national, itsp-a's first peer, number in the
    trunk's format; the call is answered and hung up through the edge; no internal address
    reaches the ITSP."""
    with ck.uas(kit, "itsp-a1") as a1, ck.uas(kit, "itsp-a2") as a2:
        ck.originate(kit, "3125550100", seconds=3)
        assert ck.wait_for(lambda: any(m.startswith("BYE ") for m in a1.messages()), 20)
        assert a1.invite_users() == ["13125550100"]
        assert a2.invites() == []
        leaked = [m for m in a1.messages() if "198.18.0.20" in m or "198.18.0.11" in m]
    assert leaked == [], f"internal address sent to the ITSP:\n{leaked[0]}"


A1_URI = "sip:198.18.1.10:5060;transport=udp"


def _failovers(kit: ck.Lab) -> int:
    out = kit.run("edge-central", f"({ck.KAMAILIO_LOG_CMD}) | grep -c 'failover after'")
    return int(out.split()[0]) if out.split() and out.split()[0].isdigit() else 0


def _failover(kit: ck.Lab, partition: bool) -> float:
    """Originate with itsp-a1 silent while the edge still holds it up (its probing has
    not noticed yet: state set to active over RPC); returns the seconds until itsp-a2 got
    the INVITE."""
    with ck.uas(kit, "itsp-a2") as a2:
        kit.set_active("edge-central", 1, A1_URI)
        if partition:
            subprocess.run(
                ["siporch", "lab", "impair", "edge-central", "itsp-a1", "--partition"],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
        try:
            before = _failovers(kit)
            start = time.time()
            ck.originate(kit, "3125550100", seconds=2)
            assert ck.wait_for(lambda: a2.invites() != [], FAILOVER_TIMEOUT_S + 10)
            took = a2.invite_times()[0] - start
            assert ck.wait_for(lambda: any(m.startswith("BYE ") for m in a2.messages()), 20)
            assert a2.invite_users() == ["13125550100"]
            # the edge tried itsp-a1 first and failed over (it was not skipped)
            assert _failovers(kit) > before
        finally:
            if partition:
                subprocess.run(
                    ["siporch", "lab", "impair", "edge-central", "itsp-a1", "--clear"],
                    capture_output=True, timeout=60,
                )  # fmt: skip
    return took


def test_outbound_fails_over_when_the_first_peer_does_not_answer(kit: ck.Lab) -> None:
    took = _failover(kit, partition=False)
    # no answer from itsp-a1: the route's failover_timeout runs out, then itsp-a2
    assert FAILOVER_TIMEOUT_S - 2 <= took <= FAILOVER_TIMEOUT_S + 1, took


def test_outbound_fails_over_when_the_first_peer_is_partitioned(kit: ck.Lab) -> None:
    took = _failover(kit, partition=True)
    # the partition is silent (nothing comes back, the send itself succeeds): itsp-a2 gets
    # the call once the failover_timeout runs out
    assert FAILOVER_TIMEOUT_S - 2 <= took <= FAILOVER_TIMEOUT_S + 1, took


PSTN_GW_URI = "sip:198.18.0.50:5060;transport=tcp"
PSTN_GW_SET = 4  # trunk id of pstn-gw (ids by name: itsp-a 1, itsp-b 2, itsp-branch 3)
SEND_BLOCK = "SIPORCH-CALLTEST"  # a chain of this test in edge-central's OUTPUT


def test_outbound_fails_over_at_once_when_the_send_to_the_first_peer_fails(
    kit: ck.Lab,
) -> None:
    """A send to itsp-a1 that fails at once (sendto() gets EPERM from the edge's own
    firewall, as with no route) makes the edge go on to itsp-a2 at once (failure_route on
    a send error), not after the failover_timeout, and not with an error to the PBX."""
    with ck.uas(kit, "itsp-a2") as a2:
        kit.set_active("edge-central", 1, A1_URI)
        ck.block_send(kit, True, SEND_BLOCK)
        try:
            before = _failovers(kit)
            start = time.time()
            ck.originate(kit, "3125550100", seconds=2)
            assert ck.wait_for(lambda: a2.invites() != [], FAILOVER_TIMEOUT_S + 5)
            took = a2.invite_times()[0] - start
            assert ck.wait_for(lambda: any(m.startswith("BYE ") for m in a2.messages()), 20), [
                m.split("\n", 1)[0] for m in a2.messages() + a2.sent()
            ]
            users = a2.invite_users()
            failovers = _failovers(kit) - before
        finally:
            ck.block_send(kit, False, SEND_BLOCK)
    print(f"failover after a failed send: {took:.2f} s")
    assert users == ["13125550100"], users
    assert failovers >= 1
    assert took < 3.0, took


def _gateway_first_call(kit: ck.Lab) -> tuple[float, list[str], str]:
    """route local-via-gateway: pstn-gw (TCP) first, then itsp-a. Returns the seconds
    until ITSP A got the INVITE, the numbers it got, and the last failover log line."""
    with ck.uas(kit, "itsp-a1") as a1, ck.uas(kit, "itsp-a2") as a2:
        # the edge's probing may already hold pstn-gw down: make it try the gateway
        kit.set_active("edge-central", PSTN_GW_SET, PSTN_GW_URI)
        kit.set_active("edge-central", 1, A1_URI)
        before = _failovers(kit)
        start = time.time()
        ck.originate(kit, "2025551234", seconds=2)
        assert ck.wait_for(lambda: a1.invites() != [] or a2.invites() != [], 15)
        took = min(a1.invite_times() + a2.invite_times()) - start
        users = a1.invite_users() + a2.invite_users()
        # the call completes through ITSP A: answered, then hung up by the PBX
        assert ck.wait_for(
            lambda: any(m.startswith("BYE ") for m in a1.messages() + a2.messages()), 20
        ), [m.split("\n", 1)[0] for m in a1.messages() + a2.messages()]
        assert ck.wait_for(lambda: _failovers(kit) > before, 5)
        log = kit.run("edge-central", f"({ck.KAMAILIO_LOG_CMD}) | grep 'failover after'")
    return took, users, log.splitlines()[-1]


def test_outbound_fails_over_when_the_first_trunk_refuses_the_connection(
    kit: ck.Lab,
) -> None:
    """Nothing listens on pstn-gw's TCP port: the connection is refused. Kamailio connects
    asynchronously, so the edge learns nothing at send time: itsp-a gets the call when
    the route's failover_timeout runs out."""
    gw_tcp = kit.run("pstn-gw", "ss -Htln 'sport = :5060'")
    if gw_tcp.strip():
        pytest.skip("something listens on pstn-gw's TCP 5060 (another test's gateway)")
    took, users, last = _gateway_first_call(kit)
    print(f"failover after a refused connection: {took:.2f} s")
    assert "failover after unreachable from pstn-gw" in last, last
    assert users == ["12025551234"], users
    assert took <= FAILOVER_TIMEOUT_S + 1, took


# -------------------------------------------------------------- branch resiliency

BRANCH_PBX = "198.18.2.20"  # sites.branch.pbx_addresses: the branch's PBX, on pstn-gw
ITSP_BRANCH_URI = "sip:198.18.1.50:5060;transport=udp"
ITSP_BRANCH_SET = 3
BRANCH_CALLER_PORT = 25080


def _branch_call(kit: ck.Lab, number: str = "3125550100") -> ck.UacResult:
    """A call from the branch's PBX (SIPp on its address) to the branch edge."""
    return ck.uac(
        kit, "pstn-gw", BRANCH_EDGE, number, address=BRANCH_PBX, port=BRANCH_CALLER_PORT,
        duration_ms=1000, timeout_s=40,
    )  # fmt: skip


def test_branch_call_leaves_through_the_branch_trunk(kit: ck.Lab) -> None:
    """route branch-national: the branch's own trunk itsp-branch answers; nothing goes to
    the central site's trunk."""
    with (
        ck.uas(kit, "itsp-branch") as br,
        ck.uas(kit, "itsp-a1") as a1,
        ck.uas(kit, "itsp-a2") as a2,
    ):
        kit.set_active("edge-branch", ITSP_BRANCH_SET, ITSP_BRANCH_URI)
        result = _branch_call(kit)
        assert (result.successful, result.failed) == (1, 0), result.stderr
        assert ck.wait_for(lambda: any(m.startswith("BYE ") for m in br.messages()), 10)
        users = br.invite_users()
        invites = br.invites()
        assert a1.invites() == [] and a2.invites() == []
    assert users == ["+13125550100"], users
    leaked = [line for line in invites[0].splitlines() if BRANCH_PBX in line]
    assert leaked == [], leaked


def test_branch_call_fails_over_to_the_central_trunk_when_the_branch_trunk_is_down(
    kit: ck.Lab,
) -> None:
    """itsp-branch partitioned from the branch edge (silent, and still held up by the
    edge's probing): after the route's failover_timeout the call leaves through the central
    site's trunk itsp-a, relayed by the central edge, and completes."""
    with (
        ck.uas(kit, "itsp-branch") as br,
        ck.uas(kit, "itsp-a1") as a1,
        ck.uas(kit, "itsp-a2") as a2,
    ):
        kit.set_active("edge-branch", ITSP_BRANCH_SET, ITSP_BRANCH_URI)
        kit.set_active("edge-central", 1, A1_URI)
        subprocess.run(
            ["siporch", "lab", "impair", "edge-branch", "itsp-branch", "--partition"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        try:
            start = time.time()
            result = _branch_call(kit)
            central = a1.invite_times() + a2.invite_times()
            users = a1.invite_users() + a2.invite_users()
            invites = a1.invites() + a2.invites()
        finally:
            subprocess.run(
                ["siporch", "lab", "impair", "edge-branch", "itsp-branch", "--clear"],
                capture_output=True, timeout=60,
            )  # fmt: skip
        assert br.invites() == [], "the partition let the INVITE through"
    assert (result.successful, result.failed) == (1, 0), result.stderr
    assert users == ["13125550100"], users  # itsp-a's format, from the central edge
    took = min(central) - start
    print(f"branch failover to the central trunk: {took:.2f} s")
    assert FAILOVER_TIMEOUT_S - 2 <= took <= FAILOVER_TIMEOUT_S + 2, took
    assert "X-Siporch-Trunk" not in invites[0]
    # nothing of the branch's inside reaches ITSP A (the To keeps the branch edge's own,
    # public, address: the edges are the organisation's face to the ITSPs)
    leaked = [line for line in invites[0].splitlines() if BRANCH_PBX in line]
    assert leaked == [], leaked


def test_486_goes_back_with_no_failover(kit: ck.Lab) -> None:
    with (
        ck.uas(kit, "itsp-a1", "uas_peer_busy") as a1,
        ck.uas(kit, "itsp-a2") as a2,
    ):
        # an earlier fault may have left itsp-a1 marked down until its next probe
        kit.set_active("edge-central", 1, A1_URI)
        result = ck.uac(
            kit, "pbx-central", EDGE, "3125550100", port=UAC_PORT, duration_ms=1000,
            timeout_s=20,
        )  # fmt: skip
        finals = [m.split("\n", 1)[0] for m in result.messages if re.match(r"SIP/2.0 [2-6]", m)]
        assert ck.wait_for(lambda: any(m.startswith("ACK ") for m in a1.messages()), 5)
        assert len(a1.invites()) == 1
        time.sleep(2)
        assert a2.invites() == [], "failed over on a 486"
    assert result.successful == 0
    assert any(f.startswith("SIP/2.0 486") for f in finals), finals


# ------------------------------------------------------------ registration trunk (TLS)


def test_registration_trunk_registers_refreshes_and_takes_calls(kit: ck.Lab, lab: Any) -> None:
    """itsp-b: a digest registrar over TLS (lab certificate) on itsp-b. The PBX's
    registration reaches it through the edge (TLS from the central pair's floating address
    198.18.0.9, also its Contact),
    answers the 401 challenge, is refreshed at the registrar's expiry; then itsp-b calls the
    registered contact over TLS with an SRTP (SDES) offer and the PBX answers, SRTP toward
    itsp-b on rtpengine."""
    from siporch.model import load_model
    from siporch.model.schema import RegisterAuth

    model = load_model(lab.inventory, vault_password_file=lab.inventory.parent / ".vault-pass")
    auth = model.model.trunks["itsp-b"].auth
    assert isinstance(auth, RegisterAuth) and auth.realm
    with ck.tls_registrar(
        kit, "itsp-b", realm=auth.realm, password=auth.password.get_secret_value(), expires=20
    ) as reg:
        kit.asterisk("pjsip send register *all")
        assert ck.wait_for(lambda: len(reg.registered()) >= 2, 45), reg.entries()
        entries = reg.entries()
        registered = reg.registered()
        status = kit.asterisk("pjsip show registrations")
        call = ck.tls_call(
            kit, "itsp-b", EDGE_IP, "sip:s@198.18.0.10;transport=tls", "+12025550100",
            auth.realm, hold=2.0,
        )  # fmt: skip
    # nothing internal should reach the ITSP's registrar: no 198.18.0.x but the edge's
    # own (topoh leaves REGISTER alone; the edge rewrites the PBX's Via itself)
    seen = {a for e in entries for a in re.findall(r"198\.18\.0\.\d+", e.get("text", ""))}
    leaked = seen - {EDGE_IP, VIP}
    assert entries[0]["auth"] is False and not entries[0]["ok"]  # challenged first
    assert {e["peer"] for e in entries} == {VIP}
    first_ok = registered[0]
    assert VIP in first_ok["contact"] and "198.18.0.20" not in first_ok["contact"]
    refresh = registered[1]["time"] - first_ok["time"]
    assert 5 <= refresh <= 25, refresh
    assert "Registered" in status, status
    assert call["codes"][-1] == 200, call
    assert "RTP/SAVP" in call["answer_sdp"] and "a=crypto:" in call["answer_sdp"], call
    assert f"c=IN IP4 {VIP}" in call["answer_sdp"], call
    assert call["bye"] == 200, call
    # the Via's sent-by is the edge's, and with no rport from the PBX no received= names it
    assert not leaked, f"the REGISTER named {sorted(leaked)}:\n{entries[0].get('text', '')}"


# ---------------------------------------------------------------------- channel limits


def test_trunk_at_max_channels_answers_503(kit: ck.Lab) -> None:
    """itsp-branch (max_channels 10): ten calls up, the eleventh gets 503 per the model
    (inbound at capacity: 503), and a call once they end is answered again."""
    with ThreadPoolExecutor(1) as pool:
        ten = pool.submit(
            ck.uac, kit, "itsp-branch", BRANCH_EDGE, BRANCH_DID,
            calls=10, rate=20, limit=10, duration_ms=8000, port=25080,
        )  # fmt: skip

        def up() -> bool:
            return sum(1 for c in pbx_channels(kit) if c[1] == "from-trunk-branch") >= 10

        assert ck.wait_for(up, 8), pbx_channels(kit)
        eleventh = ck.invite(kit, "itsp-branch", "198.18.0.11", BRANCH_DID, wait=3)
        result = ten.result(timeout=90)
    assert (result.successful, result.failed) == (10, 0), result.stderr
    assert eleventh[0]["codes"] and eleventh[0]["codes"][-1] == 503, eleventh
    again = ck.uac(kit, "itsp-branch", BRANCH_EDGE, BRANCH_DID, duration_ms=500, port=25080)
    assert (again.successful, again.failed) == (1, 0), again.stderr


# ---------------------------------------------------------------------- edge security


def test_unknown_source_gets_403_and_never_reaches_the_pbx(kit: ck.Lab) -> None:
    kit.unban("edge-central", kit.addr(STRANGER))
    with ck.capture(kit, "pbx-central", "udp port 5060 or tcp port 5060") as cap:
        answers = ck.invite(kit, STRANGER, EDGE_IP, "+12025550100")
    try:
        assert answers[0]["codes"] == [403], answers
        ids = [r[0] for r in cap.read("sip", ["sip.Call-ID"])]
        assert answers[0]["call_id"] not in ids
    finally:
        ck.cleanup_capture(cap)


def test_scanner_user_agent_is_dropped(kit: ck.Lab) -> None:
    """A known scanner gets no answer at all, from a trunk's own address too."""
    kit.unban("edge-central", kit.addr(STRANGER))
    for host in (STRANGER, "itsp-a1"):
        answers = ck.invite(kit, host, EDGE_IP, "+12025550100", ua="friendly-scanner")
        assert answers[0]["codes"] == [], (host, answers)
    # the same request with an ordinary user agent is answered
    assert ck.invite(kit, STRANGER, EDGE_IP, "+12025550100")[0]["codes"] == [403]


def test_flood_is_blocked_while_trunk_calls_complete(kit: ck.Lab) -> None:
    """150 INVITEs in about two seconds from one unknown source: answered (403) at first,
    then the edge stops answering it (pike, then the ban), and itsp-a's calls to the PBX
    still complete meanwhile."""
    stranger = kit.addr(STRANGER)
    kit.unban("edge-central", stranger)
    try:
        with ThreadPoolExecutor(1) as pool:
            calls = pool.submit(
                ck.uac, kit, "itsp-a1", EDGE, HQ_DID, calls=10, rate=5, duration_ms=1000
            )
            flood = ck.invite(kit, STRANGER, EDGE_IP, "+12025550100", count=150, wait=0.01)
            result = calls.result(timeout=90)
        assert flood[0]["codes"] == [403], flood[0]
        last = flood[-30:]
        assert all(f["codes"] == [] for f in last), last
        # still banned after the flood
        assert ck.invite(kit, STRANGER, EDGE_IP, "+12025550100", wait=2)[0]["codes"] == []
        assert (result.successful, result.failed) == (10, 0), result.stderr
    finally:
        time.sleep(10)  # pike forgets the source, then the ban goes
        kit.unban("edge-central", stranger)


# ------------------------------------------------------------- siporch route vs the edge

OUTBOUND_TABLE = ["3125550100", "13125550100", "+13125550100", "911", "2025551234", "5551234"]
PEER_HOSTS = {"198.18.1.10": "itsp-a1", "198.18.1.11": "itsp-a2", "198.18.0.50": "pstn-gw"}


def test_siporch_route_agrees_with_the_edge(kit: ck.Lab) -> None:
    """For each number dialled at the PBX: the peer that gets the call and the number it
    receives are the first attempt of `siporch route`; a number with no route reaches no
    peer."""
    with (
        ck.uas(kit, "itsp-a1") as a1,
        ck.uas(kit, "itsp-a2") as a2,
        ck.uas(kit, "pstn-gw", transport="t1") as gw,
    ):
        peers = {"itsp-a1": a1, "itsp-a2": a2, "pstn-gw": gw}
        got: dict[str, tuple[str, str] | None] = {}
        want: dict[str, tuple[str, str] | None] = {}
        for number in [*OUTBOUND_TABLE, "19005551234"]:
            trace = _route(number)
            if trace["attempts"]:
                first = trace["attempts"][0]
                peer = first["peers"][0].split(":")[1]
                want[number] = (PEER_HOSTS[peer], first["number"])
            else:
                want[number] = None
            before = {h: len(u.invite_users()) for h, u in peers.items()}
            ck.uac(kit, "pbx-central", EDGE, number, port=UAC_PORT, duration_ms=300, timeout_s=20)
            time.sleep(0.5)
            new = [(h, user) for h, u in peers.items() for user in u.invite_users()[before[h] :]]
            assert len(new) <= 1, (number, new)
            got[number] = new[0] if new else None
    assert got == want


def test_siporch_route_agrees_for_inbound_numbers(kit: ck.Lab) -> None:
    """Numbers from itsp-a: `siporch route --from itsp-a` names the DID's destination; the
    edge sends hq-fax to pstn-gw with that E.164 number and hq-main to the PBX."""
    fax = _route(FAX_DID, "--from", "itsp-a")
    main = _route(HQ_DID, "--from", "itsp-a")
    assert fax["number"] == "+12025550200" and main["number"] == "+12025550100"
    with ck.uas(kit, "pstn-gw", transport="t1") as gw:
        r1 = ck.uac(kit, "itsp-a1", EDGE, FAX_DID, duration_ms=300)
        r2 = ck.uac(kit, "itsp-a1", EDGE, HQ_DID, duration_ms=300)
        users = gw.invite_users()
    assert (r1.successful, r2.successful) == (1, 1), (r1.stderr, r2.stderr)
    assert users == [fax["number"]]
    assert json.dumps(fax["destination"]).count("pstn-gw") >= 1, fax
    assert json.dumps(main["destination"]).count("pbx-central") >= 1, main
