"""Real providers: peers by host name, sources as networks, the bypass rule, and what the
edge's tables and config make of them (dispatcher rows with names, address rows with
masks, per-trunk probing, the TLS name check)."""

from __future__ import annotations

import copy
import ipaddress
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from siporch.model import load_model
from siporch.model.schema import Model, Peer, Trunk
from siporch.render.kamailio import render
from tests.unit.test_model import example_data, make_inventory
from tests.unit.test_render_kamailio import htable, table


def loaded(tmp_path: Path, mutate: Any) -> tuple[list[str], list[str], Model | None]:
    """(errors, warnings, model) of the example after ``mutate``."""
    from siporch.errors import ModelError

    data = copy.deepcopy(example_data())
    mutate(data["siporch"])
    inv = make_inventory(tmp_path, data)
    try:
        result = load_model(inv)
    except ModelError as exc:
        probs = exc.problems
        errors = [f"{p.path}: {p.message}" for p in probs if p.severity == "error"]
        warnings = [f"{p.path}: {p.message}" for p in probs if p.severity != "error"]
        return errors, warnings, None
    return [], [f"{p.path}: {p.message}" for p in result.warnings], result.model


# ----------------------------------------------------------------------------- the model


@pytest.mark.parametrize(
    "text, expected",
    [
        ("sip.provider.example", "sip.provider.example"),
        ("SIP.Provider.Example.", "sip.provider.example"),
        ("itsp-c.example", "itsp-c.example"),
        ("203.0.113.9", ipaddress.IPv4Address("203.0.113.9")),
        ("2001:db8::1", ipaddress.IPv6Address("2001:db8::1")),
    ],
)
def test_peer_address_is_an_ip_or_a_host_name(text: str, expected: object) -> None:
    peer = Peer(address=text)
    assert peer.address == expected
    assert peer.is_name == isinstance(expected, str)


