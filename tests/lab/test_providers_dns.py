"""ITSP C, a provider known by its SIP domain, through the deployed edge-central: the
lab's DNS (198.18.0.53) serves NAPTR/SRV/A of itsp-c.example, its two SBCs itsp-c1
(sip1, 198.18.1.60) and itsp-c2 (sip2, 198.18.1.61) run a provider Kamailio that
challenges INVITEs (407; the edge answers with the trunk's credentials) and records
every request it receives.

* Outbound over the FQDN: NAPTR -> _sip._udp -> sip1 first; with sip1 partitioned from the
  edge, the call goes to sip2 (DNS failover in tm) after the route's failover_timeout.
* A DNS change (SRV priorities swapped) is used without a deploy: time measured, polled.
* An INVITE from outside ITSP C's published block (and every other trunk's) gets 403;
  from inside it, it is ITSP C's call.
* TLS by name: a peer whose certificate does not list its name fails the call (503) and
  the edge logs ``siporch: tls name mismatch``.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import callkit as ck
import pytest

from siporch.lab import dns

pytestmark = pytest.mark.lab

EDGE_IP = "198.18.0.10"
NUMBER = "+35312345678"  # route "ireland": itsp-c, then itsp-a
C = "itsp-c.example"
FAILOVER_TIMEOUT_S = 10  # the route's failover_timeout (model default)


@pytest.fixture(scope="module")
def kit(lab: Any) -> Iterator[ck.Lab]:
    k = ck.Lab(lab)
    with ck.deploy_lock(wait=2400):
        ck.ensure_deployed(k, lab.inventory, ("edge-central", "edge-branch", "pbx-central", "pbx-central-2"))
        _clear_impair()
        dns.reset()
        try:
            yield k
        finally:
            _clear_impair()
            dns.reset()
            k.unban("edge-central", k.addr("itsp-branch"))


def _clear_impair() -> None:
    subprocess.run(["siporch", "lab", "impair", "--clear"], capture_output=True, timeout=60)


C1, C2 = "198.18.1.60", "198.18.1.61"  # sip1 (itsp-c1), sip2 (itsp-c2)
CHAIN = "SIPORCH-TEST-ITSPC"


def _ipt(kit: ck.Lab, *args: str, check: bool = True) -> str:
    proc = subprocess.run(
        ["ip", "netns", "exec", kit.ns("edge-central"), "iptables", "-w", *args],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise RuntimeError(f"iptables {' '.join(args)}: {proc.stderr}")
    return proc.stdout


@pytest.fixture
def counter(kit: ck.Lab) -> Iterator[Any]:
    """Counts the INVITEs edge-central sends to sip1 and sip2 (iptables rules in its
    OUTPUT that only count: the machine has no packet capture tool)."""
    _ipt(kit, "-N", CHAIN, check=False)
    _ipt(kit, "-F", CHAIN)
    for dst in (C1, C2):
        _ipt(kit, "-A", CHAIN, "-d", dst, "-p", "udp", "--dport", "5060", "-m", "string",
             "--string", "INVITE sip:", "--algo", "bm", "--to", "40", "-j", "RETURN")  # fmt: skip
    _ipt(kit, "-I", "OUTPUT", "-j", CHAIN)

    def sent() -> dict[str, int]:
        out: dict[str, int] = {}
        for line in _ipt(kit, "-L", CHAIN, "-v", "-x", "-n").splitlines():
            parts = line.split()
            if len(parts) > 8 and parts[0].isdigit():
                out[parts[8]] = out.get(parts[8], 0) + int(parts[0])
        return out

    try:
        yield sent
    finally:
        _ipt(kit, "-D", "OUTPUT", "-j", CHAIN, check=False)
        _ipt(kit, "-F", CHAIN, check=False)
        _ipt(kit, "-X", CHAIN, check=False)


def _call(kit: ck.Lab, wait: float = 4.0) -> list[int]:
    """An outbound INVITE from pbx-central to +353..., the status codes it got."""
    res = ck.invite(kit, "pbx-central", EDGE_IP, NUMBER, wait=wait)
    return [int(c) for c in res[0]["codes"]]


def _counted_call(kit: ck.Lab, sent: Any, wait: float = 4.0) -> tuple[list[int], dict[str, int]]:
    before = sent()
    codes = _call(kit, wait=wait)
    after = sent()
    return codes, {d: after.get(d, 0) - before.get(d, 0) for d in (C1, C2)}


def test_outbound_over_srv_fails_over_to_the_second_target(kit: ck.Lab, counter: Any) -> None:
    codes, sent = _counted_call(kit, counter)
    # the provider challenges (407) and the edge answers with itsp-c's credentials
    assert 200 in codes and 407 not in codes, codes
    assert sent[C1] >= 1 and sent[C2] == 0, sent  # sip1: SRV priority 10

    proc = subprocess.run(
        ["siporch", "lab", "impair", "edge-central", "itsp-c1", "--partition"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    try:
        start = time.monotonic()
        codes, sent = _counted_call(kit, counter, wait=FAILOVER_TIMEOUT_S + 8)
        took = time.monotonic() - start
        assert 200 in codes and 407 not in codes, codes
        # sip1 first (with its retransmissions), then sip2 once the branch timed out
        assert sent[C1] >= 1 and sent[C2] >= 1, sent
        assert took >= FAILOVER_TIMEOUT_S - 1, took
        print(f"failover from sip1 to sip2: the call got its answer after {took:.1f} s")
    finally:
        _clear_impair()


def test_dns_change_is_used_without_a_deploy(kit: ck.Lab, counter: Any) -> None:
    release = ck.current_release(kit, "edge-central")
    dns.set_record(f"_sip._udp.{C}", "SRV", [f"10 10 5060 sip2.{C}", f"20 10 5060 sip1.{C}"])
    changed = time.monotonic()
    try:
        sent: dict[str, int] = {}
        while time.monotonic() - changed < 90:
            codes, sent = _counted_call(kit, counter)
            assert 200 in codes and 407 not in codes, codes
            if sent[C2] >= 1 and sent[C1] == 0:
                break
        took = time.monotonic() - changed
        assert sent.get(C2, 0) >= 1 and sent.get(C1) == 0, f"still sends to sip1: {sent}"
        # the record's TTL (5 s) and the edge's DNS cache bound (dns_cache_max_ttl, 30 s)
        assert took < 40, took
        print(f"DNS change used after {took:.1f} s (polled with calls)")
        assert ck.current_release(kit, "edge-central") == release  # no deploy happened
    finally:
        dns.reset()


def test_source_outside_the_published_block_gets_403(kit: ck.Lab) -> None:
    # itsp-branch (198.18.1.50): no source of any edge-central trunk
    res = ck.invite(kit, "itsp-branch", EDGE_IP, "+12025550100", wait=3)
    assert [int(c) for c in res[0]["codes"]] == [403], res
    kit.unban("edge-central", kit.addr("itsp-branch"))
    # itsp-c2 (198.18.1.61): inside 198.18.1.60/30, a DID of hq-main -> ITSP C's call
    res = ck.invite(kit, "itsp-c2", EDGE_IP, "+12025550100", wait=4)
    codes = [int(c) for c in res[0]["codes"]]
    assert codes and 403 not in codes, codes


def test_tls_name_mismatch_fails_the_call(kit: ck.Lab, lab: Any) -> None:
    """ITSP C by a name its certificate does not list (wrong.itsp-c.example -> sip2, whose
    certificate names sip2.itsp-c.example and itsp-c.example)."""
    with tempfile.TemporaryDirectory(prefix="siporch-tlsname-") as tmp:
        inv = ck.copy_inventory(lab, Path(tmp))

        def wrong_name(m: dict[str, Any]) -> None:
            m["trunks"]["itsp-c"]["peers"] = [
                {"address": f"wrong.{C}", "port": 5061, "transport": "tls"}
            ]

        ck.edit_model(inv, wrong_name)
        try:
            ck.ensure_deployed(kit, inv, ("edge-central",))
            before = kit.run(
                "edge-central", f"({ck.KAMAILIO_LOG_CMD}) | grep -c 'siporch: tls name mismatch' || true"
            )
            codes = _call(kit, wait=6)
            assert 503 in codes and 407 not in codes, codes
            after = kit.run(
                "edge-central", f"({ck.KAMAILIO_LOG_CMD}) | grep 'siporch: tls name mismatch' || true"
            )
            assert len(after.splitlines()) > int(before.strip() or 0)
            line = after.splitlines()[-1]
            assert f"peer=wrong.{C}" in line and "address=198.18.1.61:5061" in line, line

            # the right name over TLS passes the check: the call is answered (after the
            # edge answered the provider's 407)
            def right_name(m: dict[str, Any]) -> None:
                m["trunks"]["itsp-c"]["peers"] = [{"address": C, "transport": "tls"}]

            ck.edit_model(inv, right_name)
            ck.ensure_deployed(kit, inv, ("edge-central",))
            codes = _call(kit, wait=6)
            assert 200 in codes and 407 not in codes, codes
        finally:
            ck.ensure_deployed(kit, lab.inventory, ("edge-central", "edge-branch", "pbx-central", "pbx-central-2"))
