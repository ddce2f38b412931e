"""The redundant edges of a site (`sites.<site>.edges`): validation, and what each edge
renders for it (Kamailio DMQ, the floating address, keepalived, rtpengine with Redis)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from siporch.model.schema import Model
from siporch.render import kamailio, keepalived, render_host, rtpengine
from tests.unit.modelkit import example
from tests.unit.test_model import make_inventory, problems_for

REPO = Path(__file__).resolve().parents[2]


def _pair(data: dict[str, Any]) -> dict[str, Any]:
    edges: dict[str, Any] = data["sites"]["central"]["edges"]
    return edges


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: _pair(d).update(vip="192.0.3.9"),
            "sites.central.edges.vip: 192.0.3.9 is not inside network 192.0.2.0/24",
        ),
        (
            lambda d: _pair(d).update(vip="192.0.2.255"),
            "sites.central.edges.vip: 192.0.2.255 is not a host address of 192.0.2.0/24",
        ),
        (
            lambda d: _pair(d).update(vip="192.0.2.20"),
            "sites.central.edges.vip: 192.0.2.20 is the address of host 'pbx-central'",
        ),
        (
            lambda d: _pair(d).update(hosts=["edge-central"]),
            "sites.central.edges.hosts: must have at least 2 items",
        ),
        (
            lambda d: _pair(d).update(hosts=["edge-central", "edge-central-2", "edge-branch"]),
            "sites.central.edges.hosts[2]: edge 'edge-branch' belongs to site 'branch'",
        ),
        (
            lambda d: (
                d["hosts"].__setitem__(
                    "edge-central-3", {**d["hosts"]["edge-central-2"], "address": "192.0.2.13"}
                ),
                _pair(d).update(hosts=["edge-central", "edge-central-2", "edge-central-3"]),
            ),
            "sites.central.edges.hosts: active-standby needs exactly 2 edges, 3 are listed",
        ),
        (
            lambda d: _pair(d).update(hosts=["edge-central", "pbx-central"]),
            "sites.central.edges.hosts[1]: host 'pbx-central' is a pbx, not an edge",
        ),
        (
            lambda d: _pair(d).pop("vip"),
            "sites.central.edges.vip: active-standby needs the floating address vip",
        ),
        (
            lambda d: _pair(d).update(mode="active-active"),
            "sites.central.edges.vip: a vip is used only with mode active-standby",
        ),
        (
            lambda d: _pair(d).update(network="192.0.2.0/29", vip="192.0.2.6"),
            "sites.central.edges.network: edge 'edge-central' (192.0.2.10) is not inside "
            "network 192.0.2.0/29",
        ),
        (
            lambda d: _pair(d).update(dmq_port=5060),
            "sites.central.edges.dmq_port: udp/5060 is a SIP transport of edge 'edge-central'",
        ),
        (
            lambda d: _pair(d).update(mode="hot-standby"),
            "sites.central.edges.mode: must be 'active-standby' or 'active-active', not 'hot-standby'",
        ),
    ],
)
def test_a_bad_pair_is_refused_naming_the_field(tmp_path: Path, mutate: Any, expected: str) -> None:
    found = problems_for(tmp_path, mutate)
    assert any(p.startswith(expected) for p in found), found


def test_every_edge_of_the_site_is_listed(tmp_path: Path) -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["hosts"]["edge-central-3"] = {**d["hosts"]["edge-central-2"], "address": "192.0.2.13"}

    found = problems_for(tmp_path, mutate)
    assert any("edge(s) edge-central-3 of site 'central' are not listed" in p for p in found)


def test_cli_exits_2_with_file_and_field(tmp_path: Path) -> None:
    from tests.unit.test_model import example_data

    data = example_data()
    data["siporch"]["sites"]["central"]["edges"]["vip"] = "10.0.0.9"
    inv = make_inventory(tmp_path, data)
    proc = subprocess.run(
        [sys.executable, "-m", "siporch", "validate", "-i", str(inv)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert re.search(
        r"siporch\.yml:\d+: sites\.central\.edges\.vip: 10\.0\.0\.9 is not inside", proc.stderr
    )


# ----------------------------------------------------------------------------- render


def _cfg(model: Model, host: str) -> str:
    return kamailio.render(model, host)["kamailio/host.cfg"]


def test_kamailio_dmq_between_the_pair() -> None:
    m = example()
    one, two = _cfg(m, "edge-central"), _cfg(m, "edge-central-2")
    assert '#!define DMQ_SERVER "sip:192.0.2.10:5090"' in one
    assert '#!define DMQ_NOTIFY "sip:192.0.2.12:5090"' in one
    assert '#!define DMQ_SERVER "sip:192.0.2.12:5090"' in two
    assert '#!define DMQ_NOTIFY "sip:192.0.2.10:5090"' in two
    assert "listen=udp:192.0.2.10:5090" in one and "listen=udp:192.0.2.12:5090" in two
    # dialog ids apart; the ban list replicated
    assert "#!define DLG_H_ID_START 1" in one and "#!define DLG_H_ID_START 2" in two
    assert "#!define DLG_H_ID_STEP 2" in one
    assert "dmqreplicate=1;" in one
    # a single edge (the branch) has none of it
    branch = _cfg(m, "edge-branch")
    assert (
        "WITH_DMQ" not in branch and "dmqreplicate" not in branch and "ip_free_bind" not in branch
    )


def test_kamailio_cfg_shares_dialogs_profiles_and_bans() -> None:
    cfg = kamailio.render(example(), "edge-central")["kamailio/kamailio.cfg"]
    block = cfg[cfg.index('loadmodule "dmq.so"') - 30 :]
    assert block.startswith("#!ifdef WITH_DMQ") or "#!ifdef WITH_DMQ" in cfg
    for line in (
        'modparam("dialog", "enable_dmq", 1)',
        'modparam("htable", "enable_dmq", 1)',
        'modparam("htable", "dmq_init_sync", 1)',
        'modparam("dmq", "server_address", DMQ_SERVER)',
        'modparam("dmq", "notification_address", DMQ_NOTIFY)',
        'modparam("dialog", "h_id_start", DLG_H_ID_START)',
    ):
        assert line in cfg
    # KDMQ only on the DMQ port, only from the other edges
    assert "dmq_handle_message();" in cfg
    assert 'is_method("KDMQ") && allow_source_address(GROUP_EDGE_S)' in cfg


def test_kamailio_listens_on_the_floating_address_first() -> None:
    text = _cfg(example(), "edge-central-2")
    listens = [line for line in text.splitlines() if line.startswith("listen=")]
    assert listens[:3] == [
        "listen=udp:192.0.2.9:5060",
        "listen=tcp:192.0.2.9:5060",
        "listen=tls:192.0.2.9:5061",
    ]
    assert "listen=udp:192.0.2.12:5060" in listens
    assert "ip_free_bind=1" in text
    # what the edge advertises and masks: the floating address, the same on both edges
    assert '#!define ADVERTISED_ADDRESS "192.0.2.9"' in text
    assert '#!define TOPOH_MASK_IP "192.0.2.9"' in text
    key = re.search(r'TOPOH_KEY "(\w+)"', text)
    assert key is not None and key.group(0) in _cfg(example(), "edge-central")


def test_keepalived_of_the_pair() -> None:
    m = example()
    one = keepalived.render(m, "edge-central")["keepalived/keepalived.conf"]
    two = keepalived.render(m, "edge-central-2")["keepalived/keepalived.conf"]
    assert "priority 150" in one and "priority 100" in two
    for conf, src, peer in ((one, "192.0.2.10", "192.0.2.12"), (two, "192.0.2.12", "192.0.2.10")):
        assert f"unicast_src_ip {src}" in conf
        assert re.search(rf"unicast_peer {{\s+{re.escape(peer)}\s+}}", conf)
        assert "192.0.2.9/32 dev eth0" in conf
        assert "virtual_router_id 51" in conf and "nopreempt" in conf
        # each daemon checked by keepalived_vip's helper (a planned restart keeps the address)
        assert f'script "{keepalived.VRRP_HELPER} check kamailio"' in conf
        assert f'script "{keepalived.VRRP_HELPER} check rtpengine"' in conf
        assert re.search(r"fall 1\n", conf)
        # every change of state tells Kamailio whether the edge holds the address; the edge
        # taking it over also starts its peers afresh (the helper's notify master)
        for state in ("master", "backup", "fault", "stop"):
            assert (
                f'notify_{state} "{keepalived.VRRP_HELPER} notify {state} '
                'unix:/run/kamailio/kamailio_ctl"' in conf
            )
    assert keepalived.render(m, "edge-branch") == {}
    assert "keepalived/keepalived.conf" not in render_host(m, "edge-branch")


def _pair_blocks(cfg: str) -> list[str]:
    """The text of every ``#!ifdef PAIR_VIP`` block of kamailio.cfg (no nesting in them)."""
    return re.findall(r"#!ifdef PAIR_VIP\n(.*?)#!endif", cfg, flags=re.S)


