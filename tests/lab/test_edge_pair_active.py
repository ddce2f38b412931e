"""The central edge pair on real engines, beyond the death of the active edge
(tests/lab/test_edge_pair.py); helpers in tests/lab/pairkit.py:

* **max_channels across two active-active edges**: the lab inventory with the central pair
  in ``active-active`` mode (no floating address: each edge takes calls at its own address,
  DMQ between them), deployed by the module and replaced by the lab's own model at its end.
  ITSP A (``max_channels: 30``) sends 15 calls with RTP to each edge (SIPp ``uac_media.xml``
  on itsp-a1, held up, the PBX answers with Echo); both edges count 30 in the trunk's dialog
  profile, and the 31st call is refused with 503 by either edge although each carries only
  15 of the 30: the profile counts the other edge's dialogs too (``dialog`` with
  ``enable_dmq``). When the calls end, both counts go back to 0. (Calls of ITSP A that an
  earlier module left up are counted in: the test fills the trunk up to 30.)
* **SRV failover** (the same active-active deploy): the lab DNS gets
  ``_sip._udp.central.lab.example`` with both edges (same priority and weight). SIPp does
  no DNS, so ITSP A's side is a Kamailio proxy of the test's own on itsp-a1 (its resolver is
  the lab DNS) that sends every new call to ``sip:<number>@central.lab.example``, SIPp
  calling through it. Calls complete on both edges; with edge-central partitioned from
  itsp-a1 (``siporch lab impair --partition``), every new call completes through
  edge-central-2: the proxy's tries of the dead edge time out (fr_timer 2 s), the next SRV
  target is tried (``use_dns_failover``), and the dead edge is blocklisted.
* **The PBX's calls with one edge partitioned** (the same active-active deploy):
  pbx-central is partitioned from edge-central, the first edge it dials; its outbound
  calls (call files into Asterisk's spool, as a phone waits for its call; ITSP A's SIPp
  answers) all complete through edge-central-2. The call placed at the partition waits for
  its INVITE's timer B (32 s), then Dial ends CHANUNAVAIL and the next edge is dialled;
  once the PBX's qualify (every 5 s, 3 s timeout) marks edge-central unavailable, Dial
  skips it at once. An inbound call through edge-central-2 completes meanwhile. After the
  partition heals, the next qualify finds edge-central and calls go through it again.
* **A registration through each edge** (the same active-active deploy): itsp-b, a
  ``register`` trunk, is registered by the PBX once per edge (``itsp-b-reg-<edge>``, each
  with that edge as its outbound proxy) to a digest registrar over TLS on itsp-b
  (``callkit.tls_registrar``, expiry 20 s); the registrar accepts two bindings, each from
  its edge with the edge's own address as the contact. pbx-central partitioned from
  edge-central: the registration through edge-central-2 is refreshed and stays Registered
  while the one through edge-central lapses, ``siporch status`` keeps the trunk
  registered (each edge's state listed), and itsp-b's call to edge-central-2's contact
  (TLS, SRTP) is answered. After the partition heals, both are Registered again.
* **Rolling deploys of the active-standby pair under calls** (the lab's model with a
  one-trunk change deployed first: itsp-a's ``max_channels`` 40): 10 calls with RTP held
  through everything, new calls at 1 per second, OPTIONS to the floating address every
  200 ms; a deploy of the lab's own model (the one-trunk change back) with ``--serial 2``
  passes (edge-central-2 in the pair's own play, after edge-central), then a deploy whose
  pair gate fails on edge-central-2 (its Redis refused) puts both edges back. No call up
  is dropped, no new call fails, the floating address always answers. The held calls
  hang up (their BYE through the edge) as soon as the deploys are done, not at a fixed
  time; the lab's own model is then deployed already, and the module's end has nothing
  to deploy.

The figures are printed (``EDGE-PAIR-AA``, ``EDGE-PAIR-SRV``, ``EDGE-PAIR-PBX``,
``EDGE-PAIR-REG``, ``EDGE-PAIR-ROLL``); docs/benchmarks.md quotes them. The module ends with the lab's own model deployed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import callkit as ck
import pairkit as pk
import pytest

pytestmark = pytest.mark.lab

ITSP = "itsp-a1"
ITSP_ADDRESS = "198.18.1.10"
HQ_DID = "2025550100"  # +12025550100, hq-main: the PBX answers (Echo)
MAX = 30  # itsp-a's max_channels in the lab model
HOLD_S = 30


@pytest.fixture(scope="module")
def lab_kit(lab: Any) -> Iterator[ck.Lab]:
    """The deploy lock for the whole module; the lab's own model deployed at its end."""
    k = ck.Lab(lab)
    with ck.deploy_lock(wait=2400):
        try:
            yield k
        finally:
            pk.ensure_model(k, lab.inventory)
            # keepalived is back on both edges: one of them holds the floating address
            assert ck.wait_for(lambda: _vip_holders(k) == 1, 60), "no edge holds the vip"


