"""Peers by name on a real edge, on loopback: the example's ``itsp-c`` (a SIP domain)
resolved by Kamailio at call time from a real DNS server (dnsmasq on 127.0.89.53, seen by
Kamailio only: a private mount namespace gives it its own resolv.conf).

* SRV order and failover: the first SRV target is silent (a partition), the call goes to
  the second.
* A changed DNS answer is used without a deploy (time measured, polled).
* An INVITE from outside the trunk's CIDR block gets 403; from inside it, it is the trunk's.
* TLS: the SNI and the certificate name. A peer whose certificate names it passes; one
  whose certificate does not fails the call with 503 and the edge logs
  ``siporch: tls name mismatch``.
* A REGISTER from the PBX to the registrar ``itsp-c.example`` is relayed by the name, its
  answer to the challenge goes to the server that challenged, a silent one is left for
  the name again; an unknown name gets 404, a stranger 403.

Marked ``lab`` (real daemons, root); loopback only. The providers are small Python SIP
responders (SIPp here has no TLS).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import sqlite3
import ssl
import subprocess
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

NET = "127.0.89"
EDGE, PBX, DNS = f"{NET}.10", f"{NET}.20", f"{NET}.53"
SIP1, SIP2, SIP3, OUTSIDER = f"{NET}.60", f"{NET}.61", f"{NET}.62", f"{NET}.70"
NG_PORT = 22390
NUMBER = "+35312345678"  # route "ireland": itsp-c, then itsp-a

pytestmark = pytest.mark.lab


# ------------------------------------------------------------------------ providers


@dataclass
class Responder:
    """A provider SBC on ``ip``:``port``: answers OPTIONS 200, INVITE 486 (a final reply
    the edge relays without failover), REGISTER 401 without credentials and 200 with them,
    with ``Server: <name>``; or stays silent."""

    name: str
    ip: str
    port: int = 5060
    tls: ssl.SSLContext | None = None
    silent: bool = False
    invites: list[str] = field(default_factory=list)
    registers: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _socks: list[socket.socket] = field(default_factory=list)

    def reply(self, msg: str) -> bytes | None:
        first = msg.split("\r\n", 1)[0]
        if first.startswith("SIP/2.0") or first.startswith("ACK "):
            return None
        if first.startswith("INVITE "):
            self.invites.append(msg)
        if first.startswith("REGISTER "):
            self.registers.append(msg)
        if self.silent:
            return None
        extra = ""
        if first.startswith("REGISTER "):
            if re.search(r"^Authorization:", msg, re.I | re.M):
                code = "200 OK"
            else:
                code = "401 Unauthorized"
                extra = (
                    f'WWW-Authenticate: Digest realm="itsp-c.example", nonce="{self.name}n1", '
                    'algorithm=MD5, qop="auth"\r\n'
                )
        else:
            code = "200 OK" if first.startswith("OPTIONS ") else "486 Busy Here"
        keep = [
            line
            for line in msg.split("\r\n")
            if re.match(r"^(Via|From|To|Call-ID|CSeq|Record-Route|v|f|t|i):", line, re.I)
        ]
        keep = [f"{h};tag=p{self.name}" if re.match(r"^(To|t):", h, re.I) else h for h in keep]
        return (
            f"SIP/2.0 {code}\r\n" + "\r\n".join(keep) + f"\r\nServer: {self.name}\r\n"
            f"{extra}Content-Length: 0\r\n\r\n"
        ).encode()

    def start(self) -> None:
        if self.tls is None:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((self.ip, self.port))
            s.settimeout(0.2)
            self._socks.append(s)
            threading.Thread(target=self._udp, args=(s,), daemon=True).start()
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((self.ip, self.port))
            s.listen(8)
            s.settimeout(0.2)
            self._socks.append(s)
            threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.close()

    def _udp(self, s: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                data, addr = s.recvfrom(65535)
            except (TimeoutError, OSError):
                continue
            out = self.reply(data.decode(errors="replace"))
            if out:
                with contextlib.suppress(OSError):
                    s.sendto(out, addr)

    def _accept(self, s: socket.socket) -> None:
        assert self.tls is not None
        while not self._stop.is_set():
            try:
                raw, _ = s.accept()
            except (TimeoutError, OSError):
                continue
            try:
                raw.settimeout(5)
                conn = self.tls.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError):
                raw.close()
                continue
            self._socks.append(conn)
            threading.Thread(target=self._stream, args=(conn,), daemon=True).start()

    def _stream(self, conn: ssl.SSLSocket) -> None:
        buf = b""
        conn.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data = conn.recv(65535)
            except (TimeoutError, ssl.SSLError):
                continue
            except OSError:
                return
            if not data:
                return
            buf += data
            while b"\r\n\r\n" in buf:
                head, rest = buf.split(b"\r\n\r\n", 1)
                m = re.search(rb"^(?:Content-Length|l):\s*(\d+)", head, re.I | re.M)
                size = int(m.group(1)) if m else 0
                if len(rest) < size:
                    break
                buf = rest[size:]
                out = self.reply(head.decode(errors="replace") + "\r\n\r\n")
                if out:
                    with contextlib.suppress(OSError):
                        conn.sendall(out)


def invite(src: str, number: str = NUMBER, timeout: float = 15) -> tuple[int, str]:
    """An INVITE from ``src`` to the edge over UDP: (final code, final reply)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((src, 0))
        port = s.getsockname()[1]
        call_id = uuid.uuid4().hex
        branch = "z9hG4bK" + uuid.uuid4().hex[:16]
        sdp = (
            f"v=0\r\no=- 1 1 IN IP4 {src}\r\ns=-\r\nc=IN IP4 {src}\r\nt=0 0\r\n"
            "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        )
        msg = (
            f"INVITE sip:{number}@{EDGE}:5060 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {src}:{port};branch={branch}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:2125550111@{src}>;tag=t{call_id[:8]}\r\n"
            f"To: <sip:{number}@{EDGE}>\r\n"
            f"Call-ID: {call_id}\r\n"
            "CSeq: 1 INVITE\r\n"
            f"Contact: <sip:2125550111@{src}:{port}>\r\n"
            "User-Agent: siporch-test\r\n"
            "Content-Type: application/sdp\r\n"
            f"Content-Length: {len(sdp)}\r\n\r\n{sdp}"
        )
        s.sendto(msg.encode(), (EDGE, 5060))
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            s.settimeout(max(0.1, end - time.monotonic()))
            try:
                data = s.recv(65535).decode(errors="replace")
            except TimeoutError:
                break
            code = int(data.split(" ", 2)[1])
            if code >= 200:
                ack = (
                    f"ACK sip:{number}@{EDGE}:5060 SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP {src}:{port};branch={branch}\r\n"
                    "Max-Forwards: 70\r\n"
                    f"From: <sip:2125550111@{src}>;tag=t{call_id[:8]}\r\n"
                    + next(
                        (ln for ln in data.split("\r\n") if ln.lower().startswith("to:")),
                        f"To: <sip:{number}@{EDGE}>",
                    )
                    + f"\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
                )
                s.sendto(ack.encode(), (EDGE, 5060))
                return code, data
        return 0, ""


def register(
    src: str, registrar: str, cseq: int, call_id: str, auth: bool = False, timeout: float = 15
) -> tuple[int, str]:
    """A REGISTER from ``src`` to the edge (the edge as outbound proxy, the registrar in
    the Request-URI), as the PBX sends it: (final code, final reply)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((src, 0))
        port = s.getsockname()[1]
        branch = "z9hG4bK" + uuid.uuid4().hex[:16]
        credentials = (
            'Authorization: Digest username="u", realm="itsp-c.example", nonce="n", '
            f'uri="sip:{registrar}", response="00000000000000000000000000000000"\r\n'
            if auth
            else ""
        )
        msg = (
            f"REGISTER sip:{registrar} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {src}:{port};branch={branch}\r\n"
            f"Route: <sip:{EDGE}:5060;lr>\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:u@{registrar}>;tag=r{call_id[:8]}\r\n"
            f"To: <sip:u@{registrar}>\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: {cseq} REGISTER\r\n"
            f"Contact: <sip:u@{src}:{port}>\r\n"
            "Expires: 600\r\n"
            f"{credentials}"
            "Content-Length: 0\r\n\r\n"
        )
        s.sendto(msg.encode(), (EDGE, 5060))
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            s.settimeout(max(0.1, end - time.monotonic()))
            try:
                data = s.recv(65535).decode(errors="replace")
            except TimeoutError:
                break
            code = int(data.split(" ", 2)[1])
            if code >= 200:
                return code, data
        return 0, ""


def _cseqs(msgs: list[str]) -> list[int]:
    """The CSeq numbers of ``msgs``, retransmissions once."""
    out: list[int] = []
    for m in msgs:
        found = re.search(r"^CSeq: *(\d+)", m, re.M)
        if found and int(found.group(1)) not in out:
            out.append(int(found.group(1)))
    return out


# ------------------------------------------------------------------------- the setup


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _certificates(d: Path) -> None:
    """A CA, the edge's certificate, and sip1/sip2's with SANs sipN.itsp-c.example and
    itsp-c.example (as the lab's)."""
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
        "ca.crt", "-days", "2", "-subj", "/CN=siporch test CA", cwd=d,
    )  # fmt: skip
    for name, sans in (
        ("edge", "DNS:edge.example.com"),
        ("sip1", "DNS:sip1.itsp-c.example,DNS:itsp-c.example"),
        ("sip2", "DNS:sip2.itsp-c.example,DNS:itsp-c.example"),
    ):
        _openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
            f"{name}.csr", "-subj", f"/CN={name}", cwd=d,
        )  # fmt: skip
        (d / f"{name}.ext").write_text(f"subjectAltName={sans}\n")
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
            cwd=d,
        )  # fmt: skip


