"""The Kamailio edge renderer: determinism, a kamailio.cfg that does not
depend on the trunk count, and the data tables' semantics against the model's own (golden
files: test_golden.py)."""

from __future__ import annotations

import fnmatch
import functools
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.genmodel import generate
from siporch.model import load_model
from siporch.model.schema import DidRange, Model, Route
from siporch.render import kamailio
from siporch.render.kamailio import (
    KamailioRenderError,
    memory_sizes,
    range_prefixes,
    render,
    route_regex,
    whole,
)
from tests.unit.modelkit import example_data

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory" / "example"
GOLDEN = REPO / "tests" / "golden" / "kamailio"
EDGES = ("edge-central", "edge-branch")



@functools.cache
def example() -> Model:
    return load_model(EXAMPLE).model


@functools.cache
def generated(n: int) -> Model:
    return Model.model_validate(generate(n, dids_per_trunk=2))


def variant(**changes: Any) -> Model:
    data = example_data()
    data.update(changes)
    return Model.model_validate(data)


@pytest.mark.parametrize("host", EDGES)
def test_deterministic(host: str) -> None:
    assert render(example(), host) == render(example(), host)
    # only the files with secrets depend on the secrets
    public = lambda files: {k: v for k, v in files.items() if k not in kamailio.SECRET_FILES}  # noqa: E731
    assert public(render(variant(), host)) == public(render(example(), host))


# ------------------------------------------------------------- what lives where


def test_cfg_is_the_same_for_every_host_and_trunk_count() -> None:
    cfgs = {render(example(), h)["kamailio/kamailio.cfg"] for h in EDGES}
    cfgs |= {render(generated(n), "edge-central")["kamailio/kamailio.cfg"] for n in (10, 1000)}
    assert len(cfgs) == 1


def test_host_cfg_does_not_depend_on_trunks() -> None:
    small, big = generated(10), generated(1000)
    for host in EDGES:
        a, b = render(small, host), render(big, host)
        assert a["kamailio/host.cfg"] == b["kamailio/host.cfg"]
        assert a["kamailio/kamailio.env"] == b["kamailio/kamailio.env"]
        assert a["kamailio/db/dispatcher"] != b["kamailio/db/dispatcher"]


def test_host_cfg_carries_the_host_settings() -> None:
    files = render(example(), "edge-central", root="/srv/x", run_dir="/tmp/r")
    host_cfg = files["kamailio/host.cfg"]
    assert '#!define DBURL "text:///srv/x/kamailio/db"' in host_cfg
    assert "listen=tls:192.0.2.10:5061" in host_cfg
    assert "#!define WITH_TLS" in host_cfg
    assert "#!define WITH_TOPOH" in host_cfg
    assert '#!define RTPENGINE_SOCK "udp:127.0.0.1:2223"' in host_cfg
    assert "children=8" in host_cfg
    assert files["kamailio/kamailio.env"] == "SHM_MB=512\nPKG_MB=16\nMEMORY_MANAGER=tlsf\n"
    branch = render(example(), "edge-branch")
    assert "kamailio/tls.cfg" not in branch
    assert "listen=tcp:198.51.100.10:5071" in branch["kamailio/host.cfg"]  # JSON-RPC
    assert "WITH_TLS" not in branch["kamailio/host.cfg"]


def test_topology_hiding_can_be_switched_off() -> None:
    data = example().model_dump(mode="json")["security"]
    data["topology_hiding"] = False
    files = render(variant(security=data), "edge-central")
    assert "WITH_TOPOH" not in files["kamailio/host.cfg"]


def test_every_file_has_a_reload_action() -> None:
    for host in EDGES:
        for rel in render(example(), host):
            actions = [a for g, a in kamailio.RELOADS if fnmatch.fnmatchcase(rel, g)]
            assert actions, f"{rel} has no reload action"
    table = dict(kamailio.RELOADS)
    assert table["kamailio/kamailio.cfg"] == "kamailio:restart"
    assert table["kamailio/db/dispatcher"] == "kamailio:dispatcher.reload"
    assert table["kamailio/db/trunks"] == "kamailio:htable.reload:trunks"


