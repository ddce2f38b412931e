"""The rendered edge with the real Kamailio, on loopback (127.0.88.x), with rtpengine:

* ``kamailio -c`` with sid's Kamailio 6 in the lab root (chroot);
* the example edge runs for real (Debian 12's 5.6 on the host, and 6.x from the lab root)
  and SIPp calls go through it: outbound, inbound, failover, 4xx relayed, unknown source,
  scanner, the dial plan against ``siporch.numbers``, and a data reload after a release
  switch.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.genmodel import generate
from siporch import numbers
from siporch.model.schema import Model
from siporch.render.kamailio import render
from tests.lab.edgekit import (
    EDGE,
    ITSP_B,
    NET,
    NG_PORT,
    PBX,
    PEER1,
    PEER2,
    PSTN_GW,
    ROOTFS,
    SCENARIOS,
    STRANGER,
    UAC,
    Edge,
    _need_tools,
    _release,
    _running,
    _wait,
    check,
    example,
    first_line,
    loopback_model,
    received,
    reject_scenario,
    sipp_call,
    write_tree,
)


@pytest.mark.lab
@pytest.mark.skipif(not (ROOTFS / "usr/sbin/kamailio").exists(), reason="no lab root built")
@pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")
@pytest.mark.parametrize("host", ["edge-central", "edge-branch"])
def test_example_passes_kamailio_6_check(host: str) -> None:
    inner = Path(tempfile.mkdtemp(prefix="siporch-kcheck-", dir=ROOTFS / "tmp"))
    try:
        rel = "/" + str(inner.relative_to(ROOTFS))
        write_tree(render(example(), host, root=rel), inner)
        result = check(
            ["chroot", str(ROOTFS), "kamailio", "-c", "-f", f"{rel}/kamailio/kamailio.cfg"]
        )
        version = check(["chroot", str(ROOTFS), "kamailio", "-v"]).stdout
        assert result.returncode == 0, version + result.stdout + result.stderr
    finally:
        shutil.rmtree(inner, ignore_errors=True)


@pytest.fixture(scope="module", params=["host", "lab-root"])
def edge(request: pytest.FixtureRequest) -> Iterator[Edge]:
    """The example edge on loopback: Debian 12's Kamailio 5.6 (``host``), or sid's 6.x run
    from the lab root with chroot (``lab-root``)."""
    _need_tools()
    if request.param == "host":
        base = Path(tempfile.mkdtemp(prefix="siporch-edge-"))
        inner, prefix = base, []
    else:
        if not (ROOTFS / "usr/sbin/kamailio").exists():
            pytest.skip("no lab root built")
        root = ROOTFS.resolve()
        base = Path(tempfile.mkdtemp(prefix="siporch-edge-", dir=root / "tmp"))
        inner, prefix = Path("/") / base.relative_to(root), ["chroot", str(root)]
    (base / "run").mkdir()
    e = Edge(base, inner, f"unix:{base}/run/kamailio_ctl")
    try:
        _release(e, "a", loopback_model())
        with _running([e], prefix, NG_PORT, base):
            yield e
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.lab
def test_outbound_call(edge: Edge) -> None:
    call = sipp_call(edge, PBX, "3125550100", {PEER1: SCENARIOS / "uas_rr.xml"})
    assert call.rc == 0, call.uac[-2000:]
    at_itsp = received(call.uas[PEER1])
    invite = first_line(at_itsp, "INVITE ")
    # normalized to +13125550100, route "national", itsp-a's outbound rule strips the '+'
    assert invite.startswith(f"INVITE sip:13125550100@{PEER1}:5060"), invite
    assert re.search(rf"^From: .*<sip:2125550111@{EDGE}>", invite, re.M), invite
    assert any(m.startswith("BYE ") for m in at_itsp), "the BYE did not pass the edge"
    for m in at_itsp:
        assert PBX not in m, f"internal address leaked to the ITSP:\n{m}"
    at_pbx = received(call.uac)
    ok = first_line(at_pbx, "SIP/2.0 200 OK")
    assert "X-Siporch-Trunk: itsp-a" in ok
    assert "c=IN IP4 127.0.0.1" in ok, "media of an anchored trunk goes through rtpengine"


@pytest.mark.lab
def test_inbound_call(edge: Edge) -> None:
    call = sipp_call(edge, PEER1, "2025550123", {PBX: SCENARIOS / "uas_rr.xml"})
    assert call.rc == 0, call.uac[-2000:]
    invite = first_line(received(call.uas[PBX]), "INVITE ")
    assert invite.startswith(f"INVITE sip:+12025550123@{PBX}:5060"), invite
    assert "X-Siporch-Trunk: itsp-a" in invite
    for m in received(call.uac):
        assert PBX not in m, f"internal address leaked to the ITSP:\n{m}"


@pytest.mark.lab
def test_inbound_unknown_did_is_404(edge: Edge) -> None:
    call = sipp_call(edge, PEER1, "3125550100", {PBX: SCENARIOS / "uas_rr.xml"}, timeout=5)
    assert first_line(received(call.uac), "SIP/2.0 404")
    assert not received(call.uas[PBX])


@pytest.mark.lab
def test_failover_on_503_to_next_peer(edge: Edge) -> None:
    call = sipp_call(
        edge,
        PBX,
        "3125550100",
        {PEER1: reject_scenario(edge, 503), PEER2: SCENARIOS / "uas_rr.xml"},
    )
    assert call.rc == 0, call.uac[-2000:]
    assert first_line(received(call.uas[PEER1]), "INVITE ")
    assert first_line(received(call.uas[PEER2]), "INVITE sip:13125550100@")


@pytest.mark.lab
def test_486_is_relayed_without_failover(edge: Edge) -> None:
    call = sipp_call(
        edge,
        PBX,
        "3125550100",
        {PEER1: reject_scenario(edge, 486), PEER2: SCENARIOS / "uas_rr.xml"},
        timeout=6,
    )
    assert first_line(received(call.uac), "SIP/2.0 486")
    assert not received(call.uas[PEER2])


@pytest.mark.lab
def test_unknown_source_gets_403(edge: Edge) -> None:
    call = sipp_call(edge, STRANGER, "3125550100", {PEER1: SCENARIOS / "uas_rr.xml"}, timeout=5)
    assert first_line(received(call.uac), "SIP/2.0 403")
    assert not received(call.uas[PEER1])


@pytest.mark.lab
def test_scanner_is_dropped(edge: Edge) -> None:
    call = sipp_call(
        edge,
        PEER1,
        "2025550123",
        {PBX: SCENARIOS / "uas_rr.xml"},
        user_agent="friendly-scanner",
        timeout=4,
    )
    assert received(call.uac) == []
    assert not received(call.uas[PBX])


@pytest.mark.lab
def test_dial_plan_agrees_with_siporch_route(edge: Edge) -> None:
    model = loopback_model()
    dialled = [
        "911",
        "112",
        "01144207123456",
        "13125550100",
        "3125550100",
        "5550123",
        "+442071234567",
        "12",
        "+19005550100",
    ]
    for number in dialled:
        trace = numbers.outbound(model, number, "central")
        out = edge.rpc("dialplan.translate", "1", f"s:{number}")
        m = re.search(r"Output: (\S*)", out)
        assert (m.group(1) if m else number) == trace.number, (number, out)
        routed = edge.rpc("dialplan.translate", "2", f"s:{trace.number}")
        m = re.search(r"Attributes: (\d+)", routed)
        names = [r.name for r in model.routes_for_site("central")]
        got = names[int(m.group(1)) - 1] if m else None
        assert got == trace.route, (number, trace.number, routed)


@pytest.mark.lab
def test_release_switch_and_reload(edge: Edge) -> None:
    """A new release behind `current`, then each table's reload RPC: the running edge takes
    every change without a restart; and back (a rollback), after reload_delta."""
    reloads = (
        ["dispatcher.reload"],
        ["permissions.addressReload"],
        ["dialplan.reload"],
        ["htable.reload", "trunks"],
    )

    def state() -> tuple[bool, bool, str, str]:
        listing = edge.rpc("dispatcher.list")
        m = re.search(r"Output: (\S+)", edge.rpc("dialplan.translate", "1", "s:5550123"))
        v = re.search(r"value: (\S+)", edge.rpc("htable.get", "trunks", "1.max"))
        return (
            f"{PEER1}:5062" in listing,
            f"{NET}.33" in edge.rpc("permissions.addressDump"),
            m.group(1) if m else "",
            v.group(1) if v else "",
        )

    assert state() == (False, False, "+12025550123", "1")
    time.sleep(6)  # reload_delta since any earlier reload; db_text wants a newer mtime
    _release(edge, "b", loopback_model(changed=True))
    for cmd in reloads:
        out = edge.rpc(*cmd)
        assert "error" not in out.lower(), (cmd, out)
    assert state() == (True, True, "+13035550123", "7")
    time.sleep(1.1)
    _release(edge, "a", loopback_model())  # a rollback: files touched again
    refused = edge.rpc("dispatcher.reload")  # within reload_delta (5 s) of the last one
    assert "error" in refused.lower(), refused
    time.sleep(5)
    for cmd in reloads:
        out = edge.rpc(*cmd)
        assert "error" not in out.lower(), (cmd, out)
    assert state() == (False, False, "+12025550123", "1")


def _http_rpc(address: str, method: str) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "method": method, "id": 1}).encode()
    with urllib.request.urlopen(f"http://{address}:5071/RPC", body, timeout=10) as reply:
        return json.load(reply)["result"]


@pytest.mark.lab
def test_json_rpc_over_http(edge: Edge) -> None:
    assert "kamailio" in _http_rpc(EDGE, "core.version")


@pytest.mark.lab
def test_inbound_did_to_direct_trunk(edge: Edge) -> None:
    """hq-fax's DIDs go to the pstn-gw trunk (bypass), the media stays anchored for itsp-a."""
    call = sipp_call(edge, PEER1, "2025550205", {PSTN_GW: SCENARIOS / "uas_rr.xml"})
    assert call.rc == 0, call.uac[-2000:]
    invite = first_line(received(call.uas[PSTN_GW]), "INVITE ")
    assert invite.startswith(f"INVITE sip:+12025550205@{PSTN_GW}:5060"), invite
    assert "c=IN IP4 127.0.0.1" in invite


