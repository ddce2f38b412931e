"""The Asterisk renderer: DID range decomposition, the rendered files (golden files:
test_golden.py)."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siporch.model import load_model
from siporch.model.schema import Model
from siporch.render import asterisk, reload_action, render_host, secret_files
from siporch.render.asterisk import AsteriskRenderError, did_range_patterns, regex_to_posix
from tests.unit.modelkit import example_data

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory" / "example"
GOLDEN = REPO / "tests" / "golden" / "asterisk"


@functools.cache
def example() -> Model:
    return load_model(EXAMPLE).model


def variant(**changes: Any) -> Model:
    """The example model with top-level keys replaced (re-validated)."""
    data = example().model_dump()
    data.update(changes)
    return Model.model_validate(data)


# --------------------------------------------------------------------------------------
# DID ranges -> patterns, checked against an independent reading of Asterisk patterns
# --------------------------------------------------------------------------------------


def asterisk_pattern_regex(pattern: str) -> re.Pattern[str]:
    """How Asterisk reads an extension pattern (the subset the renderer emits)."""
    if not pattern.startswith("_"):
        return re.compile(re.escape(pattern))
    out = []
    body = pattern[1:]
    i = 0
    while i < len(body):
        c = body[i]
        if c == "[":
            j = body.index("]", i)
            out.append(body[i : j + 1])
            i = j + 1
            continue
        out.append({"X": "[0-9]", "Z": "[1-9]", "N": "[2-9]"}.get(c, re.escape(c)))
        i += 1
    return re.compile("".join(out))


def covered(patterns: list[str], width: int, head: str = "") -> set[str]:
    regexes = [asterisk_pattern_regex(p) for p in patterns]
    out = set()
    for n in range(10**width):
        number = head + str(n).zfill(width)
        hits = [r for r in regexes if r.fullmatch(number)]
        assert len(hits) <= 1, f"{number} matched by more than one pattern of {patterns}"
        if hits:
            out.add(number)
    return out


def expected(lo: int, hi: int, width: int, head: str = "") -> set[str]:
    return {head + str(n).zfill(width) for n in range(lo, hi + 1)}


def min_blocks(lo: int, hi: int, width: int) -> int:
    """The least number of `prefix + [a-b] + X...` blocks that cover lo..hi exactly."""
    best = {hi + 1: 0}
    for start in range(hi, lo - 1, -1):
        options = []
        size = 1
        while True:
            # blocks starting at `start` with `k` free trailing digits: start must be aligned
            if start % size:
                break
            digit = (start // size) % 10
            for top in range(digit, 10):
                end = start + (top - digit + 1) * size - 1
                if end <= hi:
                    options.append(1 + best[end + 1])
            size *= 10
            if size > 10**width:
                break
        best[start] = min(options)
    return best[lo]


def test_example_ranges() -> None:
    assert did_range_patterns("+12025550100", "+12025550199") == ["_+120255501XX"]
    assert did_range_patterns("+12065550100", "+12065550149") == ["_+120655501[0-4]X"]
    assert did_range_patterns("+12025550200", "+12025550209") == ["_+1202555020X"]


def test_single_number_is_literal() -> None:
    assert did_range_patterns("+12025550100", "+12025550100") == ["+12025550100"]


def test_uneven_range() -> None:
    assert did_range_patterns("+4930123405", "+4930123523") == [
        "_+493012340[5-9]",
        "_+49301234[1-9]X",
        "_+49301235[0-1]X",
        "_+493012352[0-3]",
    ]


def test_whole_block_of_all_digits() -> None:
    assert did_range_patterns("+100", "+199") == ["_+1XX"]
    assert did_range_patterns("+000", "+999") == ["_+XXX"]


def test_ends_differ_in_length() -> None:
    with pytest.raises(AsteriskRenderError, match="differ in length"):
        did_range_patterns("+1202", "+12020")


def test_start_after_end() -> None:
    with pytest.raises(AsteriskRenderError, match="start is after end"):
        did_range_patterns("+1209", "+1200")


def test_every_two_digit_range_exactly_and_minimally() -> None:
    for lo in range(100):
        for hi in range(lo, 100):
            pats = did_range_patterns("+" + str(lo).zfill(2), "+" + str(hi).zfill(2))
            assert covered(pats, 2, "+") == expected(lo, hi, 2, "+"), (lo, hi, pats)
            assert len(pats) == min_blocks(lo, hi, 2), (lo, hi, pats)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 9999), st.integers(0, 9999))
def test_four_digit_ranges_exactly_and_minimally(a: int, b: int) -> None:
    lo, hi = min(a, b), max(a, b)
    pats = did_range_patterns("+1" + str(lo).zfill(4), "+1" + str(hi).zfill(4))
    assert covered(pats, 4, "+1") == expected(lo, hi, 4, "+1"), (lo, hi, pats)
    assert len(pats) == min_blocks(lo, hi, 4), (lo, hi, pats)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10**7 - 1), st.integers(0, 10**7 - 1), st.integers(0, 10**7 - 1))
def test_long_ranges_boundaries(a: int, b: int, probe: int) -> None:
    """Seven free digits: check both ends, their outer neighbours and a random number."""
    lo, hi = min(a, b), max(a, b)
    pats = did_range_patterns("+1202" + str(lo).zfill(7), "+1202" + str(hi).zfill(7))
    regexes = [asterisk_pattern_regex(p) for p in pats]

    def hits(n: int) -> int:
        number = "+1202" + str(n).zfill(7)
        return sum(1 for r in regexes if r.fullmatch(number))

    for n in (lo, hi, probe):
        assert hits(n) == (1 if lo <= n <= hi else 0), (lo, hi, n, pats)
    if lo > 0:
        assert hits(lo - 1) == 0
    if hi < 10**7 - 1:
        assert hits(hi + 1) == 0
    assert len(pats) <= 2 * 7 - 1


# --------------------------------------------------------------------------------------
# DID patterns -> POSIX ERE for REGEX()
# --------------------------------------------------------------------------------------


def test_regex_conversion() -> None:
    assert regex_to_posix(r"^\+44\d{10}$") == "^([+]44[0-9]{10})$"
    assert regex_to_posix(r"\+1(202|206)555\d{4}") == "^([+]1(202|206)555[0-9]{4})$"


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        (r"\+1\w+", "no POSIX equivalent"),
        (r"(?:\+1)\d+", "'\\(\\?' extensions"),
        (r"\+1\d+?", "lazy quantifiers"),
        ('\\+1";\\d', "not allowed"),
    ],
)
def test_regex_refused(pattern: str, message: str) -> None:
    with pytest.raises(AsteriskRenderError, match=message):
        regex_to_posix(pattern)


@pytest.mark.parametrize("number", ["+441234567890", "+4412345678901", "+12025550100", "+44"])
def test_regex_same_matches(number: str) -> None:
    python = r"\+44\d{10}"
    posix = regex_to_posix(python)
    assert (re.search(posix, number) is not None) == (re.fullmatch(python, number) is not None)


# --------------------------------------------------------------------------------------
# The rendered files
# --------------------------------------------------------------------------------------


def files() -> dict[str, str]:
    return asterisk.render(example(), "pbx-central")


def sections(text: str) -> dict[str, list[dict[str, list[str]]]]:
    """Parse an Asterisk .conf into {section: [ {key: [values]} ...]} (sections may repeat)."""
    out: dict[str, list[dict[str, list[str]]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = re.sub(r"(?<!\\);.*", "", raw).strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"\[([^\]]+)\](\(.*\))?", line)
        if m:
            current = {}
            out.setdefault(m.group(1), []).append(current)
            continue
        assert current is not None, raw
        key, _, value = re.split(r"\s*(=>|=)\s*", line, maxsplit=1)
        current.setdefault(key, []).append(value)
    return out


def of_type(text: str, name: str, kind: str) -> dict[str, list[str]]:
    found = [s for s in sections(text)[name] if s.get("type") == [kind]]
    assert len(found) == 1, (name, kind)
    return found[0]


def test_only_siporchs_own_files() -> None:
    """siporch renders its own files only; the site keeps /etc/asterisk (asterisk.conf,
    modules.conf, its pjsip.conf, extensions.conf, ...) and includes these."""
    f = files()
    assert set(f) == {f"asterisk/{n}" for n in asterisk.FILES}
    assert all("siporch" in name for name in asterisk.FILES)
    for site in ("asterisk.conf", "modules.conf", "pjsip.conf", "extensions.conf", "manager.conf"):
        assert f"asterisk/{site}" not in f
    transports = "#include /etc/siporch/current/asterisk/pjsip_siporch_transports.conf"
    assert transports in f["asterisk/pjsip_siporch.conf"]
    assert set(asterisk.SITE_INCLUDES.values()) <= set(asterisk.FILES)
    assert asterisk.include_line("pjsip.conf") == (
        "#tryinclude /etc/siporch/current/asterisk/pjsip_siporch.conf"
    )


def test_no_site_contexts_or_sections() -> None:
    """The DID destination contexts are the site's: not rendered (only named in a comment);
    the dialplan has no [general]/[globals], which are the site's."""
    ext = sections(files()["asterisk/extensions_siporch.conf"])
    assert set(ext) == {
        "siporch-inbound",
        "siporch-inbound-check",
        "siporch-outbound",
        "siporch-outbound-answered",
        "siporch-outbound-dialing",
    }
    assert "Echo()" not in files()["asterisk/extensions_siporch.conf"]
    # AMI settings add to the site's [general] with (+)
    assert "[general](+)" in files()["asterisk/manager_siporch.conf"]