def test_pbx_host_is_refused() -> None:
    with pytest.raises(KamailioRenderError, match="not 'edge'"):
        render(example(), "pbx-central")
    with pytest.raises(KamailioRenderError, match="unknown host"):
        render(example(), "nope")


# ------------------------------------------------------------- table contents


def table(files: dict[str, str], name: str) -> list[list[str]]:
    """Rows of a db_text table, unescaped."""
    rows = []
    for line in files[f"kamailio/db/{name}"].splitlines()[1:]:
        cells, cur, i = [], "", 0
        while i < len(line):
            c = line[i]
            if c == "\\":
                cur += {"n": "\n", "r": "\r", "t": "\t", "0": "\0"}.get(line[i + 1], line[i + 1])
                i += 2
                continue
            if c == ":":
                cells.append(cur)
                cur = ""
            else:
                cur += c
            i += 1
        cells.append(cur)
        rows.append(cells)
    return rows


def htable(files: dict[str, str], name: str) -> dict[str, str]:
    return {r[1]: r[4] for r in table(files, name)}


def test_registrars_by_name() -> None:
    """htable trunks rh.<name> -> trunk id for route REGISTER_OUT: peers by name and a
    registrar by name (lower case); a name two trunks share names the register trunk."""
    data = variant().model_dump(mode="json")
    data["trunks"]["itsp-a"]["peers"] = [{"address": "SIP.Shared.example", "transport": "udp"}]
    data["trunks"]["itsp-b"]["peers"] = [
        {"address": "sip.shared.example", "transport": "udp"},
        {"address": "203.0.113.31", "transport": "udp"},
    ]
    data["trunks"]["itsp-b"]["auth"]["registrar"] = "sip:Reg.B.example:5080;transport=tcp"
    data["trunks"]["itsp-b"]["inbound_addresses"] = ["203.0.113.0/24"]
    data["trunks"]["itsp-a"]["inbound_addresses"] = ["198.51.100.0/24"]
    model = Model.model_validate(data)
    files = kamailio.render(model, "edge-central")
    ht = htable(files, "trunks")
    ids = {ht[k]: k for k in ht if k.endswith(".name")}
    b = ids["itsp-b"].split(".")[0]
    assert {k: v for k, v in ht.items() if k.startswith("rh.")} == {
        "rh.sip.shared.example": b,
        "rh.reg.b.example": b,
        "rh.itsp-c.example": ids["itsp-c"].split(".")[0],
    }
    assert kamailio.registrar_names(model.trunks["itsp-b"]) == [
        "sip.shared.example",
        "reg.b.example",
    ]
    # a registrar by address is no name: the dispatcher finds it
    data["trunks"]["itsp-b"]["auth"]["registrar"] = "sip:[2001:db8::1]:5060"
    model = Model.model_validate(data)
    assert kamailio.registrar_names(model.trunks["itsp-b"]) == ["sip.shared.example"]


def test_permissions_groups() -> None:
    rows = table(render(example(), "edge-central"), "address")
    by_ip = {r[2]: (int(r[1]), r[5]) for r in rows}
    assert by_ip["203.0.113.10"] == (1, "itsp-a")
    assert by_ip["203.0.113.20"] == (1, "itsp-a")  # inbound_addresses
    assert by_ip["192.0.2.20"] == (kamailio.GROUP_LOCAL_PBX, "pbx-central")
    assert by_ip["198.51.100.10"] == (kamailio.GROUP_EDGE, "edge-branch")
    assert "203.0.113.50" not in by_ip  # the branch trunk calls the branch edge
    branch = {r[2]: int(r[1]) for r in table(render(example(), "edge-branch"), "address")}
    assert branch["203.0.113.50"] == 3
    assert branch["192.0.2.20"] == kamailio.GROUP_OTHER_PBX
    assert branch["192.0.2.10"] == kamailio.GROUP_EDGE
    # a site's PBX that siporch does not configure: its site's PBX at the branch edge,
    # another site's PBX (no new calls) at the central edge
    assert branch["198.51.100.20"] == kamailio.GROUP_LOCAL_PBX
    assert by_ip["198.51.100.20"] == (kamailio.GROUP_OTHER_PBX, "branch-pbx")


