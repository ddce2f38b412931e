"""Map the example inventory's documentation addresses onto lab addresses.

``inventory/example`` uses the RFC 5737 documentation ranges; the lab uses 198.18.0.0/15.
Known host addresses map one to one onto lab hosts (``HOST_MAP``); any other address in
a documentation range keeps its last octet in that range's lab /24 (``RANGE_MAP``);
networks of a /24 or more (``192.0.2.0/24``) map onto the lab network holding the lab
hosts of that range (``NETWORK_MAP``), so an access list still admits them; smaller
networks keep their host part as single addresses do (``203.0.113.60/30`` ->
``198.18.1.60/30``: exactly the itsp-c hosts), and a /32 maps as its address. The rewrite
works on the YAML text, so comments, order and quoting survive untouched.
"""

from __future__ import annotations

import ipaddress
import re

from siporch.lab.spec import HOSTS

# Example address -> lab host address (see siporch.lab.spec.HOSTS).
HOST_MAP: dict[str, str] = {
    "192.0.2.10": "198.18.0.10",  # edge-central
    "192.0.2.12": "198.18.0.12",  # edge-central-2
    "192.0.2.30": "198.18.0.30",  # db-central: PostgreSQL, Redis
    "198.51.100.10": "198.18.0.11",  # edge-branch
    "192.0.2.20": "198.18.0.20",  # pbx-central
    "192.0.2.21": "198.18.0.21",  # pbx-central-2
    "192.0.2.50": "198.18.0.50",  # pstn-gw
    "198.51.100.20": "198.18.2.20",  # pbx-remote, the branch's PBX (second address of pstn-gw)
    "203.0.113.10": "198.18.1.10",  # itsp-a1
    "203.0.113.11": "198.18.1.11",  # itsp-a2
    "203.0.113.20": "198.18.1.20",  # ITSP A origination (second address of itsp-a1)
    "203.0.113.30": "198.18.1.30",  # itsp-b
    "203.0.113.50": "198.18.1.50",  # itsp-branch
    "203.0.113.60": "198.18.1.60",  # itsp-c1 (sip1.itsp-c.example)
    "203.0.113.61": "198.18.1.61",  # itsp-c2 (sip2.itsp-c.example)
}

# Documentation /24 -> lab /24 for single addresses not in HOST_MAP.
RANGE_MAP: dict[str, str] = {
    "192.0.2.0/24": "198.18.0.0/24",  # TEST-NET-1: central site
    "198.51.100.0/24": "198.18.2.0/24",  # TEST-NET-2: branch site
    "203.0.113.0/24": "198.18.1.0/24",  # TEST-NET-3: ITSPs
}

# Documentation network -> lab network holding the lab hosts of that network: both site
# networks land on 198.18.0.0/24, where the lab's edges and PBX live.
NETWORK_MAP: dict[str, str] = {
    "192.0.2.0/24": "198.18.0.0/24",
    "198.51.100.0/24": "198.18.0.0/24",
    "203.0.113.0/24": "198.18.1.0/24",
}

_IPV4 = re.compile(r"(?<![\w.])(\d{1,3}(?:\.\d{1,3}){3})(/\d{1,2})?(?![\w.])")


def map_address(address: str) -> str:
    """Lab address for one example address; addresses outside the documentation ranges
    are returned unchanged."""
    if address in HOST_MAP:
        return HOST_MAP[address]
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        return address
    for doc, lab in RANGE_MAP.items():
        doc_net = ipaddress.IPv4Network(doc)
        if ip in doc_net:
            offset = int(ip) - int(doc_net.network_address)
            return str(ipaddress.IPv4Network(lab).network_address + offset)
    return address


def map_network(network: str) -> str:
    """Lab network for an example network written as ``a.b.c.d/len``."""
    try:
        net = ipaddress.IPv4Network(network, strict=False)
    except ValueError:
        return network
    if net.prefixlen == 32:
        return f"{map_address(str(net.network_address))}/32"
    if net.prefixlen > 24:
        # Smaller than a /24: keep the host part, in the lab /24 of its single addresses.
        for doc, lab in RANGE_MAP.items():
            doc_net = ipaddress.IPv4Network(doc)
            if net.subnet_of(doc_net):
                offset = int(net.network_address) - int(doc_net.network_address)
                lab_start = ipaddress.IPv4Network(lab).network_address + offset
                return f"{lab_start}/{net.prefixlen}"
        return network
    for doc, lab in NETWORK_MAP.items():
        doc_net = ipaddress.IPv4Network(doc)
        if net.subnet_of(doc_net):
            lab_net = ipaddress.IPv4Network(lab)
            offset = int(net.network_address) - int(doc_net.network_address)
            return f"{lab_net.network_address + offset}/{net.prefixlen}"
        if net.supernet_of(doc_net):
            return str(ipaddress.IPv4Network(lab).supernet(new_prefix=net.prefixlen))
    return network


def rewrite_text(text: str) -> str:
    """Replace every documentation address and network in ``text`` by its lab value."""

    def _sub(match: re.Match[str]) -> str:
        address, prefix = match.group(1), match.group(2)
        if prefix:
            return map_network(address + prefix)
        return map_address(address)

    return _IPV4.sub(_sub, text)


def documentation_addresses(text: str) -> list[str]:
    """Addresses in ``text`` that are still in a documentation range (should be none
    after ``rewrite_text``)."""
    found: list[str] = []
    for match in _IPV4.finditer(text):
        try:
            ip = ipaddress.IPv4Address(match.group(1))
        except ValueError:
            continue
        if any(ip in ipaddress.IPv4Network(doc) for doc in RANGE_MAP):
            found.append(match.group(0))
    return found


def lab_addresses() -> set[str]:
    return {a for h in HOSTS for a in h.addresses}
