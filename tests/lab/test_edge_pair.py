"""The central site's redundant edge pair on real engines: calls through the floating
address survive the death of the active edge.

The lab inventory (the example's central pair: edge-central and edge-central-2 share
198.18.0.9 with keepalived, Kamailio DMQ between them, rtpengine sessions in Redis on
db-central). ITSP A (itsp-a1, SIPp ``uac_media.xml``: RTP for the whole call) calls the HQ
DID at the floating address; the PBX answers (Echo), so the media crosses the edge's
rtpengine on both legs (ITSP <-> edge, edge <-> PBX). With every call up and RTP flowing,
the active edge's Kamailio and rtpengine are killed (SIGKILL, ``systemctl kill``). Then:

* the standby holds the floating address within 3 s (its eth0, polled), and answers SIP
  on it (OPTIONS, polled);
* every call keeps its media: RTP on both legs (captured on itsp-a1 and on the PBX) for
  every call before the kill and after the switch; the longest gap is measured;
* every call ends with its caller's BYE, answered 200 OK (SIPp counts it successful);
* a new call through the floating address right after the switch is answered: the standby's
  own probes left from the floating address it did not hold, so it had marked the PBXs
  down (the test waits for their first failed probe, "trying", then sets them inactive as
  the probing threshold does after PROBE_THRESHOLD x PROBE_INTERVAL, 90 s in the lab);
  keepalived's ``notify_master`` reloads the dispatcher of the edge that takes over.

The figures are printed (``EDGE-PAIR ...``); docs/benchmarks.md quotes them. The number of
calls is $SIPORCH_EDGE_PAIR_CALLS (default 5).

Before it, planned restarts: the kamailio_edge and rtpengine_media roles' own restarts
(``process.yml``, as a deploy whose change needs one runs it) of the Kamailio, then the
rtpengine, of the edge that holds the floating address, with OPTIONS to the address every
100 ms. The restart marks itself as planned for
keepalived's check, so the address stays on that edge (keepalived never leaves MASTER
there, the other edge never holds it) and every OPTIONS after the restart is answered
(``EDGE-RESTART ...``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import callkit as ck
import pairkit as pk
import pytest

from siporch.deploy import runner
from siporch.sipp import scenario

pytestmark = pytest.mark.lab

EDGES = ("edge-central", "edge-central-2")
VIP = "198.18.0.9"
ITSP = "itsp-a1"
ITSP_ADDRESS = "198.18.1.10"
PBX = "pbx-central"
HQ_DID = "2025550100"  # +12025550100, hq-main: the PBX answers (Echo)
CALLS = int(os.environ.get("SIPORCH_EDGE_PAIR_CALLS", "5"))
TAKEOVER_S = 3.0
#: how long each call lasts: long enough for its RTP before the kill and after the switch
CALL_S = 25
RTP_WINDOW_S = 2.0


@pytest.fixture(scope="module")
def inventory(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ck.copy_inventory(lab, tmp_path_factory.mktemp("pair"))


@pytest.fixture(scope="module")
def kit(lab: Any, inventory: Path) -> Iterator[ck.Lab]:
    k = ck.Lab(lab)
    inv = inventory

    def room_for_every_call(model: dict[str, Any]) -> None:
        trunk = model["trunks"]["itsp-a"]
        trunk["max_channels"] = max(int(trunk.get("max_channels") or 0), CALLS)

    if CALLS > 30:  # itsp-a's max_channels in the lab model: more calls need a larger trunk
        ck.edit_model(inv, room_for_every_call)
    with ck.deploy_lock(wait=2400):
        ck.ensure_deployed(k, inv, (*EDGES, "edge-branch", PBX, "pbx-central-2"))
        for edge in EDGES:  # a dead edge of an earlier run comes back
            _start(k, edge)
        try:
            yield k
        finally:
            _vip_home(k)


NG_PORT = 2223  # the lab's rtpengine control port (hosts.<edge>.rtpengine.ng_port)


def _rtpengine_in_use(k: ck.Lab, edge: str) -> bool:
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


def _start(k: ck.Lab, edge: str) -> None:
    """The edge's daemons running again, rtpengine first, and its Kamailio using it: a
    Kamailio that started while rtpengine was down (systemd restarts a killed Kamailio at
    once) leaves rtpengine out of its calls until its next check, and the modules that
    run after this one would get 503s."""
    k.run(edge, "systemctl start rtpengine-daemon.service")
    assert ck.wait_for(lambda: f":{NG_PORT} " in k.run(edge, ["ss", "-H", "-l", "-u", "-n"]), 30), (
        k.run(edge, "systemctl status --no-pager rtpengine-daemon.service")
    )
    k.run(edge, "systemctl start kamailio.service keepalived.service")
    assert ck.wait_for(lambda: _rtpengine_in_use(k, edge), 40, step=0.5), k.rpc(
        edge, "rtpengine.show", "all"
    )


def _vip_home(k: ck.Lab) -> None:
    """The floating address back on edge-central, where the lab holds it at rest (the higher
    VRRP priority; nopreempt keeps it on the standby after a failover): the standby's
    keepalived restarts once edge-central runs its daemons again, so that the modules that
    run later find the PBX's calls on edge-central. Polled, 3 tries."""
    home, other = EDGES
    for _ in range(3):
        if holds_vip(k, home):
            return
        ck.wait_for(
            lambda: (
                "kamailio" in k.run(home, "pgrep -x kamailio -l || true")
                and "rtpengine" in k.run(home, "pgrep -x rtpengine -l || true")
            ),
            30,
        )
        if holds_vip(k, other):
            k.run(other, "systemctl restart keepalived.service")
        ck.wait_for(lambda: holds_vip(k, home), 10, step=0.2)
    assert holds_vip(k, home), "the floating address did not come back to edge-central"


