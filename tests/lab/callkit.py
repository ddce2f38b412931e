"""Helpers for real calls in the lab: SIPp peers in the ITSP hosts, SIPp callers, raw SIP
requests, captures with tshark, Asterisk's CLI and the deployed edge's JSON-RPC.

Every process runs in a lab host's network namespace and talks only to lab addresses.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from siporch.deploy import runner
from siporch.monitor.kamailio import DispatcherTarget, parse_dispatcher_list
from siporch.sipp import scenario

REPO = Path(__file__).resolve().parents[2]
LOCK = Path("/tmp/siporch-deploy.lock")
KAMAILIO_HELPER = "/usr/local/lib/siporch/siporch_kamailio.py"
ASTERISK_CONF = "/etc/asterisk/asterisk.conf"
EDGE_CENTRAL = "edge-central"
EDGE_BRANCH = "edge-branch"
PBX = "pbx-central"


class Lab:
    """Names -> (namespace, address) from the lab's description, plus a run helper."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def ns(self, host: str) -> str:
        ns: str = self.handle.netns(host)
        return ns

    def addr(self, host: str) -> str:
        addr: str = self.handle.address(host)
        return addr

    def run(self, host: str, cmd: str | list[str], timeout: float = 60.0) -> str:
        proc = self.handle.run(host, cmd, timeout=timeout)
        return str(proc.stdout) + str(proc.stderr)

    def asterisk(self, command: str) -> str:
        return self.run(PBX, ["asterisk", "-C", ASTERISK_CONF, "-rx", command], timeout=30)

    def rpc(self, edge: str, *args: str) -> Any:
        proc = self.handle.run(edge, [KAMAILIO_HELPER, "rpc", *args], timeout=30)
        try:
            return json.loads(proc.stdout)
        except ValueError:
            return proc.stdout + proc.stderr

    def dispatcher(self, edge: str) -> list[DispatcherTarget]:
        """The edge's dispatcher destinations (``dispatcher.list``)."""
        return parse_dispatcher_list(self.rpc(edge, "dispatcher.list"))

    def set_state(self, edge: str, state: str, group: int, uri: str) -> str:
        """``dispatcher.set_state`` of one destination. Over JSON-RPC with the group as a
        number: kamcmd-style text params fail here."""
        script = (
            "import sys; from pathlib import Path; sys.path.insert(0, '/usr/local/lib/siporch');"
            "import siporch_kamailio as k;"
            "print(k.rpc(Path('/etc/siporch/current/kamailio/kamailio.cfg'),"
            f"'dispatcher.set_state', [{state!r}, {int(group)}, {uri!r}]))"
        )
        proc = self.handle.run(edge, ["python3", "-c", script], timeout=30)
        if proc.returncode != 0:
            raise RuntimeError(f"dispatcher.set_state failed: {proc.stdout}{proc.stderr}")
        return str(proc.stdout)

    def set_active(self, edge: str, group: int, uri: str) -> str:
        """Mark a dispatcher destination active (as it is before probing sees a fault)."""
        return self.set_state(edge, "ap", group, uri)

    def unban(self, edge: str, address: str) -> None:
        """Lift a flood ban of ``address`` (the edge keeps it block_seconds otherwise)."""
        self.rpc(edge, "htable.delete", "ipban", address)


def sipp() -> str:
    exe = shutil.which("sipp")
    if exe is None:
        raise RuntimeError("sipp is not installed (apt-get install sip-tester)")
    return exe


# ------------------------------------------------------------------------ deploy lock


def _lock_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "deploy_lock", REPO / "playbooks" / "files" / "deploy_lock.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@contextlib.contextmanager
def deploy_lock(wait: float) -> Iterator[str]:
    """Hold the controller's deploy lock (no deploy changes the lab under the calls).
    A caller that already holds it (its token in SIPORCH_DEPLOY_LOCK) keeps it."""
    held = os.environ.get("SIPORCH_DEPLOY_LOCK", "")
    if held and _lock_token() == held:
        yield held
        return
    mod = _lock_module()
    deadline = time.monotonic() + wait
    while True:
        token = mod.acquire(LOCK, max(1.0, deadline - time.monotonic()), os.getpid())
        time.sleep(2.0)
        if _lock_token() == token:
            break
    os.environ["SIPORCH_DEPLOY_LOCK"] = token
    try:
        yield token
    finally:
        os.environ.pop("SIPORCH_DEPLOY_LOCK", None)
        mod.release(LOCK, token)


