"""Real calls through the deployed lab to the provider-shaped ITSP C, asserted on what
ITSP C recorded (``siporch.lab.provider.received``).

One deploy (the real playbook, onto edge-central, edge-branch and pbx-central) of a copy of
the lab inventory that holds, beside the example's ``itsp-c`` (credentials, route
``ireland``, +353 1...), five more trunks to the same provider by name
(``itsp-c.example``: NAPTR/SRV from the lab DNS, sip1 first), each selected by its own
route (+353 6x...):

=============  ===========================================================================
c-register     ``auth: register`` (ITSP C's user and password), no ``credentials``: it
               registers to ``itsp-c.example`` through the edge, and its registration's
               credentials answer the INVITE's 407 (+353 61...)
c-wrongpw      ``credentials`` with a wrong password (+353 62...)
c-fixed        caller ID ``fixed`` (+35315550100), a calling rule (+353... -> 0...), tech
               prefix ``7788``, codecs PCMA then PCMU, ``dtmf: inband`` (+353 63...)
c-anon         caller ID ``anonymous``, a calling rule (10 digits -> +1...), codecs PCMU
               then PCMA, ``dtmf: rfc4733`` (+353 65...)
c-tlsname      TLS to ``wrong.itsp-c.example`` (sip2's address; its certificate names
               sip2.itsp-c.example and itsp-c.example), probing off (+353 64...)
=============  ===========================================================================

The variants are outbound-only: they give no ``inbound_addresses``. One source must name
one trunk (the edge finds an inbound call's trunk by its source), so ITSP C's published
block stays with ``itsp-c``; a second account at the same provider has nothing of its own
to trust inbound.

The calls are SIPp in pbx-central's namespace (the PBX's address, as Asterisk's calls come
to the edge), with an answered call's ACK and BYE through the edge. The deployed copy stays
on the lab afterwards: the other lab modules deploy what they need themselves.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import callkit as ck
import pytest

from siporch.lab import dns, provider

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
EDGE = "edge-central"
EDGE_IP = "198.18.0.10"
#: the central pair's floating address: what the pair sends toward providers leaves from it
VIP = "198.18.0.9"
C = "itsp-c.example"
PROVIDERS = provider.PROVIDER_HOSTS  # itsp-c1 (sip1), itsp-c2 (sip2)
WRONG_PASSWORD = "not-the-itsp-c-secret"
CALLER = "2125550111"  # the From user of siporch/sipp/uac_rr.xml

# called numbers (E.164, as the PBX sends them) -> the trunk their route selects
CREDENTIALS = "+35312345678"  # route ireland: itsp-c
REGISTER = "+353611234567"
WRONGPW = "+353621234567"
FIXED = "+353631234567"
TLSNAME = "+353641234567"
ANON = "+353651234567"
PBX_CREDENTIALS = "+35312345679"  # the same two trunks, called by Asterisk
PBX_REGISTER = "+353611234569"

SHARED: dict[str, Any] = {
    "site": "central",
    "kind": "itsp",
    "peers": [{"address": C, "transport": "udp"}],
    "media": {"mode": "anchor"},
    "max_channels": 10,
}
GOOD = {"username": provider.USERNAME, "password": "{{ vault_itsp_c_password }}", "realm": C}


def _variants(m: dict[str, Any]) -> None:
    """Add the outbound-only trunks to ITSP C and a route to each (before the others)."""
    m["trunks"].update(
        {
            "c-register": {
                **SHARED,
                "description": "ITSP C, registration account",
                "auth": {"type": "register", "username": provider.USERNAME,
                         "password": "{{ vault_itsp_c_password }}", "realm": C},
            },
            "c-wrongpw": {
                **SHARED,
                "description": "ITSP C, wrong password",
                "credentials": {**GOOD, "password": WRONG_PASSWORD},
            },
            "c-fixed": {
                **SHARED,
                "description": "ITSP C, fixed caller ID, tech prefix, PCMA first, inband DTMF",
                "credentials": GOOD,
                "caller_id": {"policy": "fixed", "number": "+35315550100"},
                "translation": {
                    "calling": [{"name": "ie-national", "match": r"^\+353(\d+)$",
                                 "replace": r"0\1"}],
                },
                "tech_prefix": "7788",
                "codecs": ["pcma", "pcmu"],
                "dtmf": "inband",
            },
            "c-anon": {
                **SHARED,
                "description": "ITSP C, anonymous, PCMU first, RFC 4733 DTMF",
                "credentials": GOOD,
                "caller_id": {"policy": "anonymous"},
                "translation": {
                    "calling": [{"name": "nanp-to-e164", "match": r"^([2-9]\d{9})$",
                                 "replace": r"+1\1"}],
                },
                "codecs": ["pcmu", "pcma"],
                "dtmf": "rfc4733",
            },
            "c-tlsname": {
                **SHARED,
                "description": "ITSP C by a name its certificate does not list",
                "peers": [{"address": f"wrong.{C}", "port": 5061, "transport": "tls"}],
                "credentials": GOOD,
                "probe": {"enabled": False},
            },
        }
    )  # fmt: skip
    routes = [
        {"name": f"itspc-{t}", "sites": ["central"], "pattern": rf"^\+353{p}\d{{7}}$",
         "trunks": [f"c-{t}"], "failover_timeout": 4}
        for t, p in (("register", 61), ("wrongpw", 62), ("fixed", 63), ("tlsname", 64),
                     ("anon", 65))
    ]  # fmt: skip
    m["routes"][:0] = routes


class Kit:
    def __init__(self, lab: ck.Lab, inv: Path) -> None:
        self.lab = lab
        self.inv = inv


@pytest.fixture(scope="module")
def kit(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kit]:
    k = ck.Lab(lab)
    inv = ck.copy_inventory(lab, tmp_path_factory.mktemp("itspc"))
    ck.edit_model(inv, _variants)
    with ck.deploy_lock(wait=2400):
        start = time.monotonic()
        ck.ensure_deployed(k, inv, (EDGE, "edge-branch", "pbx-central"))
        print(f"deploy of the ITSP C inventory: {time.monotonic() - start:.1f} s")
        dns.reset()
        subprocess.run(["siporch", "lab", "impair", "--clear"], capture_output=True, timeout=60)
        for host in PROVIDERS:
            provider.ensure_running(host)
        yield Kit(k, inv)


# ---------------------------------------------------------------------------- helpers


def _clear() -> None:
    for host in PROVIDERS:
        provider.clear(host)


def _invites(user: str) -> list[dict[str, Any]]:
    """INVITEs recorded by either SBC of ITSP C whose Request-URI user ends with ``user``
    (the called number after the trunk's translation and tech prefix), oldest first."""
    recs = [r for h in PROVIDERS for r in provider.received(h)]
    recs.sort(key=lambda r: r.get("ts", 0))
    return [
        r for r in recs
        if r.get("method") == "INVITE" and r["ruri"].split("@")[0].endswith(user)
    ]  # fmt: skip


def _once(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Without retransmissions (the same CSeq and credentials state again)."""
    seen: set[tuple[str, str, str]] = set()
    out = []
    for r in recs:
        key = (r.get("call_id") or "", r.get("cseq") or "", r.get("auth") or "")
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def _wait_invites(user: str, want: int, seconds: float = 5.0) -> list[dict[str, Any]]:
    ck.wait_for(lambda: len(_once(_invites(user))) >= want, seconds, step=0.1)
    return _invites(user)


def _answered_call(kit: Kit, number: str) -> list[dict[str, Any]]:
    """A call from the PBX's address that must be answered (and hung up through the edge);
    returns the INVITEs ITSP C recorded for it: the challenged one, then the authorised one."""
    _clear()
    res = ck.uac(kit.lab, "pbx-central", f"{EDGE_IP}:5060", number, duration_ms=300,
                 timeout_s=20)  # fmt: skip
    assert res.successful == 1 and res.exit_code == 0, (res.stderr, res.messages[-3:])
    # the PBX never sees the provider's challenge: the edge answered it
    assert not any(m.startswith(("SIP/2.0 401", "SIP/2.0 407")) for m in res.messages)
    invites = _once(_wait_invites(number.lstrip("+"), 2))
    assert [(r["auth"], r["response"]) for r in invites] == [("none", "407"), ("valid", "relay")], (
        invites
    )
    return invites


def _pbx_call(kit: Kit, number: str) -> list[dict[str, Any]]:
    """The same from Asterisk itself (pbx-central's deployed dialplan, siporch-outbound):
    answered, held 1 s, hung up; returns ITSP C's records of the dialog (the two INVITEs,
    then the ACK and the BYE that followed the authorised one)."""
    _clear()
    ck.originate(kit.lab, number, seconds=1)
    invites = _wait_invites(number.lstrip("+"), 2, seconds=10)
    assert [(r["auth"], r["response"]) for r in _once(invites)] == [
        ("none", "407"),
        ("valid", "relay"),
    ], invites
    call_id = _once(invites)[1]["call_id"]

    def dialog() -> list[dict[str, Any]]:
        recs = [r for h in PROVIDERS for r in provider.received(h) if r["call_id"] == call_id]
        return sorted(recs, key=lambda r: r.get("ts", 0))

    # a BYE only comes after an answer (an unanswered call is CANCELled)
    assert ck.wait_for(lambda: any(r["method"] == "BYE" for r in dialog()), 15), dialog()
    return dialog()


def _edge_log(kit: Kit, pattern: str) -> list[str]:
    out = kit.lab.run(EDGE, f"({ck.KAMAILIO_LOG_CMD}) | grep -F '{pattern}' || true")
    return [line for line in out.splitlines() if pattern in line]


def _status(kit: Kit, *hosts: str) -> dict[str, Any]:
    return ck.status_json(kit.inv, *(hosts or (EDGE,)))


def _problems(report: dict[str, Any], trunk: str) -> list[str]:
    return [p["message"] for p in report["problems"] if p.get("trunk") == trunk]


# ------------------------------------------------------------------------------ tests


def test_challenged_invite_on_a_credentials_trunk(kit: Kit) -> None:
    """itsp-c (credentials, no registration): 407, the edge answers, the call is up."""
    invites = _answered_call(kit, CREDENTIALS)
    # sent to the edge's own address, relayed from the pair's floating address
    assert invites[1]["src_ip"] == VIP and invites[1]["host"] == "itsp-c1"  # sip1 first
    # a credentials trunk does not register (c-register, the same account, does)
    assert "itsp-c-reg" not in kit.lab.asterisk("pjsip show registrations")
    # and from Asterisk, the PBX itself
    dialog = _pbx_call(kit, PBX_CREDENTIALS)
    assert [r["method"] for r in dialog if r["response"] == "relay"][:3] == ["INVITE", "ACK", "BYE"]


def test_challenged_invite_on_a_registration_trunk(kit: Kit) -> None:
    """c-register has no credentials: its registration's user and password answer."""
    invites = _answered_call(kit, REGISTER)
    assert invites[1]["credentials"] is True
    dialog = _pbx_call(kit, PBX_REGISTER)
    assert [r["method"] for r in dialog if r["response"] == "relay"][:3] == ["INVITE", "ACK", "BYE"]


def _registers() -> list[dict[str, Any]]:
    recs = [r for h in PROVIDERS for r in provider.received(h) if r.get("method") == "REGISTER"]
    return _once(sorted(recs, key=lambda r: r.get("ts", 0)))


def _challenged_then_accepted(recs: list[dict[str, Any]]) -> bool:
    """A REGISTER challenged with 401, then one of the same registration (Call-ID) with
    valid credentials accepted by the same server."""
    return any(
        a["auth"] == "none" and a["response"] == "401"
        and b["auth"] == "valid" and b["response"] == "200"
        and a["call_id"] == b["call_id"] and a["host"] == b["host"]
        for i, a in enumerate(recs) for b in recs[i + 1:]
    )  # fmt: skip


def _registration_line(kit: Kit) -> str:
    out = kit.lab.asterisk("pjsip show registrations")
    return next((ln for ln in out.splitlines() if "c-register-reg/" in ln), out)


def test_registration_trunk_registers_by_name(kit: Kit) -> None:
    """c-register's registrar is ITSP C by name: the PBX's REGISTER goes through the edge,
    which relays it by the name (NAPTR/SRV: sip1); ITSP C's 401 goes back to Asterisk,
    whose registration answers it, to the server that challenged; Asterisk and
    ``siporch status`` show the trunk registered."""
    _clear()
    kit.lab.asterisk("pjsip send register c-register-reg")
    assert ck.wait_for(lambda: _challenged_then_accepted(_registers()), 20), _registers()
    recs = _registers()
    # from the pair's floating address, as its INVITEs: ITSP C sees one address
    assert all(r["src_ip"] == VIP for r in recs), [(r["src_ip"], r["response"]) for r in recs]
    accepted = next(r for r in recs if r["response"] == "200")
    assert accepted["ruri"] == f"sip:{C}", accepted["ruri"]  # the name, resolved by the edge
    assert accepted["host"] == "itsp-c1"  # sip1 first (SRV priority 10)
    assert ck.wait_for(lambda: "Registered" in _registration_line(kit), 20), _registration_line(
        kit
    )
    assert f"sip:{C}" in _registration_line(kit)

    def registered() -> bool:
        report = _status(kit, EDGE, "pbx-central")
        trunk = next((t for t in report["trunks"] if t["name"] == "c-register"), {})
        return trunk.get("registration") == "registered"

    assert ck.wait_for(registered, 30, step=2), _status(kit, EDGE, "pbx-central")["trunks"]


def test_wrong_password_fails_clearly(kit: Kit) -> None:
    _clear()
    before = len(_edge_log(kit, "siporch: auth failed trunk=c-wrongpw"))
    res = ck.invite(kit.lab, "pbx-central", EDGE_IP, WRONGPW, wait=4)
    codes = [int(c) for c in res[0]["codes"]]
    assert codes[-1:] == [403], codes
    # ITSP C saw the INVITE without and then with the (wrong) credentials, and refused both
    invites = _once(_wait_invites(WRONGPW.lstrip("+"), 2))
    assert [(r["auth"], r["response"]) for r in invites[:2]] == [
        ("none", "407"),
        ("invalid", "407"),
    ]
    assert ck.wait_for(
        lambda: len(_edge_log(kit, "siporch: auth failed trunk=c-wrongpw")) > before, 5
    ), _edge_log(kit, "siporch: auth")[-5:]
    assert not _edge_log(kit, WRONG_PASSWORD), "the password is in the edge log"
    report = _status(kit)
    problems = _problems(report, "c-wrongpw")
    assert any("refused the edge's credentials" in p for p in problems), report["problems"]
    assert not any("credentials" in p for p in _problems(report, "itsp-c"))


def test_fixed_caller_id_calling_rule_tech_prefix_codecs_inband(kit: Kit) -> None:
    rec = _answered_call(kit, FIXED)[1]
    # tech prefix in front of the called number (the route's E.164 without a rule: +353...)
    user = rec["ruri"].split(":", 1)[1].split("@")[0]
    assert user in ("7788+353631234567", "7788%2B353631234567"), rec["ruri"]
    # fixed +35315550100 through the calling rule (+353... -> 0...)
    assert rec["from"]["uri"].startswith("sip:015550100@"), rec["from"]
    assert [p["uri"].split("@")[0] for p in rec["pai"]] == ["sip:015550100"], rec["pai"]
    assert rec["privacy"] is None
    # PCMA first; inband DTMF: no telephone-event although the PBX offered it
    assert rec["codecs"] == ["PCMA", "PCMU"], rec["codecs"]
    assert rec["telephone_event"] is False


def test_anonymous_caller_id_calling_rule_codecs_rfc4733(kit: Kit) -> None:
    rec = _answered_call(kit, ANON)[1]
    assert rec["from"]["uri"].startswith("sip:anonymous@anonymous.invalid"), rec["from"]
    assert rec["from"]["display"] == "Anonymous"
    assert rec["privacy"] == "id"
    # the real number, through the calling rule (2125550111 -> +12125550111), asserted
    assert [p["uri"].split("@")[0] for p in rec["pai"]] == [f"sip:+1{CALLER}"], rec["pai"]
    assert rec["codecs"] == ["PCMU", "PCMA", "telephone-event"], rec["codecs"]
    assert rec["telephone_event"] is True
    # passthrough (itsp-c) for comparison: the caller's own number, no Privacy
    plain = _answered_call(kit, CREDENTIALS)[1]
    assert plain["from"]["uri"].startswith(f"sip:{CALLER}@"), plain["from"]
    assert plain["privacy"] is None


OUTSIDE = "198.18.1.64"  # the first address after ITSP C's block 198.18.1.60/30


def test_source_outside_the_provider_block_gets_403(kit: Kit) -> None:
    """From ITSP C's own SBC host, an address just outside its /30: 403. From inside it
    (sip2's own address), the edge takes the call as ITSP C's."""
    ns = kit.lab.ns("itsp-c2")
    dev = subprocess.run(
        ["ip", "netns", "exec", ns, "ip", "-o", "-4", "addr", "show", "to", "198.18.1.61"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout.split()[1]  # fmt: skip
    add = ["ip", "netns", "exec", ns, "ip", "addr", "add", f"{OUTSIDE}/32", "dev", dev]
    subprocess.run(add, capture_output=True, timeout=30, check=True)
    try:
        res = ck.invite(kit.lab, "itsp-c2", EDGE_IP, "+12025550100", src=OUTSIDE, wait=3)
        assert [int(c) for c in res[0]["codes"]] == [403], res
    finally:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "addr", "del", f"{OUTSIDE}/32",
                        "dev", dev], capture_output=True, timeout=30)  # fmt: skip
        kit.lab.unban(EDGE, OUTSIDE)
    res = ck.invite(kit.lab, "itsp-c2", EDGE_IP, "+12025550100", wait=4)
    codes = [int(c) for c in res[0]["codes"]]
    assert codes and 403 not in codes, codes


def test_tls_name_mismatch_fails_the_call(kit: Kit) -> None:
    before = len(_edge_log(kit, "siporch: tls name mismatch"))
    _clear()
    res = ck.invite(kit.lab, "pbx-central", EDGE_IP, TLSNAME, wait=8)
    codes = [int(c) for c in res[0]["codes"]]
    assert codes[-1:] == [503], codes
    assert ck.wait_for(lambda: len(_edge_log(kit, "siporch: tls name mismatch")) > before, 5)
    line = _edge_log(kit, "siporch: tls name mismatch")[-1]
    assert f"peer=wrong.{C}" in line and "address=198.18.1.61:5061" in line, line
    # The name is checked on the reply (the INVITE is out before the certificate can be
    # read): sip2 got the unauthenticated INVITE, its 407 was dropped, so the credentials
    # never went to a server that is not the named peer.
    invites = _once(_wait_invites(TLSNAME.lstrip("+"), 1))
    assert [(r["host"], r["proto"], r["auth"]) for r in invites] == [("itsp-c2", "tls", "none")], (
        invites
    )
    report = _status(kit)
    assert any("does not name peer" in p for p in _problems(report, "c-tlsname")), report[
        "problems"
    ]
