"""The lab network, made with pyroute2: one bridge, one namespace and veth per host.

The controller-side end of each veth (``sv-<host>``) is a port of the bridge
``sipo-br0``, which carries the controller's lab address 198.18.0.1/15; the other end is
``eth0`` inside the host's namespace ``sipo-<host>``. Nothing routes or forwards
between the lab and any other interface of the machine.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from pyroute2 import IPRoute, NetNS, netns
from pyroute2.netlink.exceptions import NetlinkError

from siporch.errors import LabError
from siporch.lab.spec import (
    BRIDGE,
    CONTROLLER_ADDRESS,
    HOSTS,
    IFNAMSIZ,
    NETNS_PREFIX,
    PREFIXLEN,
    VETH_PREFIX,
    LabHost,
)

NETNS_DIR = Path("/run/netns")


def lab_namespaces() -> list[str]:
    """Every namespace whose name marks it as the lab's (including leftovers)."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(NETNS_PREFIX))


def lab_links() -> list[str]:
    """The bridge and every port of it present now."""
    with IPRoute() as ipr:
        bridge = ipr.link_lookup(ifname=BRIDGE)
        if not bridge:
            return []
        ports = [
            link.get_attr("IFLA_IFNAME")
            for link in ipr.get_links()
            if link.get_attr("IFLA_MASTER") == bridge[0]
        ]
    return [BRIDGE, *sorted(ports)]


def netns_inode(name: str) -> int | None:
    try:
        return os.stat(NETNS_DIR / name).st_ino
    except OSError:
        return None


def create_bridge() -> None:
    with IPRoute() as ipr:
        if not ipr.link_lookup(ifname=BRIDGE):
            ipr.link("add", ifname=BRIDGE, kind="bridge")
        index = ipr.link_lookup(ifname=BRIDGE)[0]
        have = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=index, family=2)}
        if CONTROLLER_ADDRESS not in have:
            ipr.addr("add", index=index, address=CONTROLLER_ADDRESS, prefixlen=PREFIXLEN)
        ipr.link("set", index=index, state="up")


def create_host_network(host: LabHost) -> None:
    """Namespace, veth pair (one end on the bridge), addresses and links up."""
    try:
        netns.create(host.netns)
    except FileExistsError:
        pass
    except OSError as exc:
        raise LabError(f"{host.name}: cannot create namespace {host.netns}: {exc}") from exc
    try:
        with IPRoute() as ipr:
            bridge = ipr.link_lookup(ifname=BRIDGE)[0]
            if not ipr.link_lookup(ifname=host.veth):
                ipr.link(
                    "add",
                    ifname=host.veth,
                    kind="veth",
                    peer={"ifname": "eth0", "net_ns_fd": host.netns},
                )
            index = ipr.link_lookup(ifname=host.veth)[0]
            ipr.link("set", index=index, master=bridge, state="up")
        with NetNS(host.netns) as ns:
            lo = ns.link_lookup(ifname="lo")[0]
            ns.link("set", index=lo, state="up")
            eth = ns.link_lookup(ifname="eth0")
            if not eth:
                raise LabError(f"{host.name}: eth0 is missing in namespace {host.netns}")
            have = {a.get_attr("IFA_ADDRESS") for a in ns.get_addr(index=eth[0], family=2)}
            for address in host.addresses:
                if address not in have:
                    ns.addr("add", index=eth[0], address=address, prefixlen=PREFIXLEN)
            ns.link("set", index=eth[0], state="up")
    except NetlinkError as exc:
        raise LabError(f"{host.name}: network setup failed: {exc}") from exc


def add_missing_addresses(host: LabHost) -> list[str]:
    """Give a running host the addresses it lacks (a lab started before the host got an
    extra address); returns the addresses added."""
    added: list[str] = []
    try:
        with NetNS(host.netns) as ns:
            eth = ns.link_lookup(ifname="eth0")
            if not eth:
                return added
            have = {a.get_attr("IFA_ADDRESS") for a in ns.get_addr(index=eth[0], family=2)}
            for address in host.addresses:
                if address not in have:
                    ns.addr("add", index=eth[0], address=address, prefixlen=PREFIXLEN)
                    added.append(address)
    except (NetlinkError, OSError) as exc:
        raise LabError(f"{host.name}: cannot add its addresses: {exc}") from exc
    return added


def delete_host_network(name: str) -> list[str]:
    """Remove a host's namespace and veth; returns what was removed."""
    removed: list[str] = []
    veth = f"{VETH_PREFIX}{name}"[:IFNAMSIZ]
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=veth)
        if found:
            with contextlib.suppress(NetlinkError):
                ipr.link("del", index=found[0])
                removed.append(f"veth {veth}")
    ns = f"{NETNS_PREFIX}{name}" if not name.startswith(NETNS_PREFIX) else name
    if (NETNS_DIR / ns).exists():
        netns.remove(ns)
        removed.append(f"namespace {ns}")
    return removed


def teardown_network() -> list[str]:
    """Remove every lab namespace, veth and the bridge, including leftovers of hosts the
    lab no longer defines."""
    removed: list[str] = []
    names = {h.name for h in HOSTS}
    names |= {ns[len(NETNS_PREFIX) :] for ns in lab_namespaces()}
    for name in sorted(names):
        removed += delete_host_network(name)
    with IPRoute() as ipr:
        bridge = ipr.link_lookup(ifname=BRIDGE)
        if bridge:
            # Ports still on the bridge are lab veths of hosts the lab no longer knows.
            for link in ipr.get_links():
                if link.get_attr("IFLA_MASTER") == bridge[0]:
                    with contextlib.suppress(NetlinkError):
                        ipr.link("del", index=link["index"])
                        removed.append(f"link {link.get_attr('IFLA_IFNAME')}")
            with contextlib.suppress(NetlinkError):
                ipr.link("del", index=bridge[0])
                removed.append(f"bridge {BRIDGE}")
    return removed


def link_state(host: LabHost) -> str | None:
    """Operational state of the host's controller-side veth, or None when missing."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=host.veth)
        if not found:
            return None
        link = ipr.get_links(found[0])[0]
        state: str = link.get_attr("IFLA_OPERSTATE")
        return state
