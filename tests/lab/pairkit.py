"""Helpers for the lab tests of the central edge pair in both of its modes
(tests/lab/test_edge_pair_active.py): the lab inventory with the pair made active-active,
held SIPp callers with RTP from an ITSP host, counts read from their traces, the dialog
profiles and DMQ peers of a deployed edge.

Every process runs in a lab host's network namespace and talks only to lab addresses.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import callkit as ck

from siporch.sipp import scenario

EDGES = {"edge-central": "198.18.0.10", "edge-central-2": "198.18.0.12"}
VIP = "198.18.0.9"
PAIR_HOSTS = (*EDGES, "edge-branch", "pbx-central", "pbx-central-2")


def active_active(model: dict[str, Any]) -> None:
    """The central pair without its floating address: each edge at its own address."""
    edges = model["sites"]["central"]["edges"]
    edges["mode"] = "active-active"
    edges.pop("vip", None)
    edges.pop("network", None)


@dataclass
class Callers:
    """One SIPp UAC with RTP for the whole call (``uac_media.xml``), its trace files."""

    proc: subprocess.Popen[str]
    workdir: Path
    tag: str
    control_port: int = 0
    control_address: str = "127.0.0.1"
    paused: bool = False
    port: int = 0  # SIPp's SIP port, on control_address

    @property
    def address(self) -> str:
        return self.control_address

    @property
    def trace(self) -> Path:
        return self.workdir / f"msg-{self.tag}.log"

    @property
    def stat(self) -> Path:
        return self.workdir / f"stat-{self.tag}.csv"

    @property
    def errors(self) -> Path:
        """SIPp's unexpected messages (-trace_err)."""
        return self.workdir / f"err-{self.tag}.log"

    @property
    def calldebug(self) -> Path:
        """What SIPp sent and received in each call it aborted (-trace_calldebug)."""
        return self.workdir / f"calldebug-{self.tag}.log"

    def diagnose(self, chars: int = 6000) -> str:
        """Why calls failed, for an assertion message: SIPp's stderr and the tails of its
        error log and call debug log, and the message flow of each call whose INVITE or
        BYE got no 200 (first lines, in order). The files stay in ``workdir``."""
        parts = [f"SIPp {self.tag} in {self.workdir}, exit {self.proc.poll()}"]
        if self.proc.poll() is not None and self.proc.stderr is not None:
            with contextlib.suppress(OSError, ValueError):
                parts.append("stderr: " + self.proc.stderr.read()[-1500:])
        for path in (self.errors, self.calldebug):
            with contextlib.suppress(OSError):
                parts.append(
                    f"--- {path.name} (tail)\n" + path.read_text(errors="replace")[-chars:]
                )
        flows = unfinished(self.trace)
        parts.append(f"--- calls without a 200 to their INVITE or BYE: {len(flows)}")
        for cid, lines in list(flows.items())[:5]:
            parts.append(f"{cid}:\n  " + "\n  ".join(lines[-40:]))
        return "\n".join(parts)

    def hang_up(self, k: ck.Lab, host: str) -> int:
        """Every answered call that is still up hangs up now (``uac_media.xml``: a HANGUP
        request with its Call-ID, sent to SIPp's own port inside ``host``, ends its wait;
        its BYE then goes through the route set as at the end of -d). Returns how many
        calls were asked."""
        ended = {
            cid
            for cid, lines in unfinished(self.trace).items()
            if any(x.startswith("< SIP/2.0 200") and "INVITE" in x for x in lines)
        }
        if self.proc.poll() is not None or not ended:
            return 0
        script = (
            "import socket, sys, uuid\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"s.bind(({self.address!r}, 0)); p = s.getsockname()[1]\n"
            "for cid in sys.argv[1:]:\n"
            "    b = uuid.uuid4().hex[:12]\n"
            f"    m = ('HANGUP sip:sipp@{self.address}:{self.port} SIP/2.0\\r\\n'\n"
            f"         'Via: SIP/2.0/UDP {self.address}:%d;branch=z9hG4bK%s\\r\\n'\n"
            f"         'From: <sip:test@{self.address}>;tag=%s\\r\\n'\n"
            f"         'To: <sip:sipp@{self.address}>\\r\\n'\n"
            "         'Call-ID: %s\\r\\nCSeq: 1 HANGUP\\r\\nContent-Length: 0\\r\\n\\r\\n')"
            " % (p, b, b, cid)\n"
            f"    s.sendto(m.encode(), ({self.address!r}, {self.port}))\n"
        )
        subprocess.run(
            ["ip", "netns", "exec", k.ns(host), "python3", "-c", script, *sorted(ended)],
            capture_output=True, timeout=30, check=True,
        )  # fmt: skip
        return len(ended)

    def answered(self) -> int:
        """Calls answered (a 200 OK to their first INVITE), by Call-ID."""
        return len(_final_ids(self.trace, lambda code: code == 200))

    def refused(self) -> dict[int, int]:
        """Final answers >= 300 to first INVITEs: code -> calls."""
        out: dict[int, int] = {}
        for code in _final_codes(self.trace).values():
            if code >= 300:
                out[code] = out.get(code, 0) + 1
        return out

    def result(self) -> tuple[int, int]:
        """(successful, failed) calls as SIPp counted them."""
        return ck._stat(self.stat)

    def pause(self, k: ck.Lab, host: str) -> None:
        """No new calls (SIPp's `p`, sent to its control port inside ``host``); the calls
        up go on and end as they would. (SIGUSR1, SIPp's soft exit, ends them at once:
        CANCEL or a BYE without the route set.) SIPp's `p` toggles: a second one would
        start the calls again, so it is sent once."""
        if self.proc.poll() is None and self.control_port and not self.paused:
            self.paused = True
            script = (
                "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM);"
                f"s.sendto(b'p', ({self.control_address!r}, {self.control_port}))"
            )
            subprocess.run(
                ["ip", "netns", "exec", k.ns(host), "python3", "-c", script],
                capture_output=True, timeout=30,
            )  # fmt: skip

    def current_calls(self) -> int:
        """Calls in progress, from the last line of SIPp's statistics (-1: unknown)."""
        try:
            lines = self.stat.read_text().splitlines()
        except OSError:
            return -1
        if len(lines) < 2:
            return -1
        idx = {n: i for i, n in enumerate(lines[0].split(";"))}
        try:
            return int(lines[-1].split(";")[idx["CurrentCall"]])
        except (KeyError, IndexError, ValueError):
            return -1

    def finish(self, k: ck.Lab, host: str, seconds: float) -> bool:
        """Pause, wait (polled) until no call is in progress, then stop SIPp: every call
        it placed ended as its scenario says. False when calls were still up."""
        self.pause(k, host)
        done = ck.wait_for(lambda: self.current_calls() == 0, seconds, step=0.5)
        ck.stop(self.proc)
        return done

    def wait(self, seconds: float) -> int:
        try:
            return self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            ck.stop(self.proc)
            return -1


