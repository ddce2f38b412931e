"""A bounded soak run on the lab: calls keep flowing while the trunk changes and faults hit.

Run as root from the repository root, with the lab up (`siporch lab up`, a deploy done):

    python3 bench/soak.py [--minutes 5] [--cps 0.5] [--hold 30] [--json FILE]

Traffic (SIPp, one long-running process per direction, bounded by -m and a global timeout):

* inbound: itsp-a1 -> edge-central -> pbx-central (Asterisk answers +12025550100 and echoes);
* outbound: pbx-central's address -> edge-central -> ITSP A (SIPp answers on itsp-a1 and
  itsp-a2 with tests/data/kamailio/uas_rr.xml), at half the inbound rate.

Both go to the address the PBXs and the providers use for edge-central: the floating
address of its active-standby pair (198.18.0.9 in the lab), whichever edge holds it.

Every call logs its own events (INVITE sent, 200 received, 200 to BYE received) with the
time, so each failed or dropped call is matched to what was happening at that moment.

Timeline, one step after the other, with a pause of a third of the hold time in between:
deploy (max_channels of itsp-a 30 -> 40: Kamailio htable reload, Asterisk pjsip.conf and
dialplan reloads), deploy (weights of itsp-a's peers: dispatcher reload), Asterisk
`module reload res_pjsip.so` + `dialplan reload`, rollback to the release the run started
on, partition itsp-a1 <-> the edge holding the floating address and heal, deploy
(Kamailio children 6: restart), deploy (children 5: restart) during which Kamailio is
killed by its pid file at the start of edge-central's health gate, and a last deploy of
the lab model unchanged. `--short` leaves out the peer-weights and the children-6 deploys
(every kind of step stays: the test suite runs it). The changed models are
written into a temporary copy of inventory/lab; inventory/lab itself is never edited.

The deploy lock of the controller (/tmp/siporch-deploy.lock) is held for the whole run, so
no other deploy changes the hosts in between (they wait for it).

Prints a Markdown report (for docs/benchmarks.md) and, with --json, the same as data.
Exit 0 when no call was dropped by a deploy, a rollback or a reload (the Kamailio kill and
the partition are faults: their failed and dropped calls are counted apart) and every
siporch host ends on the release the last deploy reported (the lab model's); 1 otherwise,
with the reason; 2 when the run could not start (not root, no lab, lock held).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from siporch.deploy import runner  # noqa: E402
from siporch.errors import SiporchError  # noqa: E402
from siporch.lab import lab as lab_mod  # noqa: E402
from siporch.lab.inventory import read_lab_json  # noqa: E402
from siporch.monitor.kamailio import parse_dispatcher_list  # noqa: E402

LAB_INV = REPO / "inventory" / "lab"
VAULT_PASS = REPO / "inventory" / ".vault-pass"
UAS_SCENARIO = REPO / "tests" / "data" / "kamailio" / "uas_rr.xml"
LOCK = Path("/tmp/siporch-deploy.lock")
EDGE = "edge-central"
PBX = "pbx-central"
SIPORCH_GROUPS = ("siporch_edge", "siporch_pbx")  # lab.json groups of the deployed hosts
INBOUND_FROM = "itsp-a1"
INBOUND_NUMBER = "+12025550100"
OUTBOUND_NUMBER = "3125550100"  # national -> route "national" -> trunk itsp-a (a1, then a2)
ITSP_A_PEERS = ("itsp-a1", "itsp-a2")
KAMAILIO_HELPER = "/usr/local/lib/siporch/siporch_kamailio.py"  # siporch's RPC client on an edge
KAMAILIO_PID = "/run/kamailio/kamailio.pid"
ASTERISK_CONF = "/etc/asterisk/asterisk.conf"
# SIPp takes "-p 0" for "unset" and then binds 5060 when it is free: an explicit port keeps
# 5060 of itsp-a1 for the UAS that answers outbound calls (and for the edge's probes).
UAC_PORT = 25060
SOAK_CALLER = "siporch soak"  # the display name of the soak's calls
RESTART_TASK = "Start or restart Kamailio"  # the edge's apply step
HEALTH_TASK = "Look at the running Kamailio"  # first task of the edge's health gate
# A BYE is retransmitted for about 20 s (500 ms doubling, capped at 4 s, 7 times) and a
# call waits 20 s for any answer: a failure shows up to this long after its cause.
LATE_S = 35.0

UAC_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<!-- siporch soak UAC: uac_rr.xml (Record-Route aware) with a log line per call event:
     S = INVITE sent, A = 200 to the INVITE, C = 200 to the BYE (call completed). -->
<scenario name="siporch soak UAC">
  <nop>
    <action>
      <gettimeofday assign_to="s,u"/>
      <log message="S [call_number] [$s] [$u]"/>
    </action>
  </nop>
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "siporch soak" <sip:2125550111@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Max-Forwards: 70
      User-Agent: siporch-soak
      Subject: siporch soak call
      X-Soak-Call: [call_number]
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 8 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
      a=sendrecv
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true" rrs="true">
    <action>
      <ereg regexp=".*" search_in="hdr" header="To:" check_it="true" assign_to="dlg_to"/>
      <gettimeofday assign_to="s,u"/>
      <log message="A [call_number] [$s] [$u]"/>
    </action>
  </recv>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: "siporch soak" <sip:2125550111@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <pause/>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: "siporch soak" <sip:2125550111@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To:[$dlg_to]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true">
    <action>
      <gettimeofday assign_to="s,u"/>
      <log message="C [call_number] [$s] [$u]"/>
    </action>
  </recv>
  <nop next="done"/>
  <!-- the edge's dialog keepalives (in-dialog OPTIONS) during the call: 200, then back to
       where the call was, its pause keeping its end (as siporch/sipp/uac_rr.xml). A
       provisional response to the INVITE that comes after its 200 (a proxy's resent 180,
       crossing the 200 when the INVITE was resent under load) is ignored, as RFC 3261
       has a UAC do, instead of ending the call. -->
  <label id="_unexp.main"/>
  <recv response="100" optional="true" next="resume"/>
  <recv response="180" optional="true" next="resume"/>
  <recv response="183" optional="true" next="resume"/>
  <recv request="OPTIONS"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <label id="resume"/>
  <nop>
    <action>
      <pauserestore variable="_unexp.pausedaddr"/>
      <assign assign_to="back" value="0"/>
      <add assign_to="back" variable="_unexp.retaddr"/>
      <assign assign_to="_unexp.retaddr" value="0"/>
      <jump variable="back"/>
    </action>
  </nop>
  <label id="done"/>
</scenario>
"""


