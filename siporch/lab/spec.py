"""What the lab is made of: its hosts, addresses, names and where it keeps its state.

Every name the lab creates starts with ``sipo``, every address is in 198.18.0.0/15
(reserved for benchmarking, RFC 2544), and every file lives under the two directories
below, so the lab can find, and remove, everything it made and nothing else.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

LAB_NETWORK = "198.18.0.0/15"
PREFIXLEN = 15
BRIDGE = "sipo-br0"
CONTROLLER_ADDRESS = "198.18.0.1"
NETNS_PREFIX = "sipo-"
VETH_PREFIX = "sv-"
IFNAMSIZ = 15


def _short_veth(name: str) -> str:
    return f"{VETH_PREFIX}{name}"[:IFNAMSIZ]


@dataclass(frozen=True)
class LabHost:
    """One lab host: a network namespace, an overlay root and an sshd."""

    name: str
    address: str
    groups: tuple[str, ...]
    role: str
    description: str
    extra_addresses: tuple[str, ...] = field(default_factory=tuple)
    # Extra DNS names in the subject alternative name of the host's lab certificate; the
    # first one is also its common name (a provider's certificate is for its SIP names).
    tls_names: tuple[str, ...] = field(default_factory=tuple)

    @property
    def netns(self) -> str:
        return f"{NETNS_PREFIX}{self.name}"

    @property
    def veth(self) -> str:
        """Name of the controller-side end of this host's veth (on the bridge): the host's
        name cut to the interface name limit, or, when that is another host's
        (edge-central-2 and edge-central), the prefix and a hash of the name."""
        short = f"{VETH_PREFIX}{self.name}"[:IFNAMSIZ]
        if any(h.name != self.name and _short_veth(h.name) == short for h in HOSTS) and len(
            f"{VETH_PREFIX}{self.name}"
        ) > IFNAMSIZ:
            digest = hashlib.sha256(self.name.encode()).hexdigest()
            return f"{VETH_PREFIX}{digest[: IFNAMSIZ - len(VETH_PREFIX)]}"
        return short

    @property
    def addresses(self) -> tuple[str, ...]:
        return (self.address, *self.extra_addresses)


HOSTS: tuple[LabHost, ...] = (
    LabHost(
        "edge-central",
        "198.18.0.10",
        ("siporch_edge",),
        "edge",
        "central edge: Kamailio + rtpengine",
    ),
    LabHost(
        "edge-central-2",
        "198.18.0.12",
        ("siporch_edge",),
        "edge",
        "central site's second edge: Kamailio + rtpengine, standby for the floating "
        "address 198.18.0.9 (keepalived)",
    ),
    LabHost(
        "edge-branch",
        "198.18.0.11",
        ("siporch_edge",),
        "edge",
        "branch edge: Kamailio + rtpengine",
    ),
    LabHost("pbx-central", "198.18.0.20", ("siporch_pbx",), "pbx", "central PBX: Asterisk"),
    LabHost(
        "pbx-central-2",
        "198.18.0.21",
        ("siporch_pbx",),
        "pbx",
        "central site's second PBX: Asterisk, the same DIDs as pbx-central",
    ),
    LabHost(
        "pstn-gw",
        "198.18.0.50",
        ("lab_peers",),
        "peer",
        "internal PSTN gateway (direct SIP connection); also the branch office's PBX "
        "address (pbx-remote), where tests play that PBX with SIPp",
        ("198.18.2.20",),
    ),
    LabHost(
        "itsp-a1",
        "198.18.1.10",
        ("lab_peers",),
        "peer",
        "ITSP A, first SBC; also ITSP A's origination address",
        ("198.18.1.20",),
    ),
    LabHost("itsp-a2", "198.18.1.11", ("lab_peers",), "peer", "ITSP A, second SBC"),
    LabHost("itsp-b", "198.18.1.30", ("lab_peers",), "peer", "ITSP B registrar (TLS)"),
    LabHost("itsp-branch", "198.18.1.50", ("lab_peers",), "peer", "branch ITSP"),
    LabHost(
        "dns",
        "198.18.0.53",
        ("lab_infra",),
        "dns",
        "lab DNS server (dnsmasq): A, SRV and NAPTR records of the lab's names only",
    ),
    LabHost(
        "itsp-c1",
        "198.18.1.60",
        ("lab_peers",),
        "provider",
        "ITSP C, first SBC (sip1.itsp-c.example): Kamailio with digest auth, source "
        "filter and TLS, and a SIPp answering behind it",
        tls_names=("sip1.itsp-c.example", "itsp-c.example"),
    ),
    LabHost(
        "itsp-c2",
        "198.18.1.61",
        ("lab_peers",),
        "provider",
        "ITSP C, second SBC (sip2.itsp-c.example): Kamailio with digest auth, source "
        "filter and TLS, and a SIPp answering behind it",
        tls_names=("sip2.itsp-c.example", "itsp-c.example"),
    ),
)

# Call records at scale (docs/calls.md): a PostgreSQL server of the lab's own, which a
# model with records.backend postgresql points its edges at.
RECORDS_DB_HOST = "db-central"
RECORDS_DB_ADDRESS = "198.18.0.30"
HOSTS += (
    LabHost(
        RECORDS_DB_HOST,
        RECORDS_DB_ADDRESS,
        ("lab_infra",),
        "db",
        "PostgreSQL server for call records (records.backend postgresql); Redis for the "
        "central edges' rtpengines",
    ),
)

# The central edge pair's floating address (VRRP, keepalived on both central edges): no
# host's own address, held by whichever edge is master.
CENTRAL_VIP = "198.18.0.9"
# Redis for the central edges' rtpengines (media sessions, keyspace notifications).
REDIS_HOST = RECORDS_DB_HOST
REDIS_ADDRESS = RECORDS_DB_ADDRESS
REDIS_PORT = 6379

DNS_HOST = "dns"
DNS_ADDRESS = "198.18.0.53"
LAB_DOMAIN = "lab.example"


def host_by_name(name: str) -> LabHost | None:
    for host in HOSTS:
        if host.name == name:
            return host
    return None


def host_names() -> list[str]:
    return [h.name for h in HOSTS]


@dataclass(frozen=True)
class LabPaths:
    """Where the lab keeps things. Both roots can be moved with environment variables."""

    state: Path
    cache: Path

    @classmethod
    def default(cls) -> LabPaths:
        return cls(
            state=Path(os.environ.get("SIPORCH_LAB_STATE", "/var/lib/siporch/lab")),
            cache=Path(os.environ.get("SIPORCH_LAB_CACHE", "/var/cache/siporch/rootfs")),
        )

    @property
    def hosts_dir(self) -> Path:
        return self.state / "hosts"

    def host_dir(self, host: str) -> Path:
        return self.hosts_dir / host

    def host_root(self, host: str) -> Path:
        return self.host_dir(host) / "root"

    @property
    def ssh_key(self) -> Path:
        return self.state / "ssh" / "id_ed25519"

    @property
    def ca_dir(self) -> Path:
        return self.state / "ca"

    @property
    def state_file(self) -> Path:
        return self.state / "state.json"

    @property
    def impair_dir(self) -> Path:
        return self.state / "impair"

    @property
    def lock_file(self) -> Path:
        return self.state / ".lock"