def test_cfg_fails_over_on_a_send_error_and_hides_the_registering_pbx() -> None:
    cfg = render(example(), "edge-central")["kamailio/kamailio.cfg"]
    # a branch that cannot be sent: t_relay() returns false at once and RELAY_FIRST goes
    # on (failure_exec_mode would defer it to the fr timer)
    assert 'modparam("tm", "failure_exec_mode", 1)' not in cfg
    relay_first = cfg[cfg.index("route[RELAY_FIRST] {") :]
    relay_first = relay_first[: relay_first.index("\n}\n")]
    assert "while (!t_relay())" in relay_first and "ds_next_domain()" in relay_first
    assert "t_set_disable_internal_reply(1);" in relay_first
    assert "route(NEXT_TARGET)" in relay_first
    assert cfg.count("route(RELAY_FIRST);") == 2  # inbound and outbound initial INVITEs
    # RFC 3261 16.7: a 503 from the next hop goes upstream as 500 (tm's default kept)
    assert 'modparam("tm", "remap_503_500"' not in cfg
    register = cfg[cfg.index("route[REGISTER_OUT]") :]
    register = register[: register.index("route(RELAY)")]
    assert 'subst_hf("Via", ' in register and "$var(adv)" in register


def test_dispatcher_order_and_probing() -> None:
    rows = table(render(example(), "edge-central"), "dispatcher")
    itsp_a = [r for r in rows if r[1] == "1"]
    # higher dispatcher priority is tried first: the model's priority 1 peer
    first = max(itsp_a, key=lambda r: int(r[4]))
    assert first[2] == "sip:203.0.113.10:5060;transport=udp"
    assert all(r[3] == "8" for r in itsp_a)
    itsp_b = next(r for r in rows if r[6] == "itsp-b")
    assert itsp_b[1:3] == ["2", "sip:203.0.113.30:5061;transport=tls"]
    data = example().model_dump(mode="json")["trunks"]
    data["itsp-a"]["probe"] = {"enabled": False}
    data["itsp-b"]["auth"]["password"] = "p"
    off = table(render(variant(trunks=data), "edge-central"), "dispatcher")
    assert {r[3] for r in off if r[1] == "1"} == {"0"}


def test_branch_reaches_remote_trunk_through_central_edge() -> None:
    files = render(example(), "edge-branch")
    trunks = htable(files, "trunks")
    assert trunks["1.name"] == "itsp-a" and trunks["1.local"] == "0"
    via = trunks["1.via"]
    edges = [r for r in table(files, "dispatcher") if r[1] == via]
    # the central pair is one destination: its floating address
    assert [r[2] for r in edges] == ["sip:192.0.2.9:5060;transport=udp"]
    routes = htable(files, "routes")
    expected = [r.name for r in example().routes_for_site("branch")]
    names = [routes[f"{i}.name"] for i in range(1, len(expected) + 1)]
    assert names == expected
    national = names.index("branch-national") + 1
    assert routes[f"{national}.fo"] == ",5xx,timeout,unreachable,486,"
    assert f"{len(expected) + 1}.name" not in routes


def test_weighted_route() -> None:
    routes = htable(render(example(), "edge-central"), "routes")
    names = [r.name for r in example().routes_for_site("central")]
    i = names.index("international") + 1
    assert routes[f"{i}.name"] == "international"
    assert (routes[f"{i}.w0"], routes[f"{i}.w1"], routes[f"{i}.wsum"]) == ("70", "30", "100")
    assert routes["1.wsum"] == "0"


def test_did_ranges_as_prefixes() -> None:
    dids = htable(render(example(), "edge-central"), "dids")
    assert dids["p+120255501/12"] == "1"
    # hq-main goes to the PBX group central-pbx, the first member first
    assert dids["1.set"] == str(kamailio.SET_PBX_GROUP_BASE + 1)
    assert dids["1.alg"] == str(kamailio.DS_ALG_FAILOVER)
    assert dids["2.tid"] == "4"
    assert {k for k, v in dids.items() if v == "3" and k.startswith("p")} == {
        f"p+120655501{d}/12" for d in range(5)
    }