def _vip_holders(k: ck.Lab) -> int:
    return sum(
        f" {pk.VIP}/" in k.run(e, ["ip", "-o", "-4", "addr", "show", "dev", "eth0"])
        for e in pk.EDGES
    )


@pytest.fixture(scope="module")
def aa_inventory(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the lab inventory with the central pair active-active."""
    inv = ck.copy_inventory(lab, tmp_path_factory.mktemp("active"))
    ck.edit_model(inv, pk.active_active)
    return inv


@pytest.fixture(scope="module")
def aa(lab_kit: ck.Lab, aa_inventory: Path) -> ck.Lab:
    """The central pair deployed active-active, DMQ up between the two edges."""
    k = lab_kit
    pk.ensure_model(k, aa_inventory)
    for edge in pk.EDGES:
        assert ck.wait_for(lambda e=edge: pk.dmq_peers_active(k, e), 90), k.rpc(
            edge, "dmq.list_nodes"
        )
    return k


def _sizes(k: ck.Lab, tid: int) -> dict[str, int | None]:
    return {e: pk.profile_size(k, e, tid) for e in pk.EDGES}


def test_max_channels_holds_across_two_active_edges(aa: ck.Lab) -> None:
    k = aa
    tid = pk.trunk_id(k, "edge-central", "itsp-a")
    # calls an earlier module left up end within the dialog keepalives' time (75 s); one
    # still counted by both edges after that is counted in: the test fills the rest
    ck.wait_for(lambda: set(_sizes(k, tid).values()) == {0}, 90)
    assert ck.wait_for(lambda: len(set(_sizes(k, tid).values())) == 1, 30), _sizes(k, tid)
    left = int(next(iter(_sizes(k, tid).values())) or 0)
    assert left < MAX // 2, f"{left} calls of itsp-a left up in the lab"
    per_edge = [(MAX - left + 1) // 2, (MAX - left) // 2]
    workdir = Path(tempfile.mkdtemp(prefix="siporch-aa-"))
    started = time.monotonic()
    runs = []
    for i, (edge, address) in enumerate(pk.EDGES.items()):
        run = pk.callers(
            k, ITSP, ITSP_ADDRESS, f"{address}:5060", HQ_DID, workdir, tag=edge,
            port=25093 + i, media_port=6000 + 10000 * i, calls=per_edge[i], rate=10,
            hold_s=HOLD_S,
        )  # fmt: skip
        runs.append(run)
    try:
        assert ck.wait_for(lambda: [r.answered() for r in runs] == per_edge, 60), "\n".join(
            [str([(r.answered(), r.refused()) for r in runs])] + [r.diagnose() for r in runs]
        )
        # each edge counts the other's calls as well
        assert ck.wait_for(lambda: set(_sizes(k, tid).values()) == {MAX}, 10, step=0.1), _sizes(
            k, tid
        )
        sizes = _sizes(k, tid)
        refused: dict[str, list[int]] = {}
        for edge, address in pk.EDGES.items():
            out = ck.invite(k, ITSP, address, HQ_DID, src=ITSP_ADDRESS, wait=5.0)
            refused[edge] = out[0]["codes"]
        still_up = time.monotonic() - started < HOLD_S  # the 30 were up all along
        print(
            f"EDGE-PAIR-AA left_before={left} held={[r.answered() for r in runs]} "
            f"profiles={sizes} next_call={refused}"
        )
        for edge, codes in refused.items():
            assert codes and codes[-1] == 503, (edge, codes)
        assert still_up
    finally:
        results = [(r.wait(HOLD_S + 90), r.result()) for r in runs]
    print(f"EDGE-PAIR-AA ended={results}")
    # a failed call: why (SIPp's error log, the aborted call's messages, the flow of every
    # call without its 200s); the SIPp files stay in workdir
    assert [res for _, res in results] == [(n, 0) for n in per_edge], "\n".join(
        [str(results)]
        + [
            r.diagnose()
            for r, (_, res), n in zip(runs, results, per_edge, strict=True)
            if res != (n, 0)
        ]
    )
    # the calls ended: both counts back (the BYE seen by one edge ends the dialog on both)
    assert ck.wait_for(lambda: set(_sizes(k, tid).values()) <= {0, left}, 30), _sizes(k, tid)
    shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------- SRV failover (active-active)

SRV_DOMAIN = "central.lab.example"
SRV_RECORD = f"_sip._udp.{SRV_DOMAIN}"
PROXY_PORT = 5070
SRV_CALLS = 6
#: the proxy's INVITE timer: how long a call waits for the partitioned edge before the
#: next SRV target is tried
FR_MS = 2000


@pytest.fixture
def srv(aa: ck.Lab) -> Iterator[ck.Lab]:
    """The site's SIP name in the lab DNS: both edges, same priority and weight."""
    from siporch.lab import dns

    dns.set_record(
        SRV_RECORD,
        "SRV",
        [f"10 10 5060 {edge}.lab.example" for edge in pk.EDGES],
    )
    try:
        yield aa
    finally:
        dns.delete_record(SRV_RECORD)


def _impair(*args: str) -> None:
    subprocess.run(
        ["siporch", "lab", "impair", "edge-central", ITSP, *args],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip


def test_new_calls_find_the_other_edge_by_srv(srv: ck.Lab) -> None:
    """ITSP A reaches the site by its SIP name (a Kamailio proxy of its own on itsp-a1,
    SIPp behind it: SIPp does no DNS): calls complete on either edge; with edge-central
    partitioned from ITSP A, every new call completes through edge-central-2: the calls
    that the proxy sent to the dead target waited for its INVITE timer (fr_timer), then the
    target is blocklisted and the next calls go straight to the other edge."""
    k = srv
    workdir = Path(tempfile.mkdtemp(prefix="siporch-srv-"))
    with pk.srv_proxy(k, ITSP, ITSP_ADDRESS, PROXY_PORT, SRV_DOMAIN, fr_ms=FR_MS) as proxy:
        both = pk.callers(
            k, ITSP, ITSP_ADDRESS, proxy, HQ_DID, workdir, tag="both", port=25101,
            calls=SRV_CALLS, rate=2, hold_s=2,
        )  # fmt: skip
        both.wait(90)
        before = (both.result(), pk.answered_via(both.trace))
        _impair("--partition")
        try:
            part = pk.callers(
                k, ITSP, ITSP_ADDRESS, proxy, HQ_DID, workdir, tag="part", port=25102,
                calls=SRV_CALLS, rate=1, hold_s=2,
            )  # fmt: skip
            part.wait(120)
        finally:
            _impair("--clear")
    after = (part.result(), pk.answered_via(part.trace))
    setup = pk.setup_seconds(part.trace)
    print(
        f"EDGE-PAIR-SRV before={before} partitioned={after} setup_s={[round(s, 2) for s in setup]}"
    )
    assert before[0] == (SRV_CALLS, 0), (before, pk.unfinished(both.trace))
    assert sum(before[1].values()) == SRV_CALLS, before
    assert after[0] == (SRV_CALLS, 0), (after, pk.unfinished(part.trace))
    assert after[1] == {"edge-central-2": SRV_CALLS}, after
    # the calls placed before the first try of the partitioned edge timed out may have
    # waited for it (fr_timer); the edge is blocklisted then, and the later calls go
    # straight to edge-central-2
    waited = FR_MS / 1000 - 0.2
    first_late = int(FR_MS / 1000 + 1) + 1
    assert all(s < waited for s in setup[first_late:]), setup
    shutil.rmtree(workdir, ignore_errors=True)


# ------------------------------------- the PBX's calls with one edge partitioned (active-active)

PBX = "pbx-central"
PBX_CALLS = 5  # during the partition: the first at once, the others once the edge is down
#: an upper bound of the PBX's wait for a silent edge (the INVITE's timer B, 32 s, then the
#: next edge's setup)
TIMER_B_S = 32.0


def _pbx_impair(*args: str) -> None:
    subprocess.run(
        ["siporch", "lab", "impair", PBX, "edge-central", *args],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip


def _itsp_invites(*uases: ck.Uas) -> dict[str, tuple[float, str]]:
    """Number called -> (arrival, edge it came through) of the first INVITE of each call
    at ITSP A's peers."""
    out: dict[str, tuple[float, str]] = {}
    for u in uases:
        try:
            text = u.message_file.read_text(errors="replace")
        except OSError:
            continue
        for when, m in ck.timed_messages(text, "received"):
            user = re.match(r"INVITE sips?:([^@;> ]+)@", m)
            if user:
                out.setdefault(user.group(1), (when, pk.via_edge(m)))
    return out


def _byes(*uases: ck.Uas) -> int:
    return sum(1 for u in uases for m in u.messages() if m.startswith("BYE "))


def test_pbx_calls_leave_through_the_other_edge(aa: ck.Lab) -> None:
    """pbx-central partitioned from edge-central, the first of its two active-active edges:
    its outbound calls all complete through edge-central-2. A call placed at the moment of
    the partition waits for the silent edge's INVITE timeout (timer B) and then goes to the
    next edge (DIALSTATUS CHANUNAVAIL); once the PBX's qualify has marked edge-central
    unavailable, Dial skips it at once and the calls take no longer than through a live
    edge. An inbound call through edge-central-2 meanwhile completes on the PBX. When the
    partition heals, the next qualify finds edge-central and calls go through it again."""
    from siporch.render.asterisk import EDGE_QUALIFY_FREQUENCY, EDGE_QUALIFY_TIMEOUT

    k = aa
    seq = iter(range(10, 100))
    numbers: list[str] = []
    # the lab runs what was last deployed for this model's hash: the render of this tree?
    conf = k.run(PBX, "cat /etc/siporch/current/asterisk/pjsip_siporch.conf")
    assert f"qualify_frequency = {EDGE_QUALIFY_FREQUENCY}\n" in conf, (
        "pbx-central runs another render of the active-active model: deploy this tree"
    )

    with ck.uas(k, "itsp-a1") as a1, ck.uas(k, "itsp-a2") as a2:

        def call() -> tuple[float, str]:
            """One outbound call from the PBX: (setup until ITSP A has the INVITE, edge)."""
            number = f"31255501{next(seq)}"
            numbers.append(number)
            placed = pk.pbx_call(k, PBX, number, hold_s=1)
            key = f"1{number}"
            ok = ck.wait_for(lambda: key in _itsp_invites(a1, a2), TIMER_B_S + 30)
            assert ok, (number, k.asterisk("core show channels"), _itsp_invites(a1, a2))
            when, edge = _itsp_invites(a1, a2)[key]
            return when - placed, edge

        for edge in pk.EDGES:
            assert ck.wait_for(lambda e=edge: pk.edge_contact_status(k, e) == "Avail", 30), (
                k.asterisk("pjsip show contacts")
            )
        before = [call() for _ in range(2)]
        # both ended (their BYEs through edge-central) before the partition
        assert ck.wait_for(lambda: _byes(a1, a2) >= 2, 20), _byes(a1, a2)
        _pbx_impair("--partition")
        partitioned = time.monotonic()
        try:
            # the first call at once, while the PBX still takes edge-central for up; the
            # qualify marks it unavailable meanwhile
            with ThreadPoolExecutor(1) as pool:
                first = pool.submit(call)
                down = ck.wait_for(
                    lambda: pk.edge_contact_status(k, "edge-central") == "Unavail",
                    EDGE_QUALIFY_FREQUENCY + EDGE_QUALIFY_TIMEOUT + 10, step=0.1,
                )  # fmt: skip
                down_s = time.monotonic() - partitioned
                during = [first.result(timeout=TIMER_B_S + 40)]
            during += [call() for _ in range(PBX_CALLS - 1)]
            # an inbound call through edge-central-2 to the PBX meanwhile
            inbound = ck.uac(
                k, ITSP, f"{pk.EDGES['edge-central-2']}:5060", HQ_DID, duration_ms=1000,
                port=25103,
            )  # fmt: skip
        finally:
            _pbx_impair("--clear")
        healed = time.monotonic()
        up = ck.wait_for(
            lambda: pk.edge_contact_status(k, "edge-central") == "Avail",
            EDGE_QUALIFY_FREQUENCY + EDGE_QUALIFY_TIMEOUT + 10, step=0.1,
        )  # fmt: skip
        up_s = time.monotonic() - healed
        after = [call() for _ in range(2)]
        total = 2 + PBX_CALLS + 2
        ended = ck.wait_for(lambda: _byes(a1, a2) >= total, 30)
        byes = _byes(a1, a2)
    # why each call left edge-central for the next edge (siporch-outbound's NOTICE)
    log = k.run(PBX, "grep -h 'siporch-outbound: ' /var/log/asterisk/messages.log || true")
    why: dict[str, tuple[str, str] | None] = {}
    for n in numbers[2 : 2 + PBX_CALLS]:
        m = re.findall(
            rf"siporch-outbound: {n} via siporch-edge-edge-central: (\w+) \(cause (\d+)\)", log
        )
        why[n] = m[-1] if m else None
    print(
        f"EDGE-PAIR-PBX before={[(round(s, 2), e) for s, e in before]} "
        f"partitioned={[(round(s, 2), e) for s, e in during]} edge_down_after_s={down_s:.1f} "
        f"inbound={(inbound.successful, inbound.failed, round(inbound.seconds, 2))} "
        f"edge_up_after_heal_s={up_s:.1f} healed={[(round(s, 2), e) for s, e in after]} "
        f"byes={byes}/{total} next_edge_because={list(why.values())}"
    )
    assert [e for _, e in before] == ["edge-central"] * 2, before
    assert down, "the PBX did not mark edge-central unavailable"
    assert down_s <= EDGE_QUALIFY_FREQUENCY + EDGE_QUALIFY_TIMEOUT + 1, down_s
    assert [e for _, e in during] == ["edge-central-2"] * PBX_CALLS, during
    # the call placed at the partition waited for the silent edge, at most its timer B
    assert during[0][0] <= TIMER_B_S + 3, during
    # the later ones went straight to edge-central-2
    assert all(s < 2.0 for s, _ in during[1:]), during
    # each as CHANUNAVAIL: the first after its INVITE's timeout (cause 18, no user
    # response), the later ones at once: no reachable contact to dial (cause 3)
    assert [w[0] if w else None for w in why.values()] == ["CHANUNAVAIL"] * PBX_CALLS, why
    assert (inbound.successful, inbound.failed) == (1, 0), inbound.stderr
    assert up and up_s <= EDGE_QUALIFY_FREQUENCY + EDGE_QUALIFY_TIMEOUT + 1, up_s
    assert [e for _, e in after] == ["edge-central"] * 2, after
    assert all(s < 2.0 for s, _ in after), after
    assert ended, f"{byes} of {total} calls hung up at ITSP A"


# ------------------------------------ a registration through each edge (active-active)

#: the lab registrar's expiry for the PBX's registrations of itsp-b: refreshed every
#: 15 s or so (Asterisk refreshes before the expiry)
REG_EXPIRES = 20
EDGE_REGS = {e: f"itsp-b-reg-{e}" for e in pk.EDGES}
BOTH = {"edge-central": "registered", "edge-central-2": "registered"}


def _reg_states(k: ck.Lab) -> dict[str, str]:
    """Asterisk's state of each of itsp-b's registrations (``pjsip show registrations``)."""
    text = k.asterisk("pjsip show registrations")
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and "/" in parts[0]:
            name = parts[0].split("/", 1)[0]
            if name in EDGE_REGS.values():
                out[name] = parts[2]
    return out


def _all_registered(k: ck.Lab) -> bool:
    return _reg_states(k) == dict.fromkeys(EDGE_REGS.values(), "Registered")


def _itsp_b_registrations(inv: Path) -> tuple[str | None, dict[str, str], list[str]]:
    """itsp-b in ``siporch status``: its registration, each edge's, its registration
    problems."""
    report = ck.status_json(inv, PBX)
    b = next(t for t in report["trunks"] if t["name"] == "itsp-b")
    problems = [
        p["message"]
        for p in report["problems"]
        if p.get("trunk") == "itsp-b" and "registration" in p["message"]
    ]
    return b["registration"], {r["edge"]: r["state"] for r in b["registrations"] or []}, problems


def test_registration_through_each_edge_outlives_one_edge(
    aa: ck.Lab, aa_inventory: Path, lab: Any
) -> None:
    """itsp-b (a `register` trunk, TLS) at the active-active site: the PBX registers it
    once through each edge, and the lab registrar (expiry 20 s) gets two bindings, each
    from its edge with that edge's own address as the contact. With pbx-central partitioned
    from edge-central, the registration through edge-central-2 is refreshed and stays
    Registered (the one through edge-central times out), ``siporch status`` keeps the
    trunk registered and shows each edge's state, and itsp-b's call to edge-central-2's
    contact is answered. After the partition heals, both are Registered again."""
    from siporch.model import load_model
    from siporch.model.schema import RegisterAuth

    k = aa
    conf = k.run(PBX, "cat /etc/siporch/current/asterisk/pjsip_siporch.conf")
    assert all(f"[{r}]" in conf for r in EDGE_REGS.values()), (
        "pbx-central runs another render of the active-active model: deploy this tree"
    )
    model = load_model(lab.inventory, vault_password_file=lab.inventory.parent / ".vault-pass")
    auth = model.model.trunks["itsp-b"].auth
    assert isinstance(auth, RegisterAuth) and auth.realm
    edge1, edge2 = pk.EDGES["edge-central"], pk.EDGES["edge-central-2"]
    with ck.tls_registrar(
        k, "itsp-b", realm=auth.realm, password=auth.password.get_secret_value(),
        expires=REG_EXPIRES, limit_s=300,
    ) as reg:  # fmt: skip

        def bindings(since: float = 0.0) -> dict[str, str]:
            """Edge address -> the contact the registrar accepted from it (after since)."""
            return {e["peer"]: e["contact"] for e in reg.registered() if e["time"] > since}

        k.asterisk("pjsip send register *all")
        assert ck.wait_for(lambda: set(bindings()) == {edge1, edge2}, 45), reg.entries()
        contacts = bindings()
        both = ck.wait_for(lambda: _all_registered(k), 20)
        assert both, _reg_states(k)
        before = (_reg_states(k), _itsp_b_registrations(aa_inventory))
        _pbx_impair("--partition")
        partitioned = time.time()
        seen2: set[str] = set()
        try:

            def edge1_lapsed() -> bool:
                states = _reg_states(k)
                seen2.add(states.get(EDGE_REGS["edge-central-2"], "missing"))
                return states.get(EDGE_REGS["edge-central"]) != "Registered"

            # edge-central-2's registration is refreshed meanwhile; edge-central's refresh
            # goes unanswered (its REGISTER's timeout, 32 s) and its registration lapses
            lapsed = ck.wait_for(edge1_lapsed, REG_EXPIRES + 45, step=1.0)
            lapsed_s = time.time() - partitioned
            refreshed = bindings(since=partitioned)
            during = (_reg_states(k), _itsp_b_registrations(aa_inventory))
            call = ck.tls_call(
                k, "itsp-b", edge2, f"sip:s@{edge2};transport=tls", "+12025550100",
                auth.realm, hold=1.0,
            )  # fmt: skip
        finally:
            _pbx_impair("--clear")
        healed = time.time()
        # Asterisk retries a failed registration after its retry_interval (60 s); the
        # deploy's gate and an operator send it at once, as here
        k.asterisk(f"pjsip send register {EDGE_REGS['edge-central']}")
        back = ck.wait_for(lambda: _all_registered(k), 45)
        back_s = time.time() - healed
        after = (_reg_states(k), _itsp_b_registrations(aa_inventory))
        rebound = bindings(since=healed)
    print(
        f"EDGE-PAIR-REG contacts={contacts} before={before} "
        f"edge1_lapsed_after_s={lapsed_s:.1f} refreshed_during={sorted(refreshed)} "
        f"edge2_states_during={sorted(seen2)} during={during} call={call['codes']} "
        f"bye={call['bye']} back_after_heal_s={back_s:.1f} after={after}"
    )
    # two bindings, each from its edge with that edge's own address as the contact
    assert all(address in c for address, c in contacts.items()), contacts
    assert before[1] == ("registered", BOTH, []), before
    assert lapsed, f"edge-central's registration stayed Registered: {_reg_states(k)}"
    assert edge2 in refreshed and edge1 not in refreshed, refreshed
    assert seen2 == {"Registered"}, seen2
    assert during[1][0] == "registered" and during[1][1]["edge-central-2"] == "registered", during
    assert during[1][1]["edge-central"] != "registered", during
    assert [m.split(" is ")[0] for m in during[1][2]] == [
        "trunk itsp-b: registration through edge edge-central"
    ], during
    assert call["codes"][-1] == 200 and call["bye"] == 200, call
    assert f"c=IN IP4 {edge2}" in call["answer_sdp"], call
    assert back, after
    assert edge1 in rebound, rebound
    assert after[1] == ("registered", BOTH, []), after


# ------------------------------------------------- rolling deploys of the active-standby pair

HELD = 10  # calls up with RTP through the whole of both deploys
NEW_RATE = 1.0  # new calls per second meanwhile, each 2 s with RTP
#: the held calls' longest hold (both deploys took up to 340 s on a loaded machine); they
#: hang up as soon as the deploys are done
HOLD_DEPLOYS_S = 420
REDIS = ("198.18.0.30", 6379)


@pytest.fixture(scope="module")
def standby(lab_kit: ck.Lab, lab: Any, tmp_path_factory: pytest.TempPathFactory) -> ck.Lab:
    """The lab's model (the pair active-standby) with itsp-a's ``max_channels`` 40
    deployed, every daemon of the pair up, DMQ between the edges, one of them holding the
    floating address. (The rolling deploy then deploys the lab's own model, which the
    module leaves deployed.)"""
    k = lab_kit
    inv = ck.copy_inventory(lab, tmp_path_factory.mktemp("r1"))
    ck.edit_model(inv, _trunk_limit(40))
    pk.ensure_model(k, inv)
    for edge in pk.EDGES:
        assert ck.wait_for(lambda e=edge: pk.rtpengine_in_use(k, e), 40, step=0.5), edge
        assert ck.wait_for(lambda e=edge: pk.dmq_peers_active(k, e), 90), edge
    assert ck.wait_for(lambda: len(pk.vip_holders(k)) == 1, 30), pk.vip_holders(k)
    assert ck.wait_for(lambda: pk.options_answered(pk.VIP), 30)
    return k


HOST_BY_HOST = "Deploy the release host by host"
PAIR_PLAY = "Deploy the other edges of each pair, one at a time"


def _plays(output: list[str]) -> dict[str, str]:
    """The playbook's output, play by play (name -> its lines)."""
    out: dict[str, list[str]] = {}
    name = ""
    for line in output:
        m = re.match(r"PLAY \[(.*)\] \*", line)
        if m:
            name = m.group(1)
        out.setdefault(name, []).append(line)
    return {n: "\n".join(lines) for n, lines in out.items()}


def _trunk_limit(value: int) -> Any:
    def edit(model: dict[str, Any]) -> None:
        model["trunks"]["itsp-a"]["max_channels"] = value

    return edit


def test_rolling_deploy_of_the_pair_under_calls(standby: ck.Lab, lab: Any, tmp_path: Path) -> None:
    """Two deploys of a one-trunk change (itsp-a's max_channels) to the active-standby pair
    while calls are up and new calls come in: the first (the lab's own model) passes, edge
    by edge; the second fails the pair's health gate on the second edge (its Redis
    refused) and both edges go back to the first deploy's release. No call up is dropped,
    no new call fails. The held calls hang up when the deploys are done."""
    k = standby
    r1 = {e: pk.release_of(k, e) for e in pk.EDGES}
    inv2 = lab.inventory
    inv3 = ck.copy_inventory(lab, tmp_path / "r3")
    ck.edit_model(inv3, _trunk_limit(50))
    r2_hash, r3_hash = ck.model_hash(inv2), ck.model_hash(inv3)
    workdir = Path(tempfile.mkdtemp(prefix="siporch-roll-"))
    target = f"{pk.VIP}:5060"
    held = pk.callers(
        k, ITSP, ITSP_ADDRESS, target, HQ_DID, workdir, tag="held", port=25097,
        media_port=6000, calls=HELD, rate=10, hold_s=HOLD_DEPLOYS_S,
    )  # fmt: skip
    new = None
    try:
        assert ck.wait_for(lambda: held.answered() == HELD, 60), (held.answered(), held.refused())
        started = time.monotonic()
        new = pk.callers(
            k, ITSP, ITSP_ADDRESS, target, HQ_DID, workdir, tag="new", port=25098,
            media_port=16000, calls=1000, rate=NEW_RATE, limit=10, hold_s=2,
        )  # fmt: skip
        assert ck.wait_for(lambda: new.answered() >= 2, 30), new.refused()
        with pk.Prober(pk.VIP) as probe:
            t0 = time.monotonic()
            ok = ck.deploy(inv2, {"siporch_serial": 2})  # batches of 2: never the pair
            took_ok = time.monotonic() - t0
            assert ok.ok, "\n".join(ok.output[-60:])
            plays = _plays(ok.output)
            # edge-central-2 is deployed in the pair's own play, after edge-central's batch
            assert "changed: [edge-central]" in plays[HOST_BY_HOST], plays.keys()
            assert "changed: [edge-central-2]" not in plays[HOST_BY_HOST]
            assert "changed: [edge-central-2]" in plays[PAIR_PLAY], plays.keys()
            r2 = {e: pk.release_of(k, e) for e in pk.EDGES}
            assert all(r.endswith(f"-{r2_hash}") for r in r2.values()), r2
            with pk.blocked(k, "edge-central-2", *REDIS, "SIPORCH_TEST_REDIS"):
                t0 = time.monotonic()
                bad = ck.deploy(inv3)
                took_bad = time.monotonic() - t0
            r3 = {e: pk.release_of(k, e) for e in pk.EDGES}
        new.pause(k, ITSP)
        deploys_s = time.monotonic() - started
        failures = bad.failures()
        hosts = {h["host"]: h for h in (bad.report or {}).get("hosts", [])}
        print(
            f"EDGE-PAIR-ROLL r1={r1} r2={r2} after_failed={r3} deploy_ok_s={took_ok:.0f} "
            f"deploy_failed_s={took_bad:.0f} failures={failures} "
            f"rollback={ {h: v.get('rollback', '') for h, v in hosts.items()} } "
            f"vip_probes={probe.sent} unanswered={probe.unanswered} "
            f"longest_unanswered_s={probe.worst:.2f} held_s={deploys_s:.0f}"
        )
        assert deploys_s < HOLD_DEPLOYS_S - 10, "the held calls ended before the deploys"
        assert not bad.ok, "the deploy with Redis refused on edge-central-2 passed"
        assert [f["host"] for f in failures] == ["edge-central-2"], failures
        assert not any(r.endswith(f"-{r3_hash}") for r in r3.values()), r3
        assert r3 == r2, (r2, r3)
        assert hosts.get("edge-central", {}).get("rollback"), hosts.get("edge-central")
        assert probe.worst < 2.0, f"the floating address went unanswered {probe.worst:.2f} s"
    finally:
        if new is not None:
            new_result = (new.finish(k, ITSP, 60), new.result(), new.refused())
        # the deploys are done (or failed): the held calls hang up now, each with its BYE
        # through the edge (a call the edges lost gets no 200 to it)
        hung_up = held.hang_up(k, ITSP)
        held_result = (held.wait(120), held.result(), held.refused())
    print(f"EDGE-PAIR-ROLL held={held_result} hung_up={hung_up} new={new_result}")
    assert held_result[1] == (HELD, 0), f"{held_result}\n{held.diagnose()}"
    assert hung_up == HELD, (hung_up, held_result)
    ok_new, failed_new = new_result[1]
    assert new_result[0] and ok_new >= 20 and failed_new == 0, f"{new_result}\n{new.diagnose()}"
    assert not new_result[2], new_result
    shutil.rmtree(workdir, ignore_errors=True)
