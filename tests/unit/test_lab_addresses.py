"""Mapping the example's documentation addresses onto lab addresses."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siporch.lab.addresses import (
    HOST_MAP,
    documentation_addresses,
    lab_addresses,
    map_address,
    map_network,
    rewrite_text,
)
from siporch.lab.spec import HOSTS, LAB_NETWORK

EXAMPLE = Path(__file__).resolve().parents[2] / "inventory" / "example"
LAB = ipaddress.IPv4Network(LAB_NETWORK)
DOC_NETS = [ipaddress.IPv4Network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]


@pytest.mark.parametrize(
    ("example", "lab"),
    [
        ("192.0.2.10", "198.18.0.10"),
        ("198.51.100.10", "198.18.0.11"),
        ("192.0.2.20", "198.18.0.20"),
        ("192.0.2.50", "198.18.0.50"),
        ("203.0.113.10", "198.18.1.10"),
        ("203.0.113.11", "198.18.1.11"),
        ("203.0.113.20", "198.18.1.20"),
        ("203.0.113.30", "198.18.1.30"),
        ("203.0.113.50", "198.18.1.50"),
        ("203.0.113.60", "198.18.1.60"),
        ("203.0.113.61", "198.18.1.61"),
    ],
)
def test_known_hosts_map_to_their_lab_host(example: str, lab: str) -> None:
    assert map_address(example) == lab


def test_every_mapped_host_address_belongs_to_a_lab_host() -> None:
    assert set(HOST_MAP.values()) <= lab_addresses()
    assert len(set(HOST_MAP.values())) == len(HOST_MAP)


def test_lab_hosts_are_in_the_benchmark_range_and_distinct() -> None:
    addresses = [a for h in HOSTS for a in h.addresses]
    assert len(addresses) == len(set(addresses))
    assert all(ipaddress.IPv4Address(a) in LAB for a in addresses)
    assert len({h.netns for h in HOSTS}) == len(HOSTS)
    assert len({h.veth for h in HOSTS}) == len(HOSTS)
    assert all(len(h.veth) <= 15 for h in HOSTS)


def test_unknown_documentation_addresses_keep_their_last_octet() -> None:
    assert map_address("192.0.2.99") == "198.18.0.99"
    assert map_address("203.0.113.7") == "198.18.1.7"
    assert map_address("198.51.100.200") == "198.18.2.200"


def test_other_addresses_are_left_alone() -> None:
    for address in ("10.0.0.1", "127.0.0.1", "0.0.0.0", "8.8.8.8", "not-an-ip", "999.1.1.1"):
        assert map_address(address) == address


def test_networks_map_onto_the_lab_networks_of_their_hosts() -> None:
    assert map_network("192.0.2.0/24") == "198.18.0.0/24"
    assert map_network("198.51.100.0/24") == "198.18.0.0/24"
    assert map_network("203.0.113.0/24") == "198.18.1.0/24"
    assert map_network("192.0.2.16/28") == "198.18.0.16/28"
    assert map_network("10.0.0.0/8") == "10.0.0.0/8"


def test_small_networks_keep_their_host_part() -> None:
    net = map_network("203.0.113.60/30")
    assert net == "198.18.1.60/30"
    members = {str(a) for a in ipaddress.IPv4Network(net)}
    assert {"198.18.1.60", "198.18.1.61"} <= members
    assert {a for h in HOSTS for a in h.addresses} & members == {"198.18.1.60", "198.18.1.61"}
    assert map_network("198.51.100.16/28") == "198.18.2.16/28"
    assert map_network("198.51.100.10/32") == "198.18.0.11/32"  # edge-branch, as its address
    assert map_network("203.0.113.61/32") == "198.18.1.61/32"
    assert rewrite_text("allow: [203.0.113.60/30]\n") == "allow: [198.18.1.60/30]\n"


def test_rewrite_text_touches_only_whole_addresses() -> None:
    text = (
        "a: 192.0.2.10\n"
        "b: [192.0.2.0/24, 10.1.2.3]\n"
        "c: sip:203.0.113.30:5061;transport=tls\n"
        "d: 1.192.0.2.10\n"
        "e: 192.0.2.101\n"
        "f: version 192.0.2.10.5\n"
    )
    assert rewrite_text(text) == (
        "a: 198.18.0.10\n"
        "b: [198.18.0.0/24, 10.1.2.3]\n"
        "c: sip:198.18.1.30:5061;transport=tls\n"
        "d: 1.192.0.2.10\n"
        "e: 198.18.0.101\n"
        "f: version 192.0.2.10.5\n"
    )


@given(st.sampled_from(DOC_NETS), st.integers(min_value=0, max_value=255))
def test_every_documentation_address_lands_in_the_lab_range(
    net: ipaddress.IPv4Network, n: int
) -> None:
    address = str(net.network_address + n)
    mapped = map_address(address)
    assert ipaddress.IPv4Address(mapped) in LAB
    assert documentation_addresses(rewrite_text(f"x: {address}\n")) == []


def test_rewritten_example_model_names_only_lab_hosts() -> None:
    text = rewrite_text((EXAMPLE / "group_vars" / "all" / "siporch.yml").read_text())
    assert documentation_addresses(text) == []
    import yaml

    model = yaml.safe_load(text)["siporch"]
    for host in model["hosts"].values():
        assert host["address"] in lab_addresses()
    for site in model["sites"].values():
        for address in site.get("pbx_addresses", []):
            assert address in lab_addresses(), address
    for trunk in model["trunks"].values():
        for peer in trunk["peers"]:
            if re.search(r"[a-z]", peer["address"]):
                # a peer by name: the lab's DNS serves the .example names
                assert peer["address"].endswith(".example"), peer
                continue
            assert peer["address"] in lab_addresses(), peer
        for address in trunk.get("inbound_addresses", []):
            if "/" in address:
                assert ipaddress.ip_network(address).subnet_of(LAB), address
                continue
            assert address in lab_addresses()