def test_every_trunk_has_endpoint_and_header_identify() -> None:
    pjsip = files()["asterisk/pjsip_siporch.conf"]
    for name in example().trunks:
        ep = of_type(pjsip, name, "endpoint")
        assert ep["context"] == ["siporch-inbound"]
        ident = of_type(pjsip, f"{name}-identify", "identify")
        assert ident["endpoint"] == [name]
        assert ident["match_header"] == [f"X-Siporch-Trunk: {name}"]
    glob = of_type(pjsip, "global", "global")
    assert glob["endpoint_identifier_order"] == ["header,ip"]


def test_trunk_options() -> None:
    pjsip = files()["asterisk/pjsip_siporch.conf"]
    a = of_type(pjsip, "itsp-a", "endpoint")
    assert a["allow"] == ["ulaw,alaw"] and a["disallow"] == ["all"]
    assert a["dtmf_mode"] == ["rfc4733"]
    assert a["direct_media"] == ["no"]
    assert a["media_encryption"] == ["no"]
    assert a["timers"] == ["yes"] and a["timers_sess_expires"] == ["1800"]
    assert "set_var" in a and "SIPORCH_MAX_CHANNELS=30" in a["set_var"]
    assert a["deny"] == ["0.0.0.0/0.0.0.0", "::/0"]
    assert "192.0.2.10/255.255.255.255" in a["permit"]
    b = of_type(pjsip, "itsp-b", "endpoint")
    assert b["allow"] == ["alaw,ulaw"]
    assert b["media_encryption"] == ["sdes"]
    assert b["media_encryption_optimistic"] == ["yes"]
    assert b["outbound_auth"] == ["itsp-b-auth"]
    gw = of_type(pjsip, "pstn-gw", "endpoint")
    assert gw["direct_media"] == ["yes"]