def test_replace_with_dollar_is_refused() -> None:
    """The model refuses what the dialplan cannot represent, before any render."""
    from pydantic import ValidationError

    sites = example().model_dump(mode="json")["sites"]
    sites["central"]["normalization"].append({"name": "bad", "match": "^(1)$", "replace": "$1"})
    with pytest.raises(ValidationError, match="not '\\$'"):
        variant(sites=sites)
    sites["central"]["normalization"][-1]["replace"] = ""
    with pytest.raises(ValidationError, match="must not be empty"):
        variant(sites=sites)


def test_control_characters_are_escaped_not_refused() -> None:
    sites = example().model_dump(mode="json")["sites"]
    rule = {"name": "odd\nname:x", "match": "^7\t$", "replace": "8"}
    sites["central"]["normalization"].append(rule)
    files = render(variant(sites=sites), "edge-central")
    rows = table(files, "dialplan")
    assert all(len(r) == 9 for r in rows)  # no row broken by the newline or the ':'
    odd = next(r for r in rows if r[8] == "odd name:x")
    assert odd[4] == "^(?:^7\t$)$"


def test_db_text_escaping() -> None:
    rows = table(render(example(), "edge-central"), "dialplan")
    raw = render(example(), "edge-central")["kamailio/db/dialplan"]
    assert r"^(?\:^011(\\d{7,15})$)$" in raw
    assert [r[4] for r in rows if r[8] == "international"] == [r"^(?:^011(\d{7,15})$)$"]


# ------------------------------------------------------- numbers: same as the model's


@settings(max_examples=300, deadline=None)
@given(
    width=st.integers(min_value=1, max_value=4),
    data=st.data(),
)
def test_range_prefixes_cover_exactly(width: int, data: st.DataObject) -> None:
    lo = data.draw(st.integers(min_value=0, max_value=10**width - 1))
    hi = data.draw(st.integers(min_value=lo, max_value=10**width - 1))
    a, b = str(lo).zfill(width), str(hi).zfill(width)
    prefixes = range_prefixes(a, b)
    covered = set()
    for n in range(10**width):
        s = str(n).zfill(width)
        hits = [p for p in prefixes if s.startswith(p)]
        assert len(hits) <= 1
        if hits:
            covered.add(s)
    assert covered == {str(n).zfill(width) for n in range(lo, hi + 1)}


def test_range_prefixes_agree_with_the_model() -> None:
    r = DidRange(start="+12065550100", end="+12065550149")
    prefixes = ["+" + p for p in range_prefixes(r.start[1:], r.end[1:])]
    for n in range(12065550000, 12065550300):
        number = f"+{n}"
        assert (number in r) == any(number.startswith(p) for p in prefixes)


NUMBERS = [
    "911",
    "112",
    "+19005550123",
    "+19765550123",
    "+13125550100",
    "+12025550123",
    "+442071234567",
    "+1312555010",
    "+33123456789",
    "",
    "+",
    "abc",
    "+1900555012",
]


@pytest.mark.parametrize("route", example().routes, ids=lambda r: r.name)
def test_route_regex_equals_route_matches(route: Route) -> None:
    rx = re.compile(route_regex(route))
    for number in NUMBERS:
        assert bool(rx.search(number)) == route.matches(number), number


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"\+?[0-9]{0,16}", fullmatch=True))
def test_route_regex_equals_route_matches_generated(number: str) -> None:
    for route in example().routes:
        assert bool(re.search(route_regex(route), number)) == route.matches(number)


def test_whole_is_fullmatch() -> None:
    for rx in (r"1|12", r"^\+(\d+)$", r"(91)?1"):
        for s in ("1", "12", "123", "+12", "911", "9111"):
            assert bool(re.search(whole(rx), s)) == bool(re.fullmatch(rx, s))


