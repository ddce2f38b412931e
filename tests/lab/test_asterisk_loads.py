"""The rendered Asterisk configuration loads in the real Asterisk 22 and handles calls.

Runs Asterisk from the lab's Debian sid root (read-only: a private overlay on top of it),
inside a network namespace of its own where every host of the example model lives on a
loopback address: the PBX on 127.0.0.1, the edges on 127.0.0.10 and up. SIPp (on the
controller, inside that namespace) plays the edge relaying inbound calls; a small SIP
responder on the edge's address answers the outbound calls.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from siporch.lab.hosts import install_site_dialplan
from siporch.model import load_model
from siporch.model.schema import Model
from siporch.render import asterisk

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
ROOTFS = Path(os.environ.get("SIPORCH_ROOTFS", "/var/cache/siporch/rootfs/current"))
CONF = f"{asterisk.SITE_ETC}/asterisk.conf"
HELPER = REPO / "roles" / "asterisk_pbx" / "files" / "siporch_asterisk.py"
PBX = "pbx-central"


def loopback_model() -> tuple[Model, dict[str, str]]:
    """The example model with every host on a loopback address (AMI on the host address),
    one central edge at its own address (the example's pair, edge-central-2 and the
    floating address, is the lab's to test: tests/lab/test_edge_pair.py)."""
    model = load_model(REPO / "inventory" / "example").model
    sites = {
        name: site.model_copy(update={"edges": None}) for name, site in model.sites.items()
    }
    model = model.model_copy(update={"sites": sites})
    addresses: dict[str, str] = {}
    hosts = {}
    n = 10
    for name, host in model.hosts.items():
        if name == "edge-central-2":
            continue
        if name == PBX:
            addresses[name] = "127.0.0.1"
        else:
            addresses[name] = f"127.0.0.{n}"
            n += 1
        update: dict[str, object] = {"address": ipaddress.ip_address(addresses[name])}
        if host.ami is not None:
            update["ami"] = host.ami.model_copy(update={"bind": None})
        hosts[name] = host.model_copy(update=update)
    return model.model_copy(update={"hosts": hosts}), addresses


@dataclass
class AsteriskUnderTest:
    netns: str
    root: Path
    work: Path
    console: Path
    model: Model
    addresses: dict[str, str]

    @property
    def chroot(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns, "chroot", str(self.root)]

    def rx(self, command: str, timeout: float = 10) -> str:
        out = subprocess.run(
            [*self.chroot, "asterisk", "-C", CONF, "-rx", command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return out.stdout

    def in_netns(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.netns, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.work,
        )


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (mounts and network namespaces)"
    if not (ROOTFS / "usr" / "sbin" / "asterisk").exists():
        return f"no Asterisk root filesystem at {ROOTFS} (build the lab root first)"
    for tool in ("ip", "mount", "umount", "chroot"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


@pytest.fixture(scope="module")
def pbx() -> Iterator[AsteriskUnderTest]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    model, addresses = loopback_model()
    work = Path(tempfile.mkdtemp(prefix="asterisk-check-"))
    upper, ovl_work, merged = work / "upper", work / "ovlwork", work / "merged"
    for d in (upper, ovl_work, merged):
        d.mkdir()
    netns = f"rendercheck-{os.getpid()}"
    mounted: list[Path] = []
    proc: subprocess.Popen[bytes] | None = None
    console = work / "console.log"
    overlay = ["mount", "-t", "overlay", "overlay", "-o"]
    overlay.append(f"lowerdir={ROOTFS.resolve()},upperdir={upper},workdir={ovl_work}")
    chroot = ["ip", "netns", "exec", netns, "chroot", str(merged)]
    try:
        subprocess.run(
            [*overlay, str(merged)],
            check=True,
        )
        mounted.append(merged)
        subprocess.run(["mount", "-t", "proc", "proc", str(merged / "proc")], check=True)
        mounted.append(merged / "proc")
        subprocess.run(["mount", "--bind", "/dev", str(merged / "dev")], check=True)
        mounted.append(merged / "dev")
        for sub in ("run", "log", "lib", "spool"):
            (merged / "var" / sub / "asterisk").mkdir(parents=True, exist_ok=True)
        # siporch's CDR directory, as the role's install makes it (asterisk_pbx_records_dir)
        (merged / asterisk.CDR_DIR.lstrip("/")).mkdir(parents=True, exist_ok=True)
        # The site's packaged /etc/asterisk, with the lab site's own dialplan and the
        # include lines the deploy adds; siporch's files in the current release.
        release = merged / asterisk.ASTERISK_DIR.lstrip("/")
        for rel, text in asterisk.render(model, PBX).items():
            path = release.parent / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        install_site_dialplan(merged)
        site = merged / asterisk.SITE_ETC.lstrip("/")
        for name in asterisk.SITE_INCLUDES:
            with (site / name).open("a") as fh:
                fh.write(f"\n; BEGIN siporch\n{asterisk.include_line(name)}\n; END siporch\n")
        checked = subprocess.run(
            [sys.executable, str(HELPER), "check-tree", str(release.parent), "--etc", str(site)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert checked.returncode == 0, checked.stderr
        subprocess.run(["ip", "netns", "add", netns], check=True)
        subprocess.run(["ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up"], check=True)
        with console.open("wb") as out:
            proc = subprocess.Popen(
                [*chroot, "asterisk", "-C", CONF, "-f", "-vvv"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        handle = AsteriskUnderTest(netns, merged, work, console, model, addresses)
        deadline = time.monotonic() + 30
        while "fully booted" not in handle.rx("core waitfullybooted", timeout=15):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("Asterisk did not start:\n" + console.read_text(errors="replace"))
            time.sleep(0.5)
        yield handle
    finally:
        if proc is not None and proc.poll() is None:
            subprocess.run(
                [*chroot, "asterisk", "-C", CONF, "-rx", "core stop now"],
                capture_output=True,
                timeout=15,
                check=False,
            )
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)
        for m in reversed(mounted):
            subprocess.run(["umount", "-l", str(m)], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)


#: Sources of log lines about siporch's part of the config: the config loader, PJSIP and
#: sorcery, the dialplan, AMI and RTP. The rest of the packaged Debian config (autoload of
#: every module, sample files) logs its own warnings, which are the site's business.
OWN_SOURCES = re.compile(
    r"\b(config\.c|res_pjsip\w*\.c|chan_pjsip\.c|res_sorcery\w*\.c|pbx_config\.c|"
    r"manager\.c|res_rtp_asterisk\.c|rtp_engine\.c)\b|siporch"
)
#: Warnings of the packaged config in those sources, not caused by siporch's files.
PACKAGED = re.compile(
    r"already registered|users\.conf is deprecated|Entity ID is not set|cel_sqlite3_custom"
)


def test_boots_without_errors(pbx: AsteriskUnderTest) -> None:
    """No warning or error about siporch's files or objects (the config loader, PJSIP, the
    dialplan, AMI, RTP) while the site's packaged config loads around them."""
    log = re.sub(r"\x1b\[[0-9;]*m", "", pbx.console.read_text(errors="replace"))
    bad = [
        line
        for line in log.splitlines()
        if ("ERROR" in line or "WARNING" in line)
        and OWN_SOURCES.search(line)
        and not PACKAGED.search(line)
    ]
    assert not bad, "\n".join(bad)


def test_every_trunk_and_edge_is_an_endpoint(pbx: AsteriskUnderTest) -> None:
    out = pbx.rx("pjsip show endpoints")
    names = [*pbx.model.trunks, "siporch-edge-edge-central", "siporch-edge-edge-branch"]
    for name in names:
        assert f"Endpoint:  {name} " in out, f"{name} missing:\n{out}"
    for name in pbx.model.trunks:
        assert f"Header: X-Siporch-Trunk: {name}" in out
    assert f"Objects found: {len(names)}" in out


def test_pjsip_modules(pbx: AsteriskUnderTest) -> None:
    out = pbx.rx("module show like pjsip")
    for module in (
        "res_pjsip.so",
        "chan_pjsip.so",
        "res_pjsip_endpoint_identifier_ip.so",
        "res_pjsip_outbound_registration.so",
        "res_pjsip_header_funcs.so",
        "res_pjsip_acl.so",
    ):
        assert module in out, out


def test_registration_goes_to_the_edge(pbx: AsteriskUnderTest) -> None:
    out = pbx.rx("pjsip show registration itsp-b-reg")
    assert f"sip:{pbx.addresses['edge-central']}:5060;lr" in out, out
    assert "sip:203.0.113.30:5061;transport=tls" in out


def test_reload_commands(pbx: AsteriskUnderTest) -> None:
    """The commands behind the reload actions (`pjsip reload` is no CLI command in 22)."""
    assert "reloaded successfully" in pbx.rx("module reload res_pjsip.so")
    assert "Dialplan reloaded" in pbx.rx("dialplan reload")
    pbx.rx("manager reload")
    assert "Endpoint:  itsp-a " in pbx.rx("pjsip show endpoints")
    out = pbx.rx("manager show user siporch")
    assert "127.0.0.1/255.255.255.255" in out and "system" in out
    assert "deny - ::/::" in out, out


# --------------------------------------------------------------------------------------
# Calls
# --------------------------------------------------------------------------------------

UAC = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="edge relays an inbound call">
  <send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:+12025559999@[local_ip]:[local_port]>;tag=[pid]T[call_number]
To: <sip:[field1]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:edge@[local_ip]:[local_port]>
Max-Forwards: 70
X-Siporch-Trunk: [field0]
Content-Type: application/sdp
Content-Length: [len]

v=0
o=- 1 1 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200"/>
  <send><![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:+12025559999@[local_ip]:[local_port]>;tag=[pid]T[call_number]
To: <sip:[field1]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0
]]></send>
  <pause/>
  <send retrans="500"><![CDATA[
BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:+12025559999@[local_ip]:[local_port]>;tag=[pid]T[call_number]
To: <sip:[field1]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 BYE
Max-Forwards: 70
Content-Length: 0
]]></send>
  <recv response="200"/>
</scenario>
"""


def sipp_calls(
    pbx: AsteriskUnderTest,
    trunk: str,
    number: str,
    calls: int,
    hold_ms: int,
    source: str = "127.0.0.10",
    to: str | None = None,
) -> dict[str, int]:
    """Place `calls` concurrent calls as the edge; count the final responses to INVITE."""
    if shutil.which("sipp") is None:
        pytest.skip("sipp is not installed")
    (pbx.work / "uac.xml").write_text(UAC)
    (pbx.work / "fields.csv").write_text(f"SEQUENTIAL\n{trunk};{to or number};\n")
    for old in pbx.work.glob("uac_*_messages.log"):
        old.unlink()
    run = pbx.in_netns(
        "sipp", "127.0.0.1:5060", "-sf", "uac.xml", "-inf", "fields.csv", "-s", number,
        "-i", source, "-p", "5090", "-m", str(calls), "-l", str(calls), "-r", "50",
        "-d", str(hold_ms), "-timeout", "30", "-trace_msg", "-nostdin",
        timeout=45,
    )  # fmt: skip
    counts: dict[str, int] = {}
    logs = list(pbx.work.glob("uac_*_messages.log"))
    assert logs, f"sipp wrote no message log: {run.stdout[-2000:]} {run.stderr[-2000:]}"
    for log in logs:
        text = log.read_text(errors="replace").replace("\r\n", "\n")
        for block in text.split("\n\n"):
            for line in block.splitlines():
                if line.startswith("SIP/2.0 ") and "CSeq: 1 INVITE" in block:
                    code = line.split()[1]
                    if code != "100":
                        counts[code] = counts.get(code, 0) + 1
    return counts


def test_inbound_did_is_answered_on_its_trunk(pbx: AsteriskUnderTest) -> None:
    counts = sipp_calls(pbx, "itsp-a", "+12025550150", calls=1, hold_ms=3000)
    assert counts.get("200", 0) >= 1, counts


def test_only_edges_may_send_calls(pbx: AsteriskUnderTest) -> None:
    """A source that is no edge is refused even with a valid trunk header and DID."""
    counts = sipp_calls(pbx, "itsp-a", "+12025550150", calls=1, hold_ms=100, source="127.0.0.5")
    assert counts and "200" not in counts, counts
    assert set(counts) <= {"401", "403"}, counts


def test_call_to_registration_contact_uses_the_to_number(pbx: AsteriskUnderTest) -> None:
    """A call to a registration's contact has user `s`; the DID comes from To."""
    answered = sipp_calls(pbx, "itsp-b", "s", calls=1, hold_ms=500, to="+12025550160")
    assert set(answered) == {"200"}, answered
    refused = sipp_calls(pbx, "itsp-b", "s", calls=1, hold_ms=100, to="+19995550160")
    assert set(refused) == {"404"}, refused


def test_inbound_unknown_did_is_refused(pbx: AsteriskUnderTest) -> None:
    counts = sipp_calls(pbx, "itsp-branch", "+12065550150", calls=1, hold_ms=100)
    assert set(counts) == {"404"}, counts


def test_inbound_channel_limit(pbx: AsteriskUnderTest) -> None:
    limit = pbx.model.trunks["itsp-branch"].max_channels
    assert limit == 10
    counts = sipp_calls(pbx, "itsp-branch", "+12065550120", calls=limit + 1, hold_ms=4000)
    ok = counts.get("200", 0)
    assert counts.get("503", 0) >= 1, counts
    # retransmitted 200s count more than once: at least `limit` calls were answered
    assert ok >= limit, counts


RESPONDER = textwrap.dedent(
    r"""
    import re, socket, sys, time
    addr, trunk, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, 5060))
    s.settimeout(0.2)
    end = time.monotonic() + seconds
    invites = 0
    def reply(msg, code, extra="", body=""):
        head, _, _ = msg.partition("\r\n\r\n")
        lines = head.split("\r\n")
        keep = [l for l in lines[1:] if re.match(r"(?i)(via|from|to|call-id|cseq):", l)]
        keep = [l + (";tag=resp1" if l.lower().startswith("to:") and "tag=" not in l else "")
                for l in keep]
        out = ["SIP/2.0 " + code] + keep + [f"Contact: <sip:edge@{addr}:5060>"]
        if extra:
            out.append(extra)
        if body:
            out.append("Content-Type: application/sdp")
        out.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(out) + "\r\n\r\n" + body).encode()
    while time.monotonic() < end:
        try:
            data, peer = s.recvfrom(65535)
        except socket.timeout:
            continue
        msg = data.decode(errors="replace")
        method = msg.split(" ", 1)[0]
        if method == "OPTIONS" or method == "BYE":
            s.sendto(reply(msg, "200 OK"), peer)
        elif method == "INVITE":
            invites += 1
            ruri = msg.split(" ", 2)[1]
            print("INVITE", ruri, flush=True)
            sdp = (f"v=0\r\no=- 1 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\n"
                   "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
            s.sendto(reply(msg, "200 OK", f"X-Siporch-Trunk: {trunk}", sdp), peer)
    """
)


def test_outbound_goes_to_the_edge_and_learns_the_trunk(pbx: AsteriskUnderTest) -> None:
    edge = pbx.addresses["edge-central"]
    responder = subprocess.Popen(
        ["ip", "netns", "exec", pbx.netns, sys.executable, "-c", RESPONDER, edge, "itsp-b", "12"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        # the PBX dials an edge its qualify found answering: wait until it has (the
        # responder may start after a qualify round that marked the edge unavailable)
        ready = time.monotonic() + 20
        contacts = ""
        while time.monotonic() < ready:
            pbx.rx("pjsip qualify siporch-edge-edge-central")
            contacts = pbx.rx("pjsip show contacts")
            if any(
                "siporch-edge-edge-central/" in line and " Avail " in line
                for line in contacts.splitlines()
            ):
                break
            time.sleep(0.5)
        else:
            pytest.fail("the edge endpoint never became Avail:\n" + contacts)
        pbx.rx("channel originate Local/+12025551234@siporch-outbound application Wait 4")
        deadline = time.monotonic() + 8
        found = ""
        while time.monotonic() < deadline and "SIPORCH_TRUNK=itsp-b" not in found:
            time.sleep(0.5)
            channels = pbx.rx("core show channels concise")
            found = ""
            for line in channels.splitlines():
                name = line.split("!", 1)[0]
                if name.startswith("PJSIP/siporch-edge-edge-central"):
                    found += pbx.rx(f"core show channel {name}")
        assert "SIPORCH_TRUNK=itsp-b" in found, found
        assert "SIPORCH_DIRECTION=outbound" in found, found
    finally:
        responder.terminate()
        out, _ = responder.communicate(timeout=10)
    assert "INVITE sip:+12025551234@" in out, out


TIMER_RESPONDER = textwrap.dedent(
    r"""
    import re, socket, sys, time
    addr, trunk, seconds, answer_se = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, 5060))
    s.settimeout(0.2)
    end = time.monotonic() + seconds
    def reply(msg, code, extra=(), body=""):
        head, _, _ = msg.partition("\r\n\r\n")
        lines = head.split("\r\n")
        keep = [l for l in lines[1:] if re.match(r"(?i)(via|from|to|call-id|cseq):", l)]
        keep = [l + (";tag=resp1" if l.lower().startswith("to:") and "tag=" not in l else "")
                for l in keep]
        out = ["SIP/2.0 " + code] + keep + [f"Contact: <sip:edge@{addr}:5060>", *extra]
        if body:
            out.append("Content-Type: application/sdp")
        out.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(out) + "\r\n\r\n" + body).encode()
    sdp = (f"v=0\r\no=- 1 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\n"
           "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
    while time.monotonic() < end:
        try:
            data, peer = s.recvfrom(65535)
        except socket.timeout:
            continue
        msg = data.decode(errors="replace")
        method = msg.split(" ", 1)[0]
        if method in ("INVITE", "UPDATE", "BYE"):
            head = msg.partition("\r\n\r\n")[0].split("\r\n")
            wanted = [l for l in head if re.match(r"(?i)(session-expires|x|min-se|supported|require):", l)]
            print(time.monotonic(), method, " | ".join(wanted), flush=True)
        if method in ("OPTIONS", "BYE"):
            s.sendto(reply(msg, "200 OK"), peer)
        elif method in ("INVITE", "UPDATE"):
            in_dialog = re.search(r"(?im)^(to|t):.*;tag=", msg) is not None
            extra = [f"X-Siporch-Trunk: {trunk}"] if not in_dialog else []
            se = re.search(r"(?im)^(?:session-expires|x):\s*(\d+)", msg)
            if answer_se != "none" and (se or not in_dialog):
                # the interval as a provider answers the edge's (reduced) request: the PBX
                # (which supports timers) refreshes
                value = answer_se if not in_dialog else se.group(1)
                extra += [f"Session-Expires: {value};refresher=uac", "Require: timer"]
            body = sdp if method == "INVITE" else ""
            s.sendto(reply(msg, "200 OK", extra, body), peer)
    """
)


def test_outbound_session_timer_reduced_at_the_edge_is_refreshed(pbx: AsteriskUnderTest) -> None:
    """What the edge's session-timer handling relies on: the PBX's outbound INVITE carries
    `Session-Expires` (the edge endpoint's timers_sess_expires), `Min-SE` and `Supported:
    timer`; a 2xx with a shorter interval (90 s, as a trunk with `expires: 90` gets it from
    the edge) is taken and refreshed by the PBX before it runs out, and the call stays up.
    """
    edge = pbx.addresses["edge-central"]
    with tempfile.TemporaryDirectory(prefix="siporch-timers-") as tmp:
        log = Path(tmp) / "responder.log"
        with log.open("w") as sink:
            responder = subprocess.Popen(
                [
                    "ip", "netns", "exec", pbx.netns, sys.executable, "-c", TIMER_RESPONDER, edge,
                    "itsp-a", "75", "90",
                ],
                stdout=sink,
                text=True,
            )  # fmt: skip

            def refreshed() -> bool:
                # a refresh: an INVITE or UPDATE after the first one, with the 90 s interval
                rows = [ln.split(" ", 2) for ln in log.read_text().splitlines() if ln]
                return any(
                    len(r) == 3
                    and r[1] in ("INVITE", "UPDATE")
                    and re.search(r"Session-Expires: 90", r[2], re.I)
                    for r in rows[1:]
                )

            try:
                pbx.rx("pjsip qualify siporch-edge-edge-central")
                time.sleep(1)
                pbx.rx("channel originate Local/+12025551234@siporch-outbound application Wait 70")
                # the refresh comes at half the interval (45 s): wait for it, no longer
                deadline = time.monotonic() + 60
                while not refreshed() and time.monotonic() < deadline:
                    time.sleep(0.5)
                assert refreshed(), log.read_text()
                channels = pbx.rx("core show channels concise")
                assert "PJSIP/siporch-edge-edge-central" in channels, channels
                pbx.rx("channel request hangup all")
            finally:
                responder.terminate()
                responder.wait(timeout=10)
                out = log.read_text()
    lines = [ln.split(" ", 2) for ln in out.splitlines() if ln.strip()]
    first = next(rest for _, method, rest in lines if method == "INVITE")
    assert re.search(r"Session-Expires: 1800", first, re.I), out
    assert re.search(r"Min-SE: 90", first, re.I), out
    assert re.search(r"Supported:[^|]*timer", first, re.I), out
    t0 = float(next(t for t, method, _ in lines if method == "INVITE"))
    refreshes = [
        float(t) - t0
        for t, method, rest in lines[1:]
        if method in ("INVITE", "UPDATE") and re.search(r"Session-Expires: 90", rest, re.I)
    ]
    assert refreshes and 30 < refreshes[0] < 60, out