def _lock_token() -> str:
    try:
        owner = json.loads((LOCK / "owner.json").read_text())
    except (OSError, ValueError):
        return ""
    return str(owner.get("token", "")) if isinstance(owner, dict) else ""


def model_hash(inventory: Path) -> str:
    """The 8 hex digits of the model hash that end a release id of ``inventory``."""
    with tempfile.TemporaryDirectory(prefix="siporch-render-") as out:
        proc = subprocess.run(
            ["siporch", "render", "-i", str(inventory), "--out", out, "--json"],
            capture_output=True,
            text=True,
            timeout=300,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"siporch render failed: {proc.stdout}{proc.stderr}")
    rid: str = json.loads(proc.stdout)["id"]
    return rid.rsplit("-", 1)[1]


def current_release(lab: Lab, host: str) -> str:
    return lab.run(host, "readlink /etc/siporch/current 2>/dev/null || true").strip()


def _daemons_up(lab: Lab, host: str) -> bool:
    # the hosts share the machine's process table: ask each daemon's own pid file
    pids = (
        ("/var/run/asterisk/asterisk.pid",)
        if host.startswith("pbx")
        else ("/run/kamailio/kamailio.pid", "/run/rtpengine/rtpengine.pid")
    )
    out = lab.run(
        host, " && ".join(f'kill -0 "$(cat {p})" 2>/dev/null' for p in pids) + " && echo up"
    )
    return out.strip() == "up"


def deploy(inventory: Path, extra_vars: dict[str, Any] | None = None) -> runner.RunResult:
    """deploy-trunk.yml on ``inventory``, with the registration gate off: it needs a
    registrar behind itsp-b, which the lab lacks by default."""
    report = runner.report_path()
    vault = runner.vault_password_file(inventory, None)
    extra = {"asterisk_pbx_health_registrations": False, **(extra_vars or {})}
    cmd = runner.build_command(
        "deploy-trunk.yml", inventory, vault_file=vault, report_file=report, extra_vars=extra
    )
    try:
        return runner.run(cmd, report)
    finally:
        report.unlink(missing_ok=True)


def ensure_deployed(lab: Lab, inventory: Path, hosts: tuple[str, ...]) -> str:
    """Deploy the lab inventory unless every host already runs its current model with its
    daemons up (a lab revived by `lab up` after a reboot has the files but no daemons).
    Returns "" when nothing was needed, else the playbook's last lines."""
    want = model_hash(inventory)
    if all(current_release(lab, h).endswith(f"-{want}") and _daemons_up(lab, h) for h in hosts):
        return ""
    result = deploy(inventory)
    if not result.ok:
        raise RuntimeError("deploy failed:\n" + "\n".join(result.output[-40:]))
    return "\n".join(result.output[-5:])


# ------------------------------------------------------------------------------ SIPp


@dataclass
class Uas:
    """A SIPp UAS listening on ``host``:``port``."""

    host: str
    address: str
    port: int
    transport: str
    workdir: Path
    proc: subprocess.Popen[str] | None = None

    @property
    def message_file(self) -> Path:
        return self.workdir / f"uas-{self.host}-{self.port}.msg"

    def _chunks(self, kind: str) -> list[str]:
        try:
            text = self.message_file.read_text(errors="replace")
        except OSError:
            return []
        return split_messages(text, kind)

    def messages(self) -> list[str]:
        """Every SIP message the UAS received (text, first line first)."""
        return self._chunks("received")

    def sent(self) -> list[str]:
        return self._chunks("sent")

    def invite_times(self) -> list[float]:
        try:
            text = self.message_file.read_text(errors="replace")
        except OSError:
            return []
        return [w for w, m in timed_messages(text, "received") if m.startswith("INVITE ")]

    def invites(self) -> list[str]:
        return [m for m in self.messages() if m.startswith("INVITE ")]

    def invite_users(self) -> list[str]:
        """The request-URI user of every INVITE received."""
        users = []
        for m in self.invites():
            match = re.match(r"INVITE sips?:([^@;> ]+)@", m)
            users.append(match.group(1) if match else "")
        return users