def _final_codes(trace: Path) -> dict[str, int]:
    """Call-ID -> final status code of its first INVITE."""
    try:
        text = trace.read_text(errors="replace")
    except OSError:
        return {}
    out: dict[str, int] = {}
    for _, m in ck.timed_messages(text, "received"):
        first = re.match(r"SIP/2\.0 (\d{3})", m)
        if not first or int(first.group(1)) < 200:
            continue
        if not re.search(r"(?im)^CSeq:\s*1 INVITE", m):
            continue
        cid = re.search(r"(?im)^(?:Call-ID|i):\s*(\S+)", m)
        if cid:
            out.setdefault(cid.group(1), int(first.group(1)))
    return out


def _final_ids(trace: Path, keep: Any) -> set[str]:
    return {cid for cid, code in _final_codes(trace).items() if keep(code)}


def callers(
    k: ck.Lab,
    host: str,
    address: str,
    target: str,
    number: str,
    workdir: Path,
    *,
    tag: str,
    port: int,
    calls: int,
    rate: float,
    hold_s: float,
    limit: int | None = None,
    media_port: int = 6000,
) -> Callers:
    """``calls`` calls from ``host`` (``address``:``port``) to ``target`` at ``rate`` per
    second, each with RTP for ``hold_s`` seconds after its answer, then BYE. Started, not
    waited for."""
    # the control socket on the host's own address (a host's lo may be down)
    c = Callers(None, workdir, tag, port + 1000, address, port=port)  # type: ignore[arg-type]
    argv = [
        "ip", "netns", "exec", k.ns(host), ck.sipp(),
        "-sf", str(scenario("uac_media")), "-s", number,
        "-i", address, "-mi", address, "-p", str(port), "-mp", str(media_port), "-t", "u1",
        "-m", str(calls), "-l", str(limit or calls), "-r", f"{rate:g}",
        "-d", str(int(hold_s * 1000)),
        "-recv_timeout", "20000", "-timeout", f"{int(hold_s) + int(calls / rate) + 60}s",
        "-timeout_error", "-nostdin", "-trace_stat", "-stf", str(c.stat), "-fd", "1",
        "-trace_msg", "-message_file", str(c.trace), "-max_socket", "400",
        "-trace_err", "-error_file", str(c.errors),
        "-trace_calldebug", "-calldebug_file", str(c.calldebug),
        "-ci", address, "-cp", str(c.control_port),
        target,
    ]  # fmt: skip
    c.proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=workdir
    )
    return c