class SoakError(SiporchError):
    """The soak could not start or run."""


# ----------------------------------------------------------------------------- data


@dataclass
class Step:
    """One event of the timeline."""

    name: str
    kind: str  # deploy, rollback, asterisk-reload, partition, fault-deploy
    start: float
    end: float = 0.0
    ok: bool = True
    detail: str = ""
    release: str = ""
    rolled_back: bool = False
    kill_at: float = 0.0
    kamailio_back: float = 0.0
    # which edge of the central pair held its floating address before and after the step
    vip_before: str = ""
    vip_after: str = ""

    def to_dict(self, t0: float) -> dict[str, Any]:
        d = asdict(self)
        for key in ("start", "end", "kill_at", "kamailio_back"):
            d[key] = round(d[key] - t0, 2) if d[key] else None
        return d


@dataclass
class Call:
    direction: str
    number: int
    start: float
    answer: float = 0.0
    done: float = 0.0
    error_at: float = 0.0
    reason: str = ""

    @property
    def state(self) -> str:
        if self.done:
            return "completed"
        if self.answer:
            return "dropped"
        return "failed"


@dataclass
class Flow:
    """One long-running SIPp UAC."""

    direction: str
    source: str
    address: str
    netns: str
    target: str
    number: str
    rate: float
    workdir: Path
    proc: subprocess.Popen[str] | None = None
    uas: list[subprocess.Popen[str]] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    exit_code: int | None = None

    @property
    def log_file(self) -> Path:
        return self.workdir / f"{self.direction}.log"

    @property
    def stat_file(self) -> Path:
        return self.workdir / f"{self.direction}.csv"

    @property
    def err_file(self) -> Path:
        return self.workdir / f"{self.direction}.err"


# ----------------------------------------------------------------------------- helpers


def now() -> float:
    return time.time()


def lock_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "deploy_lock", REPO / "playbooks" / "files" / "deploy_lock.py"
    )
    if spec is None or spec.loader is None:
        raise SoakError("playbooks/files/deploy_lock.py is missing")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@contextmanager
def deploy_lock(wait: float) -> Iterator[str]:
    """Hold the controller's deploy lock; yields its token. Two waiters can both take over
    a stale lock (deploy_lock.py removes it, then creates it), so the token is read back a
    moment later and the lock taken again if another run took it."""
    mod = lock_module()
    deadline = now() + wait
    while True:
        try:
            token = mod.acquire(LOCK, max(1.0, deadline - now()), os.getpid())
        except TimeoutError as exc:
            raise SoakError(f"the deploy lock stayed held for {wait:.0f} s: {exc}") from None
        time.sleep(3.0)
        if lock_owned(token):
            break
    os.environ["SIPORCH_DEPLOY_LOCK"] = token
    try:
        yield token
    finally:
        os.environ.pop("SIPORCH_DEPLOY_LOCK", None)
        mod.release(LOCK, token)