@contextlib.contextmanager
def uas(
    lab: Lab,
    host: str,
    name: str = "uas_peer",
    *,
    port: int = 5060,
    transport: str = "u1",
    rtp_echo: bool = False,
    limit_s: int = 300,
    wait_s: float = 60.0,
    address: str | None = None,
) -> Iterator[Uas]:
    """SIPp running ``siporch/sipp/<name>.xml`` on the host, recording what it receives.
    Waits (bounded) while the port is taken by another run."""
    workdir = Path(tempfile.mkdtemp(prefix=f"siporch-uas-{host}-"))
    addr = address or lab.addr(host)
    u = Uas(host, addr, port, transport, workdir)
    argv = [
        "ip", "netns", "exec", lab.ns(host), sipp(),
        "-sf", str(scenario(name)), "-i", addr, "-mi", addr, "-p", str(port),
        "-t", transport, "-m", "100000", "-nostdin", "-timeout", f"{limit_s}s",
        "-trace_msg", "-message_file", str(u.message_file), "-max_socket", "200",
    ]  # fmt: skip
    if rtp_echo:
        argv.append("-rtp_echo")
    deadline = time.monotonic() + wait_s
    err = ""
    while True:
        proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=workdir
        )
        time.sleep(1.0)
        if proc.poll() is None:
            u.proc = proc
            break
        err = proc.stderr.read().strip() if proc.stderr else ""
        if time.monotonic() > deadline:
            shutil.rmtree(workdir, ignore_errors=True)
            raise RuntimeError(f"SIPp UAS on {host}:{port} did not start: {err[-300:]}")
        time.sleep(3.0)
    peer_up(lab, addr, port)
    try:
        yield u
    finally:
        stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


EDGES = (EDGE_CENTRAL, "edge-central-2", EDGE_BRANCH)


def peer_up(lab: Lab, address: str, port: int = 5060) -> list[str]:
    """Every dispatcher destination at ``address``:``port`` that an edge has down set
    active again, as the edge's next OPTIONS probe would (the peer answers now): the lab's
    providers answer only while a test runs their SIPp, and the edges' probes take a
    silent peer down (a probe's timeout is no answer), up to a probe interval before the
    probe finds the new SIPp. Returns what was set, as ``edge set uri``."""
    done: list[str] = []
    # the lab's hosts from its description (tests/conftest.py's handle and the version
    # matrix's both carry it)
    hosts = lab.handle.info.get("hosts", {})
    for edge in EDGES:
        if edge not in hosts:
            continue
        for t in lab.dispatcher(edge):
            hostport = t.uri.split(":", 1)[-1].split(";")[0]
            if t.flags.startswith("I") and hostport in (f"{address}:{port}", address):
                lab.set_active(edge, t.set_id, t.uri)
                done.append(f"{edge} {t.set_id} {t.uri}")
    return done


def split_messages(text: str, kind: str) -> list[str]:
    """The messages of a SIPp -trace_msg file that were ``kind`` ("received" or "sent")."""
    return [m for _, m in timed_messages(text, kind)]


def timed_messages(text: str, kind: str) -> list[tuple[float, str]]:
    """(UNIX time, message) of each ``kind`` message of a SIPp -trace_msg file."""
    out = []
    parts = re.split(r"-{5,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\n", text)
    for stamp, chunk in zip(parts[1::2], parts[2::2], strict=False):
        first, _, rest = chunk.partition("\n")
        if re.search(rf"message {kind}", first):
            when = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()
            out.append((when, rest.strip("\n")))
    return out


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@dataclass
class UacResult:
    successful: int
    failed: int
    exit_code: int
    stderr: str
    messages: list[str] = field(default_factory=list)
    seconds: float = 0.0


