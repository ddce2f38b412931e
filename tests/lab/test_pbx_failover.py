"""Inbound failover between the PBXs of a PBX group: the example's DIDs point at
``central-pbx`` = [pbx-central, pbx-central-2] (strategy failover).

Real calls: SIPp plays ITSP A on itsp-a1 and calls a DID through the active edge of the
central pair (the one holding the floating address, at its own address: the standby
cannot probe, its probes leave from the floating address it does not hold, so it would
see both PBXs down); the lab's Asterisk on both PBX hosts answers (the same dialplan). pbx-central's Asterisk is
killed with SIGKILL (systemd's restart held off by a runtime drop-in), the calls complete on
pbx-central-2, then pbx-central comes back and takes the calls again. The module restores
pbx-central and its Asterisk whatever happens.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import callkit as ck
import pairkit as pk
import pytest

from siporch.model.loader import load_model
from siporch.render import kamailio

pytestmark = pytest.mark.lab

HQ_DID = "2025550100"  # itsp-a's national format; +12025550100 is hq-main -> central-pbx
E164 = "+12025550100"
PBX1, PBX2 = "pbx-central", "pbx-central-2"
GROUP = "central-pbx"
HOSTS = (*pk.EDGES, "edge-branch", PBX1, PBX2)
CALLS_WHILE_DOWN = 5
CALL_MS = 1500
#: A runtime drop-in (gone at the host's next boot) that keeps systemd from restarting the
#: killed Asterisk (the unit says Restart=on-failure, RestartSec=1).
HOLD = "/run/systemd/system/asterisk.service.d/siporch-test-hold.conf"


def _asterisk_up(kit: ck.Lab, host: str) -> bool:
    out = kit.run(host, ["asterisk", "-C", ck.ASTERISK_CONF, "-rx", "core waitfullybooted"])
    return "fully booted" in out.lower()


def _channels(kit: ck.Lab, host: str) -> list[list[str]]:
    out = kit.run(host, ["asterisk", "-C", ck.ASTERISK_CONF, "-rx", "core show channels concise"])
    return [line.split("!") for line in out.splitlines() if "!" in line]


def _answered_on(kit: ck.Lab, host: str) -> bool:
    return any(E164 in c and c[1] == "from-trunk" and c[4] == "Up" for c in _channels(kit, host))


def _group_set(kit: ck.Lab, lab: Any) -> int:
    model = load_model(lab.inventory).model
    assert model.pbx_groups[GROUP].hosts == [PBX1, PBX2]
    return kamailio.SET_PBX_GROUP_BASE + sorted(model.pbx_groups).index(GROUP) + 1


def _targets(kit: ck.Lab, set_id: int, edge: str) -> dict[str, str]:
    """URI (no parameters) -> dispatcher flags of the group's set on ``edge``."""
    return {t.uri.split(";")[0]: t.flags for t in kit.dispatcher(edge) if t.set_id == set_id}


def _both_active(kit: ck.Lab, set_id: int, edge: str) -> bool:
    flags = _targets(kit, set_id, edge)
    return len(flags) == 2 and all(f.startswith("A") for f in flags.values())


def _restore(kit: ck.Lab) -> None:
    kit.run(
        PBX1,
        f"rm -f {HOLD}; systemctl daemon-reload; systemctl reset-failed asterisk;"
        " systemctl start asterisk",
        timeout=120,
    )


@pytest.fixture(scope="module")
def kit(lab: Any) -> Iterator[tuple[ck.Lab, int, str]]:
    """The lab, the group's dispatcher set, and the active edge of the central pair."""
    k = ck.Lab(lab)
    with ck.deploy_lock(wait=2400):
        ck.ensure_deployed(k, lab.inventory, HOSTS)
        set_id = _group_set(k, lab)
        try:
            # a state an earlier run may have left: both members up and probed active
            _restore(k)
            assert ck.wait_for(lambda: _asterisk_up(k, PBX1) and _asterisk_up(k, PBX2), 60)
            assert ck.wait_for(lambda: len(pk.vip_holders(k)) == 1, 30), pk.vip_holders(k)
            edge = pk.vip_holders(k)[0]
            for host in (PBX1, PBX2):
                k.set_active(edge, set_id, f"sip:{lab.address(host)}:5060;transport=udp")
            assert ck.wait_for(lambda: _both_active(k, set_id, edge), 30), _targets(k, set_id, edge)
            yield k, set_id, edge
        finally:
            _restore(k)
            ck.wait_for(lambda: _asterisk_up(k, PBX1), 60)