def holds_vip(k: ck.Lab, edge: str) -> bool:
    return f" {VIP}/" in k.run(edge, ["ip", "-o", "-4", "addr", "show", "dev", "eth0"])


def active_edge(k: ck.Lab) -> str | None:
    held = [e for e in EDGES if holds_vip(k, e)]
    return held[0] if len(held) == 1 else None


def pbx_flags(k: ck.Lab, edge: str) -> dict[tuple[int, str], str]:
    """(set id, URI) -> dispatcher FLAGS ("AP", "TP", "IP", ...) of the PBX destinations
    (port 5060 of pbx-central)."""
    pbx = k.addr(PBX)
    return {(t.set_id, t.uri): t.flags for t in k.dispatcher(edge) if f"sip:{pbx}:" in t.uri}


def loads(k: ck.Lab, edge: str) -> set[str]:
    """The IUIDs of the edge's dispatcher destinations: new ones when the list is loaded
    again (they carry the load time)."""
    return {t.iuid for t in k.dispatcher(edge)}


def vipheld(k: ck.Lab, edge: str) -> int | None:
    """The edge's ``$shv(vipheld)``: 1 while its Kamailio knows it holds the floating
    address, 0 while it refuses new calls (None: no answer)."""
    out = k.rpc(edge, "pv.shvGet", "vipheld")
    if isinstance(out, dict):
        out = out.get("result", out)
    items = out if isinstance(out, list) else [out]
    for item in items:
        if isinstance(item, dict) and item.get("name") == "vipheld":
            return int(item["value"])
    return None


def dmq_nodes(k: ck.Lab, edge: str) -> list[dict[str, Any]]:
    out = k.rpc(edge, "dmq.list_nodes")
    if isinstance(out, dict):
        out = out.get("result", out)
    return [n for n in out if isinstance(n, dict)] if isinstance(out, list) else []