def test_registration_through_the_edge() -> None:
    pjsip = files()["asterisk/pjsip_siporch.conf"]
    reg = of_type(pjsip, "itsp-b-reg", "registration")
    # through the central pair's floating address: whichever edge is active relays it
    assert reg["outbound_proxy"] == ["sip:192.0.2.9:5060\\;lr"]
    assert reg["server_uri"] == ["sip:203.0.113.30:5061\\;transport=tls"]
    assert reg["client_uri"] == ["sip:examplecorp@sip.itsp-b.example.com"]
    assert reg["expiration"] == ["600"]
    auth = of_type(pjsip, "itsp-b-auth", "auth")
    assert auth["username"] == ["examplecorp"]
    assert auth["password"] == [
        example().trunks["itsp-b"].auth.password.get_secret_value()  # type: ignore[union-attr]
    ]
    # IP-authenticated trunks register nowhere
    assert "itsp-a-reg" not in sections(pjsip)


def _register_by_name(peer: dict[str, Any], registrar: str | None = None) -> dict[str, list[str]]:
    data = example().model_dump()
    t = data["trunks"]["itsp-b"]
    t["peers"] = [peer]
    t["auth"]["registrar"] = registrar
    pjsip = asterisk.render(Model.model_validate(data), "pbx-central")[
        "asterisk/pjsip_siporch.conf"
    ]
    return of_type(pjsip, "itsp-b-reg", "registration")