def uac(
    lab: Lab,
    host: str,
    target: str,
    number: str,
    *,
    name: str = "uac_rr",
    calls: int = 1,
    rate: float = 10.0,
    limit: int | None = None,
    duration_ms: int = 2000,
    timeout_s: int = 60,
    transport: str = "u1",
    address: str | None = None,
    port: int = 25090,  # never 0: SIPp may then take 5060, a peer UAS's port
) -> UacResult:
    """Place ``calls`` calls with ``siporch/sipp/<name>.xml`` from ``host`` and wait."""
    addr = address or lab.addr(host)
    with tempfile.TemporaryDirectory(prefix="siporch-uac-") as tmp:
        stat = Path(tmp) / "stat.csv"
        msg = Path(tmp) / "msg.log"
        argv = [
            "ip", "netns", "exec", lab.ns(host), sipp(),
            "-sf", str(scenario(name)), "-s", number,
            "-i", addr, "-mi", addr, "-p", str(port), "-t", transport,
            "-m", str(calls), "-r", f"{rate:g}", "-l", str(limit or calls),
            "-d", str(duration_ms), "-recv_timeout", "15000",
            "-timeout", f"{timeout_s}s", "-timeout_error", "-nostdin",
            "-trace_stat", "-stf", str(stat), "-fd", "1",
            "-trace_msg", "-message_file", str(msg), "-max_socket", "400",
            target,
        ]  # fmt: skip
        start = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s + 30, cwd=tmp)
        seconds = time.monotonic() - start
        ok, failed = _stat(stat)
        text = msg.read_text(errors="replace") if msg.exists() else ""
        msgs = split_messages(text, "received")
        return UacResult(ok, failed, proc.returncode, proc.stderr[-2000:], msgs, seconds)


def _stat(path: Path) -> tuple[int, int]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return 0, 0
    if len(lines) < 2:
        return 0, 0
    head = lines[0].split(";")
    last = lines[-1].split(";")
    idx = {n: i for i, n in enumerate(head)}

    def val(name: str) -> int:
        try:
            return int(last[idx[name]])
        except (KeyError, IndexError, ValueError):
            return 0

    return val("SuccessfulCall(C)"), val("FailedCall(C)")


# ------------------------------------------------------------------- raw SIP requests

_SIP_CLIENT = textwrap.dedent(
    r"""
    import json, socket, sys, time, uuid
    a = json.loads(sys.argv[1])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((a["src"], 0))
    port = s.getsockname()[1]
    s.settimeout(min(0.5, a["wait"]))
    out = []
    for i in range(a["count"]):
        cid = "%s-%d" % (a["call_id"], i)
        branch = "z9hG4bK" + uuid.uuid4().hex[:12]
        body = ("v=0\r\no=- 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"
                "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n") % (a["src"], a["src"])
        head = (
            "INVITE sip:%s@%s SIP/2.0\r\n"
            "Via: SIP/2.0/UDP %s:%d;branch=%s;rport\r\n"
            "From: <sip:2125550111@%s>;tag=%s\r\n"
            "To: <sip:%s@%s>\r\n"
            "Call-ID: %s\r\nCSeq: 1 INVITE\r\n"
            "Contact: <sip:probe@%s:%d>\r\nMax-Forwards: 70\r\n"
            "User-Agent: %s\r\nContent-Type: application/sdp\r\nContent-Length: %d\r\n\r\n"
        ) % (a["number"], a["dst"], a["src"], port, branch, a["src"], uuid.uuid4().hex[:8],
             a["number"], a["dst"], cid, a["src"], port, a["ua"], len(body))
        s.sendto((head + body).encode(), (a["dst"], a["port"]))
        codes = []
        end = time.time() + a["wait"]
        while time.time() < end:
            try:
                data = s.recv(65535).decode(errors="replace")
            except socket.timeout:
                continue
            line = data.split("\r\n", 1)[0]
            if line.startswith("SIP/2.0 "):
                code = int(line.split()[1])
                codes.append(code)
                if code >= 200:
                    if code < 300:
                        break
                    to = [h for h in data.split("\r\n") if h.lower().startswith(("to:", "t:"))]
                    ack = (
                        "ACK sip:%s@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s:%d;branch=%s;rport\r\n"
                        "From: <sip:2125550111@%s>;tag=x\r\n%s\r\nCall-ID: %s\r\n"
                        "CSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
                    ) % (a["number"], a["dst"], a["src"], port, branch, a["src"],
                         to[0] if to else "To: <sip:x@x>", cid)
                    s.sendto(ack.encode(), (a["dst"], a["port"]))
                    break
        out.append({"call_id": cid, "codes": codes})
        if a["gap"]:
            time.sleep(a["gap"])
    print(json.dumps(out))
    """
)