def _callers(k: ck.Lab, workdir: Path) -> subprocess.Popen[str]:
    argv = [
        "ip", "netns", "exec", k.ns(ITSP), ck.sipp(),
        "-sf", str(scenario("uac_media")), "-s", HQ_DID,
        "-i", ITSP_ADDRESS, "-mi", ITSP_ADDRESS, "-p", "25092", "-t", "u1",
        "-m", str(CALLS), "-l", str(CALLS), "-r", "10", "-d", str(CALL_S * 1000),
        "-recv_timeout", "20000", "-timeout", f"{CALL_S + 60}s", "-timeout_error",
        "-nostdin", "-trace_stat", "-stf", str(workdir / "stat.csv"), "-fd", "1",
        "-trace_msg", "-message_file", str(workdir / "msg.log"), "-max_socket", "400",
        f"{VIP}:5060",
    ]  # fmt: skip
    return subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=workdir
    )


def _answered(workdir: Path) -> int:
    try:
        text = (workdir / "msg.log").read_text(errors="replace")
    except OSError:
        return 0
    ids = set()
    for _, m in ck.timed_messages(text, "received"):
        if m.startswith("SIP/2.0 200") and re.search(r"(?im)^CSeq:\s*1 INVITE", m):
            cid = re.search(r"(?im)^Call-ID:\s*(\S+)", m)
            if cid:
                ids.add(cid.group(1))
    return len(ids)


def _flows(cap: ck.Capture, src: str) -> dict[str, list[float]]:
    """Arrival times of the RTP packets ``src`` sent, per source port: rtpengine's port of
    each call (SIPp streams every call from one port of its own)."""
    rows = cap.read(f"ip.src == {src} && udp && !sip", ["frame.time_epoch", "udp.srcport"])
    out: dict[str, list[float]] = {}
    for when, port in rows:
        out.setdefault(port, []).append(float(when))
    return out


def _alive(flows: dict[str, list[float]], start: float, end: float) -> int:
    """Flows with RTP between ``start`` and ``end``: at least 10 packets (20 ms packets;
    RTCP, every few seconds on the port next to each, does not count)."""
    return sum(1 for ts in flows.values() if sum(1 for t in ts if start <= t <= end) >= 10)


def _gap_ms(flows: dict[str, list[float]], start: float, end: float) -> float:
    """The longest gap between two packets of a flow between ``start`` and ``end`` (from
    before the kill to after the switch)."""
    worst = 0.0
    for ts in flows.values():
        inside = sorted(t for t in ts if start <= t <= end)
        worst = max([worst, *((b - a) * 1000 for a, b in itertools.pairwise(inside))])
    return worst


class OptionsLog:
    """OPTIONS to ``address`` every ``step`` seconds in a thread: (send time, answered)."""

    def __init__(self, address: str, step: float = 0.1, timeout: float = 0.5) -> None:
        self.address, self.step, self.timeout = address, step, timeout
        self.probes: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            t = time.time()
            self.probes.append((t, pk.options_answered(self.address, self.timeout)))
            self._stop.wait(max(0.0, self.step - (time.time() - t)))

    def since(self, start: float) -> list[bool]:
        return [ok for t, ok in list(self.probes) if t >= start]

    def __enter__(self) -> OptionsLog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


# the daemons a deploy may restart on an edge: the role that restarts it, its pid file
RESTARTS = {
    "kamailio": ("kamailio_edge", "/run/kamailio/kamailio.pid"),
    "rtpengine": ("rtpengine_media", "/run/rtpengine/rtpengine.pid"),
}


def _restart_as_deployed(
    inventory: Path, edge: str, daemon: str = "kamailio"
) -> subprocess.CompletedProcess[str]:
    """``daemon`` on ``edge`` restarted by its role's own task file (``process.yml``,
    action restart under systemd), as a deploy whose change needs a restart runs it
    (roles/kamailio_edge/tasks/apply.yml, roles/rtpengine_media/tasks/apply.yml)."""
    role = RESTARTS[daemon][0]
    playbook = runner.ansible_playbook()
    assert playbook is not None, "ansible-playbook is not installed"
    cmd = [str(Path(playbook).parent / "ansible"), "-i", str(inventory), edge]
    vault = runner.vault_password_file(inventory, None)
    if vault is not None:
        cmd += ["--vault-password-file", str(vault)]
    cmd += [
        "-m", "ansible.builtin.include_role", "-a", f"name={role} tasks_from=process",
        "-e", json.dumps({f"{role}_process_action": "restart",
                          f"{role}_process_manager": "systemd"}),
    ]  # fmt: skip
    return subprocess.run(
        cmd, env=runner.ansible_env(), capture_output=True, text=True, timeout=180, check=False
    )