def profile_size(k: ck.Lab, edge: str, trunk_id: int) -> int | None:
    """The size of dialog profile ``trunk`` for the trunk id on ``edge`` (None: unreadable)."""
    out = k.rpc(edge, "dlg.profile_get_size", "trunk", str(trunk_id))
    if isinstance(out, dict):
        out = out.get("result", out)
    if isinstance(out, dict):
        out = out.get("value", out.get("size"))
    try:
        return int(out)
    except (TypeError, ValueError):
        return None


def dmq_peers_active(k: ck.Lab, edge: str) -> bool:
    """``edge`` sees another edge on its DMQ bus, active."""
    out = k.rpc(edge, "dmq.list_nodes")
    if isinstance(out, dict):
        out = out.get("result", out)
    nodes = [n for n in out if isinstance(n, dict)] if isinstance(out, list) else []
    return any(
        n.get("status") == "active" and str(n.get("local")) in ("0", "False", "false", "None")
        for n in nodes
    )


def trunk_id(k: ck.Lab, edge: str, name: str) -> int:
    """The numeric id the edge's tables give trunk ``name`` (db_text table ``trunks``:
    ``row:<id>.name:0:0:<name>:0``)."""
    out = k.run(edge, "cat /etc/siporch/current/kamailio/db/trunks")
    for line in out.splitlines():
        m = re.match(r"^\d+:(\d+)\.name:\d+:\d+:(.*):\d+$", line.strip())
        if m and m.group(2) == name:
            return int(m.group(1))
    raise AssertionError(f"no trunk id for {name} on {edge}: {out[-500:]}")


def vip_holders(k: ck.Lab) -> list[str]:
    """The edges whose eth0 carries the pair's floating address."""
    return [
        e
        for e in EDGES
        if f" {VIP}/" in k.run(e, ["ip", "-o", "-4", "addr", "show", "dev", "eth0"])
    ]


def rtpengine_in_use(k: ck.Lab, edge: str) -> bool:
    """The edge's Kamailio uses its rtpengine (not disabled after a failed ping)."""
    nodes = k.rpc(edge, "rtpengine.show", "all")
    if isinstance(nodes, dict):
        nodes = nodes.get("result", nodes)
    return (
        isinstance(nodes, list)
        and bool(nodes)
        and not any(
            n.get("disabled") in (True, 1, "1", "true") for n in nodes if isinstance(n, dict)
        )
    )