def invite(
    lab: Lab,
    host: str,
    dst: str,
    number: str,
    *,
    src: str | None = None,
    ua: str = "siporch-probe",
    count: int = 1,
    wait: float = 3.0,
    gap: float = 0.0,
    call_id: str | None = None,
) -> list[dict[str, Any]]:
    """Send ``count`` INVITEs over UDP from ``host`` to ``dst``:5060 and return, per
    INVITE, its Call-ID and the status codes received within ``wait`` seconds."""
    args = {
        "src": src or lab.addr(host),
        "dst": dst,
        "port": 5060,
        "number": number,
        "ua": ua,
        "count": count,
        "wait": wait,
        "gap": gap,
        "call_id": call_id or f"siporch-probe-{os.getpid()}-{time.time_ns()}",
    }
    proc = subprocess.run(
        ["ip", "netns", "exec", lab.ns(host), "python3", "-c", _SIP_CLIENT, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=count * (min(wait, 0.5) + wait + gap) + 30,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"SIP probe failed: {proc.stderr[-500:]}")
    result: list[dict[str, Any]] = json.loads(proc.stdout)
    return result


# ------------------------------------------------------------------------- captures


@dataclass
class Capture:
    host: str
    pcap: Path
    proc: subprocess.Popen[bytes] | None = None

    def read(self, display_filter: str, fields: list[str]) -> list[list[str]]:
        proc = subprocess.run(
            ["tshark", "-n", "-r", str(self.pcap), "-Y", display_filter, "-T", "fields",
             *[x for f in fields for x in ("-e", f)], "-E", "separator=|"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        return [line.split("|") for line in proc.stdout.splitlines() if line.strip()]


@contextlib.contextmanager
def capture(lab: Lab, host: str, bpf: str) -> Iterator[Capture]:
    """tshark on the host's eth0 with a capture filter, for the duration of the block."""
    workdir = Path(tempfile.mkdtemp(prefix=f"siporch-cap-{host}-"))
    os.chmod(workdir, 0o777)
    cap = Capture(host, workdir / "cap.pcap")
    argv = ["ip", "netns", "exec", lab.ns(host), "tshark", "-n", "-q", "-i", "eth0",
            "-f", bpf, "-w", str(cap.pcap), "-a", "duration:600"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    cap.proc = proc
    # tshark says "Capturing on 'eth0'" once it listens
    end = time.monotonic() + 20
    while time.monotonic() < end and not cap.pcap.exists():
        time.sleep(0.2)
    time.sleep(1.0)
    try:
        yield cap
    finally:
        time.sleep(1.0)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def cleanup_capture(cap: Capture) -> None:
    shutil.rmtree(cap.pcap.parent, ignore_errors=True)


# ------------------------------------------------------------------------- Asterisk


# Kamailio's log inside a host: the journal of kamailio.service on a systemd host, the
# file the roles' direct mode writes otherwise.
KAMAILIO_LOG_CMD = (
    "if [ -d /run/systemd/system ]; then journalctl -u kamailio.service -o cat --no-pager;"
    " else cat /var/log/siporch/kamailio.log; fi"
)


def originate(lab: Lab, number: str, seconds: int = 4) -> str:
    """An outbound call from the PBX: Local channel into siporch-outbound, Wait on answer."""
    return lab.asterisk(
        f"channel originate Local/{number}@siporch-outbound application Wait {seconds}"
    )


def wait_for(predicate: Any, seconds: float, step: float = 0.2) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


# ------------------------------------------------------------------- a TLS registrar

_REGISTRAR = textwrap.dedent(
    r"""
    import hashlib, json, socket, ssl, sys, threading, time, uuid
    a = json.loads(sys.argv[1])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a["cert"], a["key"])
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((a["addr"], a["port"]))
    srv.listen(16)
    srv.settimeout(1.0)
    end = time.time() + a["limit"]
    log = open(a["log"], "a", buffering=1)
    nonce = uuid.uuid4().hex
    SHORT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length"}

    def md5(s):
        return hashlib.md5(s.encode()).hexdigest()

    def parse(text):
        lines = text.split("\r\n")
        hs = []
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                k = k.strip().lower()
                hs.append((SHORT.get(k, k), v.strip()))
        return lines[0], hs

    def params(value):
        out = {}
        for part in value.split(" ", 1)[1].split(","):
            if "=" in part:
                k, v = part.split("=", 1)
                out[k.strip()] = v.strip().strip('"')
        return out

    def answer(conn, peer, text):
        first, hs = parse(text)
        if first.startswith("SIP/2.0"):
            return
        method = first.split()[0]
        get = lambda k: [v for n, v in hs if n == k]
        if method == "ACK":
            return
        code, extra, ok = "200 OK", [], None
        if method == "REGISTER":
            auth = get("authorization")
            ok = False
            if auth:
                p = params(auth[0])
                ha1 = md5("%s:%s:%s" % (p.get("username"), a["realm"], a["password"]))
                ha2 = md5("REGISTER:%s" % p.get("uri"))
                ok = p.get("response") == md5("%s:%s:%s" % (ha1, p.get("nonce"), ha2))
            contact = (get("contact") or [""])[0]
            log.write(json.dumps({"time": time.time(), "peer": peer[0], "auth": bool(auth),
                                  "ok": ok, "contact": contact, "text": text}) + "\n")
            if ok:
                extra = ["Contact: %s;expires=%d" % (contact.split(";expires")[0], a["expires"])]
            else:
                code = "401 Unauthorized"
                extra = ['WWW-Authenticate: Digest realm="%s", nonce="%s", algorithm=MD5'
                         % (a["realm"], nonce)]
        elif method != "OPTIONS":
            code = "405 Method Not Allowed"
        to = (get("to") or [""])[0]
        if ";tag=" not in to:
            to += ";tag=" + uuid.uuid4().hex[:8]
        out = ["SIP/2.0 " + code] + ["Via: " + v for v in get("via")]
        out += ["From: " + (get("from") or [""])[0], "To: " + to,
                "Call-ID: " + (get("call-id") or [""])[0], "CSeq: " + (get("cseq") or [""])[0]]
        out += extra + ["Content-Length: 0", "", ""]
        conn.sendall("\r\n".join(out).encode())

    def serve(conn, peer):
        buf = b""
        conn.settimeout(1.0)
        while time.time() < end:
            try:
                data = conn.recv(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            buf += data
            while b"\r\n\r\n" in buf:
                head, rest = buf.split(b"\r\n\r\n", 1)
                text = head.decode(errors="replace")
                clen = 0
                for line in text.split("\r\n")[1:]:
                    k = line.split(":", 1)[0].strip().lower()
                    if k in ("content-length", "l"):
                        clen = int(line.split(":", 1)[1])
                if len(rest) < clen:
                    break
                buf = rest[clen:]
                answer(conn, peer, text)

    while time.time() < end:
        try:
            raw, peer = srv.accept()
        except socket.timeout:
            continue
        try:
            conn = ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.write(json.dumps({"time": time.time(), "peer": peer[0], "tls_error": str(exc)}) + "\n")
            continue
        threading.Thread(target=serve, args=(conn, peer), daemon=True).start()
    """
)


@dataclass
class Registrar:
    log: Path
    proc: subprocess.Popen[str] | None = None

    def entries(self) -> list[dict[str, Any]]:
        try:
            lines = self.log.read_text().splitlines()
        except OSError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def registered(self) -> list[dict[str, Any]]:
        return [e for e in self.entries() if e.get("ok")]


@contextlib.contextmanager
def tls_registrar(
    lab: Lab, host: str, *, realm: str, password: str, expires: int, limit_s: int = 300
) -> Iterator[Registrar]:
    """A digest-authenticating SIP registrar over TLS on ``host``:5061, with the host's
    lab certificate (signed by the lab CA, so the edge's TLS client accepts it)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"siporch-registrar-{host}-"))
    reg = Registrar(workdir / "register.jsonl")
    tls = lab.handle.root(host) / "etc" / "siporch" / "tls"
    args = {
        "addr": lab.addr(host),
        "port": 5061,
        "cert": str(tls / f"{host}.crt"),
        "key": str(tls / f"{host}.key"),
        "realm": realm,
        "password": password,
        "expires": expires,
        "limit": limit_s,
        "log": str(reg.log),
    }
    proc = subprocess.Popen(
        ["ip", "netns", "exec", lab.ns(host), "python3", "-c", _REGISTRAR, json.dumps(args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    reg.proc = proc
    time.sleep(1.0)
    if proc.poll() is not None:
        err = proc.stderr.read() if proc.stderr else ""
        shutil.rmtree(workdir, ignore_errors=True)
        raise RuntimeError(f"registrar on {host} did not start: {err[-500:]}")
    try:
        yield reg
    finally:
        stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


# ------------------------------------------------------------- a call over TLS + SRTP

_TLS_CALL = textwrap.dedent(
    r"""
    import base64, json, os, socket, ssl, sys, time, uuid
    a = json.loads(sys.argv[1])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(a["ca"])
    ctx.load_cert_chain(a["cert"], a["key"])
    raw = socket.create_connection((a["dst"], 5061), timeout=5, source_address=(a["src"], 0))
    conn = ctx.wrap_socket(raw)
    lport = conn.getsockname()[1]
    conn.settimeout(0.5)
    buf = b""
    def read(seconds):
        global buf
        end = time.time() + seconds
        while time.time() < end:
            if b"\r\n\r\n" in buf:
                head, rest = buf.split(b"\r\n\r\n", 1)
                text = head.decode(errors="replace")
                clen = 0
                for line in text.split("\r\n")[1:]:
                    if line.split(":", 1)[0].strip().lower() in ("content-length", "l"):
                        clen = int(line.split(":", 1)[1])
                if len(rest) >= clen:
                    buf = rest[clen:]
                    return text, rest[:clen].decode(errors="replace")
            try:
                data = conn.recv(65535)
            except socket.timeout:
                continue
            if not data:
                return None, None
            buf += data
        return None, None
    def hdr(text, name):
        return [l.split(":", 1)[1].strip() for l in text.split("\r\n")[1:]
                if l.split(":", 1)[0].strip().lower() == name]
    key = base64.b64encode(os.urandom(30)).decode()
    body = ("v=0\r\no=itsp 1 1 IN IP4 {s}\r\ns=-\r\nc=IN IP4 {s}\r\nt=0 0\r\n"
            "m=audio 41000 RTP/SAVP 8 0\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n"
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{k}\r\na=sendrecv\r\n").format(s=a["src"], k=key)
    cid = uuid.uuid4().hex + "@" + a["src"]
    ftag = uuid.uuid4().hex[:8]
    via = "Via: SIP/2.0/TLS %s:%d;branch=z9hG4bK%s;rport" % (a["src"], lport, uuid.uuid4().hex[:10])
    frm = "From: <sip:+13125550100@%s>;tag=%s" % (a["src"], ftag)
    to = "To: <sip:%s@%s>" % (a["did"], a["domain"])
    invite = "\r\n".join([
        "INVITE %s SIP/2.0" % a["ruri"], via, frm, to, "Call-ID: " + cid, "CSeq: 1 INVITE",
        "Contact: <sip:itsp@%s:%d;transport=tls>" % (a["src"], lport), "Max-Forwards: 70",
        "User-Agent: siporch-itsp-b", "Content-Type: application/sdp",
        "Content-Length: %d" % len(body), "", body])
    conn.sendall(invite.encode())
    out = {"codes": [], "answer_sdp": "", "bye": None}
    ok = None
    end = time.time() + 15
    while time.time() < end:
        text, sdp = read(end - time.time())
        if text is None:
            break
        if not text.startswith("SIP/2.0"):
            continue
        code = int(text.split()[1])
        out["codes"].append(code)
        if code >= 200:
            ok = (text, sdp) if code < 300 else None
            break
    if ok:
        text, sdp = ok
        out["answer_sdp"] = sdp
        routes = list(reversed([r for h in hdr(text, "record-route") for r in h.split(",")]))
        target = hdr(text, "contact")[0].strip("<>").split(">")[0]
        totag = hdr(text, "to")[0]
        def req(method, cseq):
            v = "Via: SIP/2.0/TLS %s:%d;branch=z9hG4bK%s;rport" % (a["src"], lport, uuid.uuid4().hex[:10])
            lines = ["%s %s SIP/2.0" % (method, target), v]
            lines += ["Route: " + r.strip() for r in routes]
            lines += [frm, "To: " + totag, "Call-ID: " + cid, "CSeq: %d %s" % (cseq, method),
                      "Max-Forwards: 70", "Content-Length: 0", "", ""]
            return "\r\n".join(lines).encode()
        conn.sendall(req("ACK", 1))
        time.sleep(a["hold"])
        conn.sendall(req("BYE", 2))
        end = time.time() + 10
        while time.time() < end:
            text, _ = read(end - time.time())
            if text is None:
                break
            if text.startswith("SIP/2.0") and "BYE" in (hdr(text, "cseq") or [""])[0]:
                out["bye"] = int(text.split()[1])
                break
    print(json.dumps(out))
    """
)


def tls_call(
    lab: Lab, host: str, dst: str, ruri: str, did: str, domain: str, hold: float = 2.0
) -> dict[str, Any]:
    """An INVITE over TLS with an SDES-SRTP offer from ``host`` (its lab certificate) to
    ``dst``:5061, ACK and BYE through the route set; returns the codes, the answer's SDP
    and the BYE's final code."""
    tls = lab.handle.root(host) / "etc" / "siporch" / "tls"
    args = {
        "src": lab.addr(host),
        "dst": dst,
        "ca": str(tls / "ca.crt"),
        "cert": str(tls / f"{host}.crt"),
        "key": str(tls / f"{host}.key"),
        "ruri": ruri,
        "did": did,
        "domain": domain,
        "hold": hold,
    }
    proc = subprocess.run(
        ["ip", "netns", "exec", lab.ns(host), "python3", "-c", _TLS_CALL, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"TLS call failed: {proc.stderr[-800:]}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


# ------------------------------------------------------------------ inventories, faults


def copy_inventory(lab: Any, dest: Path) -> Path:
    """A copy of the lab inventory (and its vault password file) under ``dest``."""
    inv = dest / "inv"
    shutil.copytree(lab.inventory, inv)
    vault = lab.inventory.parent / ".vault-pass"
    if vault.exists():
        shutil.copy(vault, dest / ".vault-pass")
    return inv


def edit_model(inv: Path, edit: Any) -> None:
    """Apply ``edit`` to the ``siporch`` model of inventory ``inv``, in place."""
    path = inv / "group_vars" / "all" / "siporch.yml"
    doc = yaml.safe_load(path.read_text())
    edit(doc["siporch"])
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def block_send(lab: Lab, on: bool, chain: str, edge: str = "edge-central",
               peer: str = "itsp-a1") -> None:  # fmt: skip
    """Make ``edge``'s own sends to ``peer``'s SIP port fail at once (EPERM from a chain
    ``chain`` in its OUTPUT, as a missing route fails a send), or undo it."""
    ns = ["ip", "netns", "exec", lab.ns(edge), "iptables", "-w"]
    if on:
        subprocess.run([*ns, "-N", chain], capture_output=True, timeout=30)
        subprocess.run(
            [*ns, "-A", chain, "-d", lab.addr(peer), "-p", "udp", "--dport", "5060",
             "-j", "DROP"], check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        subprocess.run([*ns, "-I", "OUTPUT", "-j", chain], check=True, timeout=30)
    else:
        for args in (["-D", "OUTPUT", "-j", chain], ["-F", chain], ["-X", chain]):
            subprocess.run([*ns, *args], capture_output=True, timeout=30)


def status_json(inv: Path, *hosts: str, timeout: float = 90) -> dict[str, Any]:
    """``siporch status --json --no-releases`` against ``inv`` (its vault password file
    beside it), for ``hosts`` (every host when none); its output that is no report fails
    the test with what the command printed."""
    env = {
        **os.environ,
        "ANSIBLE_VAULT_PASSWORD_FILE": str(inv.parent / ".vault-pass"),
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "siporch", "status", "--json", "-i", str(inv),
         *[a for h in hosts for a in ("--host", h)], "--no-releases"],
        capture_output=True, text=True, timeout=timeout, check=False, env=env, cwd=REPO,
    )  # fmt: skip
    try:
        report: dict[str, Any] = json.loads(proc.stdout)
    except ValueError as exc:
        raise AssertionError(f"siporch status: {proc.stdout[-500:]}{proc.stderr[-1500:]}") from exc
    return report