def test_tables_must_fit_private_memory() -> None:
    hosts = example().model_dump(mode="json")["hosts"]
    assert "#!define DB_MAX_ROWS 524288" in render(example(), "edge-branch")["kamailio/host.cfg"]
    hosts["edge-central"]["kamailio"]["pkg_mb"] = 4
    files = render(variant(hosts=hosts), "edge-central")
    assert "#!define DB_MAX_ROWS 131072" in files["kamailio/host.cfg"]
    # tables that outgrow the model's pkg_mb raise it (and shm_mb) instead of failing
    data = generate(1000, dids_per_trunk=100)
    data["hosts"]["edge-central"]["kamailio"]["pkg_mb"] = 4
    files = render(Model.model_validate(data), "edge-central")
    rows = files["kamailio/db/dids"].count("\n") - 1
    env = dict(line.split("=") for line in files["kamailio/kamailio.env"].split())
    assert int(env["PKG_MB"]) > 4 and int(env["PKG_MB"]) % 4 == 0
    max_rows = int(re.search(r"DB_MAX_ROWS (\d+)", files["kamailio/host.cfg"]).group(1))  # type: ignore[union-attr]
    assert max_rows == int(env["PKG_MB"]) * 1024 * 1024 // 32 >= rows
    assert int(env["SHM_MB"]) >= 256
    sizes = memory_sizes(Model.model_validate(data).hosts["edge-central"], files)
    assert (sizes.pkg_mb, sizes.shm_mb) == (int(env["PKG_MB"]), int(env["SHM_MB"]))


# ------------------------------------------- outbound authentication, caller identity, profile


def _trunk_keys(files: dict[str, str], table: str = "trunks") -> dict[str, str]:
    out = {}
    for line in files[f"kamailio/db/{table}"].splitlines()[1:]:
        parts = re.split(r"(?<!\\):", line)
        out[parts[1]] = parts[4].replace("\\:", ":")
    return out


def _with_trunk(name: str, **changes: Any) -> Model:
    data = example_data("itsp-b-secret")
    data["trunks"][name].update(changes)
    return Model.model_validate(data)


def test_credentials_go_to_a_secret_file_only() -> None:
    model = _with_trunk("itsp-a", credentials={"username": "u1", "password": "pw:with:colons"})
    files = render(model, "edge-central")
    ids = kamailio.trunk_ids(model)
    creds = _trunk_keys(files, "credentials")
    a, b = ids["itsp-a"], ids["itsp-b"]
    assert creds[f"{a}.u"] == "u1" and creds[f"{a}.p"] == "pw:with:colons"
    assert f"{a}.r" not in creds  # no realm: whatever realm challenges
    # a register trunk answers challenges with its registration's credentials
    assert creds[f"{b}.u"] == "examplecorp" and creds[f"{b}.p"] == "itsp-b-secret"
    assert creds[f"{b}.r"] == "sip.itsp-b.example.com"
    assert kamailio.SECRET_FILES == ["kamailio/db/credentials"]
    for path, text in files.items():
        for secret in ("pw\\:with\\:colons", "pw:with:colons", "itsp-b-secret"):
            if secret in text:
                assert path in kamailio.SECRET_FILES, f"{path} holds a secret"
    # the branch edge has no trunk with credentials: an empty table, still a secret file
    branch = render(model, "edge-branch")
    assert branch["kamailio/db/credentials"].count("\n") == 1
    assert reload_for("kamailio/db/credentials") == "kamailio:htable.reload:creds"


def reload_for(path: str) -> str:
    return next(a for p, a in kamailio.RELOADS if fnmatch.fnmatchcase(path, p))