@pytest.mark.parametrize(
    "text", ["x y", "sbc", "203.0.113.300", "-bad.example", "a..example", "under_score.example"]
)
def test_bad_peer_address_reads_in_the_users_words(text: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Peer(address=text)
    errors = exc.value.errors()
    assert len(errors) == 1
    assert errors[0]["msg"] == f"Value error, {text!r} is neither an IP address nor a host name"


def test_bad_peer_address_message_through_the_loader(tmp_path: Path) -> None:
    def mutate(m: dict[str, Any]) -> None:
        m["trunks"]["itsp-a"]["peers"][0]["address"] = "x y"

    errors, _, _ = loaded(tmp_path, mutate)
    assert errors == ["trunks.itsp-a.peers[0].address: 'x y' is neither an IP address nor a host name"]


def test_sources_take_networks_and_single_addresses() -> None:
    trunk = Trunk(
        site="central",
        kind="itsp",
        peers=[{"address": "sip.provider.example"}, {"address": "203.0.113.9"}],
        inbound_addresses=["203.0.113.60/30", "198.51.100.7"],
    )
    assert [str(n) for n in trunk.sources()] == [
        "203.0.113.9/32",
        "203.0.113.60/30",
        "198.51.100.7/32",
    ]
    allowed = Trunk(
        site="central",
        kind="itsp",
        peers=[{"address": "sip.provider.example"}],
        security={"allowed_sources": ["192.0.2.0/24", "192.0.2.200"]},
    )
    assert [str(n) for n in allowed.sources()] == ["192.0.2.0/24", "192.0.2.200/32"]


@pytest.mark.parametrize(
    "value, message",
    [
        ("203.0.113.61/30", "203.0.113.61/30 has host bits set: the network is 203.0.113.60/30"),
        ("provider", "'provider' is neither an IP address nor a network (like 203.0.113.0/24)"),
        ("203.0.113.0/33", "'203.0.113.0/33' is neither an IP address nor a network"),
    ],
)
def test_bad_network_messages(tmp_path: Path, value: str, message: str) -> None:
    def mutate(m: dict[str, Any]) -> None:
        m["trunks"]["itsp-c"]["inbound_addresses"] = [value]

    errors, _, _ = loaded(tmp_path, mutate)
    assert len(errors) == 1
    assert errors[0].startswith(f"trunks.itsp-c.inbound_addresses[0]: {message}"), errors


def test_overlapping_blocks_of_two_trunks_are_refused(tmp_path: Path) -> None:
    def mutate(m: dict[str, Any]) -> None:
        m["trunks"]["itsp-a"]["inbound_addresses"] = ["203.0.113.62"]

    errors, _, _ = loaded(tmp_path, mutate)
    assert any("also claimed by trunk" in e for e in errors), errors


def test_name_trunk_without_inbound_block_is_a_warning(tmp_path: Path) -> None:
    def mutate(m: dict[str, Any]) -> None:
        del m["trunks"]["itsp-c"]["inbound_addresses"]

    errors, warnings, model = loaded(tmp_path, mutate)
    assert errors == [] and model is not None
    assert any(
        "trunks.itsp-c.inbound_addresses" in w and "get 403" in w for w in warnings
    ), warnings

    def trusted(m: dict[str, Any]) -> None:
        mutate(m)
        m["trunks"]["itsp-c"]["inbound_trust_resolved"] = True

    errors, warnings, _ = loaded(tmp_path / "b", trusted)
    assert errors == [] and warnings == []


def test_second_account_at_the_same_provider_needs_no_block(tmp_path: Path) -> None:
    """A send-only trunk to a provider whose block another trunk of the site holds: the
    provider's calls come in as that trunk, so no "get 403" warning; a different name
    still warns."""

    def mutate(m: dict[str, Any]) -> None:
        c = m["trunks"]["itsp-c"]
        for n, peer in (("c-second", "itsp-c.example"), ("c-other", "other.itsp-c.example")):
            m["trunks"][n] = {
                "site": "central",
                "kind": "itsp",
                "peers": [{"address": peer}],
                "credentials": c["credentials"],
            }

    errors, warnings, _ = loaded(tmp_path, mutate)
    assert errors == []
    assert not any("c-second" in w for w in warnings), warnings
    assert any("trunks.c-other.inbound_addresses" in w and "get 403" in w for w in warnings)


def test_bypass_toward_an_itsp_with_topology_hiding_is_an_error(tmp_path: Path) -> None:
    def mutate(m: dict[str, Any]) -> None:
        m["trunks"]["itsp-c"]["media"] = {"mode": "bypass"}

    errors, _, _ = loaded(tmp_path, mutate)
    assert len(errors) == 1
    assert errors[0].startswith("trunks.itsp-c.media.mode: bypass sends the PBX's internal")

    def opted_in(m: dict[str, Any]) -> None:
        m["trunks"]["itsp-c"]["media"] = {"mode": "bypass", "allow_internal_addresses": True}

    errors, warnings, _ = loaded(tmp_path / "b", opted_in)
    assert errors == [] and warnings == []

    def no_hiding(m: dict[str, Any]) -> None:
        mutate(m)
        m["security"]["topology_hiding"] = False

    errors, _, _ = loaded(tmp_path / "c", no_hiding)
    assert errors == []


def test_bypass_on_a_direct_trunk_stays_allowed() -> None:
    assert example().trunks["pstn-gw"].media.mode == "bypass"


# ------------------------------------------------------------------------------ the edge


def example() -> Model:
    from tests.unit.test_render_kamailio import example as ex

    return ex()


def test_dispatcher_keeps_names_for_the_edge_to_resolve() -> None:
    rows = table(render(example(), "edge-central"), "dispatcher")
    itsp_c = [r for r in rows if r[6] == "itsp-c"]
    # a bare domain: no port, no transport (NAPTR may choose), probed (8), not resolved
    # on load (16: no inbound_trust_resolved)
    assert [r[1:] for r in itsp_c] == [["10", "sip:itsp-c.example", "24", "1", "weight=50", "itsp-c"]]


@pytest.mark.parametrize(
    "peer, uri",
    [
        ({"address": "sbc.example", "transport": "udp"}, "sip:sbc.example"),
        ({"address": "sbc.example", "transport": "tcp"}, "sip:sbc.example;transport=tcp"),
        ({"address": "sbc.example", "transport": "tls"}, "sip:sbc.example;transport=tls"),
        (
            {"address": "sbc.example", "port": 5080, "transport": "udp"},
            "sip:sbc.example:5080;transport=udp",
        ),
    ],
)
def test_peer_uri_follows_rfc_3263(peer: dict[str, Any], uri: str) -> None:
    data = _data()
    data["trunks"]["itsp-c"]["peers"] = [peer]
    rows = table(render(Model.model_validate(data), "edge-central"), "dispatcher")
    assert [r[2] for r in rows if r[6] == "itsp-c"] == [uri]


def _data() -> dict[str, Any]:
    data = example().model_dump(mode="json")
    for h in data["hosts"].values():
        if h.get("ami"):
            h["ami"]["secret"] = "s"
    for t in data["trunks"].values():
        if t["auth"]["type"] == "register":
            t["auth"]["password"] = "p"
    return data


def test_address_rows_carry_masks() -> None:
    rows = table(render(example(), "edge-central"), "address")
    assert ["5", "10", "203.0.113.60", "30", "0", "itsp-c"] in rows
    # a peer by name has no address row: the published block is the trust
    assert not any(r[2].endswith("example") for r in rows)


def test_inbound_trust_resolved_goes_to_the_edge_data() -> None:
    files = render(example(), "edge-central")
    assert "10.trr" not in htable(files, "trunks")
    data = _data()
    data["trunks"]["itsp-c"]["inbound_trust_resolved"] = True
    files = render(Model.model_validate(data), "edge-central")
    items = htable(files, "trunks")
    assert items["10.trr"] == "1" and items["trr"] == "1"
    # resolved on load and by the dispatcher's DNS timer: no flag 16
    rows = table(files, "dispatcher")
    assert [r[3] for r in rows if r[6] == "itsp-c"] == ["8"]
    # fixed sources win: no trust from DNS
    data["trunks"]["itsp-c"]["security"] = {"allowed_sources": ["203.0.113.60/30"]}
    items = htable(render(Model.model_validate(data), "edge-central"), "trunks")
    assert "10.trr" not in items and "trr" not in items


def test_probing_uses_the_most_common_values_of_the_edge() -> None:
    """The dispatcher gets the values most probed trunks of the edge ask for; a trunk that
    asks for others is probed by the script (test_render_kamailio, test_outbound_profile)."""
    host_cfg = render(example(), "edge-central")["kamailio/host.cfg"]
    assert "#!define PROBE_INTERVAL 30\n" in host_cfg
    assert "#!define PROBE_THRESHOLD 3\n" in host_cfg
    data = _data()
    data["trunks"]["itsp-c"]["probe"] = {"interval": 10, "threshold": 2}
    data["trunks"]["itsp-branch"]["probe"] = {"interval": 5, "threshold": 1}  # other edge
    files = render(Model.model_validate(data), "edge-central")
    assert "#!define PROBE_INTERVAL 30\n" in files["kamailio/host.cfg"]
    assert "#!define PROBE_THRESHOLD 3\n" in files["kamailio/host.cfg"]
    assert ":pr.0.i:0:1:10:0" in files["kamailio/db/trunks"]
    branch = render(Model.model_validate(data), "edge-branch")["kamailio/host.cfg"]
    assert "#!define PROBE_INTERVAL 5\n" in branch
    # most of the edge's probed trunks ask for 10 s and 2: those become the dispatcher's
    for name, t in data["trunks"].items():
        if t["site"] == "central" and name != "itsp-a":
            t["probe"] = {"interval": 10, "threshold": 2}
    host_cfg = render(Model.model_validate(data), "edge-central")["kamailio/host.cfg"]
    assert "#!define PROBE_INTERVAL 10\n" in host_cfg
    assert "#!define PROBE_THRESHOLD 2\n" in host_cfg
    # a trunk that is not probed does not count
    for t in data["trunks"].values():
        if t["site"] == "central" and t["probe"]["interval"] == 10:
            t["probe"] = {"enabled": False, "interval": 10, "threshold": 2}
    host_cfg = render(Model.model_validate(data), "edge-central")["kamailio/host.cfg"]
    assert "#!define PROBE_INTERVAL 30\n" in host_cfg


def test_cfg_resolves_names_at_run_time_and_checks_tls_names() -> None:
    cfg = render(example(), "edge-central")["kamailio/kamailio.cfg"]
    for line in (
        "use_dns_cache=yes",
        "use_dns_failover=yes",
        "dns_try_naptr=yes",
        "dns_srv_lb=yes",
        "dns_cache_max_ttl=30",
        'modparam("dispatcher", "ds_dns_mode", 12)',
        'modparam("tls", "xavp_cfg", "tls")',
        "$xavp(tls=>server_name) = $var(tn);",
        'xlog("L_ERR", "siporch: tls name mismatch peer=$var(want) ',
        't_reply_callid("$ci", "$cs", "503", "TLS Name Mismatch");',
    ):
        assert line in cfg, line


# ------------------------------------------------------------------------------ status


def test_status_shows_a_recent_tls_name_mismatch() -> None:
    from siporch.monitor.kamailio import parse_tls_mismatches
    from siporch.monitor.status import build_report
    from tests.unit.test_monitor_status import NOW, edge_result, pbx_result, topology

    dump = [
        {"entry": 3, "size": 2, "slot": [
            {"name": "mm.wrong.itsp-c.example", "value": "198.18.1.61:5061", "type": "str"},
            {"name": "0a1b2c", "value": "!wrong.itsp-c.example", "type": "str"},
        ]},
    ]  # fmt: skip
    assert parse_tls_mismatches(dump) == {"wrong.itsp-c.example": "198.18.1.61:5061"}

    topo = topology()
    edge = edge_result(topo)
    peer = next(iter(topo.trunks["itsp-a"].peers))
    edge.tls_mismatch = {peer.address: "198.18.1.61:5061"}
    report = build_report(topo, [pbx_result(topo, "live")], [edge], now=NOW)
    messages = [p["message"] for p in report["problems"] if p["trunk"] == "itsp-a"]
    assert any(
        "TLS certificate of 198.18.1.61:5061 does not name peer" in m for m in messages
    ), messages


def test_status_shows_a_recent_credentials_refusal() -> None:
    from siporch.monitor.kamailio import parse_auth_failures
    from siporch.monitor.status import build_report
    from tests.unit.test_monitor_status import NOW, edge_result, pbx_result, topology

    dump = [
        {"entry": 1, "size": 1, "slot": [
            {"name": "af.itsp-a", "value": "407 rejected", "type": "str"},
        ]},
    ]  # fmt: skip
    assert parse_auth_failures(dump) == {"itsp-a": "407 rejected"}

    topo = topology()
    edge = edge_result(topo)
    healthy = build_report(topo, [pbx_result(topo, "live")], [edge], now=NOW)
    assert not [p for p in healthy["problems"] if "credentials" in p["message"]]
    edge.auth_failed = {"itsp-a": "407 rejected"}
    report = build_report(topo, [pbx_result(topo, "live")], [edge], now=NOW)
    messages = [p["message"] for p in report["problems"] if p["trunk"] == "itsp-a"]
    assert any(
        "the provider refused the edge's credentials (407 rejected)" in m for m in messages
    ), messages