def _tls_context(d: Path, name: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(d / f"{name}.crt"), str(d / f"{name}.key"))
    return ctx


def names_model(inner: Path, itsp_c: dict[str, Any]) -> Model:
    """The loopback example on 127.0.89.x with a TLS listener on the edge and ``itsp-c``
    as given; the ``ireland`` route fails over after 2 s."""
    data = loopback_model(net=NET, ng_port=NG_PORT).model_dump(mode="json")
    for h in data["hosts"].values():
        if h.get("ami"):
            h["ami"]["secret"] = "s"
    for t in data["trunks"].values():
        if t["auth"]["type"] == "register":
            t["auth"]["password"] = "p"
    edge = data["hosts"]["edge-central"]
    edge["transports"] = [{"protocol": "udp", "port": 5060}, {"protocol": "tls", "port": 5061}]
    edge["tls"] = {
        "certificate": str(inner / "pki/edge.crt"),
        "private_key": str(inner / "pki/edge.key"),
        "ca": str(inner / "pki/ca.crt"),
    }
    data["trunks"]["itsp-c"].update(itsp_c)
    for r in data["routes"]:
        if r["name"] == "ireland":
            r["failover_timeout"] = 2
    return Model.model_validate(data)


HOSTS_FILE = "hosts"


def _dnsmasq_args(d: Path) -> list[str]:
    srv = [
        "_sip._udp.itsp-c.example,sip1.itsp-c.example,5060,10,10",
        "_sip._udp.itsp-c.example,sip2.itsp-c.example,5060,20,10",
        "_sips._tcp.itsp-c.example,sip1.itsp-c.example,5061,10,10",
        "_sips._tcp.itsp-c.example,sip2.itsp-c.example,5061,20,10",
    ]
    return [
        "dnsmasq",
        "--keep-in-foreground",
        "--user=root",  # it reads the hosts file in the test's private directory
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--no-poll",
        f"--listen-address={DNS}",
        "--bind-interfaces",
        "--port=53",
        "--local-ttl=2",
        "--local=/example/",
        f"--addn-hosts={d / HOSTS_FILE}",
        f"--pid-file={d / 'dnsmasq.pid'}",
        f"--log-facility={d / 'dnsmasq.log'}",
        "--log-queries",
        "--naptr-record=itsp-c.example,10,10,S,SIP+D2U,,_sip._udp.itsp-c.example",
        "--naptr-record=itsp-c.example,20,10,S,SIPS+D2T,,_sips._tcp.itsp-c.example",
        *[f"--srv-host={s}" for s in srv],
    ]