def test_caller_id_tech_prefix_and_early_dialogs_in_trunks_table() -> None:
    model = _with_trunk(
        "itsp-a",
        caller_id={"policy": "anonymous", "number": "+12025550100"},
        tech_prefix="12#",
        max_early_dialogs=3,
        translation={"calling": [{"name": "no-plus", "match": r"^\+(\d+)$", "replace": r"\1"}]},
    )
    files = render(model, "edge-central")
    tid = kamailio.trunk_ids(model)["itsp-a"]
    keys = _trunk_keys(files)
    assert keys[f"{tid}.cid"] == "anonymous"
    assert keys[f"{tid}.cn"] == "+12025550100"
    assert keys[f"{tid}.tp"] == "12%23"  # '#' escaped for the request URI
    assert keys[f"{tid}.early"] == "3"
    rules = [
        re.split(r"(?<!\\):", line)
        for line in files["kamailio/db/dialplan"].splitlines()[1:]
        if line.split(":")[1] == str(kamailio.DP_TRUNK_CALLING_BASE + tid)
    ]
    assert len(rules) == 1 and rules[0][-2] == r"\\1"  # db_text escapes the backslash


def test_outbound_codec_order_and_dtmf_flags() -> None:
    model = _with_trunk("itsp-a", codecs=["g722", "pcma"], dtmf="inband")
    tid = kamailio.trunk_ids(model)["itsp-a"]
    keys = _trunk_keys(render(model, "edge-central"))
    assert keys[f"{tid}.rtpc"] == "codec-strip=all codec-offer=G722 codec-offer=PCMA"
    model = _with_trunk("itsp-a", codecs=["pcmu"], dtmf="rfc4733")
    keys = _trunk_keys(render(model, "edge-central"))
    assert keys[f"{tid}.rtpc"].endswith("codec-offer=PCMU codec-offer=telephone-event")


def test_cfg_numbers_agree_with_the_renderer() -> None:
    cfg = render(example(), "edge-central")["kamailio/kamailio.cfg"]
    assert "$var(dpid) = DP_TRUNK_CALLING_BASE + $avp(dtid);" in cfg
    assert "dbtable=credentials;" in cfg
    assert 'modparam("dialog", "track_cseq_updates", 1)' in cfg
    assert "siporch: auth failed trunk=$avp(dname)" in cfg


def test_outbound_session_timers_and_t38_in_trunks_table() -> None:
    model = _with_trunk(
        "itsp-a", session_timers={"mode": "originate", "expires": 600, "min_se": 120}, t38=True
    )
    tid = kamailio.trunk_ids(model)["itsp-a"]
    keys = _trunk_keys(render(model, "edge-central"))
    assert (keys[f"{tid}.stm"], keys[f"{tid}.se"], keys[f"{tid}.mse"]) == (
        "originate",
        "600",
        "120",
    )
    assert keys[f"{tid}.t38"] == "1"
    # expires below min_se: the edge never asks for less than the minimum
    model = _with_trunk("itsp-a", session_timers={"mode": "no", "expires": 90, "min_se": 300})
    keys = _trunk_keys(render(model, "edge-central"))
    assert (keys[f"{tid}.stm"], keys[f"{tid}.se"], keys[f"{tid}.t38"]) == ("no", "300", "0")


def test_outbound_srtp_flags_toward_the_trunk_only() -> None:
    for srtp, proto in (("off", "RTP/AVP"), ("required", "RTP/SAVP")):
        model = _with_trunk("itsp-a", media={"mode": "anchor", "srtp": srtp})
        tid = kamailio.trunk_ids(model)["itsp-a"]
        keys = _trunk_keys(render(model, "edge-central"))
        assert keys[f"{tid}.rtpt"].endswith(proto)
        assert keys[f"{tid}.rtpi"].endswith("RTP/AVP")


def test_probe_values_per_trunk() -> None:
    """The dispatcher probes with the values most trunks of the edge ask for; a trunk that
    asks for others is probed by the script (pr.* keys, no dispatcher flag 8)."""
    model = _with_trunk("itsp-a", probe={"interval": 10, "threshold": 2})
    files = render(model, "edge-central")
    assert "#!define PROBE_INTERVAL 30\n" in files["kamailio/host.cfg"]
    assert "#!define PROBE_THRESHOLD 3\n" in files["kamailio/host.cfg"]
    tid = kamailio.trunk_ids(model)["itsp-a"]
    keys = _trunk_keys(files)
    assert (keys[f"{tid}.prb"], keys[f"{tid}.pth"]) == ("1", "2")
    peers = int(keys["pr.n"])
    assert peers == len(model.trunks["itsp-a"].peers)
    assert {keys[f"pr.{k}.s"] for k in range(peers)} == {str(tid)}
    assert {keys[f"pr.{k}.i"] for k in range(peers)} == {"10"}
    assert keys["pr.0.u"] == "sip:203.0.113.10:5060;transport=udp"
    rows = [re.split(r"(?<!\\):", r) for r in files["kamailio/db/dispatcher"].splitlines()[1:]]
    assert {r[3] for r in rows if r[1] == str(tid)} == {"0"}  # no dispatcher probing
    # the example: every trunk at the dispatcher's values, nothing for the script
    keys = _trunk_keys(render(example(), "edge-central"))
    assert "pr.n" not in keys and not any(k.endswith(".prb") for k in keys)