@pytest.mark.lab
def test_full_trunk_fails_over_to_the_next(edge: Edge) -> None:
    """itsp-a has max_channels 1 here: with one call up, the next goes to itsp-b."""
    work = Path(tempfile.mkdtemp(dir=edge.base))
    servers = [
        subprocess.Popen(
            [
                "sipp",
                "-sf",
                str(SCENARIOS / "uas_rr.xml"),
                "-i",
                ip,
                "-p",
                "5060",
                "-m",
                "20",  # OPTIONS probes from the edge count as calls too
                "-trace_msg",
                "-message_file",
                str(work / f"uas-{ip}.log"),
                "-nostdin",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=work,
        )
        for ip in (PEER1, ITSP_B)
    ]
    time.sleep(0.5)

    def uac(port: int, hold_ms: int) -> list[str]:
        return [
            "sipp",
            "-sf",
            str(UAC),
            "-i",
            PBX,
            "-p",
            str(port),
            f"{EDGE}:5060",
            "-s",
            "3125550100",
            "-m",
            "1",
            "-d",
            str(hold_ms),
            "-timeout",
            "15",
            "-timeout_error",
            "-trace_msg",
            "-message_file",
            str(work / f"uac-{port}.log"),
            "-nostdin",
            "-aa",
        ]

    try:
        first = subprocess.Popen(
            uac(5060, 4000), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work
        )
        time.sleep(1.5)
        second = subprocess.run(
            uac(5062, 300), capture_output=True, timeout=25, cwd=work, check=False
        )
        assert first.wait(timeout=25) == 0
        assert second.returncode == 0, (work / "uac-5062.log").read_text()[-2000:]
    finally:
        for p in servers:
            p.terminate()
            p.wait(timeout=10)
    at_b = received((work / f"uas-{ITSP_B}.log").read_text())
    assert first_line(at_b, "INVITE sip:+13125550100@"), at_b[:1]
    assert (
        first_line(received((work / "uac-5062.log").read_text()), "SIP/2.0 200 OK").count(
            "X-Siporch-Trunk: itsp-b"
        )
        == 1
    )


@pytest.mark.lab
def test_weighted_route(edge: Edge) -> None:
    """International is weighted 70/30 between itsp-a and itsp-b: the call takes one."""
    call = sipp_call(
        edge,
        PBX,
        "011442071234567",
        {PEER1: SCENARIOS / "uas_rr.xml", ITSP_B: SCENARIOS / "uas_rr.xml"},
    )
    assert call.rc == 0, "\n====\n".join(m[:300] for ip in call.uas for m in received(call.uas[ip]))
    invites = [first_line(received(call.uas[ip]), "INVITE ") for ip in (PEER1, ITSP_B)]
    assert invites[0].startswith("INVITE sip:442071234567@") or invites[1].startswith(
        "INVITE sip:+442071234567@"
    ), invites


@pytest.mark.lab
def test_srtp_toward_the_srtp_trunk(edge: Edge) -> None:
    """itsp-b has srtp: required: after both itsp-a peers answer 503, the offer to itsp-b
    is RTP/SAVP with SDES keys, and the PBX side stays plain RTP/AVP."""
    call = sipp_call(
        edge,
        PBX,
        "3125550100",
        {
            PEER1: reject_scenario(edge, 503),
            PEER2: reject_scenario(edge, 503),
            ITSP_B: SCENARIOS / "uas_rr.xml",
        },
    )
    invite = first_line(received(call.uas[ITSP_B]), "INVITE ")
    assert invite.startswith(f"INVITE sip:+13125550100@{ITSP_B}:5060"), invite
    assert "RTP/SAVP" in invite and "a=crypto:" in invite, invite
    ok = first_line(received(call.uac), "SIP/2.0 200 OK")
    assert "X-Siporch-Trunk: itsp-b" in ok
    assert "m=audio" in ok and "RTP/AVP" in ok and "a=crypto" not in ok, ok


@pytest.mark.lab
def test_reinvite_keeps_media_anchored(edge: Edge) -> None:
    """A re-INVITE inside an anchored call: the new offer toward the trunk and the answer
    back to the PBX both go through rtpengine, from the Record-Route parameters alone."""
    call = sipp_call(
        edge,
        PBX,
        "3125550100",
        {PEER1: SCENARIOS / "uas_reinvite.xml"},
        uac_scenario=SCENARIOS / "uac_reinvite.xml",
    )
    assert call.rc == 0, call.uac[-2000:]
    invites = [m for m in received(call.uas[PEER1]) if m.startswith("INVITE ")]
    assert len(invites) == 2, invites
    assert "a=sendonly" in invites[1] and "c=IN IP4 127.0.0.1" in invites[1], invites[1]
    assert PBX not in invites[1]
    oks = [
        m for m in received(call.uac) if m.startswith("SIP/2.0 200 OK") and "CSeq: 2 INVITE" in m
    ]
    assert oks and "a=recvonly" in oks[0] and "c=IN IP4 127.0.0.1" in oks[0], oks


@pytest.mark.lab
def test_registration_trunk(edge: Edge) -> None:
    """The PBX registers itsp-b through the edge (the Contact becomes the edge), then the
    ITSP calls that contact with the DID in To: the call reaches the PBX as E.164."""
    reg = sipp_call(
        edge,
        PBX,
        "examplecorp",
        {ITSP_B: SCENARIOS / "uas_registrar.xml"},
        uac_scenario=SCENARIOS / "uac_register.xml",
        uac_keys={"registrar": f"{ITSP_B}:5060"},
    )
    assert reg.rc == 0, reg.uac[-2000:]
    register = first_line(received(reg.uas[ITSP_B]), "REGISTER ")
    assert register.startswith(f"REGISTER sip:{ITSP_B}:5060 SIP/2.0"), register
    m = re.search(r"^Contact: <([^>]+)>", register, re.M)
    assert m and m.group(1) == f"sip:examplecorp@{EDGE};transport=udp", register
    call = sipp_call(
        edge,
        ITSP_B,
        "+12025550123",
        {PBX: SCENARIOS / "uas_rr.xml"},
        uac_scenario=SCENARIOS / "uac_to_contact.xml",
        uac_keys={"contact": m.group(1)},
    )
    assert call.rc == 0, call.uac[-2000:]
    invite = first_line(received(call.uas[PBX]), "INVITE ")
    assert invite.startswith(f"INVITE sip:+12025550123@{PBX}:5060"), invite
    assert "X-Siporch-Trunk: itsp-b" in invite


@pytest.mark.lab
def test_register_to_a_stranger_is_refused(edge: Edge) -> None:
    reg = sipp_call(
        edge,
        PBX,
        "examplecorp",
        {STRANGER: SCENARIOS / "uas_registrar.xml"},
        uac_scenario=SCENARIOS / "uac_register.xml",
        uac_keys={"registrar": f"{STRANGER}:5060"},
        timeout=4,
    )
    assert first_line(received(reg.uac), "SIP/2.0 404")
    assert not received(reg.uas[STRANGER])


FLOODER = f"{NET}.98"


def _options(i: int, src: str, dst: str) -> bytes:
    return (
        f"OPTIONS sip:{dst}:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {src}:5099;branch=z9hG4bK-flood-{i}\r\n"
        f"From: <sip:flood@{src}>;tag=f{i}\r\nTo: <sip:{dst}>\r\n"
        f"Call-ID: flood-{i}@{src}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


@pytest.mark.lab
def test_flood_is_blocked_while_trunk_calls_go_on(edge: Edge) -> None:
    """80 requests in about a second from one unknown source (density 30 per 2 s): the
    first get 403, then pike bans the source and the edge stops answering it; a trunk's
    call still completes."""
    answers = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((FLOODER, 5099))
        s.settimeout(0.05)
        for i in range(80):
            s.sendto(_options(i, FLOODER, EDGE), (EDGE, 5060))
            time.sleep(0.01)
            with contextlib.suppress(TimeoutError):
                while s.recv(4000).startswith(b"SIP/2.0 403"):
                    answers += 1
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            with contextlib.suppress(TimeoutError):
                if s.recv(4000).startswith(b"SIP/2.0 403"):
                    answers += 1
        assert 0 < answers < 80, answers
        s.settimeout(1.0)
        s.sendto(_options(999, FLOODER, EDGE), (EDGE, 5060))
        with pytest.raises(TimeoutError):
            s.recv(4000)
    assert f"{FLOODER}" in edge.rpc("htable.dump", "ipban")
    call = sipp_call(edge, PEER1, "2025550123", {PBX: SCENARIOS / "uas_rr.xml"})
    assert call.rc == 0, call.uac[-2000:]


@pytest.mark.lab
def test_stray_reply_is_dropped_not_relayed(edge: Edge) -> None:
    """A response that belongs to no transaction, from a trunk peer, with a second Via
    naming another address: the edge drops it instead of relaying it statelessly."""
    victim = STRANGER
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as target,
    ):
        peer.bind((PEER1, 5098))
        target.bind((victim, 5097))
        target.settimeout(1.5)
        reply = (
            "SIP/2.0 200 OK\r\n"
            f"Via: SIP/2.0/UDP {EDGE}:5060;branch=z9hG4bK-stray-1\r\n"
            f"Via: SIP/2.0/UDP {victim}:5097;branch=z9hG4bK-stray-2\r\n"
            f"From: <sip:a@{victim}>;tag=1\r\nTo: <sip:b@{EDGE}>;tag=2\r\n"
            "Call-ID: stray-reply@test\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        for _ in range(3):
            peer.sendto(reply, (EDGE, 5060))
        with pytest.raises(TimeoutError):
            target.recv(4000)


NET2 = "127.0.89"


@pytest.mark.lab
def test_branch_call_fails_over_to_central_trunk_through_central_edge() -> None:
    """Two edges running: a branch call whose own trunk answers 503 leaves through
    itsp-a, relayed to the central edge, which uses exactly that trunk."""
    _need_tools()
    ng_port = 22392
    model = loopback_model(net=NET2, ng_port=ng_port, branch_pbx=True)
    work = Path(tempfile.mkdtemp(prefix="siporch-edges-"))
    edges = []
    for host in ("edge-central", "edge-branch"):
        base = work / host
        (base / "run").mkdir(parents=True)
        e = Edge(base, base, f"unix:{base}/run/kamailio_ctl")
        _release(e, "a", model, host)
        edges.append(e)
    _central, branch = edges
    branch_edge, branch_pbx, branch_peer, central_peer = (f"{NET2}.{n}" for n in (11, 21, 60, 30))
    try:
        with _running(edges, [], ng_port, work):
            call = sipp_call(
                branch,
                branch_pbx,
                "3125550100",
                {branch_peer: reject_scenario(branch, 503), central_peer: SCENARIOS / "uas_rr.xml"},
                target=branch_edge,
            )
            assert call.rc == 0, call.uac[-2000:]
            assert first_line(received(call.uas[branch_peer]), "INVITE sip:+13125550100@")
            invite = first_line(received(call.uas[central_peer]), "INVITE ")
            assert invite.startswith(f"INVITE sip:13125550100@{central_peer}:5060"), invite
            assert "X-Siporch" not in invite
            ok = first_line(received(call.uac), "SIP/2.0 200 OK")
            assert "X-Siporch-Trunk: itsp-a" in ok
    finally:
        shutil.rmtree(work, ignore_errors=True)


NET3 = "127.0.90"


def _make_certs(d: Path, ips: list[str]) -> None:
    """A lab CA and certificates for the edge and a peer, signed by it."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=siporch lab CA",
        "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    (d / "ext").write_text("subjectAltName=" + ",".join(f"IP:{ip}" for ip in ips) + "\n")
    for name in ("edge", "peer"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr")  # fmt: skip
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "ext", "-out", f"{name}.crt")  # fmt: skip


@pytest.mark.lab
@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
@pytest.mark.parametrize("trusted", [True, False], ids=["lab-ca", "self-signed"])
def test_tls_trunk(trusted: bool) -> None:
    """itsp-b over TLS: the edge (TLS listener, certificate from a lab CA) connects to the
    peer, verifies it against the CA and sends the INVITE (RTP/SAVP) over TLS; a peer whose
    certificate the CA did not sign gets nothing. The peer is `openssl s_server`, which
    prints what it receives."""
    _need_tools()
    ng_port = 22396
    work = Path(tempfile.mkdtemp(prefix="siporch-tls-"))
    _make_certs(work, [f"{NET3}.10", f"{NET3}.40"])
    if not trusted:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=stranger", "-keyout", "peer.key", "-out", "peer.crt"],
            cwd=work, check=True, capture_output=True, timeout=60,
        )  # fmt: skip
    data = loopback_model(net=NET3, ng_port=ng_port).model_dump(mode="json")
    data["hosts"]["pbx-central"]["ami"]["secret"] = "x"
    data["trunks"]["itsp-b"]["auth"]["password"] = "x"
    data["hosts"]["edge-central"]["transports"] = [
        {"protocol": "udp", "port": 5060},
        {"protocol": "tls", "port": 5061},
    ]
    data["hosts"]["edge-central"]["tls"] = {
        "certificate": str(work / "edge.crt"),
        "private_key": str(work / "edge.key"),
        "ca": str(work / "ca.crt"),
    }
    data["trunks"]["itsp-b"]["peers"] = [
        {"address": f"{NET3}.40", "port": 5061, "transport": "tls"}
    ]
    base = work / "edge"
    (base / "run").mkdir(parents=True)
    e = Edge(base, base, f"unix:{base}/run/kamailio_ctl")
    _release(e, "a", Model.model_validate(data))
    out = work / "peer.out"
    peer = subprocess.Popen(
        ["stdbuf", "-o0", "openssl", "s_server", "-accept", f"{NET3}.40:5061",
         "-cert", str(work / "peer.crt"), "-key", str(work / "peer.key"), "-msg"],
        stdout=out.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.PIPE,
    )  # fmt: skip
    try:
        with _running([e], [], ng_port, work):
            rejecting = reject_scenario(e, 503)
            sipp_call(
                e,
                f"{NET3}.20",
                "3125550100",
                {f"{NET3}.30": rejecting, f"{NET3}.31": rejecting},
                target=f"{NET3}.10",
                timeout=4,
            )
            _wait(lambda: b"INVITE" in out.read_bytes(), 5)
    finally:
        peer.terminate()
        peer.wait(timeout=10)
        text = out.read_text(errors="replace")
        shutil.rmtree(work, ignore_errors=True)
    if not trusted:
        assert "INVITE" not in text, text[-2000:]
        return
    assert f"INVITE sip:+13125550100@{NET3}.40:5061;transport=tls SIP/2.0" in text, text[-2000:]
    assert "Via: SIP/2.0/TLS" in text
    assert "RTP/SAVP" in text


@pytest.mark.lab
def test_generated_1000_trunks_load_live() -> None:
    """The 1,000-trunk model's data loads into a running Kamailio: every peer in the
    dispatcher, every source in the ACL, DID prefixes and routes answer."""
    _need_tools()
    data = generate(1000)
    for name, address in (("edge-central", "10"), ("edge-branch", "11"), ("pbx-central", "20")):
        data["hosts"][name]["address"] = f"127.0.91.{address}"
    data["hosts"]["edge-central"]["rtpengine"] = {"ng_port": 22390}
    model = Model.model_validate(data)
    work = Path(tempfile.mkdtemp(prefix="siporch-gen-"))
    base = work / "edge"
    (base / "run").mkdir(parents=True)
    e = Edge(base, base, f"unix:{base}/run/kamailio_ctl")
    _release(e, "a", model)
    local = [n for n, t in model.trunks.items() if t.site == "central"]
    try:
        started = time.monotonic()
        with _running([e], [], 22390, work):
            load_s = time.monotonic() - started
            listing = json.dumps(_http_rpc("127.0.91.10", "dispatcher.list"))
            assert listing.count('"URI": "sip:198.19.') == 2 * len(local)
            acl = json.dumps(_http_rpc("127.0.91.10", "permissions.addressDump"))
            assert acl.count('"ip": "198.19.') == 2 * len(local)
            # trunk 0's first DID range, and a generated route
            assert "value: 1" in e.rpc("htable.get", "dids", "p+120000000/12")
            routed = e.rpc("dialplan.translate", "2", "s:+440000012345")
            assert "Attributes: 2" in routed, routed
            assert load_s < 15, load_s
    finally:
        shutil.rmtree(work, ignore_errors=True)