def write_hosts(d: Path, sip1: str = SIP1) -> None:
    (d / HOSTS_FILE).write_text(
        f"{sip1} sip1.itsp-c.example\n{SIP2} sip2.itsp-c.example\n{SIP2} wrong.itsp-c.example\n"
    )


@dataclass
class Setup:
    edge: Edge
    pki: Path
    dns: subprocess.Popen[bytes]
    kind: str

    def log(self) -> str:
        return (self.edge.base / "kamailio.log").read_text(errors="replace")

    def reload_dns(self) -> None:
        self.dns.send_signal(1)  # SIGHUP: dnsmasq re-reads the addn-hosts file


@contextlib.contextmanager
def running(kind: str, itsp_c: dict[str, Any]) -> Iterator[Setup]:
    _need_tools()
    for tool in ("dnsmasq", "openssl", "unshare"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    if kind == "host":
        base = Path(__import__("tempfile").mkdtemp(prefix="siporch-names-"))
        inner = base
    else:
        if not (ROOTFS / "usr/sbin/kamailio").exists():
            pytest.skip("no lab root built")
        root = ROOTFS.resolve()
        base = Path(__import__("tempfile").mkdtemp(prefix="siporch-names-", dir=root / "tmp"))
        inner = Path("/") / base.relative_to(root)
    (base / "run").mkdir()
    pki = base / "pki"
    pki.mkdir()
    _certificates(pki)
    write_hosts(base)
    resolv = base / "resolv.conf"
    resolv.write_text(f"nameserver {DNS}\noptions timeout:1 attempts:1\n")
    if kind == "host":
        wrap = f'mount --bind {resolv} /etc/resolv.conf && exec "$@"'
    else:
        wrap = f'mount --bind {resolv} {root}/etc/resolv.conf && exec chroot {root} "$@"'
    prefix = ["unshare", "--mount", "--propagation", "private", "sh", "-c", wrap, "sh"]
    edge = Edge(base, inner, f"unix:{base}/run/kamailio_ctl")
    dns = subprocess.Popen(_dnsmasq_args(base), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(0.3)
        if dns.poll() is not None:
            pytest.fail(
                "dnsmasq did not start: " + dns.stderr.read().decode() if dns.stderr else ""
            )
        _release(edge, "a", names_model(inner, itsp_c))
        with _running([edge], prefix, NG_PORT, base):
            yield Setup(edge, pki, dns, kind)
    finally:
        dns.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            dns.wait(timeout=5)
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def responders(*rs: Responder) -> Iterator[None]:
    for r in rs:
        r.start()
    try:
        yield
    finally:
        for r in rs:
            r.stop()


def server(reply: str) -> str:
    m = re.search(r"^Server: (.*)$", reply, re.M)
    return m.group(1).strip() if m else ""


KINDS = ["host", "lab-root"]


# ---------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("kind", KINDS)
def test_srv_failover_dns_change_and_cidr_trust(kind: str) -> None:
    itsp_c = {
        "peers": [{"address": "itsp-c.example", "transport": "udp"}],
        "inbound_addresses": [f"{NET}.60/30"],
    }
    sip1 = Responder("sip1", SIP1, silent=True)  # partitioned: takes packets, never answers
    sip2 = Responder("sip2", SIP2)
    sip3 = Responder("sip3", SIP3)
    with running(kind, itsp_c) as s, responders(sip1, sip2, sip3):
        # NAPTR -> _sip._udp -> sip1 (priority 10) first; silent -> sip2 (priority 20)
        start = time.monotonic()
        code, reply = invite(PBX)
        took = time.monotonic() - start
        assert code == 486, s.log()[-3000:]
        assert server(reply) == "sip2"
        assert any(m.startswith(f"INVITE sip:{NUMBER}@") for m in sip1.invites), sip1.invites
        assert 1.5 < took < 8, took  # the route's failover_timeout (2 s), then sip2

        # sip1's address changes in DNS (to sip3, which answers): no deploy, no reload
        changed = time.monotonic()
        write_hosts(s.edge.base, sip1=SIP3)
        s.reload_dns()
        seen = ""
        while time.monotonic() - changed < 60:
            code, reply = invite(PBX)
            seen = server(reply)
            if seen == "sip3":
                break
        picked_up = time.monotonic() - changed
        assert seen == "sip3", s.log()[-3000:]
        # the DNS TTL (2 s) or the edge's DNS cache limit (30 s), plus a call's failover
        assert picked_up < 40, picked_up
        print(f"[{kind}] DNS change used after {picked_up:.1f} s")

        # inbound: inside the published /30 (not a peer) is the trunk; outside gets 403
        code, _ = invite(SIP3, number="+12025550123")
        assert code != 403 and code != 0, s.log()[-2000:]
        code, reply = invite(OUTSIDER, number="+12025550123")
        assert code == 403, reply


def _nth_record(edge: Any, n: int, wait: float = 10.0) -> dict[str, Any]:
    """The edge's ``n``-th call record (its SQLite records, from 1), waited for."""
    db = edge.base / "records" / "records.sqlite"
    found: list[dict[str, Any]] = []
    end = time.monotonic() + wait
    while not found and time.monotonic() < end:
        if db.exists():
            con = sqlite3.connect(db, timeout=10)
            con.row_factory = sqlite3.Row
            try:
                rows = [dict(r) for r in con.execute("SELECT * FROM calls ORDER BY id")]
                found = rows[n - 1 : n]
            finally:
                con.close()
        if not found:
            time.sleep(0.2)
    assert found, f"no call record number {n} in {db}"
    return found[0]


@pytest.mark.parametrize("kind", KINDS)
def test_tls_peer_name_is_checked(kind: str) -> None:
    itsp_c = {
        "peers": [{"address": "itsp-c.example", "transport": "tls"}],
        "inbound_addresses": [f"{NET}.60/30"],
    }
    with running(kind, itsp_c) as s:
        sip1 = Responder("sip1", SIP1, 5061, tls=_tls_context(s.pki, "sip1"))
        sip2 = Responder("sip2", SIP2, 5061, tls=_tls_context(s.pki, "sip2"))
        with responders(sip1, sip2):
            # _sips._tcp -> sip1:5061, certificate names itsp-c.example: passes the check
            code, reply = invite(PBX)
            assert code == 486, s.log()[-3000:]
            assert server(reply) == "sip1"
            assert "tls name mismatch" not in s.log()

            # a peer by a name its certificate does not list: the call fails, the log says so
            data = names_model(
                s.edge.inner,
                {"peers": [{"address": "wrong.itsp-c.example", "port": 5061, "transport": "tls"}]},
            )
            _release(s.edge, "b", data)
            # dispatcher refuses a reload within reload_delta (5 s) of the last one, and a
            # reload whose name lookup failed (a negative answer is cached 10 s) keeps the
            # old list; db_text re-reads a table only when its mtime moved: retry, touching
            listed = False
            end = time.monotonic() + 60
            db = s.edge.base / "current" / "kamailio" / "db"
            while not listed and time.monotonic() < end:
                now = time.time()
                for path in db.iterdir():
                    os.utime(path, (now, now))
                s.edge.rpc("dispatcher.reload")
                listed = "wrong.itsp-c.example" in s.edge.rpc("dispatcher.list")
                if not listed:
                    time.sleep(0.5)
            assert listed, s.edge.rpc("dispatcher.list")
            code, reply = invite(PBX)
            assert code == 503, reply + s.log()[-3000:]
            assert "TLS Name Mismatch" in reply.split("\r\n", 1)[0]
            line = next(
                (ln for ln in s.log().splitlines() if "siporch: tls name mismatch" in ln), ""
            )
            assert "peer=wrong.itsp-c.example" in line, s.log()[-3000:]
            assert f"address={SIP2}:5061" in line
            # the call's record names the trunk, the peer and the edge's 503, though the
            # 503 was sent from reply_route (no transaction's AVPs there)
            rec = _nth_record(s.edge, 2)  # the first: the call sip1 answered 486
            assert (rec["trunk"], rec["peer"], rec["code"], rec["reason"]) == (
                "itsp-c", "wrong.itsp-c.example", 503, "TLS Name Mismatch",
            ), rec  # fmt: skip
            assert rec["answer"] is None and int(rec["legs"]) == 1, rec


@pytest.mark.parametrize("kind", KINDS)
def test_trust_from_resolved_addresses_follows_dns(kind: str) -> None:
    """``inbound_trust_resolved`` with no block: the address the dispatcher resolved for
    the name (the first SRV target, sip1) is the trunk's; when DNS moves sip1, the trust
    moves with it (ds_dns_interval 20 s), without a deploy."""
    itsp_c = {
        "peers": [{"address": "itsp-c.example", "transport": "udp"}],
        "inbound_addresses": [],
        "inbound_trust_resolved": True,
    }
    with running(kind, itsp_c) as s:
        did = "+12025550123"  # hq-main: the call goes on to the PBX (nobody there: 408)
        code, reply = invite(SIP1, number=did)
        assert code not in (0, 403), s.log()[-2000:]
        code, reply = invite(SIP2, number=did)
        assert code == 403, reply
        write_hosts(s.edge.base, sip1=SIP3)
        s.reload_dns()
        changed = time.monotonic()
        while time.monotonic() - changed < 60:
            code, _ = invite(SIP3, number=did, timeout=8)
            if code not in (0, 403):
                break
            time.sleep(1)
        took = time.monotonic() - changed
        assert code not in (0, 403), s.log()[-2000:]
        assert took < 40, took
        print(f"[{kind}] trust moved with DNS after {took:.1f} s")
        code, _ = invite(SIP1, number=did)
        assert code == 403


@pytest.mark.parametrize("kind", KINDS)
def test_register_to_a_registrar_by_name(kind: str) -> None:
    """The PBX registers to ``itsp-c.example`` through the edge: the edge relays by the
    name (NAPTR -> SRV: sip1 first, silent here, so DNS failover to sip2), sip2's 401 goes
    back to the PBX, and its answer goes straight to sip2, the server that challenged (not
    to the name again, which would try silent sip1 first). A name that is no trunk's
    registrar gets 404, a REGISTER from outside the PBX hosts 403."""
    itsp_c = {
        "peers": [{"address": "itsp-c.example", "transport": "udp"}],
        "inbound_addresses": [f"{NET}.60/30"],
    }
    sip1 = Responder("sip1", SIP1, silent=True)
    sip2 = Responder("sip2", SIP2)
    with running(kind, itsp_c) as s, responders(sip1, sip2):
        call_id = uuid.uuid4().hex
        code, reply = register(PBX, "itsp-c.example", 1, call_id)
        assert code == 401, s.log()[-3000:]
        assert server(reply) == "sip2" and 'nonce="sip2n1"' in reply, reply
        assert _cseqs(sip1.registers) == [1]
        start = time.monotonic()
        code, reply = register(PBX, "itsp-c.example", 2, call_id, auth=True)
        took = time.monotonic() - start
        assert code == 200 and server(reply) == "sip2", reply + s.log()[-3000:]
        assert took < 2, took  # not through silent sip1 (fr_timer 4 s) first
        assert _cseqs(sip1.registers) == [1], sip1.registers
        assert _cseqs(sip2.registers) == [1, 2]
        # relayed by name, with the edge as the contact
        last = sip2.registers[-1]
        assert last.startswith("REGISTER sip:itsp-c.example SIP/2.0"), last
        assert re.search(rf"^Contact: <sip:u@{re.escape(EDGE)};transport=udp>", last, re.M), last

        code, reply = register(PBX, "unknown.example", 1, uuid.uuid4().hex)
        assert code == 404 and "Unknown Registrar" in reply.split("\r\n", 1)[0], reply
        code, reply = register(OUTSIDER, "itsp-c.example", 1, uuid.uuid4().hex)
        assert code == 403, reply
        assert _cseqs(sip2.registers) == [1, 2]

        # the server that accepted (sip2) goes silent: a refresh with credentials goes to
        # it, times out (fr_timer 4 s), and goes by the name again (sip1, now answering)
        sip2.silent, sip1.silent = True, False
        code, reply = register(PBX, "itsp-c.example", 3, call_id, auth=True, timeout=20)
        assert code == 200 and server(reply) == "sip1", reply + s.log()[-3000:]
        assert _cseqs(sip2.registers) == [1, 2, 3] and _cseqs(sip1.registers) == [1, 3]
        assert "did not answer: REGISTER to itsp-c.example again" in s.log()