def test_registration_to_a_registrar_by_name() -> None:
    """A name without a port: no port in server_uri, so the edge resolves it as RFC 3263
    says (NAPTR/SRV); with a port, A/AAAA only; auth.registrar as given."""
    reg = _register_by_name({"address": "sip.itsp-b.example.com", "transport": "udp"})
    assert reg["server_uri"] == ["sip:sip.itsp-b.example.com"]
    assert reg["client_uri"] == ["sip:examplecorp@sip.itsp-b.example.com"]
    reg = _register_by_name({"address": "sip.itsp-b.example.com", "transport": "tcp"})
    assert reg["server_uri"] == ["sip:sip.itsp-b.example.com\\;transport=tcp"]
    reg = _register_by_name({"address": "sip.itsp-b.example.com", "port": 5080, "transport": "udp"})
    assert reg["server_uri"] == ["sip:sip.itsp-b.example.com:5080"]
    reg = _register_by_name(
        {"address": "203.0.113.30", "transport": "udp"}, "reg.itsp-b.example.com"
    )
    assert reg["server_uri"] == ["sip:reg.itsp-b.example.com"]


def _active_active(contacts: str | None = None) -> Model:
    """The example with the central pair active-active (itsp-b, a `register` trunk of
    site central; ``contacts`` on its auth when given)."""
    data = example().model_dump()
    data["sites"]["central"]["edges"] = {
        "hosts": ["edge-central", "edge-central-2"],
        "mode": "active-active",
    }
    if contacts is not None:
        data["trunks"]["itsp-b"]["auth"]["contacts"] = contacts
    return Model.model_validate(data)


def test_registration_once_per_active_active_edge() -> None:
    """An active-active site: one registration per edge, each named after its edge and
    sent through it (its own address as the outbound proxy, where the edge puts its own
    address into the Contact), both with the trunk's one auth section."""
    pjsip = asterisk.render(_active_active(), "pbx-central")["asterisk/pjsip_siporch.conf"]
    found = {
        n: s for n, ss in sections(pjsip).items() for s in ss if s.get("type") == ["registration"]
    }
    assert sorted(found) == ["itsp-b-reg-edge-central", "itsp-b-reg-edge-central-2"]
    proxies = {n: r["outbound_proxy"] for n, r in found.items()}
    assert proxies == {
        "itsp-b-reg-edge-central": ["sip:192.0.2.10:5060\\;lr"],
        "itsp-b-reg-edge-central-2": ["sip:192.0.2.12:5060\\;lr"],
    }
    for r in found.values():
        assert r["endpoint"] == ["itsp-b"]
        assert r["outbound_auth"] == ["itsp-b-auth"]
        assert r["server_uri"] == ["sip:203.0.113.30:5061\\;transport=tls"]
        assert r["client_uri"] == ["sip:examplecorp@sip.itsp-b.example.com"]
    of_type(pjsip, "itsp-b-auth", "auth")  # once
    assert "itsp-b-reg]" not in pjsip
    assert "; through edge edge-central-2 " in pjsip
    # what the edges do with it: each puts its own address into the Contact it relays
    from siporch.render import kamailio

    adv = {
        e: re.search(
            r'#!define ADVERTISED_ADDRESS "([^"]+)"',
            kamailio.render(_active_active(), e)["kamailio/host.cfg"],
        )
        for e in ("edge-central", "edge-central-2")
    }
    assert {e: m.group(1) if m else None for e, m in adv.items()} == {
        "edge-central": "192.0.2.10",
        "edge-central-2": "192.0.2.12",
    }