def lock_owned(token: str) -> bool:
    try:
        owner = json.loads((LOCK / "owner.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(owner, dict) and owner.get("token") == token


def copy_inventory(dest: Path) -> Path:
    inv = dest / "inv"
    shutil.copytree(LAB_INV, inv)
    if VAULT_PASS.exists():
        shutil.copy(VAULT_PASS, dest / ".vault-pass")
    return inv


def write_model(base: Path, dest: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of the inventory ``base`` at ``dest`` with ``edit`` applied to its model."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(base, dest)
    path = dest / "group_vars" / "all" / "siporch.yml"
    doc = yaml.safe_load(path.read_text())
    edit(doc["siporch"])
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dest


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name)


def run_playbook(
    inv: Path,
    playbook: str,
    extra: dict[str, Any] | None = None,
    on_event: Callable[[runner.Event], None] | None = None,
) -> runner.RunResult:
    report = runner.report_path()
    vault = runner.vault_password_file(inv, None)
    # The lab has no registrar behind itsp-b: the registration gate is off there.
    variables = {"asterisk_pbx_health_registrations": False, **(extra or {})}
    cmd = runner.build_command(
        playbook, inv, vault_file=vault, report_file=report, extra_vars=variables
    )
    try:
        return runner.run(cmd, report, on_event=on_event)
    finally:
        report.unlink(missing_ok=True)


def host_release(host: str) -> str:
    """The release id /etc/siporch/current points at on ``host`` ("" when none)."""
    info = read_lab_json(LAB_INV / "lab.json")
    root = Path(info["hosts"][host]["root"])
    link = root / "etc" / "siporch" / "current"
    try:
        target = os.readlink(link)
    except OSError:
        return ""
    rid = Path(target).name
    if not (root / "etc" / "siporch" / "releases" / rid / "manifest.json").is_file():
        return f"{rid} (no manifest)"
    return rid


def siporch_hosts(hosts: dict[str, Any]) -> list[str]:
    """The lab hosts a deploy changes (edges and PBXs, both edges of a pair), lab.json order."""
    return [n for n, h in hosts.items() if set(h.get("groups", ())) & set(SIPORCH_GROUPS)]


def pair_of(model: Any, edge: str) -> tuple[str, list[str]]:
    """(floating address, edges) of ``edge``'s active-standby pair; ("", []) without one."""
    pair = model.edge_pair(edge)
    if pair is None or pair.mode != "active-standby" or pair.vip is None:
        return "", []
    return str(pair.vip), list(pair.hosts)


def vip_holder(vip: str, edges: list[str]) -> str:
    """The edge(s) whose interfaces carry the floating address ``vip`` ("" without a pair,
    "none" when no edge has it)."""
    if not vip:
        return ""
    held = [
        e
        for e in edges
        if f" {vip}/" in lab_mod.run(e, ["ip", "-o", "-4", "addr", "show"], timeout=10).stdout
    ]
    return "+".join(held) or "none"


def kamailio_pid() -> int:
    proc = lab_mod.run(EDGE, ["cat", KAMAILIO_PID], timeout=10)
    try:
        pid = int(proc.stdout.strip())
    except ValueError:
        return 0
    alive = lab_mod.run(EDGE, ["kill", "-0", str(pid)], timeout=10)
    return pid if alive.returncode == 0 else 0


def kill_kamailio() -> str:
    """SIGKILL Kamailio's main process (by its pid file in edge-central) and its children."""
    script = (
        f"pid=$(cat {KAMAILIO_PID}) || exit 3; "
        'kids=$(ps -o pid= --ppid "$pid"); '
        'kill -KILL "$pid" $kids; echo "$pid"'
    )
    proc = lab_mod.run(EDGE, ["/bin/sh", "-c", script], timeout=10)
    return proc.stdout.strip() if proc.returncode == 0 else f"kill failed: {proc.stderr.strip()}"


def asterisk(command: str) -> str:
    proc = lab_mod.run(PBX, ["asterisk", "-C", ASTERISK_CONF, "-rx", command], timeout=30)
    return proc.stdout


def trunk_channels() -> dict[str, str]:
    """Asterisk's PJSIP channels on pbx-central: name -> caller ID name."""
    out: dict[str, str] = {}
    for line in asterisk("core show channels concise").splitlines():
        name = line.split("!", 1)[0]
        if not name.startswith("PJSIP/"):
            continue
        caller = ""
        for row in asterisk(f"core show channel {name}").splitlines():
            key, _, value = row.partition(":")
            if key.strip() == "Caller ID Name":
                caller = value.strip()
        out[name] = caller
    return out


def hangup_soak_channels() -> int:
    """Hang up the Asterisk channels of this benchmark's calls ("siporch soak" callers)
    that their caller gave up: a drop at the edge leaves them up (Echo, no media timeout),
    holding channels of the trunk's max_channels. Returns how many."""
    mine = [name for name, caller in trunk_channels().items() if caller == SOAK_CALLER]
    for name in mine:
        asterisk(f"channel request hangup {name}")
    return len(mine)


def sipp_bin() -> str:
    exe = shutil.which("sipp")
    if exe is None:
        raise SoakError("sipp is not installed (apt-get install sip-tester)")
    return exe


# ----------------------------------------------------------------------------- traffic


def start_uas(flow: Flow, hosts: dict[str, Any], total_s: float, wait_s: float = 90.0) -> str:
    """SIPp answering on ITSP A's SBCs (port 5060), for the outbound direction. Returns ""
    when both answer, else why not (port 5060 of a peer stayed taken for ``wait_s``)."""
    deadline = now() + wait_s
    for peer in ITSP_A_PEERS:
        h = hosts[peer]
        argv = [
            "ip", "netns", "exec", h["netns"], sipp_bin(),
            "-sf", str(UAS_SCENARIO), "-i", h["address"], "-p", "5060", "-t", "u1",
            "-m", "100000", "-nostdin", "-timeout", f"{int(total_s)}s",
            "-trace_err", "-error_file", str(flow.workdir / f"uas-{peer}.err"),
            "-trace_msg", "-message_file", str(peer_message_file(flow, peer)),
        ]  # fmt: skip
        while True:
            proc = subprocess.Popen(
                argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
            time.sleep(1.0)
            if proc.poll() is None:
                flow.uas.append(proc)
                break
            err = proc.stderr.read().strip() if proc.stderr else ""
            if now() > deadline:
                stop_uas(flow)
                return f"SIPp UAS on {peer}:5060 did not start: {err[-200:]}"
            time.sleep(5.0)
    return ""


_SET_STATE = (
    "import sys; from pathlib import Path; sys.path.insert(0, '/usr/local/lib/siporch');"
    "import siporch_kamailio as k;"
    "k.rpc(Path('/etc/siporch/current/kamailio/kamailio.cfg'), 'dispatcher.set_state',"
    " ['ap', int(sys.argv[1]), sys.argv[2]])"
)


def peers_up(edges: list[str], addresses: list[str]) -> list[str]:
    """Set ITSP A's SBCs active on the edges where their probes took them down: the lab's
    providers answer only while a SIPp runs there, and an edge takes a silent peer down
    (3 probes 30 s apart); its next probe would find the new SIPp within a probe interval,
    this does it at once. Returns what was set, as ``edge set uri``."""
    done: list[str] = []
    for edge in edges:
        proc = lab_mod.run(edge, ["python3", KAMAILIO_HELPER, "rpc", "dispatcher.list"], timeout=30)
        try:
            targets = parse_dispatcher_list(json.loads(proc.stdout))
        except ValueError:
            continue
        for t in targets:
            host = t.uri.split(":", 1)[-1].split(";")[0].split(":")[0]
            if t.flags.startswith("I") and host in addresses:
                lab_mod.run(edge, ["python3", "-c", _SET_STATE, str(t.set_id), t.uri], timeout=30)
                done.append(f"{edge} {t.set_id} {t.uri}")
    return done


def peer_message_file(flow: Flow, peer: str) -> Path:
    return flow.workdir / f"uas-{peer}.msg"


_MSG_HEAD = re.compile(r"^-{20,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)$")
_SOAK_CALL = re.compile(r"^X-Soak-Call:\s*(\d+)", re.MULTILINE | re.IGNORECASE)


def peer_invites(flow: Flow) -> dict[int, list[tuple[float, str]]]:
    """For each outbound call (by its X-Soak-Call number): when each ITSP A peer first
    received its INVITE, from the peers' SIPp message logs, in order of arrival."""
    out: dict[int, list[tuple[float, str]]] = {}
    for peer in ITSP_A_PEERS:
        try:
            text = peer_message_file(flow, peer).read_text(errors="replace")
        except OSError:
            continue
        at: float | None = None
        seen: set[int] = set()
        for block in text.split("\n-"):
            head, _, body = block.partition("\n")
            m = _MSG_HEAD.match(head if head.startswith("-") else "-" + head)
            if m:
                at = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
            if at is None or "message received" not in body.split("\n", 1)[0]:
                continue
            msg = body.split("\n", 2)[-1].lstrip()
            call = _SOAK_CALL.search(msg)
            if not msg.startswith("INVITE ") or call is None:
                continue
            number = int(call.group(1))
            if number not in seen:
                seen.add(number)
                out.setdefault(number, []).append((at, peer))
    for arrivals in out.values():
        arrivals.sort()
    return out


def start_flow(flow: Flow, hold_s: float, total_s: float) -> None:
    scenario = flow.workdir / "soak_uac.xml"
    scenario.write_text(UAC_SCENARIO)
    limit = max(1, math.ceil(flow.rate * total_s))
    argv = [
        "ip", "netns", "exec", flow.netns, sipp_bin(),
        "-sf", str(scenario), "-s", flow.number,
        "-i", flow.address, "-p", str(UAC_PORT), "-t", "u1",
        "-r", f"{flow.rate:g}", "-m", str(limit), "-l", str(limit),
        "-d", str(int(hold_s * 1000)),
        "-recv_timeout", "20000", "-timeout", f"{int(total_s + hold_s + 120)}s",
        "-nostdin", "-trace_logs", "-log_file", str(flow.log_file),
        "-trace_stat", "-stf", str(flow.stat_file), "-fd", "5",
        "-trace_err", "-error_file", str(flow.err_file),
        flow.target,
    ]  # fmt: skip
    flow.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    if flow.proc.poll() is not None:
        err = flow.proc.stderr.read() if flow.proc.stderr else ""
        raise SoakError(f"SIPp ({flow.direction}) did not start: {err.strip()[-300:]}")


def stop_flow(flow: Flow, hold_s: float) -> None:
    """Stop placing calls (SIGUSR1: SIPp's soft exit) and wait for the calls in progress."""
    proc = flow.proc
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(signal.SIGUSR1)
    try:
        proc.wait(timeout=hold_s + LATE_S + 30)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    flow.exit_code = proc.returncode
    flow.stats = read_stats(flow.stat_file)


def stop_uas(flow: Flow) -> None:
    for proc in flow.uas:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def read_stats(path: Path) -> dict[str, int]:
    """The last line of a SIPp statistics file: cumulative counters."""
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    except OSError:
        return {}
    if len(lines) < 2:
        return {}
    head = lines[0].rstrip(";").split(";")
    last = lines[-1].rstrip(";").split(";")
    out: dict[str, int] = {}
    for name, value in zip(head, last, strict=False):
        if name.endswith("(P)"):
            continue
        try:
            out[name.removesuffix("(C)")] = int(value)
        except ValueError:
            continue
    return out


def read_calls(flow: Flow) -> list[Call]:
    calls: dict[int, Call] = {}
    try:
        text = flow.log_file.read_text()
    except OSError:
        return []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 4 or parts[0] not in ("S", "A", "C"):
            continue
        try:
            number = int(parts[1])
            t = float(parts[2]) + float(parts[3]) / 1e6
        except ValueError:
            continue
        if parts[0] == "S":
            calls[number] = Call(flow.direction, number, t)
        elif number in calls:
            if parts[0] == "A":
                calls[number].answer = t
            else:
                calls[number].done = t
    for number, (t, reason) in read_errors(flow.err_file).items():
        if number in calls and not calls[number].done:
            calls[number].error_at, calls[number].reason = t, reason
    return list(calls.values())


# ----------------------------------------------------------------------------- timeline


class Timeline:
    def __init__(self, base: Path, work: Path, pause_s: float, log: Callable[[str], None]):
        self.base = base
        self.work = work
        self.pause_s = pause_s
        self.log = log
        self.steps: list[Step] = []
        self.token = ""
        self.lock_lost: list[str] = []
        self.vip: Callable[[], str] = lambda: ""

    def add(self, step: Step) -> None:
        """Record a finished step, with where the floating address is now."""
        step.vip_after = self.vip()
        self.steps.append(step)

    def check_lock(self, name: str) -> None:
        if self.token and not lock_owned(self.token):
            self.lock_lost.append(name)
            self.log(f"{name}: the deploy lock is no longer ours (another run took it over)")

    def pause(self) -> None:
        time.sleep(self.pause_s)

    def _deploy(
        self,
        name: str,
        kind: str,
        inv: Path,
        playbook: str = "deploy-trunk.yml",
        extra: dict[str, Any] | None = None,
    ) -> Step:
        step = Step(name, kind, now())
        step.vip_before = self.vip()
        self.check_lock(name)
        self.log(f"{name} ...")
        try:
            result = run_playbook(inv, playbook, extra)
        except SiporchError as exc:
            step.end, step.ok, step.detail = now(), False, str(exc)
            self.add(step)
            return step
        step.end = now()
        step.ok = result.ok
        report = result.report or {}
        step.release = str(report.get("release", "") or (extra or {}).get("siporch_release", ""))
        failures = result.failures()
        if failures:
            step.rolled_back = True
            step.detail = "; ".join(
                f"{f['host']}: {f.get('step', '')}: {f.get('reason', '')[:160]}"
                f" (back to {f.get('rollback', '') or 'previous'})"
                for f in failures
            )
        elif not result.ok:
            step.detail = " / ".join(result.output[-5:])[:400]
        self.log(
            f"{name}: {'ok' if step.ok else 'FAILED'} in {step.end - step.start:.0f} s"
            + (f" ({step.detail})" if step.detail else "")
        )
        self.add(step)
        return step

    def deploy(self, name: str, edit: Callable[[dict[str, Any]], None] | None) -> Step:
        inv = self.base if edit is None else write_model(self.base, self.work / slug(name), edit)
        return self._deploy(name, "deploy", inv)

    def rollback(self, release: str) -> Step:
        """Back to ``release`` by name: the newest older release on a shared lab may be
        another run's, rendered by other code."""
        return self._deploy(
            f"rollback to {release}",
            "rollback",
            self.base,
            "rollback-trunk.yml",
            extra={"siporch_release": release},
        )

    def asterisk_reload(self) -> Step:
        step = Step("asterisk reload", "asterisk-reload", now())
        step.vip_before = self.vip()
        self.log("Asterisk: module reload res_pjsip.so, dialplan reload ...")
        out = []
        for command in ("module reload res_pjsip.so", "dialplan reload"):
            proc = lab_mod.run(PBX, ["asterisk", "-C", ASTERISK_CONF, "-rx", command], timeout=30)
            out.append(f"{command}: exit {proc.returncode}")
            step.ok = step.ok and proc.returncode == 0
        step.end = now()
        step.detail = ", ".join(out)
        self.add(step)
        return step

    def partition(self, seconds: float, edge: str = EDGE) -> Step:
        step = Step(f"partition itsp-a1 <-> {edge} ({seconds:g} s)", "partition", now())
        step.vip_before = self.vip()
        self.log(step.name + " ...")
        cli = [sys.executable, "-m", "siporch", "lab", "impair"]
        proc = subprocess.run(
            [*cli, "itsp-a1", edge, "--partition"], capture_output=True, text=True, timeout=60
        )
        if proc.returncode != 0:
            step.ok = False
            step.detail = f"impair failed: {(proc.stdout + proc.stderr).strip()[-300:]}"
        time.sleep(seconds)
        clear = subprocess.run(
            [*cli, "itsp-a1", edge, "--clear"], capture_output=True, text=True, timeout=60
        )
        step.end = now()
        if clear.returncode != 0:
            step.ok = False
            step.detail += f" clear failed: {(clear.stdout + clear.stderr).strip()[-300:]}"
        self.add(step)
        return step

    def fault_deploy(self, name: str, edit: Callable[[dict[str, Any]], None]) -> Step:
        """A deploy that restarts Kamailio; Kamailio is killed when the edge's health gate
        starts, so the gate fails and the deploy rolls every host back."""
        inv = write_model(self.base, self.work / slug(name), edit)
        step = Step(name, "fault-deploy", now())
        step.vip_before = self.vip()
        self.log(f"{name}: kill Kamailio at the health gate ...")
        self.check_lock(name)
        killed: dict[str, Any] = {}

        def on_event(event: runner.Event) -> None:
            # "Look at the running Kamailio" opens both the apply step and the health gate:
            # kill at the first one after the restart.
            if event.kind != "task" or "at" in killed:
                return
            if event.name.endswith(RESTART_TASK):
                killed["restart_seen"] = True
            elif event.name.endswith(HEALTH_TASK) and killed.get("restart_seen"):
                killed["at"] = now()
                killed["pid"] = kill_kamailio()

        try:
            result = run_playbook(inv, "deploy-trunk.yml", on_event=on_event)
        except SiporchError as exc:
            step.end, step.ok, step.detail = now(), False, str(exc)
            self.add(step)
            return step
        step.end = now()
        step.kill_at = float(killed.get("at", 0.0))
        step.ok = result.ok
        step.release = str((result.report or {}).get("release", ""))
        failures = result.failures()
        step.rolled_back = bool(failures)
        parts = [f"killed Kamailio pid {killed['pid']}"] if "at" in killed else ["no kill"]
        parts += [
            f"{f['host']}: {f.get('step', '')}: {f.get('reason', '')[:160]}"
            f" (back to {f.get('rollback', '') or 'previous'})"
            for f in failures
        ]
        step.detail = "; ".join(parts)
        # Kamailio back: the time its (new) pid answered after the run, at the latest.
        step.kamailio_back = now() if kamailio_pid() else 0.0
        self.log(f"{name}: deploy {'ok' if step.ok else 'failed'}; {step.detail}")
        self.add(step)
        return step


def set_max_channels(value: int) -> Callable[[dict[str, Any]], None]:
    def edit(model: dict[str, Any]) -> None:
        model["trunks"]["itsp-a"]["max_channels"] = value

    return edit


def peer_weights(first: int, second: int) -> Callable[[dict[str, Any]], None]:
    def edit(model: dict[str, Any]) -> None:
        peers = model["trunks"]["itsp-a"]["peers"]
        peers[0]["weight"], peers[1]["weight"] = first, second

    return edit


def kamailio_children(children: int) -> Callable[[dict[str, Any]], None]:
    def edit(model: dict[str, Any]) -> None:
        model["hosts"][EDGE].setdefault("kamailio", {})["children"] = children

    return edit


# ----------------------------------------------------------------------------- analysis


def overlaps(a0: float, a1: float, b0: float, b1: float) -> bool:
    return a0 <= b1 and b0 <= a1


def attribute(call: Call, steps: list[Step], hold_s: float, peers: list[str] | None = None) -> str:
    """The timeline step a failed or dropped call ran into ("" when none).

    The cause lies between the answer (or the INVITE, for a call that failed at setup) and
    the moment SIPp gave the call up (its error time; else the BYE, or the INVITE).
    A failure while Kamailio was dead is the fault's. So is that of a call on itsp-a1
    whose last request (the BYE, or the INVITE) left while the partition cut itsp-a1 off
    and which failed within LATE_S of the heal: its retransmissions, and the edge's
    keepalives crossing them, only get through after the heal, and SIPp gives up a few
    seconds later, when the next step may have begun (``peers``: the ITSP A peers an
    outbound call's INVITE reached; one that reached only itsp-a2 was not cut off).
    Otherwise the latest step that ran in that interval is blamed."""
    lo = call.answer or call.start
    # No error with a call id: a send that failed at once (SIPp logs no call id for it).
    at_once = call.answer + hold_s + 1.0 if call.answer else call.start + 1.0
    hi = call.error_at or at_once
    for step in steps:
        fault = step.kind == "fault-deploy" and step.kill_at
        if fault and step.kill_at - 1.0 <= hi <= step.end + 3.0:
            return step.name
    sent = call.answer + hold_s if call.answer else call.start
    cut_off = call.direction == "inbound" or not peers or INBOUND_FROM in peers
    for step in steps:
        if (
            step.kind == "partition"
            and cut_off
            and step.start <= sent <= step.end
            and hi <= step.end + LATE_S
        ):
            return step.name
    hit = [s for s in steps if overlaps(lo - 1.0, hi + 1.0, s.start, s.end + 3.0)]
    plain = [s for s in hit if s.kind != "fault-deploy"]
    if plain:
        return max(plain, key=lambda s: s.start).name
    return hit[-1].name if hit else ""


_ERR = re.compile(r"(\d{9,}\.\d+): (.*?)(?=\d{4}-\d\d-\d\d\t|\Z)", re.S)
_CALLNO = re.compile(r"Call-Id:? '?(\d+)-")
_STATUS = re.compile(r"received 'SIP/2\.0 (\d{3} [^\r\n]*)")
_EXPECT = re.compile(r"while expecting '([^']+)'")


def read_errors(path: Path) -> dict[int, tuple[float, str]]:
    """call number -> (time, reason) of the first error SIPp logged for that call."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {}
    out: dict[int, tuple[float, str]] = {}
    for m in _ERR.finditer(text):
        body = m.group(2)
        cn = _CALLNO.search(body)
        if cn is None:
            continue
        number = int(cn.group(1))
        if number in out:
            continue
        status = _STATUS.search(body)
        expect = _EXPECT.search(body)
        if status:
            what = "to BYE" if "CSeq: 2 BYE" in body else "to INVITE"
            reason = f"{status.group(1).strip()} {what}"
        elif "receive timeout" in body or "timeout" in body.lower():
            reason = "no answer (timeout)"
        else:
            reason = body.strip().splitlines()[0][:120]
        if expect and not status:
            reason += f" while expecting {expect.group(1)}"
        out[number] = (float(m.group(1)), reason)
    return out


def failover_times(
    calls: list[Call], steps: list[Step], invites: dict[int, list[tuple[float, str]]]
) -> list[float]:
    """For outbound calls started during a partition whose INVITE reached itsp-a2 first
    (the partitioned itsp-a1 receives nothing): seconds from the call's INVITE to itsp-a2
    receiving it. About the route's failover timeout when the edge tried itsp-a1 first; near
    0 once probing has marked itsp-a1 down and the edge goes straight to itsp-a2."""
    out: list[float] = []
    for c in partition_calls(calls, steps):
        arrivals = invites.get(c.number, [])
        if arrivals and arrivals[0][1] == "itsp-a2":
            out.append(arrivals[0][0] - c.start)
    return out


def peers_of(call: Call, invites: dict[int, list[tuple[float, str]]]) -> list[str] | None:
    """The ITSP A peers an outbound call's INVITE reached (None: inbound, or not known)."""
    if call.direction != "outbound" or call.number not in invites:
        return None
    return [peer for _, peer in invites[call.number]]


def partition_calls(calls: list[Call], steps: list[Step]) -> list[Call]:
    return [
        c
        for s in steps
        if s.kind == "partition"
        for c in calls
        if c.direction == "outbound" and s.start <= c.start <= s.end
    ]


def analyse(
    flows: list[Flow],
    steps: list[Step],
    hold_s: float,
    t0: float,
    t_end: float,
    final: dict[str, str],
    expected: str,
    model_hash: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    calls = [c for f in flows for c in read_calls(f)]
    kill_names = {s.name for s in steps if s.kind == "fault-deploy"}
    fault_names = kill_names | {s.name for s in steps if s.kind == "partition"}
    per_dir: dict[str, dict[str, Any]] = {}
    for f in flows:
        mine = [c for c in calls if c.direction == f.direction]
        per_dir[f.direction] = {
            "source": f.source,
            "target": f.target,
            "number": f.number,
            "rate_cps": f.rate,
            "attempted": len(mine),
            "completed": sum(c.state == "completed" for c in mine),
            "failed": sum(c.state == "failed" for c in mine),
            "dropped": sum(c.state == "dropped" for c in mine),
            "sipp_stats": {
                k: f.stats.get(k, 0) for k in ("TotalCallCreated", "SuccessfulCall", "FailedCall")
            },
            "sipp_exit": f.exit_code,
        }
    outbound = [f for f in flows if f.direction == "outbound"]
    invites = peer_invites(outbound[0]) if outbound else {}
    drops: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for c in calls:
        if c.state == "completed":
            continue
        entry = {
            "direction": c.direction,
            "call": c.number,
            "start": round(c.start - t0, 2),
            "answered": round(c.answer - t0, 2) if c.answer else None,
            "during": attribute(c, steps, hold_s, peers_of(c, invites)) or "(nothing)",
            "reason": c.reason or "no error logged",
        }
        (drops if c.state == "dropped" else failures).append(entry)
    drops_kill = [d for d in drops if d["during"] in kill_names]
    drops_part = [d for d in drops if d["during"] in fault_names - kill_names]
    drops_other = [d for d in drops if d["during"] not in fault_names]
    fails_kill = [d for d in failures if d["during"] in kill_names]
    fails_part = [d for d in failures if d["during"] in fault_names - kill_names]
    fover = failover_times(calls, steps, invites)
    in_partition = [
        {
            "start": round(c.start - t0, 2),
            "state": c.state,
            "reason": c.reason,
            "setup_s": round(c.answer - c.start, 3) if c.answer else None,
            "invite_reached": [
                {"peer": p, "after_s": round(t - c.start, 3)} for t, p in invites.get(c.number, [])
            ],
        }
        for c in partition_calls(calls, steps)
    ]
    known = bool(expected) and bool(final) and all(v == expected for v in final.values())
    reasons: list[str] = []
    if drops_other:
        reasons.append(
            f"{len(drops_other)} call(s) dropped by deploys/rollbacks/reloads: "
            + "; ".join(describe_drop(d) for d in drops_other)
        )
    if not known:
        reasons.append(f"hosts not all on the expected release {expected or '(none)'}: {final}")
    if not calls:
        reasons.append("no call was placed")
    last = next((s for s in reversed(steps) if s.kind == "deploy"), None)
    if last is not None and not last.ok:
        reasons.append(f"the last deploy failed: {last.detail[:300]}")
    fault = next((s for s in steps if s.kind == "fault-deploy"), None)
    if fault is not None and not fault.kill_at:
        reasons.append("Kamailio was not killed during the fault deploy (health gate not seen)")
    return {
        "command": "python3 bench/soak.py "
        + f"--minutes {args.minutes:g} --cps {args.cps:g} --hold {args.hold:g}",
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t0)),
        "duration_s": round(t_end - t0, 1),
        "hold_s": hold_s,
        "directions": per_dir,
        "totals": {
            "attempted": len(calls),
            "completed": sum(c.state == "completed" for c in calls),
            "failed": len(failures),
            "failed_by_kamailio_kill": len(fails_kill),
            "failed_by_partition": len(fails_part),
            "dropped": len(drops),
            "dropped_by_kamailio_kill": len(drops_kill),
            "dropped_by_partition": len(drops_part),
            "dropped_by_deploys_rollbacks_reloads": len(drops_other),
        },
        "failed_calls": failures,
        "dropped_calls": drops,
        "failover_s": [round(x, 3) for x in fover],
        "outbound_in_partition": in_partition,
        "steps": [s.to_dict(t0) for s in steps],
        "rolled_back_deploys": [s.name for s in steps if s.rolled_back],
        "final_releases": final,
        "expected_release": expected,
        "model_hash": model_hash,
        "all_hosts_on_expected_release": known,
        "ok": not reasons,
        "reasons": reasons,
    }


def describe_drop(d: dict[str, Any]) -> str:
    """One line per failed or dropped call: which, when, during what, SIPp's reason."""
    answered = f", answered {d['answered']} s" if d.get("answered") is not None else ""
    return (
        f"{d['direction']} call {d['call']} (started {d['start']} s{answered}) "
        f"during {d['during']}: {d['reason']}"
    )


def markdown(r: dict[str, Any]) -> str:
    t = r["totals"]
    lines = [
        "## Soak",
        "",
        f"`{r['command']}`, started {r['started']}, {r['duration_s']:.0f} s of traffic and "
        f"events, calls held {r['hold_s']:g} s.",
        "",
        "| direction | path | cps | attempted | completed | failed | dropped |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, d in r["directions"].items():
        lines.append(
            f"| {name} | {d['source']} -> {d['target']} ({d['number']}) | {d['rate_cps']:g} "
            f"| {d['attempted']} | {d['completed']} | {d['failed']} | {d['dropped']} |"
        )
    lines.append(
        f"| **total** | | | {t['attempted']} | {t['completed']} | {t['failed']} | {t['dropped']} |"
    )
    lines += [
        "",
        f"Dropped by deploys, rollbacks and reloads: "
        f"**{t['dropped_by_deploys_rollbacks_reloads']}**. "
        f"Faults (real, counted apart): Kamailio killed: {t['dropped_by_kamailio_kill']} "
        f"dropped, {t['failed_by_kamailio_kill']} failed at setup; partition: "
        f"{t['dropped_by_partition']} dropped, {t['failed_by_partition']} failed at setup. "
        f"Failed at setup in all: {t['failed']}.",
        "",
        "| t (s) | step | took (s) | outcome | release | floating address | detail |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in r["steps"]:
        took = (s["end"] or 0) - (s["start"] or 0)
        outcome = "rolled back" if s["rolled_back"] else ("ok" if s["ok"] else "failed")
        detail = str(s["detail"]).replace("|", "/")[:200]
        vip = s.get("vip_before") or "-"
        if s.get("vip_after") and s.get("vip_after") != s.get("vip_before"):
            vip += f" -> {s['vip_after']}"
        lines.append(
            f"| {s['start']:.0f} | {s['name']} | {took:.0f} | {outcome} | {s['release']} "
            f"| {vip} | {detail} |"
        )
    fo = r["failover_s"]
    lines += [""]
    if fo:
        lines.append(
            f"Failover (outbound calls started during the partition, seconds until "
            f"itsp-a2 received the INVITE): {len(fo)} calls, "
            f"min {min(fo):.2f} s, max {max(fo):.2f} s."
        )
    else:
        lines.append(
            "Failover: no outbound call tried itsp-a1 and then itsp-a2 during the partition."
        )
    if r["outbound_in_partition"]:
        lines.append(
            "Outbound calls started during the partition: "
            + "; ".join(
                f"{c['start']} s {c['state']}"
                + (f" ({c['reason']})" if c["reason"] else "")
                + (
                    " via "
                    + " -> ".join(
                        f"{i['peer']} at +{i['after_s']:.2f} s" for i in c["invite_reached"]
                    )
                    if c["invite_reached"]
                    else ""
                )
                for c in r["outbound_in_partition"]
            )
            + "."
        )
    lines.append(
        f"Deploys that rolled themselves back: {', '.join(r['rolled_back_deploys']) or 'none'}."
    )
    hosts = ", ".join(f"{h} {rid or '(none)'}" for h, rid in r["final_releases"].items())
    lines.append(
        f"Hosts at the end: {hosts}; expected {r['expected_release']} "
        f"(model hash {r['model_hash'][:12]}): "
        f"{'all on it' if r['all_hosts_on_expected_release'] else 'NOT all on it'}."
    )
    bad = [c for c in r["failed_calls"] + r["dropped_calls"]]
    if bad:
        lines += [
            "",
            "| call | direction | started (s) | answered (s) | during | SIPp's reason |",
            "|---|---|---|---|---|---|",
        ]
        for c in bad[:40]:
            lines.append(
                f"| {c['call']} | {c['direction']} | {c['start']} | {c['answered'] or '-'} "
                f"| {c['during']} | {c['reason']} |"
            )
        if len(bad) > 40:
            lines.append(f"| ... {len(bad) - 40} more in the JSON | | | | | |")
    ch = r.get("asterisk_channels", {})
    if ch:
        lines.append(
            f"Asterisk channels: {ch['other_calls_at_start']} other call(s) up at the start; "
            f"{ch['soak_leftovers_at_end_hung_up']} channel(s) of dropped soak calls still up "
            f"at the end (hung up by the soak); {ch['soak_leftovers_at_start_hung_up']} left "
            "by an earlier run hung up at the start."
        )
    fa = r.get("floating_address") or {}
    if fa.get("address"):
        lines.append(
            f"Floating address {fa['address']} of {' / '.join(fa['edges'])} (where the calls "
            f"go): held by {fa['held_at_start']} at the start, {fa['held_at_end']} at the end."
        )
    if r.get("outbound_skipped"):
        lines.append(f"Outbound calls skipped: {r['outbound_skipped']}.")
    if r.get("lock_lost_before"):
        lines.append(
            "The deploy lock was taken by another run before: "
            + ", ".join(r["lock_lost_before"])
            + " (other deploys may have run in between)."
        )
    lines += ["", "Result: " + ("PASS" if r["ok"] else "FAIL: " + "; ".join(r["reasons"])), ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def soak(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    from siporch.model import load_model

    if not (LAB_INV / "lab.json").is_file():
        raise SoakError("inventory/lab/lab.json not found: run `siporch lab up` first")
    if not UAS_SCENARIO.is_file():
        raise SoakError(f"{UAS_SCENARIO} is missing")
    info = read_lab_json(LAB_INV / "lab.json")
    hosts: dict[str, Any] = info["hosts"]
    status = lab_mod.status()
    down = [h.name for h in status.hosts if not h.ok]
    if down:
        raise SoakError(f"lab hosts not up: {', '.join(down)} (run `siporch lab up`)")
    loaded = load_model(LAB_INV, VAULT_PASS if VAULT_PASS.exists() else None)
    model_hash, model = loaded.model_hash, loaded.model
    # The address the PBXs and the providers send SIP to (siporch renders the PBXs' trunk
    # to it): an active-standby pair's floating address, which keepalived moves to the
    # other edge when Kamailio dies. Calls sent to edge-central's own address instead
    # would stay on it after the move, and it cannot send from an address it no longer
    # holds (the branches toward ITSP A leave from the floating address).
    sip_address = str(model.sip_address(EDGE))
    vip, pair_edges = pair_of(model, EDGE)
    traffic_s = args.minutes * 60.0
    hard_cap_s = traffic_s + 900.0  # the timeline may outlast the traffic time; never this
    pause_s = max(5.0, args.hold / 3)
    work = Path(tempfile.mkdtemp(prefix="siporch-soak-"))
    flows: list[Flow] = []
    uas_holders: list[Flow] = []
    try:
        base = copy_inventory(work)
        log("waiting for the deploy lock ...")
        with deploy_lock(args.lock_wait) as token:
            tl = Timeline(base, work, pause_s, log)
            tl.token = token
            tl.vip = lambda: vip_holder(vip, pair_edges)
            first = tl.deploy("deploy lab model", None)
            if not first.ok:  # once more: a deploy from elsewhere may have been in the way
                time.sleep(10.0)
                first = tl.deploy("deploy lab model", None)
            if not first.ok:
                raise SoakError(f"the starting deploy failed: {first.detail}")
            start_release = first.release
            stale = hangup_soak_channels()
            others = len(trunk_channels())
            if stale:
                log(f"hung up {stale} Asterisk channel(s) left by an earlier soak")
            if others:
                log(f"{others} other call(s) up on pbx-central (other tests)")
            tl.steps.clear()  # the starting point, not an event under traffic
            edge = f"{sip_address}:5060"
            if vip:
                log(f"calls to {EDGE}'s pair at {sip_address}, held by {tl.vip()}")
            inbound = Flow(
                "inbound", INBOUND_FROM, hosts[INBOUND_FROM]["address"],
                hosts[INBOUND_FROM]["netns"], edge, INBOUND_NUMBER, args.cps, work,
            )  # fmt: skip
            outbound = Flow(
                "outbound", PBX, hosts[PBX]["address"], hosts[PBX]["netns"], edge,
                OUTBOUND_NUMBER, args.cps / 2, work,
            )  # fmt: skip
            skipped = "not asked (--no-outbound)" if args.no_outbound else ""
            if not skipped:
                uas_holders.append(outbound)
                skipped = start_uas(outbound, hosts, hard_cap_s + args.hold + 300)
                if skipped:
                    log(f"outbound skipped: {skipped}")
                else:
                    itsp = [hosts[p]["address"] for p in ITSP_A_PEERS]
                    edges = [e for e in (pair_edges or [EDGE]) if e in hosts]
                    for line in peers_up(edges, itsp):
                        log(f"peer set active (its SIPp answers now): {line}")
            vip_at_start = tl.vip()
            t0 = now()
            for f in [inbound] if skipped else [inbound, outbound]:
                start_flow(f, args.hold, hard_cap_s)
                flows.append(f)
            log(
                f"traffic: {args.cps:g} cps inbound, {args.cps / 2:g} cps outbound, hold {args.hold:g} s"
            )
            time.sleep(min(args.hold, 20.0))  # calls established before the first event
            tl.deploy("deploy max_channels 40", set_max_channels(40))
            tl.pause()
            if not args.short:
                tl.deploy("deploy peer weights 70/30", peer_weights(70, 30))
                tl.pause()
            tl.asterisk_reload()
            tl.pause()
            tl.rollback(start_release)
            tl.pause()
            # the edge that carries the calls now (the floating address may be on either)
            holder = tl.vip()
            tl.partition(args.partition, holder if holder in pair_edges else EDGE)
            tl.pause()
            if not args.short:
                tl.deploy("deploy kamailio children 6", kamailio_children(6))
                tl.pause()
            tl.fault_deploy("deploy children 5 + kill Kamailio", kamailio_children(5))
            tl.pause()
            final_step = tl.deploy("deploy lab model", None)
            expected = final_step.release if final_step.ok else ""
            if not final_step.ok:
                # leave the lab on the release the run started on (the lab model's)
                back = tl.rollback(start_release)
                expected = start_release if back.ok else ""
            # Keep the traffic going for the time asked, then let every call finish.
            while now() - t0 < traffic_s and now() - t0 < hard_cap_s:
                time.sleep(1.0)
            log("stopping new calls; waiting for the calls in progress ...")
            for f in flows:
                stop_flow(f, args.hold)
            t_end = now()
            time.sleep(2.0)
            leftover = hangup_soak_channels()
            final = {h: host_release(h) for h in siporch_hosts(hosts)}
            report = analyse(
                flows, tl.steps, args.hold, t0, t_end, final, expected, model_hash, args
            )
            report["outbound_skipped"] = skipped
            report["floating_address"] = {
                "address": vip,
                "edges": pair_edges,
                "held_at_start": vip_at_start,
                "held_at_end": tl.vip(),
            }
            report["lock_lost_before"] = tl.lock_lost
            report["asterisk_channels"] = {
                "soak_leftovers_at_start_hung_up": stale,
                "other_calls_at_start": others,
                "soak_leftovers_at_end_hung_up": leftover,
            }
            return report
    finally:
        for f in flows:
            if f.proc is not None and f.proc.poll() is None:
                f.proc.kill()
                f.proc.wait(timeout=10)
        for f in uas_holders:
            stop_uas(f)
        # the partition never outlives the run
        for peer in pair_edges or [EDGE]:
            subprocess.run(
                [sys.executable, "-m", "siporch", "lab", "impair", "itsp-a1", peer, "--clear"],
                capture_output=True, timeout=60, check=False,
            )  # fmt: skip
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="traffic time (default 5)")
    parser.add_argument("--cps", type=float, default=0.5, help="inbound calls per second")
    parser.add_argument("--hold", type=float, default=30.0, help="call hold time, seconds")
    parser.add_argument(
        "--partition",
        type=float,
        default=15.0,
        help="partition, seconds (longer than the routes' failover timeout, 10 s, so that "
        "calls placed early in it must fail over)",
    )
    parser.add_argument("--json", type=Path, help="write the report as JSON to this file")
    parser.add_argument("--no-outbound", action="store_true", help="inbound calls only")
    parser.add_argument("--lock-wait", type=float, default=900.0, help="wait for the deploy lock")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--short",
        action="store_true",
        help="the short timeline (what the test suite runs): without the peer-weights and "
        "the children-6 deploys; every kind of step is still there",
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/soak.py needs root (it drives the lab)", file=sys.stderr)
        return 2
    if not (0 < args.minutes <= 120 and 0 < args.cps <= 20 and 1 <= args.hold <= 600):
        print("--minutes in (0, 120], --cps in (0, 20], --hold in [1, 600]", file=sys.stderr)
        return 2
    if args.json and not args.json.parent.is_dir():
        print(f"--json: directory {args.json.parent} does not exist", file=sys.stderr)
        return 2
    busy = args.cps * args.hold * (1.0 if args.no_outbound else 1.5)
    if busy > 28:
        print(
            f"--cps x --hold gives {busy:g} concurrent calls on trunk itsp-a (inbound, plus "
            "outbound at half the rate): over its 30 channels in the lab model (keep <= 28)",
            file=sys.stderr,
        )
        return 2

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    try:
        report = soak(args, log)
    except SiporchError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 2
    print(markdown(report))
    if args.json:
        try:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        except OSError as exc:
            print(f"soak: cannot write {args.json}: {exc}", file=sys.stderr)
            return 2
    if not report["ok"]:
        print("soak failed: " + "; ".join(report["reasons"]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