def test_an_edge_without_the_floating_address_refuses_new_calls() -> None:
    """Only on an edge of a pair (PAIR_VIP, host.cfg): the variable keepalived's helper
    sets, 503 to an initial INVITE while it is 0, and the start-up look at the interfaces."""
    m = example()
    cfg = kamailio.render(m, "edge-central")["kamailio/kamailio.cfg"]
    blocks = "\n".join(_pair_blocks(cfg))
    assert 'loadmodule "exec.so"' in blocks
    assert 'modparam("pv", "shvset", "vipheld=i:1")' in blocks
    assert re.search(r'if \(\$shv\(vipheld\) == 0\) \{\s+sl_send_reply\("503"', blocks)
    assert '"/sbin/ip -o addr show to " + PAIR_VIP' in blocks
    assert "event_route[core:worker-one-init]" in blocks
    # the refusal comes before the call's dialog and record
    assert cfg.index("$shv(vipheld) == 0") < cfg.index("\tdlg_manage();")
    # the name keepalived's helper sets is the one kamailio.cfg reads
    helper = (REPO / "roles/keepalived_vip/files/siporch_vrrp.sh").read_text()
    assert "pv.shvSet vipheld int" in helper
    assert "PAIR_VIP" in _cfg(m, "edge-central") and "PAIR_VIP" not in _cfg(m, "edge-branch")