def test_registration_contacts_one_and_active_standby_register_once() -> None:
    """``contacts: one`` at an active-active site: one registration, through the first
    edge, as before there was a choice; an active-standby pair registers once, through its
    floating address, whatever ``contacts`` says (byte for byte as without the field)."""
    pjsip = asterisk.render(_active_active("one"), "pbx-central")["asterisk/pjsip_siporch.conf"]
    regs = [n for n, ss in sections(pjsip).items() for s in ss if s.get("type") == ["registration"]]
    assert regs == ["itsp-b-reg"]
    assert of_type(pjsip, "itsp-b-reg", "registration")["outbound_proxy"] == [
        "sip:192.0.2.10:5060\\;lr"
    ]
    data = example().model_dump()
    data["trunks"]["itsp-b"]["auth"]["contacts"] = "one"
    assert asterisk.render(Model.model_validate(data), "pbx-central") == files()
    assert example().trunks["itsp-b"].auth.contacts == "per-edge"  # type: ignore[union-attr]


def test_edge_endpoints() -> None:
    pjsip = files()["asterisk/pjsip_siporch.conf"]
    ep = of_type(pjsip, "siporch-edge-edge-central", "endpoint")
    assert ep["aors"] == ["siporch-edge-edge-central"]
    aor = of_type(pjsip, "siporch-edge-edge-central", "aor")
    # the central pair is one endpoint at its floating address, identified by it and by
    # both edges' own addresses; its second edge has no endpoint of its own
    assert aor["contact"] == ["sip:192.0.2.9:5060"]
    ident = of_type(pjsip, "siporch-edge-edge-central-identify", "identify")
    assert ident["match"] == [
        "192.0.2.9/255.255.255.255",
        "192.0.2.10/255.255.255.255",
        "192.0.2.12/255.255.255.255",
    ]
    assert "[siporch-edge-edge-central-2]" not in pjsip
    transports = sections(files()["asterisk/pjsip_siporch_transports.conf"])
    assert transports["siporch-udp-5060"][0]["bind"] == ["192.0.2.20:5060"]
    assert ep["transport"] == ["siporch-udp-5060"]


def test_dialplan() -> None:
    ext = files()["asterisk/extensions_siporch.conf"]
    assert "exten => _+120255501XX,1,Gosub(siporch-inbound-check,s,1)" in ext
    assert " same => n,Goto(from-trunk,${EXTEN},1)" in ext
    assert "exten => _+120655501[0-4]X,1,Gosub(siporch-inbound-check,s,1)" in ext
    assert " same => n,Goto(from-trunk-branch,${EXTEN},1)" in ext
    # hq-fax goes to a direct trunk, not to this PBX
    assert "+12025550200" not in ext and "_+1202555020X" not in ext
    assert "Dial(PJSIP/${EXTEN}@siporch-edge-edge-central," in ext
    assert "siporch-edge-edge-branch" not in ext
    parsed = sections(ext)
    for ctx in ("siporch-inbound", "siporch-outbound"):
        assert ctx in parsed
    for ctx in ("from-trunk", "from-trunk-branch"):  # the site's: named, not defined
        assert ctx not in parsed and f";   {ctx}" in ext
    assert "X-Siporch-Trunk" in ext and "SIPORCH_TRUNK" in ext


def test_pattern_dids() -> None:
    m = variant(
        inbound=[
            *example().model_dump()["inbound"],
            {
                "name": "uk",
                "pattern": r"\+44\d{10}",
                "destination": {"host": "pbx-central", "context": "from-uk"},
            },
        ]
    )
    ext = asterisk.render(m, "pbx-central")["asterisk/extensions_siporch.conf"]
    assert 'GotoIf(${REGEX("^([+]44[0-9]{10})$" ${EXTEN})}?did1)' in ext
    assert " same => n,Goto(from-uk,${EXTEN},1)" in ext
    assert "[from-uk]" not in ext and ";   from-uk" in ext