def options_answered(address: str, timeout: float = 0.5) -> bool:
    """Any answer to an OPTIONS sent to ``address``:5060 from the controller's lab
    address."""
    tag = uuid.uuid4().hex[:12]
    msg = (
        f"OPTIONS sip:{address}:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 198.18.0.1:0;branch=z9hG4bK{tag};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@198.18.0.1>;tag={tag}\r\n"
        f"To: <sip:{address}>\r\n"
        f"Call-ID: {tag}@siporch-test\r\n"
        "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("198.18.0.1", 0))
        s.settimeout(timeout)
        s.sendto(msg.encode(), (address, 5060))
        try:
            data = s.recv(4096)
        except OSError:
            return False
    return data.startswith(b"SIP/2.0 ")


class Prober:
    """OPTIONS to ``address`` every ``step`` seconds in a thread: the longest stretch
    without an answer (a probe unanswered within its timeout counts from its send)."""

    def __init__(self, address: str, step: float = 0.2, timeout: float = 1.0) -> None:
        self.address, self.step, self.timeout = address, step, timeout
        self.sent = self.unanswered = 0
        self.worst = 0.0
        self._down_since: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            ok = options_answered(self.address, self.timeout)
            self.sent += 1
            if ok:
                if self._down_since is not None:
                    self.worst = max(self.worst, time.monotonic() - self._down_since)
                self._down_since = None
            else:
                self.unanswered += 1
                if self._down_since is None:
                    self._down_since = t
            self._stop.wait(max(0.0, self.step - (time.monotonic() - t)))

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        if self._down_since is not None:
            self.worst = max(self.worst, time.monotonic() - self._down_since)


def release_of(k: ck.Lab, host: str) -> str:
    return Path(ck.current_release(k, host)).name


@contextlib.contextmanager
def blocked(k: ck.Lab, host: str, address: str, port: int, chain: str) -> Iterator[None]:
    """``host``'s TCP connections to ``address``:``port`` refused at once (a REJECT in a
    chain of its own in the host's OUTPUT), for the duration of the block."""
    ns = ["ip", "netns", "exec", k.ns(host), "iptables", "-w"]
    subprocess.run([*ns, "-N", chain], capture_output=True, timeout=30)
    subprocess.run(
        [*ns, "-A", chain, "-d", address, "-p", "tcp", "--dport", str(port),
         "-j", "REJECT", "--reject-with", "tcp-reset"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    subprocess.run([*ns, "-I", "OUTPUT", "-j", chain], check=True, timeout=30)
    try:
        yield
    finally:
        for args in (["-D", "OUTPUT", "-j", chain], ["-F", chain], ["-X", chain]):
            subprocess.run([*ns, *args], capture_output=True, timeout=30)


# ------------------------------------------------ a provider's proxy that follows DNS SRV

SRV_PROXY_CFG = """#!KAMAILIO
# A provider's outbound proxy (the test's own, on {address}:{port}): every new INVITE
# goes to sip:<user>@{domain}, which the resolver turns into the site's edges by DNS SRV
# (_sip._udp.{domain}; no NAPTR). A target that does not answer within fr_timer is
# blocklisted and the next one of the SRV set is tried (use_dns_failover).
debug=2
log_stderror=no
children=2
listen=udp:{address}:{port}
auto_aliases=no
dns_try_naptr=no
dns_srv_lb=yes
use_dns_cache=yes
use_dns_failover=yes
use_dst_blocklist=yes
dst_blocklist_expire=60
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "siputils.so"
loadmodule "textops.so"
modparam("tm", "fr_timer", {fr_ms})
modparam("tm", "fr_inv_timer", 60000)

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            t_relay();
        }} else if (is_method("ACK") && t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    t_check_trans();
    record_route();
    $ru = "sip:" + $rU + "@{domain}";
    t_relay();
}}
"""


@contextlib.contextmanager
def srv_proxy(
    k: ck.Lab, host: str, address: str, port: int, domain: str, fr_ms: int = 2000
) -> Iterator[str]:
    """A Kamailio proxy inside ``host`` (its root: its resolv.conf names the lab DNS) on
    ``address``:``port`` that sends every new call to ``domain`` by DNS SRV; stopped by
    its pid file afterwards. Yields its SIP address as ``address:port``."""
    base = f"/var/lib/siporch-test-srv-{port}"
    root = k.handle.root(host)
    (root / base.lstrip("/")).mkdir(parents=True, exist_ok=True)
    cfg = f"{base}/kamailio.cfg"
    pid = f"{base}/kamailio.pid"
    text = SRV_PROXY_CFG.format(address=address, port=port, domain=domain, fr_ms=fr_ms)
    (root / cfg.lstrip("/")).write_text(text)
    stop = f'[ -s {pid} ] && kill "$(cat {pid})" 2>/dev/null; rm -f {pid}; true'
    k.run(host, stop)  # one an earlier run left
    out = k.run(host, ["kamailio", "-f", cfg, "-P", pid, "-m", "32", "-M", "8"])
    try:
        if not ck.wait_for(
            lambda: f"{address}:{port} " in k.run(host, ["ss", "-H", "-l", "-u", "-n"]), 15
        ):
            check = k.run(host, ["kamailio", "-c", "-f", cfg])
            raise AssertionError(f"the SRV proxy did not start: {out[-800:]} {check[-1500:]}")
        yield f"{address}:{port}"
    finally:
        k.run(host, stop)


def answered_via(trace: Path) -> dict[str, int]:
    """Per edge, the answered calls of a SIPp trace whose 200 OK carries the edge's
    Record-Route (its address: topoh masks with the edge's own address)."""
    try:
        text = trace.read_text(errors="replace")
    except OSError:
        return {}
    out: dict[str, int] = {}
    seen: set[str] = set()
    for _, m in ck.timed_messages(text, "received"):
        if not m.startswith("SIP/2.0 200") or not re.search(r"(?im)^CSeq:\s*1 INVITE", m):
            continue
        cid = re.search(r"(?im)^(?:Call-ID|i):\s*(\S+)", m)
        if not cid or cid.group(1) in seen:
            continue
        seen.add(cid.group(1))
        routes = " ".join(re.findall(r"(?im)^Record-Route:(.*)$", m))
        for edge, address in EDGES.items():
            if re.search(rf"[@:]{re.escape(address)}[;:>]", routes):
                out[edge] = out.get(edge, 0) + 1
    return out


def setup_seconds(trace: Path) -> list[float]:
    """Per answered call of a SIPp trace, in the order the calls were placed: seconds from
    its first INVITE sent to the 200 OK received."""
    try:
        text = trace.read_text(errors="replace")
    except OSError:
        return []
    sent: dict[str, float] = {}
    for when, m in ck.timed_messages(text, "sent"):
        cid = re.search(r"(?im)^(?:Call-ID|i):\s*(\S+)", m)
        if m.startswith("INVITE ") and cid:
            sent.setdefault(cid.group(1), when)
    out: dict[str, float] = {}
    for when, m in ck.timed_messages(text, "received"):
        cid = re.search(r"(?im)^(?:Call-ID|i):\s*(\S+)", m)
        if (
            m.startswith("SIP/2.0 200")
            and re.search(r"(?im)^CSeq:\s*1 INVITE", m)
            and cid
            and cid.group(1) in sent
        ):
            out.setdefault(cid.group(1), when - sent[cid.group(1)])
    return [out[c] for c in sorted(out, key=lambda c: sent[c])]


def unfinished(trace: Path) -> dict[str, list[str]]:
    """The calls of a SIPp trace whose BYE got no 200 OK or whose INVITE got no 200 OK:
    Call-ID -> the first lines of what was sent (>) and received (<), in order."""
    try:
        text = trace.read_text(errors="replace")
    except OSError:
        return {}
    flows: dict[str, list[tuple[float, str]]] = {}
    for kind, mark in (("sent", ">"), ("received", "<")):
        for when, m in ck.timed_messages(text, kind):
            cid = re.search(r"(?im)^(?:Call-ID|i):\s*(\S+)", m)
            cseq = re.search(r"(?im)^CSeq:\s*(.*)$", m)
            if cid:
                line = f"{mark} {m.splitlines()[0][:60]} ({cseq.group(1).strip() if cseq else ''})"
                flows.setdefault(cid.group(1), []).append((when, line))
    out = {}
    for cid, items in flows.items():
        lines = [x for _, x in sorted(items)]
        if not any(x.startswith("< SIP/2.0 200") and "BYE" in x for x in lines):
            out[cid] = lines
    return out


RTPENGINE_HELPER = "/usr/local/lib/siporch/siporch_rtpengine.py"
RTPENGINE_CONF = "/etc/siporch/current/rtpengine/rtpengine.conf"


def media_sessions(k: ck.Lab, edge: str) -> int:
    """The sessions the edge's rtpengine carries (-1: not readable), as a deploy's guard
    counts them."""
    out = k.run(edge, [RTPENGINE_HELPER, "--conf", RTPENGINE_CONF, "sessions"]).strip()
    return int(out) if out.isdigit() else -1


def media_drained(k: ck.Lab, seconds: float) -> bool:
    """Polled until no edge of the pair carries a media session (a deploy that restarts
    rtpengine refuses to while one does): the calls of an earlier test end, and
    rtpengine times out the media of a call whose signalling is gone."""
    return ck.wait_for(lambda: all(media_sessions(k, e) <= 0 for e in EDGES), seconds, 1.0)


def ensure_model(k: ck.Lab, inventory: Path) -> str:
    """``inventory``'s model deployed (as callkit.ensure_deployed: nothing to do when the
    hosts run it). The switch between the pair's modes restarts rtpengine, which a deploy
    refuses while it carries sessions: polled until they are gone (120 s: rtpengine times
    out the media of calls whose signalling ended); sessions still there then are what
    earlier runs left behind, and the deploy is forced."""
    want = ck.model_hash(inventory)
    if all(
        ck.current_release(k, h).endswith(f"-{want}") and ck._daemons_up(k, h) for h in PAIR_HOSTS
    ):
        return ""
    force = not media_drained(k, 120)
    result = ck.deploy(inventory, {"siporch_force": True} if force else None)
    if not result.ok:
        raise RuntimeError("deploy failed:\n" + "\n".join(result.output[-40:]))
    return "forced" if force else "deployed"


# ------------------------------------------------ the PBX's outbound calls through the edges

#: The PBX's spool of call files (Debian's Asterisk: pbx_spool, inotify on the directory).
OUTGOING = "/var/spool/asterisk/outgoing"


def edge_contact_status(k: ck.Lab, edge: str) -> str:
    """The PJSIP status of the PBX's contact of ``siporch-edge-<edge>`` on pbx-central
    (``Avail``, ``Unavail``, ``NonQual``, ``Unknown``; "" when there is none)."""
    out = k.asterisk("pjsip show contacts")
    m = re.search(rf"Contact:\s+siporch-edge-{re.escape(edge)}/\S+\s+\S+\s+(\w+)", out)
    return m.group(1) if m else ""


def pbx_call(k: ck.Lab, pbx: str, number: str, *, wait_s: int = 90, hold_s: int = 2) -> float:
    """An outbound call from ``pbx`` as one of its phones would place it: a call file
    (``Local/<number>@siporch-outbound``, answered side Wait ``hold_s``) moved into
    Asterisk's spool, which waits ``wait_s`` for the answer (the CLI's `channel
    originate` gives up after 30 s, shorter than a SIP transaction's timeout). Returns
    the controller's clock when it was placed."""
    name = f"siporch-test-{uuid.uuid4().hex[:8]}.call"
    text = (
        f"Channel: Local/{number}@siporch-outbound\n"
        f"WaitTime: {wait_s}\nMaxRetries: 0\nApplication: Wait\nData: {hold_s}\n"
    )
    base = "/var/lib/siporch-test-calls"  # on the host's root, as its spool
    (k.handle.root(pbx) / base.lstrip("/")).mkdir(parents=True, exist_ok=True)
    (k.handle.root(pbx) / base.lstrip("/") / name).write_text(text)
    placed = time.time()
    path = f"{base}/{name}"
    out = k.run(
        pbx,
        f"chown asterisk: {path}; chmod 644 {path} && mv {path} {OUTGOING}/{name} && echo moved",
    )
    if "moved" not in out:
        raise AssertionError(f"the call file did not go into {OUTGOING} on {pbx}: {out}")
    return placed


def via_edge(invite: str) -> str:
    """The edge of the pair whose address is in the top Via of a relayed INVITE ("" for
    neither)."""
    m = re.search(r"(?im)^(?:Via|v):\s*SIP/2\.0/\w+\s+([^;:\s]+)", invite)
    host = m.group(1) if m else ""
    return next((e for e, a in EDGES.items() if a == host), "")