def _call(kit: ck.Lab, edge: str, expect_on: str) -> tuple[ck.UacResult, bool]:
    """One call to the DID through ``edge``; whether ``expect_on`` had it up in from-trunk
    meanwhile."""
    target = f"{pk.EDGES[edge]}:5060"
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(ck.uac, kit, "itsp-a1", target, HQ_DID, duration_ms=CALL_MS)
        seen = ck.wait_for(lambda: _answered_on(kit, expect_on), 15)
        result = call.result(timeout=90)
    return result, seen


def test_inbound_calls_fail_over_to_the_second_pbx_and_come_back(
    kit: tuple[ck.Lab, int, str], lab: Any
) -> None:
    k, set_id, edge = kit
    pbx1_uri = f"sip:{lab.address(PBX1)}:5060"
    pbx2_uri = f"sip:{lab.address(PBX2)}:5060"
    assert set(_targets(k, set_id, edge)) == {pbx1_uri, pbx2_uri}

    # both up: the first member takes the call
    base, on_first = _call(k, edge, PBX1)
    assert (base.successful, base.failed) == (1, 0), base.stderr
    assert on_first, "the call was not answered on pbx-central"
    base_setup = base.seconds - CALL_MS / 1000

    # pbx-central's Asterisk dies (SIGKILL), systemd does not bring it back
    k.run(
        PBX1,
        f"mkdir -p {HOLD.rsplit('/', 1)[0]} && printf '[Service]\\nRestart=no\\n' > {HOLD}"
        " && systemctl daemon-reload && systemctl kill -s SIGKILL asterisk",
        timeout=60,
    )
    assert ck.wait_for(
        lambda: k.run(PBX1, "systemctl is-active asterisk").strip() != "active", 30
    ), "Asterisk on pbx-central is still running"

    # every call completes, on pbx-central-2; the first waits out the dead PBX's timer,
    # the edge then marks it down and the next calls go straight to pbx-central-2 (the
    # dispatcher's probes of the dead PBX meanwhile end with tm's own 408, which must not
    # count as an answer: ds_ping_reply_codes)
    setups: list[float] = []
    flags_seen: list[dict[str, str]] = []
    for i in range(CALLS_WHILE_DOWN):
        result, on_second = _call(k, edge, PBX2)
        assert (result.successful, result.failed) == (1, 0), (i, result.stderr)
        assert on_second, f"call {i} was not answered on pbx-central-2"
        setups.append(result.seconds - CALL_MS / 1000)
        flags_seen.append(_targets(k, set_id, edge))
        if i == 0:
            flags = flags_seen[0]
            assert flags[pbx1_uri].startswith("I"), flags  # inactive (probing)
            assert flags[pbx2_uri].startswith("A"), flags
    # the failover leg waited, not the rest
    assert setups[0] > max(setups[1:]) + 2, (setups, flags_seen, pk.vip_holders(k))

    # pbx-central comes back: the edge's OPTIONS probes find it, calls go to it again
    _restore(k)
    assert ck.wait_for(lambda: _asterisk_up(k, PBX1), 60)
    probe = load_model(lab.inventory).model.trunks["itsp-a"].probe.interval
    assert ck.wait_for(lambda: _both_active(k, set_id, edge), 3 * probe + 10), _targets(
        k, set_id, edge
    )
    back, on_first = _call(k, edge, PBX1)
    assert (back.successful, back.failed) == (1, 0), back.stderr
    assert on_first, "the call did not go back to pbx-central"
    assert pk.vip_holders(k) == [edge], f"the floating address left {edge} during the test"
    print(
        f"\nPBX failover (through {edge}): {CALLS_WHILE_DOWN}/{CALLS_WHILE_DOWN} calls completed with "
        f"pbx-central down; setup {base_setup:.2f} s with both up, failover leg "
        f"{setups[0]:.2f} s (+{setups[0] - base_setup:.2f} s), then "
        f"{sum(setups[1:]) / len(setups[1:]):.2f} s on average"
    )