def test_manager() -> None:
    mgr = sections(files()["asterisk/manager_siporch.conf"])
    general = mgr["general"][0]
    assert general["enabled"] == ["yes"]
    assert general["bindaddr"] == ["192.0.2.20"]
    assert general["port"] == ["5038"]
    assert general["channelvars"] == ["SIPORCH_TRUNK,SIPORCH_DIRECTION"]
    user = mgr["siporch"][0]
    assert user["permit"] == ["192.0.2.0/255.255.255.0", "127.0.0.1/255.255.255.255"]
    assert user["deny"] == ["0.0.0.0/0.0.0.0", "::/0"]
    for perm in ("system", "call", "reporting", "command"):
        assert perm in user["read"][0].split(",")
    ami = example().hosts["pbx-central"].ami
    assert ami is not None
    assert user["secret"] == [ami.secret.get_secret_value()]


def test_secrets_only_in_secret_files() -> None:
    m = example()
    secrets = [m.trunks["itsp-b"].auth.password.get_secret_value()]  # type: ignore[union-attr]
    ami = m.hosts["pbx-central"].ami
    assert ami is not None
    secrets.append(ami.secret.get_secret_value())
    f = files()
    for path, text in f.items():
        for secret in secrets:
            if secret in text:
                assert path in asterisk.SECRET_FILES, f"{path} holds a secret"
    assert any(secrets[0] in f[p] for p in asterisk.SECRET_FILES)
    assert any(secrets[1] in f[p] for p in asterisk.SECRET_FILES)
    assert secret_files("pbx") == set(asterisk.SECRET_FILES)


def test_reload_actions() -> None:
    assert reload_action("pbx", "asterisk/pjsip_siporch_transports.conf") == "asterisk:restart"
    assert reload_action("pbx", "asterisk/pjsip_siporch.conf") == "asterisk:pjsip reload"
    assert reload_action("pbx", "asterisk/extensions_siporch.conf") == "asterisk:dialplan reload"
    assert reload_action("pbx", "asterisk/manager_siporch.conf") == "asterisk:manager reload"
    assert reload_action("pbx", "asterisk/modules.conf") == "asterisk:restart"
    for path in files():
        assert reload_action("pbx", path) != "none"


def test_deterministic() -> None:
    assert files() == files()
    assert render_host(example(), "pbx-central") == render_host(
        load_model(EXAMPLE).model, "pbx-central"
    )


def test_not_a_pbx() -> None:
    with pytest.raises(AsteriskRenderError, match="not a pbx host"):
        asterisk.render(example(), "edge-central")


def test_tls_transport_needs_files() -> None:
    hosts = example().model_dump()["hosts"]
    hosts["pbx-central"]["transports"] = [
        {"protocol": "udp", "port": 5060},
        {"protocol": "tls", "port": 5061},
    ]
    with pytest.raises(AsteriskRenderError, match=r"needs hosts\.pbx-central\.tls"):
        asterisk.render(variant(hosts=hosts), "pbx-central")


def test_reserved_context() -> None:
    inbound = example().model_dump()["inbound"]
    inbound[0]["destination"]["context"] = "siporch-outbound"
    with pytest.raises(AsteriskRenderError, match="reserved"):
        asterisk.render(variant(inbound=inbound), "pbx-central")


def test_pbx_without_edge() -> None:
    hosts = example().model_dump()["hosts"]
    hosts["pbx-central"]["site"] = "branch"
    hosts["edge-branch"]["site"] = "central"
    sites = example().model_dump()["sites"]
    sites["branch"]["backup_site"] = None
    m = variant(hosts=hosts, sites=sites)
    with pytest.raises(AsteriskRenderError, match="has no edge host"):
        asterisk.render(m, "pbx-central")


def test_two_edges_tried_in_order() -> None:
    """Active-active edges: the PBX tries each at its own address, in order."""
    sites = example().model_dump()["sites"]
    sites["central"]["edges"] = {
        "hosts": ["edge-central", "edge-central-2"],
        "mode": "active-active",
    }
    m = variant(sites=sites)
    ext = asterisk.render(m, "pbx-central")["asterisk/extensions_siporch.conf"]
    first = ext.index("Dial(PJSIP/${EXTEN}@siporch-edge-edge-central,")
    second = ext.index("Dial(PJSIP/${EXTEN}@siporch-edge-edge-central-2,")
    between = ext[first:second]
    assert '"${DIALSTATUS}" != "CHANUNAVAIL"' in between and "?done)" in between
    # why the next edge is tried goes into Asterisk's log
    assert (
        "Log(NOTICE,siporch-outbound: ${EXTEN} via siporch-edge-edge-central: ${DIALSTATUS}"
        in between
    )
    pjsip = asterisk.render(m, "pbx-central")["asterisk/pjsip_siporch.conf"]
    assert "permit = 192.0.2.12/255.255.255.255" in pjsip
    assert "contact = sip:192.0.2.12:5060" in pjsip


