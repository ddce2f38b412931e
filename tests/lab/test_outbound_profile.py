"""The trunk's outbound profile on a real edge (Kamailio + rtpengine) on loopback: what a
provider actually receives, per branch of a route that fails over across trunks.

The example's route ``us-national`` tries ``itsp-a`` then ``itsp-b``. Here:

* ``itsp-a``: session timers ``originate`` (expires 600, min_se 120), SRTP off, T.38 off;
* ``itsp-b``: session timers ``no``, SRTP ``required``, T.38 on.

The providers are small Python SIP responders that record every request. Proven:

* session timers per branch: toward itsp-a the PBX's ``Session-Expires: 1800`` is reduced to
  600 (its refresher parameter kept), ``Min-SE`` raised to 120, and one is inserted when
  the PBX sent none; toward itsp-b (``no``) none, and ``timer`` is gone from Supported;
  ``accept`` (after a release switch) keeps what the PBX sent, reduced, and inserts none;
* SRTP per branch: itsp-a gets ``RTP/AVP`` without crypto, itsp-b ``RTP/SAVP`` with an
  SDES ``a=crypto`` line, while the PBX side gets ``RTP/AVP`` either way;
* T.38 in the dialog: a re-INVITE offering ``image/t38`` toward itsp-b (t38 on) reaches it
  and its answer comes back; toward itsp-a (t38 off) the edge answers 488 and the provider
  never sees it, and itsp-a's own T.38 offer in that dialog gets 488 from the edge too.

Marked ``lab`` (real daemons, root); loopback only.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from siporch.model.schema import Model
from tests.lab.edgekit import (
    ROOTFS,
    Edge,
    _need_tools,
    _release,
    _running,
    loopback_model,
)

NET = "127.0.86"
EDGE, PBX = f"{NET}.10", f"{NET}.20"
ITSP_A, ITSP_B = f"{NET}.30", f"{NET}.40"  # itsp-a's first peer, itsp-b's peer
NG_PORT = 22386
NUMBER = "+13035550123"  # route us-national: itsp-a, then itsp-b

pytestmark = pytest.mark.lab


def profile_model(itsp_a_timers: str = "originate", probes: bool = False) -> Model:
    """``probes``: every central trunk probed every 5 s, down after 1 failure (the
    dispatcher's), but itsp-b every 8 s, down after 2 (the script's)."""
    data = loopback_model(net=NET, ng_port=NG_PORT).model_dump(mode="json")
    if probes:
        for t in data["trunks"].values():
            if t["site"] == "central":
                t["probe"] = {"enabled": True, "interval": 5, "threshold": 1}
        data["trunks"]["itsp-b"]["probe"] = {"enabled": True, "interval": 8, "threshold": 2}
    for h in data["hosts"].values():
        if h.get("ami"):
            h["ami"]["secret"] = "s"
    for t in data["trunks"].values():
        if t["auth"]["type"] == "register":
            t["auth"]["password"] = "p"
        t["max_channels"] = None
    a, b = data["trunks"]["itsp-a"], data["trunks"]["itsp-b"]
    a["session_timers"] = {"mode": itsp_a_timers, "expires": 600, "min_se": 120}
    a["media"]["srtp"] = "off"
    a["t38"] = False
    b["session_timers"] = {"mode": "no", "expires": 1800, "min_se": 90}
    b["media"]["srtp"] = "required"
    b["t38"] = True
    return Model.model_validate(data)


# ------------------------------------------------------------------------ providers


def _headers(msg: str, name: str) -> list[str]:
    head = msg.split("\r\n\r\n", 1)[0]
    return [
        m.group(1).strip() for m in re.finditer(rf"^{re.escape(name)}\s*:(.*)$", head, re.M | re.I)
    ]


def _body(msg: str) -> str:
    return msg.split("\r\n\r\n", 1)[1] if "\r\n\r\n" in msg else ""


def answer_sdp(offer: str, ip: str) -> str:
    """An answer that takes every stream of ``offer`` on ``ip`` with its protocol (and a
    crypto line of its own for RTP/SAVP)."""
    lines = ["v=0", f"o=- 2 2 IN IP4 {ip}", "s=-", f"c=IN IP4 {ip}", "t=0 0"]
    port = 41000
    for m in re.finditer(r"^m=(\w+) \d+ (\S+) (.*)$", offer, re.M):
        kind, proto, fmts = m.group(1), m.group(2), m.group(3).split()
        fmt = fmts[0] if kind != "image" else "t38"
        lines.append(f"m={kind} {port} {proto} {fmt}")
        port += 2
        if kind == "image":
            lines += ["a=T38FaxVersion:0", "a=T38FaxRateManagement:transferredTCF"]
        if "SAVP" in proto:
            key = base64.b64encode(os.urandom(30)).decode()
            lines.append(f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}")
    return "\r\n".join(lines) + "\r\n"


@dataclass
class Provider:
    """A provider SBC on ``ip``:5060: OPTIONS 200; INVITE ``invite_code`` (200 with an
    SDP answer, or a failure); in-dialog INVITE 200 with an answer; BYE 200. Records every
    request it gets."""

    name: str
    ip: str
    invite_code: int = 200
    silent: bool = False
    requests: list[str] = field(default_factory=list)
    options: list[float] = field(default_factory=list)  # when each OPTIONS arrived
    responses: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _sock: socket.socket | None = None

    def reinvite(self, invite: str, sdp: str) -> None:
        """A re-INVITE from the provider in the dialog of ``invite`` (which it answered):
        to its Contact, through its Record-Route set, via the edge."""
        assert self._sock is not None
        head = invite.split("\r\n\r\n", 1)[0]
        to = next(ln for ln in head.split("\r\n") if re.match(r"^(To|t):", ln, re.I))
        frm = next(ln for ln in head.split("\r\n") if re.match(r"^(From|f):", ln, re.I))
        target = re.sub(r"^.*<([^>]+)>.*$", r"\1", _headers(invite, "Contact")[0])
        body = sdp.format(ip=self.ip)
        lines = [
            f"INVITE {target} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.ip}:5060;branch=z9hG4bK{uuid.uuid4().hex[:16]}",
            "Max-Forwards: 70",
            "From:" + to.split(":", 1)[1] + f";tag=p{self.name}",
            "To:" + frm.split(":", 1)[1],
            f"Call-ID: {_headers(invite, 'Call-ID')[0]}",
            "CSeq: 10 INVITE",
            *[f"Route: {r}" for r in _headers(invite, "Record-Route")],
            f"Contact: <sip:{self.name}@{self.ip}:5060>",
            "Content-Type: application/sdp",
            f"Content-Length: {len(body)}",
            "",
            body,
        ]
        self._sock.sendto("\r\n".join(lines).encode(), (EDGE, 5060))

    def final_codes(self) -> list[int]:
        return [
            int(r.split(" ", 2)[1])
            for r in self.responses
            if "INVITE" in (_headers(r, "CSeq") or [""])[0] and not r.startswith("SIP/2.0 1")
        ]

    def invites(self) -> list[str]:
        return [m for m in self.requests if m.startswith("INVITE ")]

    def reply(self, msg: str) -> bytes | None:
        first = msg.split("\r\n", 1)[0]
        if first.startswith("SIP/2.0"):
            self.responses.append(msg)
            return None
        if first.startswith("ACK "):
            return None
        if first.startswith("OPTIONS "):
            self.options.append(time.monotonic())
        else:
            self.requests.append(msg)
        if self.silent:
            return None
        in_dialog = ";tag=" in (_headers(msg, "To") or _headers(msg, "t") or [""])[0]
        code, reason, body = 200, "OK", ""
        if first.startswith("INVITE "):
            if not in_dialog and self.invite_code != 200:
                code, reason = self.invite_code, "Service Unavailable"
            else:
                body = answer_sdp(_body(msg), self.ip)
        keep = [
            line
            for line in msg.split("\r\n\r\n", 1)[0].split("\r\n")
            if re.match(r"^(Via|v|From|f|Call-ID|i|CSeq|Record-Route):", line, re.I)
        ]
        to = next(
            (ln for ln in msg.split("\r\n") if re.match(r"^(To|t):", ln, re.I)), "To: <sip:x>"
        )
        if ";tag=" not in to:
            to += f";tag=p{self.name}"
        out = [f"SIP/2.0 {code} {reason}", *keep, to, f"Contact: <sip:{self.name}@{self.ip}:5060>"]
        if body:
            out += ["Content-Type: application/sdp"]
        out += [f"Content-Length: {len(body)}", "", body]
        return "\r\n".join(out).encode()

    def start(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.ip, 5060))
        s.settimeout(0.2)
        self._sock = s
        threading.Thread(target=self._run, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            self._sock.close()

    def _run(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                data, addr = self._sock.recvfrom(65535)
            except (TimeoutError, OSError):
                continue
            out = self.reply(data.decode(errors="replace"))
            if out:
                with contextlib.suppress(OSError):
                    self._sock.sendto(out, addr)


# ----------------------------------------------------------------------- the PBX side


OFFER_AUDIO = (
    "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
)
OFFER_T38 = (
    "v=0\r\no=- 1 2 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
    "m=image 40002 udptl t38\r\na=T38FaxVersion:0\r\na=T38MaxBitRate:14400\r\n"
    "a=T38FaxRateManagement:transferredTCF\r\na=T38FaxUdpEC:t38UDPRedundancy\r\n"
)


class PbxCall:
    """One call from the PBX (``PBX``:port) through the edge, as Asterisk would send it."""

    def __init__(self, extra: str = "") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((PBX, 0))
        self.port = self.sock.getsockname()[1]
        self.call_id = uuid.uuid4().hex
        self.tag = "t" + self.call_id[:8]
        self.cseq = 1
        self.extra = extra
        self.to = f"To: <sip:{NUMBER}@{EDGE}>"
        self.ruri = f"sip:{NUMBER}@{EDGE}:5060"
        self.routes: list[str] = []

    def close(self) -> None:
        self.sock.close()

    def _request(self, method: str, body: str = "", cseq_method: str | None = None) -> str:
        branch = "z9hG4bK" + uuid.uuid4().hex[:16]
        lines = [
            f"{method} {self.ruri} SIP/2.0",
            f"Via: SIP/2.0/UDP {PBX}:{self.port};branch={branch}",
            "Max-Forwards: 70",
            f"From: <sip:2125550111@{PBX}>;tag={self.tag}",
            self.to,
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} {cseq_method or method}",
            *[f"Route: {r}" for r in self.routes],
            f"Contact: <sip:2125550111@{PBX}:{self.port}>",
            "User-Agent: Asterisk PBX 20",
            "Allow: OPTIONS, REGISTER, SUBSCRIBE, NOTIFY, PUBLISH, INVITE, ACK, BYE, CANCEL, "
            "UPDATE, PRACK, MESSAGE, REFER",
        ]
        if self.extra and method == "INVITE":
            lines += [h for h in self.extra.split("\r\n") if h]
        if body:
            lines.append("Content-Type: application/sdp")
        lines += [f"Content-Length: {len(body)}", "", body]
        return "\r\n".join(lines)

    def _final(self, timeout: float) -> tuple[int, str]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.sock.settimeout(max(0.1, end - time.monotonic()))
            try:
                data = self.sock.recv(65535).decode(errors="replace")
            except TimeoutError:
                break
            if not data.startswith("SIP/2.0"):
                continue
            code = int(data.split(" ", 2)[1])
            if code >= 200:
                return code, data
        return 0, ""

    def invite(self, timeout: float = 15) -> tuple[int, str]:
        self.sock.sendto(self._request("INVITE", OFFER_AUDIO.format(ip=PBX)).encode(), (EDGE, 5060))
        code, reply = self._final(timeout)
        if code >= 200:
            self.to = next(ln for ln in reply.split("\r\n") if re.match(r"^(To|t):", ln, re.I))
        if 200 <= code < 300:
            self.routes = list(reversed(_headers(reply, "Record-Route")))
            contact = _headers(reply, "Contact")[0]
            self.ruri = re.sub(r"^.*<([^>]+)>.*$", r"\1", contact)
        self.ack()
        return code, reply

    def ack(self) -> None:
        self.sock.sendto(self._request("ACK", cseq_method="ACK").encode(), (EDGE, 5060))

    def reinvite(self, sdp: str, timeout: float = 10) -> tuple[int, str]:
        self.cseq += 1
        self.sock.sendto(self._request("INVITE", sdp.format(ip=PBX)).encode(), (EDGE, 5060))
        code, reply = self._final(timeout)
        self.ack()
        return code, reply

    def bye(self) -> int:
        self.cseq += 1
        self.sock.sendto(self._request("BYE").encode(), (EDGE, 5060))
        return self._final(5)[0]


# ------------------------------------------------------------------------- the setup


@dataclass
class Setup:
    edge: Edge
    a: Provider
    b: Provider

    def log(self, tail: int = 4000) -> str:
        return (self.edge.base / "kamailio.log").read_text(errors="replace")[-tail:]


@contextlib.contextmanager
def running(kind: str, probes: bool = False) -> Iterator[Setup]:
    _need_tools()
    if kind == "host":
        base = Path(tempfile.mkdtemp(prefix="siporch-profile-"))
        inner, prefix = base, []
    else:
        if not (ROOTFS / "usr/sbin/kamailio").exists():
            pytest.skip("no lab root built")
        root = ROOTFS.resolve()
        base = Path(tempfile.mkdtemp(prefix="siporch-profile-", dir=root / "tmp"))
        inner, prefix = Path("/") / base.relative_to(root), ["chroot", str(root)]
    (base / "run").mkdir()
    edge = Edge(base, inner, f"unix:{base}/run/kamailio_ctl")
    a = Provider("itspa", ITSP_A)
    b = Provider("itspb", ITSP_B)
    try:
        _release(edge, "a", profile_model(probes=probes))
        a.start()
        b.start()
        with _running([edge], prefix, NG_PORT, base):
            yield Setup(edge, a, b)
    finally:
        a.stop()
        b.stop()
        shutil.rmtree(base, ignore_errors=True)


def _media(msg: str) -> list[str]:
    return re.findall(r"^m=.*$", _body(msg), re.M)


def _wait_for(predicate: Any, seconds: float = 5) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


KINDS = ["host", "lab-root"]
ASTERISK_TIMERS = "Supported: 100rel, timer, replaces, norefersub\r\n"


# ---------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("kind", KINDS)
def test_outbound_profile_per_branch(kind: str) -> None:
    with running(kind) as s:
        # 1. itsp-a refuses (503): the route fails over to itsp-b; each branch gets its
        #    trunk's session timers and media profile
        s.a.invite_code = 503
        call = PbxCall(
            ASTERISK_TIMERS + "Supported: path\r\nSession-Expires: 1800;refresher=uac\r\nMin-SE: 90"
        )
        try:
            code, reply = call.invite()
            assert code == 200, s.log()
            (to_a,) = s.a.invites()
            (to_b,) = s.b.invites()

            # itsp-a (originate, 600/120): reduced, refresher kept, Min-SE raised
            assert _headers(to_a, "Session-Expires") == ["600;refresher=uac"], to_a
            assert _headers(to_a, "Min-SE") == ["120"], to_a
            assert "timer" in _headers(to_a, "Supported")[0]
            # itsp-a: plain RTP, no crypto
            assert _media(to_a) and all(" RTP/AVP " in m for m in _media(to_a)), to_a
            assert "a=crypto:" not in to_a

            # itsp-b (no): no session timer headers, no timer option tag
            assert _headers(to_b, "Session-Expires") == [], to_b
            assert _headers(to_b, "x") == [], to_b
            assert _headers(to_b, "Min-SE") == [], to_b
            (supported,) = _headers(to_b, "Supported")
            assert "timer" not in supported, to_b
            assert supported == "100rel,replaces,norefersub,path", to_b  # both headers kept
            # itsp-b (srtp required): RTP/SAVP with an SDES key
            audio = [m for m in _media(to_b) if m.startswith("m=audio")]
            assert audio and " RTP/SAVP " in audio[0], to_b
            assert re.search(
                r"^a=crypto:\d+ AES_CM_128_HMAC_SHA1_(80|32) inline:", _body(to_b), re.M
            )
            # the PBX side stays plain RTP
            assert [m for m in _media(reply) if " RTP/AVP " in m], reply
            assert "a=crypto:" not in reply

            # 2. T.38 toward itsp-b (t38 on): passes, udptl relayed by rtpengine
            code, t38_reply = call.reinvite(OFFER_T38)
            assert code == 200, s.log()
            assert _wait_for(lambda: len(s.b.invites()) == 2)
            reinvite = s.b.invites()[1]
            assert re.search(r"^m=image [1-9]\d* udptl t38", _body(reinvite), re.M), reinvite
            assert f"c=IN IP4 {PBX}" not in reinvite  # anchored: rtpengine's address
            assert re.search(r"^m=image [1-9]\d* udptl t38", _body(t38_reply), re.M), t38_reply
            assert call.bye() == 200
        finally:
            call.close()

        # 3. itsp-a answers: no Session-Expires from the PBX -> inserted (originate);
        #    T.38 toward it (t38 off) -> 488 from the edge, itsp-a never sees it
        s.a.invite_code = 200
        s.a.requests.clear()
        call = PbxCall(ASTERISK_TIMERS)
        try:
            code, _ = call.invite()
            assert code == 200, s.log()
            (to_a,) = s.a.invites()
            assert _headers(to_a, "Session-Expires") == ["600"], to_a
            assert _headers(to_a, "Min-SE") == ["120"], to_a
            code, refused = call.reinvite(OFFER_T38)
            assert code == 488, refused + s.log()
            assert "siporch: t38 refused trunk=itsp-a" in s.log(10**7)
            time.sleep(0.3)  # nothing may arrive at itsp-a meanwhile
            assert len(s.a.invites()) == 1, s.a.invites()
            # the provider offering T.38 on this trunk is refused the same way
            s.a.reinvite(to_a, OFFER_T38)
            assert _wait_for(lambda: s.a.final_codes() != []), s.log()
            assert s.a.final_codes() == [488], s.a.responses
            assert s.log(10**7).count("siporch: t38 refused trunk=itsp-a") == 2, s.log()
            # an audio re-INVITE in the same dialog still passes
            code, _ = call.reinvite(OFFER_AUDIO)
            assert code == 200, s.log()
            assert _wait_for(lambda: len(s.a.invites()) == 2)
            assert call.bye() == 200
        finally:
            call.close()

        # 4. itsp-a with session timers `accept` (a release switch, htable reload): what the
        #    PBX sent is kept (reduced to the trunk's expires); nothing is inserted
        _release(s.edge, "b", profile_model(itsp_a_timers="accept"))
        assert "error" not in s.edge.rpc("htable.reload", "trunks").lower()
        for extra, want in (
            (ASTERISK_TIMERS + "Session-Expires: 1800\r\nMin-SE: 90", ["600"]),
            (ASTERISK_TIMERS, []),
        ):
            s.a.requests.clear()
            call = PbxCall(extra)
            try:
                code, _ = call.invite()
                assert code == 200, s.log()
                (to_a,) = s.a.invites()
                assert _headers(to_a, "Session-Expires") == want, to_a
                assert call.bye() == 200
            finally:
                call.close()


def _state(edge: Edge, uri_host: str) -> str:
    """The dispatcher flags (e.g. AP, IX) of the destination on ``uri_host``."""
    out = edge.rpc("dispatcher.list")
    m = re.search(rf"URI: sip:{re.escape(uri_host)}:5060[^\n]*\n\s*FLAGS: (\w+)", out)
    return m.group(1) if m else ""


def _gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


@pytest.mark.parametrize("kind", KINDS)
def test_probe_interval_and_threshold_per_trunk(kind: str) -> None:
    """itsp-a is probed by the dispatcher every 5 s; itsp-b, which asks for 8 s and 2
    failures, by the script: every 8 s, taken out after its second missed probe (not the
    first), and back at its first answer."""
    with running(kind, probes=True) as s:
        assert _wait_for(lambda: len(s.b.options) >= 3 and len(s.a.options) >= 4, 40), s.log()
        a_gaps, b_gaps = _gaps(s.a.options), _gaps(s.b.options)
        assert all(4 < g < 6.5 for g in a_gaps[1:]), a_gaps
        assert all(7 < g < 9.5 for g in b_gaps), b_gaps
        assert _state(s.edge, ITSP_B).startswith("A"), s.edge.rpc("dispatcher.list")

        # itsp-b goes silent: one missed probe is not enough, the second takes it out
        s.b.silent = True
        silent_at = time.monotonic()
        assert _wait_for(lambda: "failures=1" in s.log(10**7), 20), s.log()
        assert "code=408" in s.log(10**7)  # no answer: tm's own 408
        assert _state(s.edge, ITSP_B).startswith("A"), s.edge.rpc("dispatcher.list")
        assert _wait_for(lambda: _state(s.edge, ITSP_B).startswith("I"), 20), s.log()
        took = time.monotonic() - silent_at
        assert "probe down trunk=itsp-b" in s.log(10**7) and "after 2 failures" in s.log(10**7)
        assert 8 < took < 8 * 2 + 6, took  # two probes 8 s apart, the second's timeout

        # it answers again: back at the next probe
        s.b.silent = False
        back_from = time.monotonic()
        assert _wait_for(lambda: _state(s.edge, ITSP_B).startswith("A"), 15), s.log()
        assert time.monotonic() - back_from < 10
        assert "probe up trunk=itsp-b" in s.log(10**7)


@pytest.mark.parametrize("kind", KINDS)
def test_dispatcher_probe_timeout_is_not_an_answer(kind: str) -> None:
    """itsp-a, probed by the dispatcher (every 5 s, down after 1 failure), goes silent: its
    probes end with tm's own 408 after fr_timer, which is no answer (ds_ping_reply_codes
    has every 4xx but 408): the peer goes down and stays down through the next probes
    that time out, and is back at its first answer."""
    with running(kind, probes=True) as s:
        assert _wait_for(lambda: len(s.a.options) >= 2, 20), s.log()
        assert _state(s.edge, ITSP_A).startswith("A"), s.edge.rpc("dispatcher.list")
        s.a.silent = True
        assert _wait_for(lambda: _state(s.edge, ITSP_A).startswith("I"), 5 + 4 + 6), s.edge.rpc(
            "dispatcher.list"
        )
        # the next probes time out too (5 s apart, 4 s each): never up meanwhile
        after = len(s.a.options)
        assert not _wait_for(lambda: _state(s.edge, ITSP_A).startswith("A"), 2 * 5 + 4 + 1), (
            _state(s.edge, ITSP_A),
            len(s.a.options) - after,
        )
        assert len(s.a.options) >= after + 2
        s.a.silent = False
        assert _wait_for(lambda: _state(s.edge, ITSP_A).startswith("A"), 5 + 2), s.edge.rpc(
            "dispatcher.list"
        )