# rtpengine's own restart is quicker than keepalived's check interval (1 s), so that most
# of its restarts would pass unseen even without the mark; for the test its unit waits
# SLOW_START_S before it starts the new one (a drop-in, removed afterwards), so the gap is
# always seen and only the mark keeps the address on the edge
SLOW_START_S = 2.0


@contextlib.contextmanager
def _slow_start(k: ck.Lab, edge: str, daemon: str) -> Iterator[None]:
    if daemon != "rtpengine":
        yield
        return
    drop_in = "/etc/systemd/system/rtpengine-daemon.service.d/zz-siporch-test-slow-start.conf"
    k.run(
        edge,
        f"mkdir -p {os.path.dirname(drop_in)} && printf '[Service]\\nExecStartPre=/bin/sleep "
        f"{SLOW_START_S}\\n' > {drop_in} && systemctl daemon-reload",
    )
    try:
        yield
    finally:
        k.run(edge, f"rm -f {drop_in} && systemctl daemon-reload")


@pytest.mark.parametrize("daemon", sorted(RESTARTS))
def test_a_planned_restart_keeps_the_floating_address(
    kit: ck.Lab, inventory: Path, daemon: str
) -> None:
    k = kit
    assert ck.wait_for(lambda: active_edge(k) is not None, 30), "no edge holds the vip"
    holder = active_edge(k)
    assert holder is not None
    other = EDGES[1 - EDGES.index(holder)]
    assert ck.wait_for(lambda: pk.options_answered(VIP, 0.5), 30)
    pidfile = f"cat {RESTARTS[daemon][1]}"
    pid_before = k.run(holder, pidfile).strip()
    other_held: list[float] = []
    watching = threading.Event()

    def watch() -> None:  # the other edge never holds the address
        while not watching.is_set():
            if holds_vip(k, other):
                other_held.append(time.time())
            watching.wait(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    with OptionsLog(VIP) as log, _slow_start(k, holder, daemon):
        watcher.start()
        started = time.time()
        proc = _restart_as_deployed(inventory, holder, daemon)
        restarted = time.time()
        # OPTIONS for 3 s after the restart, and long enough for keepalived to act on a
        # check that failed (fall 1, advert 1 s: well under 3 s)
        ck.wait_for(lambda: len(log.since(restarted)) >= 30, 10, step=0.1)
        watching.set()
        watcher.join(timeout=10)
    during = [ok for t, ok in log.probes if started <= t < restarted]
    after = log.since(restarted)
    journal = k.run(
        holder,
        f"journalctl -u keepalived.service --since @{int(started)} --no-pager -o cat || true",
    )
    pid_after = k.run(holder, pidfile).strip()
    # the edge's Kamailio knows it holds the address (a restarted one found it on its
    # interface: no notification came) and takes new calls through it, their media through
    # the edge's rtpengine (the restarted one)
    held = vipheld(k, holder)
    new_call = ck.uac(
        k, ITSP, f"{VIP}:5060", HQ_DID, duration_ms=500, timeout_s=20,
        address=ITSP_ADDRESS, port=25096,
    )  # fmt: skip
    print(
        f"EDGE-RESTART daemon={daemon} holder={holder} restart_s={restarted - started:.2f} "
        f"options_during={len(during)} unanswered_during={during.count(False)} "
        f"after={sum(after)}/{len(after)} other_held={len(other_held)} "
        f"pid {pid_before}->{pid_after} vipheld={held} "
        f"new_call={new_call.successful}/{new_call.successful + new_call.failed}"
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert pid_after and pid_after != pid_before, f"{daemon} was not restarted"
    assert not other_held, f"{other} held the floating address during the restart"
    assert holds_vip(k, holder), f"{holder} lost the floating address"
    assert not re.search(r"FAULT|BACKUP|now returning", journal), journal
    assert len(after) >= 30 and all(after), f"{after.count(False)}/{len(after)} unanswered"
    assert k.run(holder, f"ls /run/siporch/{daemon}-restart 2>&1 || true").count("No such"), (
        "the restart's mark was left behind"
    )
    assert held == 1, f"{holder}'s Kamailio does not know it holds the floating address"
    assert (new_call.successful, new_call.failed) == (1, 0), new_call.messages[-3:]


def test_calls_survive_the_death_of_the_active_edge(kit: ck.Lab) -> None:
    k = kit
    assert ck.wait_for(lambda: active_edge(k) is not None, 30), "no edge holds the vip"
    active = active_edge(k)
    assert active is not None
    standby = EDGES[1 - EDGES.index(active)]
    # the pair shares state: each edge sees the other on the DMQ bus
    assert ck.wait_for(
        lambda: any(
            n.get("status") == "active" and str(n.get("local")) in ("0", "False", "false", "None")
            for n in dmq_nodes(k, active)
        ),
        90,
    ), k.rpc(active, "dmq.list_nodes")
    assert pk.options_answered(VIP, 1.0)
    # The standby's probes of the PBX leave from the floating address and get no answer
    # (it goes to the active edge): "trying" after the first, inactive at the threshold.
    assert ck.wait_for(
        lambda: (f := pbx_flags(k, standby)) and all(v[:1] in "TI" for v in f.values()),
        60,
        step=1.0,
    ), pbx_flags(k, standby)
    for group, uri in pbx_flags(k, standby):
        k.set_state(standby, "ip", group, uri)
    assert all(v.startswith("I") for v in pbx_flags(k, standby).values()), pbx_flags(k, standby)
    loaded_before = loads(k, standby)

    workdir = Path(tempfile.mkdtemp(prefix="siporch-pair-"))
    with (
        ck.capture(k, ITSP, f"udp and host {VIP} and not port 5060") as itsp_cap,
        ck.capture(k, PBX, f"udp and host {VIP} and not port 5060") as pbx_cap,
    ):
        callers = _callers(k, workdir)
        try:
            assert ck.wait_for(lambda: _answered(workdir) == CALLS, 60), (
                f"{_answered(workdir)}/{CALLS} calls answered"
            )
            up = _answered(workdir)
            time.sleep(RTP_WINDOW_S + 0.5)  # RTP of every call before the kill
            killed = time.time()
            t0 = time.monotonic()
            out = k.run(
                active,
                "systemctl kill -s SIGKILL kamailio.service rtpengine-daemon.service; echo done",
            )
            assert "done" in out, out
            took_vip = took_sip = None
            while time.monotonic() - t0 < 15:
                if took_vip is None and holds_vip(k, standby):
                    took_vip = time.monotonic() - t0
                if took_sip is None and pk.options_answered(VIP, 0.25):
                    took_sip = time.monotonic() - t0
                if took_vip is not None and took_sip is not None:
                    break
                time.sleep(0.05)
            switched = time.time()
            # the new edge starts its peers afresh (keepalived's notify_master), then a new
            # call right after the switch is answered by the PBX through it
            reset = ck.wait_for(
                lambda: not any(v.startswith("I") for v in pbx_flags(k, standby).values()),
                5,
                step=0.05,
            )
            reset_s = time.monotonic() - t0
            new_call = ck.uac(
                k, ITSP, f"{VIP}:5060", HQ_DID, duration_ms=500, timeout_s=20,
                address=ITSP_ADDRESS, port=25094,
            )  # fmt: skip
            new_flags = pbx_flags(k, standby)
            # the list was loaded again (not a probe that happened to come back)
            reloaded = not loaded_before & loads(k, standby)
            time.sleep(max(0.0, RTP_WINDOW_S + 2 - (time.time() - switched)))
            callers.wait(timeout=CALL_S + 90)
        finally:
            ck.stop(callers)
    try:
        ok, failed = ck._stat(workdir / "stat.csv")
        to_itsp = _flows(itsp_cap, VIP)
        to_pbx = _flows(pbx_cap, VIP)
        before = (killed - RTP_WINDOW_S, killed)
        after_start = switched + 0.5
        after = (after_start, after_start + RTP_WINDOW_S)
        kept_itsp = _alive(to_itsp, *after)
        kept_pbx = _alive(to_pbx, *after)
        span = (killed - 1.0, switched + RTP_WINDOW_S)
        gap = max(_gap_ms(to_itsp, *span), _gap_ms(to_pbx, *span))
        print(
            f"EDGE-PAIR calls={CALLS} up={up} active={active} vip_s={took_vip} "
            f"sip_s={took_sip} rtp_before itsp={_alive(to_itsp, *before)} "
            f"pbx={_alive(to_pbx, *before)} rtp_after itsp={kept_itsp} pbx={kept_pbx} "
            f"gap_ms={gap:.0f} ended_ok={ok} failed={failed} "
            f"new_call={new_call.successful}/{new_call.successful + new_call.failed} "
            f"setup_s={new_call.seconds:.2f} peers_reset_s={reset_s:.2f} "
            f"pbx_states_after={sorted(new_flags.values())} reloaded={reloaded}"
        )
        assert took_vip is not None and took_vip <= TAKEOVER_S, f"vip after {took_vip} s"
        assert took_sip is not None, "the standby did not answer on the floating address"
        assert _alive(to_itsp, *before) == CALLS and _alive(to_pbx, *before) == CALLS
        assert (kept_itsp, kept_pbx) == (CALLS, CALLS), "calls lost their media"
        assert (ok, failed) == (CALLS, 0), "calls did not end with BYE / 200 OK"
        assert reset, f"{standby} kept the PBXs inactive after taking over: {new_flags}"
        assert reloaded, f"{standby} did not reload its dispatcher list on taking over"
        assert (new_call.successful, new_call.failed) == (1, 0), (
            f"a new call after the switch failed: {new_call.messages[-3:]} "
            f"{new_call.stderr[-500:]} (PBX states on {standby}: {new_flags})"
        )
    finally:
        ck.cleanup_capture(itsp_cap)
        ck.cleanup_capture(pbx_cap)
        _start(k, active)


def test_the_standby_refuses_new_calls_at_its_own_address(kit: ck.Lab) -> None:
    """An INVITE from a provider to the own address of the edge that does not hold the
    floating address is answered 503 at once (its sender tries its next target); the same
    call to the floating address is answered by the PBX through the other edge."""
    k = kit
    assert ck.wait_for(lambda: active_edge(k) is not None, 30), "no edge holds the vip"
    holder = active_edge(k)
    assert holder is not None
    standby = EDGES[1 - EDGES.index(holder)]
    assert ck.wait_for(lambda: vipheld(k, standby) == 0, 10), vipheld(k, standby)
    refused = ck.uac(
        k, ITSP, f"{k.addr(standby)}:5060", HQ_DID, duration_ms=500, timeout_s=20,
        address=ITSP_ADDRESS, port=25098,
    )  # fmt: skip
    taken = ck.uac(
        k, ITSP, f"{VIP}:5060", HQ_DID, duration_ms=500, timeout_s=20,
        address=ITSP_ADDRESS, port=25098,
    )  # fmt: skip
    finals = [m.splitlines()[0].strip() for m in refused.messages if m.startswith("SIP/2.0 ")]
    print(
        f"EDGE-STANDBY holder={holder} standby={standby} own_address={finals} "
        f"refused_s={refused.seconds:.2f} vip={taken.successful}/{taken.successful + taken.failed}"
    )
    assert refused.successful == 0 and "SIP/2.0 503 Edge On Standby" in finals, finals
    assert vipheld(k, holder) == 1
    assert (taken.successful, taken.failed) == (1, 0), taken.messages[-3:]