def test_edges_are_qualified_often_enough_to_be_skipped_when_down() -> None:
    """Every edge AOR is qualified every few seconds with a short timeout: a silent edge is
    marked unavailable within frequency + timeout, and Dial then skips it at once."""
    sites = example().model_dump()["sites"]
    edges = {"hosts": ["edge-central", "edge-central-2"], "mode": "active-active"}
    sites["central"]["edges"] = edges
    pjsip = asterisk.render(variant(sites=sites), "pbx-central")["asterisk/pjsip_siporch.conf"]
    for edge in ("edge-central", "edge-central-2"):  # the edges it dials
        aor = of_type(pjsip, f"siporch-edge-{edge}", "aor")
        assert aor["qualify_frequency"] == [str(asterisk.EDGE_QUALIFY_FREQUENCY)], edge
        assert aor["qualify_timeout"] == [str(asterisk.EDGE_QUALIFY_TIMEOUT)], edge
    # another site's edge only sends the PBX calls: qualified for the status alone
    aor = of_type(pjsip, "siporch-edge-edge-branch", "aor")
    assert aor["qualify_frequency"] == [str(asterisk.EDGE_QUALIFY_FREQUENCY_OTHER)]
    assert 0 < asterisk.EDGE_QUALIFY_TIMEOUT < asterisk.EDGE_QUALIFY_FREQUENCY <= 10


def test_branch_pbx_uses_backup_site_edges() -> None:
    hosts = example().model_dump()["hosts"]
    del hosts["edge-branch"]
    hosts["pbx-branch"] = {**hosts["pbx-central"], "site": "branch", "address": "198.51.100.20"}
    ext = asterisk.render(variant(hosts=hosts), "pbx-branch")["asterisk/extensions_siporch.conf"]
    assert "Dial(PJSIP/${EXTEN}@siporch-edge-edge-central," in ext


def test_pbx_without_ami() -> None:
    """No AMI in the model: the site's AMI settings are left alone (nothing rendered)."""
    hosts = example().model_dump()["hosts"]
    hosts["pbx-central"]["ami"] = None
    mgr = asterisk.render(variant(hosts=hosts), "pbx-central")["asterisk/manager_siporch.conf"]
    assert sections(mgr) == {}


def test_edge_endpoint_offers_t38_and_the_longest_interval_of_any_trunk() -> None:
    ep = of_type(files()["asterisk/pjsip_siporch.conf"], "siporch-edge-edge-central", "endpoint")
    assert "t38_udptl" not in ep and ep["timers_sess_expires"] == ["1800"]
    data = example_data()
    data["trunks"]["itsp-a"]["t38"] = True
    data["trunks"]["itsp-a"]["session_timers"] = {"mode": "accept", "expires": 3600}
    out = asterisk.render(Model.model_validate(data), "pbx-central")
    ep = of_type(out["asterisk/pjsip_siporch.conf"], "siporch-edge-edge-central", "endpoint")
    assert ep["t38_udptl"] == ["yes"]
    assert ep["timers_sess_expires"] == ["3600"]


@pytest.mark.parametrize("value", ["per_edge", "two", True])
def test_a_bad_contacts_value_is_refused_naming_the_field(tmp_path: Path, value: Any) -> None:
    from tests.unit.test_model import problems_for

    def mutate(d: dict[str, Any]) -> None:
        d["trunks"]["itsp-b"]["auth"]["contacts"] = value

    found = problems_for(tmp_path, mutate)
    assert any(
        p.startswith("trunks.itsp-b.auth.contacts: must be 'per-edge' or 'one', not ")
        for p in found
    ), found