def test_edge_probe_walks_the_trunks_once_per_edge(monkeypatch: pytest.MonkeyPatch) -> None:
    """The edge's dispatcher probe values walk every trunk: an edge computes them once, not
    once per trunk (at 10,000 trunks that was minutes of rendering)."""
    calls: list[str] = []
    real = kamailio._edge_probe

    def counted(model: Model, site: str) -> Any:
        calls.append(site)
        return real(model, site)

    monkeypatch.setattr(kamailio, "_edge_probe", counted)
    model = Model.model_validate(generate(200, dids_per_trunk=1))
    render(model, "edge-central")
    assert len(calls) <= 3, f"{len(calls)} walks of the trunks for one edge"


def test_kamailio_cfg_takes_the_shared_numbers_from_host_cfg_only() -> None:
    """The numbers the data tables and kamailio.cfg share are defined once, in Python, and
    reach kamailio.cfg as host.cfg's ``#!define``s: kamailio.cfg names them and never
    spells one (a renumbering then cannot miss it), and uses every define it is given."""
    cfg_path = REPO / "templates/kamailio/kamailio.cfg"
    cfg = cfg_path.read_text()
    shared = {
        name: value
        for name, value in vars(kamailio).items()
        if re.fullmatch(r"(GROUP|SET|DP)_[A-Z_]+|MAX_TRUNK_ID|RPC_HTTP_PORT", name)
        and isinstance(value, int)
    }
    numbers = {v for v in kamailio.CFG_DEFINES.values() if isinstance(v, int)}
    assert numbers <= set(shared.values())
    for text in (v for v in kamailio.CFG_DEFINES.values() if isinstance(v, str)):
        assert text not in cfg, f"kamailio.cfg spells {text!r}"
    # no shared number spelled out, in code or in comments: the large ones anywhere (and the
    # trunk-id boundary one above MAX_TRUNK_ID), the small dialplan ids as dialplan ids
    large = {v for v in shared.values() if v > 9} | {kamailio.MAX_TRUNK_ID + 1}
    for number in sorted(large):
        spelled = {rf"\b{number}\b", rf"\b{number:_}\b", rf"\b{number:,}\b"}
        for line_no, line in enumerate(cfg.splitlines(), 1):
            for pattern in spelled:
                assert not re.search(pattern, line), f"kamailio.cfg:{line_no}: {number}: {line}"
    for line_no, line in enumerate(cfg.splitlines(), 1):
        first = re.search(r"\bdp_(?:match|replace)\(\s*([^,\s]+)", line)
        assert first is None or first.group(1) in {
            '"$var(dpid)"', *(n for n in kamailio.CFG_DEFINES if n.startswith("DP_"))
        }, f"kamailio.cfg:{line_no}: dialplan id {first.group(1) if first else ''}"
        assert not re.search(r"dialplan \d", line), f"kamailio.cfg:{line_no}: {line}"
    # every define is used, outside comments
    code = "\n".join(line.split("#", 1)[0] for line in cfg.splitlines() if not line.startswith("#!"))
    for name in kamailio.CFG_DEFINES:
        assert re.search(rf"\b{name}\b", code), f"kamailio.cfg does not use {name}"
    # ... and host.cfg defines them with the renderer's values, each once
    host_cfg = render(example(), "edge-central")["kamailio/host.cfg"]
    defined = re.findall(r"^#!define (\w+) (.*)$", host_cfg, re.MULTILINE)
    for name, value in kamailio.CFG_DEFINES.items():
        want = f'"{value}"' if isinstance(value, str) or name.endswith("_S") else str(value)
        assert [v for n, v in defined if n == name] == [want], name
    # kamailio.cfg tells a trunk from a host or a site by "id <= MAX_TRUNK_ID"
    groups = (kamailio.GROUP_LOCAL_PBX, kamailio.GROUP_EDGE, kamailio.GROUP_OTHER_PBX)
    assert min(*groups, kamailio.GROUP_MANAGEMENT) > kamailio.MAX_TRUNK_ID
    assert kamailio.MAX_TRUNK_ID < kamailio.SET_HOST_BASE < kamailio.SET_SITE_EDGES_BASE