def test_active_active_has_dmq_and_no_floating_address() -> None:
    data = example().model_dump()
    data["sites"]["central"]["edges"].update(mode="active-active", vip=None, network=None)
    m = Model.model_validate(data)
    assert keepalived.render(m, "edge-central") == {}
    text = _cfg(m, "edge-central")
    assert "WITH_DMQ" in text and "192.0.2.9" not in text and "ip_free_bind" not in text
    conf = rtpengine.render(m, "edge-central")["rtpengine/rtpengine.conf"]
    assert "interface = 192.0.2.10\n" in conf and "redis = 192.0.2.30:6379/1\n" in conf


def test_rtpengine_keeps_sessions_in_redis() -> None:
    m = example()
    one = rtpengine.render(m, "edge-central")["rtpengine/rtpengine.conf"]
    two = rtpengine.render(m, "edge-central-2")["rtpengine/rtpengine.conf"]
    assert "interface = 192.0.2.9\n" in one and "interface = 192.0.2.9\n" in two
    assert "redis = 192.0.2.30:6379/1\nredis-write = 192.0.2.30:6379/1\n" in one
    assert "subscribe-keyspace = 2\n" in one
    assert "redis = 192.0.2.30:6379/2\nredis-write = 192.0.2.30:6379/2\n" in two
    assert "subscribe-keyspace = 1\n" in two
    assert "active-switchover = true" in one
    assert "redis" not in rtpengine.render(m, "edge-branch")["rtpengine/rtpengine.conf"]


def test_other_sites_and_pbxs_reach_the_pair_at_its_floating_address() -> None:
    m = example()
    branch = kamailio.render(m, "edge-branch")
    address = branch["kamailio/db/address"]
    assert ":192.0.2.9:32:0:central-vip" in address
    assert "sip:192.0.2.12:" not in branch["kamailio/db/dispatcher"]
    assert m.edge_targets("central") == ["edge-central"]
    assert m.sip_address("edge-central-2") == m.sip_address("edge-central")


# ----------------------------------------------------------------------------- status


def test_status_shows_each_edge_of_the_pair() -> None:
    from siporch.monitor import kamailio as kam
    from siporch.monitor.status import EdgeResult, build_report
    from siporch.monitor.topology import from_model

    topo = from_model(example())
    targets = {e.name: e for e in topo.edges}
    pair = targets["edge-central"].pair
    assert pair is not None and pair.vip == "192.0.2.9" and pair.redis == ("192.0.2.30", 6379)
    assert targets["edge-branch"].pair is None

    def edge(name: str, vip: bool, peer_status: str, redis: str) -> EdgeResult:
        other = "192.0.2.12" if name == "edge-central" else "192.0.2.10"
        own = targets[name].address
        nodes = [
            kam.DmqNode(own, 5090, "active", True),
            kam.DmqNode(other, 5090, peer_status, False),
        ]
        return EdgeResult(
            targets[name], kamailio_state="up", rtpengine_state="up", dmq=nodes,
            holds_vip=vip, redis=redis,
        )  # fmt: skip

    report = build_report(
        topo,
        [],
        [edge("edge-central", True, "active", "up"), edge("edge-central-2", False, "active", "up")],
    )
    pairs = {e["name"]: e["pair"] for e in report["edges"] if "pair" in e}
    assert pairs["edge-central"]["role"] == "active"
    assert pairs["edge-central-2"]["role"] == "standby"
    assert pairs["edge-central"]["dmq_peers"] == [
        {"address": "192.0.2.12:5090", "status": "active"}
    ]
    assert not [
        p for p in report["problems"] if "DMQ" in p["message"] or "floating" in p["message"]
    ]
    # the bus split, Redis gone, the address on both edges: each is a degraded problem
    report = build_report(
        topo,
        [],
        [edge("edge-central", True, "disabled", "down: Connection refused"),
         edge("edge-central-2", True, "active", "up")],
    )  # fmt: skip
    messages = [p["message"] for p in report["problems"] if p["severity"] == "degraded"]
    assert "no other edge on its DMQ bus" in messages
    assert "Redis: down: Connection refused" in messages
    assert "site central: floating address 192.0.2.9 on edge-central, edge-central-2" in messages


def test_dmq_list_nodes_parsed() -> None:
    from siporch.monitor.kamailio import DmqNode, parse_dmq_nodes

    result = [
        {"host": "198.18.0.10", "port": 5090, "resolved_ip": "198.18.0.10", "status": "active",
         "last_notification": 0, "local": 1},
        {"host": "198.18.0.12", "port": "5090", "status": "active", "local": 0},
    ]  # fmt: skip
    assert parse_dmq_nodes(result) == [
        DmqNode("198.18.0.10", 5090, "active", True),
        DmqNode("198.18.0.12", 5090, "active", False),
    ]