def test_pbx_group_is_one_dispatcher_set_with_failover_order() -> None:
    """A DID to a PBX group: the group's dispatcher set holds its members, the first with
    the highest priority, probed; the DID names the set and the algorithm (8 = the first
    member up, 4 = round-robin); a DID to one host keeps that host's own set."""
    data = variant().model_dump(mode="json")
    data["pbx_groups"]["central-pbx"]["hosts"] = ["pbx-central-2", "pbx-central"]
    data["pbx_groups"]["spread"] = {"hosts": ["pbx-central", "pbx-central-2"], "strategy": "round-robin"}
    data["inbound"][0]["destination"] = {"group": "spread", "context": "from-trunk"}
    data["inbound"][2]["destination"] = {"host": "pbx-central-2", "context": "from-trunk-branch"}
    data["inbound"].append(
        {"name": "hq-sales", "pattern": r"^\+1202555030\d$",
         "destination": {"group": "central-pbx", "context": "sales"}}
    )  # fmt: skip
    model = Model.model_validate(data)
    files = render(model, "edge-central")
    dids = htable(files, "dids")
    central, spread = kamailio.SET_PBX_GROUP_BASE + 1, kamailio.SET_PBX_GROUP_BASE + 2
    assert (dids["1.set"], dids["1.alg"]) == (str(spread), str(kamailio.DS_ALG_ROUND_ROBIN))
    host_set = kamailio.SET_HOST_BASE + sorted(model.hosts).index("pbx-central-2") + 1
    assert (dids["3.set"], dids["3.alg"]) == (str(host_set), str(kamailio.DS_ALG_FAILOVER))
    assert (dids["4.set"], dids["4.alg"]) == (str(central), str(kamailio.DS_ALG_FAILOVER))
    rows = [re.split(r"(?<!\\):", r) for r in files["kamailio/db/dispatcher"].splitlines()[1:]]
    members = [(r[2].replace("\\:", ":"), r[3], r[4], r[6]) for r in rows if r[1] == str(central)]
    assert members == [
        ("sip:192.0.2.21:5060;transport=udp", "8", "2", "pbx-central-2"),
        ("sip:192.0.2.20:5060;transport=udp", "8", "1", "pbx-central"),
    ]
    assert [r[6] for r in rows if r[1] == str(spread)] == ["pbx-central", "pbx-central-2"]


def test_every_pbx_of_a_group_renders_the_dids_and_one_registers() -> None:
    """Each member of a DID's PBX group gets the DID's dialplan; a `register` trunk is
    registered by one PBX of its site only (the first by name)."""
    from siporch.render import asterisk

    model = example()
    one = asterisk.render(model, "pbx-central")
    two = asterisk.render(model, "pbx-central-2")
    ext = f"asterisk/{asterisk.EXTENSIONS_FILE}"
    assert "+12025550100" in one[ext] or "_+120255501XX" in one[ext]
    dial = [line for line in one[ext].splitlines() if "from-trunk" in line]
    assert dial and dial == [line for line in two[ext].splitlines() if "from-trunk" in line]
    pjsip = f"asterisk/{asterisk.PJSIP_FILE}"
    assert "type = registration" in one[pjsip]
    assert "type = registration" not in two[pjsip]
