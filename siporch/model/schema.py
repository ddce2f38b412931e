"""The trunk model: typed, documented, and exported as JSON Schema.

Field names are the YAML keys under ``siporch:`` in ``inventory/<env>/group_vars/all/``.
Each class documents its fields; ``docs/model.md`` is the reference built from the same text.
"""

from __future__ import annotations

import ipaddress
import re
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    SecretStr,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

Name = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$"),
    Field(description="lower-case letters, digits and '-', at most 63 characters"),
]
E164 = Annotated[
    str,
    StringConstraints(pattern=r"^\+[1-9]\d{1,14}$"),
    Field(description="an E.164 number with its leading '+', e.g. +12025550100"),
]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


# ----- peers by name, networks (CIDR) as sources

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def _peer_address(value: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | str:
    """An IP address, or a host name per RFC 1123 (at least two labels, not all-numeric
    top label), lower-cased and without a trailing dot."""
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is neither an IP address nor a host name")
    text = value.strip()
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    name = text[:-1] if text.endswith(".") else text
    name = name.lower()
    labels = name.split(".")
    if (
        len(name) <= 253
        and len(labels) >= 2
        and all(_LABEL.match(label) for label in labels)
        and not labels[-1].isdigit()
    ):
        return name
    raise ValueError(f"{value!r} is neither an IP address nor a host name")


def _network(value: Any) -> Any:
    """A network in CIDR notation, or a single address (a /32 or /128)."""
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return ipaddress.ip_network(value)
    text = str(value).strip() if isinstance(value, str | int) else repr(value)
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError:
        pass
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an IP address nor a network (like 203.0.113.0/24)"
        ) from None
    raise ValueError(f"{text} has host bits set: the network is {net}")


PeerAddress = Annotated[
    IPAddress | str,
    PlainValidator(_peer_address),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "ipv4"},
                {"type": "string", "format": "ipv6"},
                {"type": "string", "format": "hostname"},
            ]
        }
    ),
]
Network = Annotated[IPNetwork, BeforeValidator(_network)]


def _check_regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"regular expression does not compile: {exc}") from None
    return value


class Strict(BaseModel):
    """Every model object rejects unknown keys, so a typo is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class NumberRule(Strict):
    """One number rule: when ``match`` matches the whole number, it becomes ``replace``.

    Rules are tried in order and the first that matches wins. ``match`` is a regular
    expression (Python/PCRE syntax, matched against the whole number); ``replace`` may use
    ``\\1``..``\\9`` for the groups of ``match``.
    """

    name: str = Field(description="a label shown by `siporch route`")
    match: str = Field(description="regular expression matched against the whole number")
    replace: str = Field(description="replacement, with \\1..\\9 for groups of `match`")

    _match = field_validator("match")(classmethod(lambda cls, v: _check_regex(v)))

    @model_validator(mode="after")
    def _groups_exist(self) -> NumberRule:
        if not self.replace:
            raise ValueError("replace must not be empty")
        if "$" in self.replace:
            raise ValueError("replace takes \\1..\\9 for groups, not '$'")
        if re.search(r"\\(?!\d)", self.replace):
            raise ValueError("a backslash in replace must be followed by a group number 1..9")
        groups = re.compile(self.match).groups
        for ref in re.findall(r"\\(\d)", self.replace):
            if int(ref) > groups:
                raise ValueError(f"replace refers to group \\{ref} but match has {groups} group(s)")
        return self


class RedisServer(Strict):
    """A Redis server (keyspace notifications on) that the edges' rtpengines keep their
    media sessions in."""

    address: IPAddress = Field(description="address of the server, as the edges reach it")
    port: int = Field(default=6379, ge=1, le=65535)


class SiteEdges(Strict):
    """How the edges of a site share their work (docs/architecture.md, "Redundancy").

    ``active-standby``: two edges share the floating address ``vip`` (VRRP, keepalived);
    providers and PBXs see only that address, the first edge listed holds it while it
    runs, the other takes it over. ``active-active``: every edge takes calls at its own
    address (providers and PBXs list them all, or find them by DNS SRV). Either way the
    edges share dialogs, channel counts and ban lists over Kamailio DMQ, and their
    rtpengines keep media sessions in ``redis`` when it is given.
    """

    hosts: list[Name] = Field(
        min_length=2, description="the site's edge hosts, in order of preference"
    )
    mode: Literal["active-standby", "active-active"] = Field(
        description="active-standby: one floating address (vip) held by one edge at a "
        "time; active-active: every edge at its own address"
    )
    vip: IPAddress | None = Field(
        default=None, description="the floating address of an active-standby pair"
    )
    network: IPNetwork | None = Field(
        default=None,
        description="the network the edges and the vip share (the VRRP segment)",
    )
    interface: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,15}$")] = Field(
        default="eth0", description="the edges' network interface that carries the vip"
    )
    vrrp_id: int = Field(
        default=51, ge=1, le=255, description="VRRP virtual router id, unique on the segment"
    )
    dmq_port: int = Field(
        default=5090,
        ge=1,
        le=65535,
        description="UDP port of Kamailio DMQ between the edges, on each edge's own address",
    )
    redis: RedisServer | None = Field(
        default=None,
        description="Redis server the rtpengines keep their sessions in (each edge its "
        "own database, subscribed to the others'): a standby takes the media of the calls "
        "over",
    )


class Site(Strict):
    """A site: the central site, or a branch site with its own edge and trunk."""

    kind: Literal["central", "branch"] = Field(description="central or branch")
    description: str = Field(default="", description="free text")
    country_code: Annotated[str, StringConstraints(pattern=r"^[1-9]\d{0,2}$")] | None = Field(
        default=None,
        description="not used: the site's normalization rules carry its country code; "
        "accepted so that older inventories load, with a warning",
    )
    backup_site: Name | None = Field(
        default=None, description="the site whose trunks take over when this site's are down"
    )
    pbx_addresses: list[IPAddress] = Field(
        default_factory=list,
        description="PBXs or gateways at the site that siporch does not configure: the "
        "site's edges take their calls as a PBX host's",
    )
    normalization: list[NumberRule] = Field(
        default_factory=list, description="dial plan: dialled number -> E.164, first match wins"
    )
    edges: SiteEdges | None = Field(
        default=None,
        description="several edges at the site: how they share the work (unset: one edge, "
        "or edges that share no state)",
    )


class Transport(Strict):
    """A SIP listener of an edge or PBX host."""

    protocol: Literal["udp", "tcp", "tls"] = Field(description="SIP transport")
    port: int = Field(ge=1, le=65535, description="listening port")


class TlsFiles(Strict):
    """Certificate files on the host (paths on the target, not secrets in the model)."""

    certificate: str = Field(description="PEM certificate chain path on the host")
    private_key: str = Field(description="PEM private key path on the host")
    ca: str | None = Field(default=None, description="PEM CA bundle to verify peers")
    verify_peer: bool = Field(default=False, description="require and verify peer certificates")


class KamailioSettings(Strict):
    """Process sizing of Kamailio on an edge host."""

    shm_mb: int = Field(
        default=256,
        ge=64,
        le=65536,
        description="shared memory, MB (-m); at least this, more when the data tables need it",
    )
    pkg_mb: int = Field(
        default=16,
        ge=4,
        le=1024,
        description="private memory per process, MB (-M); at least this, more when the data "
        "tables need it",
    )
    children: int = Field(default=8, ge=1, le=256, description="worker processes per listener")
    memory_manager: Literal["tlsf", "fm", "qm"] = Field(
        default="tlsf",
        description="Kamailio's memory manager (-x): tlsf (O(1) allocations), fm, or qm "
        "(Kamailio's default, with debugging data kept for every allocation: for "
        "troubleshooting memory, about 1.5x the CPU per call)",
    )


class RtpengineSettings(Strict):
    """rtpengine on an edge host."""

    ng_port: int = Field(default=2223, ge=1, le=65535, description="ng control port on 127.0.0.1")
    port_min: int = Field(default=30000, ge=1024, le=65535)
    port_max: int = Field(default=39999, ge=1024, le=65535)

    @model_validator(mode="after")
    def _range(self) -> RtpengineSettings:
        if self.port_min >= self.port_max:
            raise ValueError("port_min must be lower than port_max")
        return self


class Ami(Strict):
    """Asterisk Manager Interface of a PBX host, used by `siporch status`."""

    bind: IPAddress | None = Field(default=None, description="defaults to the host address")
    port: int = Field(default=5038, ge=1, le=65535)
    user: Name
    secret: SecretStr = Field(description="keep it in Ansible Vault")
    permit: list[IPNetwork] = Field(
        default_factory=list, description="networks allowed to log in (127.0.0.1 always is)"
    )


class Host(Strict):
    """A host siporch configures: an `edge` (Kamailio + rtpengine) or a `pbx` (Asterisk)."""

    site: Name = Field(description="the site the host belongs to")
    role: Literal["edge", "pbx"] = Field(
        description="edge: Kamailio + rtpengine at the border; pbx: Asterisk"
    )
    address: IPAddress = Field(description="the address SIP listens on")
    public_address: IPAddress | None = Field(
        default=None, description="address to advertise when the host is behind NAT"
    )
    transports: list[Transport] = Field(
        default_factory=lambda: [Transport(protocol="udp", port=5060)]
    )
    tls: TlsFiles | None = None
    kamailio: KamailioSettings = Field(default_factory=KamailioSettings)
    rtpengine: RtpengineSettings = Field(default_factory=RtpengineSettings)
    ami: Ami | None = None


class Peer(Strict):
    """One SBC or gateway of a trunk (termination: where calls are sent).

    `address` is an IP address or a host name. A host name is resolved by the edge at
    call time, never when siporch renders: without `port` it is a SIP domain resolved as
    RFC 3263 says (NAPTR where published, then SRV `_sip._udp`, `_sip._tcp` or
    `_sips._tcp` by priority and weight, then A/AAAA), and the SRV targets are tried in
    order when one does not answer; with `port` it is A/AAAA only. With `transport: udp`
    (the default) and no port, the NAPTR records choose the transport; `tcp` or `tls` pin
    it (SRV of that transport). Over TLS the peer's certificate must name `address`
    (its subject alternative names, or a wildcard for it), or the call fails.
    """

    address: PeerAddress = Field(
        description="IP address or host name (a SIP domain, resolved by the edge) of the "
        "SBC or gateway"
    )
    port: int | None = Field(default=None, ge=1, le=65535, description="5060, or 5061 for TLS")
    transport: Literal["udp", "tcp", "tls"] = Field(default="udp", description="SIP transport")
    priority: int = Field(default=1, ge=0, le=1000, description="lower is tried first")
    weight: int = Field(default=50, ge=1, le=100, description="share among equal priorities")

    @property
    def effective_port(self) -> int:
        return self.port or (5061 if self.transport == "tls" else 5060)

    @property
    def is_name(self) -> bool:
        """True when `address` is a host name the edge resolves at call time."""
        return isinstance(self.address, str)


class IpAuth(Strict):
    """The ITSP recognises the organisation by its source address (and vice versa)."""

    type: Literal["ip"]


class RegisterAuth(Strict):
    """Digest registration to the ITSP's registrar."""

    type: Literal["register"]
    username: str = Field(min_length=1)
    password: SecretStr = Field(description="keep it in Ansible Vault")
    realm: str | None = Field(default=None, description="digest realm, if the ITSP needs it")
    expiry: int = Field(default=3600, ge=60, le=86400, description="seconds")
    registrar: str | None = Field(default=None, description="defaults to the first peer")
    contacts: Literal["per-edge", "one"] = Field(
        default="per-edge",
        description="per-edge: at a site whose edges are active-active, the PBX registers "
        "once through each edge, and the provider holds one binding per edge (each edge's "
        "own address as the contact), so calls keep arriving while one edge is down; one: "
        "a single registration, through the site's first edge, for a provider that keeps "
        "one binding per account. A single edge or an active-standby pair (its floating "
        "address) registers once either way",
    )


def _check_auth_text(value: str | None) -> str | None:
    if value is not None and (not value or re.search(r'[\x00-\x1f\x7f"\\]', value)):
        raise ValueError("must not be empty or hold control characters, '\"' or '\\'")
    return value


class OutboundCredentials(Strict):
    """Digest credentials with which the edge answers a 401/407 challenge from the trunk
    (initial INVITEs and in-dialog requests), with or without a registration."""

    username: str = Field(max_length=128, description="digest user name")
    password: SecretStr = Field(description="keep it in Ansible Vault")
    realm: str | None = Field(
        default=None,
        max_length=255,
        description="answer only this realm; none: the realm challenged",
    )

    _username = field_validator("username")(classmethod(lambda cls, v: _check_auth_text(v)))
    _realm = field_validator("realm")(classmethod(lambda cls, v: _check_auth_text(v)))

    @field_validator("password")
    @classmethod
    def _password(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("password must not be empty")
        if re.search(r"[\x00-\x1f\x7f]", value.get_secret_value()):
            raise ValueError("password must not hold control characters")
        return value


class Media(Strict):
    """How media flows for a trunk."""

    mode: Literal["anchor", "bypass"] = Field(
        default="anchor", description="anchor: through rtpengine on the edge; bypass: end to end"
    )
    srtp: Literal["off", "optional", "required"] = Field(
        default="off", description="SRTP (SDES) toward the trunk"
    )
    symmetric_rtp: bool = Field(default=True, description="latch RTP to where it comes from")
    allow_internal_addresses: bool = Field(
        default=False,
        description="with `bypass` on an `itsp` trunk: accept that the PBX's internal media "
        "addresses go to the provider although security.topology_hiding is on",
    )
    rtp_timeout: int | None = Field(
        default=None,
        ge=0,
        le=86400,
        description="seconds without RTP after which the PBX hangs up a call of this trunk "
        "(0: never; unset: calls.rtp_timeout)",
    )
    rtp_timeout_hold: int | None = Field(
        default=None,
        ge=0,
        le=86400,
        description="the same for a call on hold (0: never; unset: calls.rtp_timeout_hold)",
    )

    @field_validator("srtp", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `off` as false.
        return "off" if value is False else value


class SessionTimers(Strict):
    """RFC 4028 session timers."""

    mode: Literal["accept", "originate", "always", "no"] = Field(
        default="accept",
        description="as Asterisk's `timers` on inbound calls: accept, originate, always, no; "
        "on outbound calls the edge applies it per branch toward the trunk: no removes "
        "Session-Expires, Min-SE and the timer option tag, accept keeps (and reduces to "
        "`expires`) what the PBX sends, originate and always also insert one",
    )
    expires: int = Field(
        default=1800,
        ge=90,
        le=86400,
        description="session interval (s) asked of the trunk; outbound, a longer one from the "
        "PBX is reduced to it",
    )
    min_se: int = Field(
        default=90,
        ge=90,
        le=86400,
        description="the shortest session interval (s) accepted; outbound, the Min-SE sent to "
        "the trunk is at least this",
    )

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_no(cls, value: Any) -> Any:
        return "no" if value is False else value


class Probe(Strict):
    """OPTIONS probing of each peer."""

    enabled: bool = Field(default=True, description="probe peers with OPTIONS")
    interval: int = Field(
        default=30,
        ge=5,
        le=3600,
        description="seconds between probes of each peer",
    )
    threshold: int = Field(
        default=3,
        ge=1,
        le=10,
        description="failed probes in a row before a peer is down",
    )


class Translation(Strict):
    """Per-trunk number translation between E.164 and the ITSP's format."""

    outbound: list[NumberRule] = Field(
        default_factory=list, description="E.164 -> the number sent to the trunk"
    )
    inbound: list[NumberRule] = Field(
        default_factory=list, description="the number received from the trunk -> E.164"
    )
    calling: list[NumberRule] = Field(
        default_factory=list,
        description="outbound calling number (From user, P-Asserted-Identity) -> the format "
        "the trunk wants",
    )


class CallerId(Strict):
    """What calling number the trunk presents."""

    policy: Literal["passthrough", "fixed", "anonymous"] = Field(
        default="passthrough",
        description="passthrough: the caller's number; fixed: `number` in From and "
        "P-Asserted-Identity; anonymous: From anonymous@anonymous.invalid, Privacy: id, and "
        "the real number in P-Asserted-Identity",
    )
    number: E164 | None = Field(
        default=None,
        description="for `fixed` (required) and `anonymous` (the number asserted in "
        "P-Asserted-Identity; default: the caller's)",
    )

    @model_validator(mode="after")
    def _fixed(self) -> CallerId:
        if self.policy == "fixed" and not self.number:
            raise ValueError("policy 'fixed' needs a number")
        return self


class TrunkSecurity(Strict):
    """Who may send calls on this trunk."""

    allowed_sources: list[Network] = Field(
        default_factory=list,
        description="source addresses or networks (CIDR); empty means the trunk's IP "
        "peers and inbound_addresses",
    )


Codec = Literal["pcmu", "pcma", "g722", "g729", "opus", "gsm"]


def _default_codecs() -> list[Codec]:
    return ["pcmu", "pcma"]


class Trunk(Strict):
    """A SIP trunk: to an ITSP (`itsp`) or a direct SIP connection to an internal PBX or
    PSTN gateway (`direct`)."""

    description: str = Field(default="", description="free text shown by status")
    id: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description=(
            "numeric id (dispatcher set, permissions group, htable keys, dialog profile); "
            "unset: the id the controller's last release of the inventory gave the trunk, "
            "or for a new trunk the lowest id free (never one a release still holds); an id "
            "once given is kept, so adding or removing a trunk renumbers no other; a deploy "
            "refuses to change the id the hosts run unless this says so (from a controller "
            "without releases: set it, or `siporch render --ids-from-hosts`)"
        ),
    )
    site: Name
    kind: Literal["itsp", "direct"] = Field(
        description="itsp: a provider beyond the firewall; direct: an internal PBX or gateway"
    )
    peers: list[Peer] = Field(min_length=1, description="termination: where calls are sent")
    inbound_addresses: list[Network] = Field(
        default_factory=list,
        description="origination addresses or networks (CIDR, e.g. the provider's "
        "published signalling blocks) other than the IP peers",
    )
    inbound_trust_resolved: bool = Field(
        default=False,
        description="also take calls from the addresses the edge resolves for host-name "
        "peers (re-resolved at run time, no deploy; one address per peer name)",
    )
    auth: Annotated[IpAuth | RegisterAuth, Field(discriminator="type")] = Field(
        default_factory=lambda: IpAuth(type="ip")
    )
    codecs: list[Codec] = Field(
        default_factory=_default_codecs, min_length=1, description="in order of preference"
    )
    dtmf: Literal["rfc4733", "inband", "info", "auto"] = Field(
        default="rfc4733", description="how DTMF digits are sent"
    )
    media: Media = Field(default_factory=Media)
    t38: bool = Field(
        default=False,
        description="allow T.38 fax re-INVITEs (both directions; with false the edge answers "
        "an image/t38 offer in the trunk's dialogs with 488)",
    )
    session_timers: SessionTimers = Field(default_factory=SessionTimers)
    keepalive: bool = Field(
        default=True,
        description="the edge probes the trunk's side of its calls with in-dialog OPTIONS "
        "(calls.keepalive); off for a provider that answers them with 481",
    )
    refer: bool = Field(default=False, description="pass REFER (transfers) to the trunk")
    max_early_dialogs: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="outbound calls not yet answered on the trunk at once (unset: no limit); "
        "the next one is treated as at max_channels (next trunk, or 503)",
    )
    pai: Literal["forward", "strip"] = Field(
        default="forward", description="forward or strip P-Asserted-Identity"
    )
    strip_plus: bool = Field(default=False, description="remove a leading '+' from URIs sent")
    from_user: str | None = Field(default=None, description="user part of From sent")
    from_domain: str | None = Field(default=None, description="host part of From sent")
    max_channels: int | None = Field(default=None, ge=1, le=100000, description="None: no limit")
    at_capacity: Literal["failover", "reject"] = Field(
        default="failover", description="at max_channels: try the next trunk, or answer 503"
    )
    probe: Probe = Field(default_factory=Probe)
    translation: Translation = Field(default_factory=Translation)
    caller_id: CallerId = Field(default_factory=CallerId)
    security: TrunkSecurity = Field(default_factory=TrunkSecurity)
    credentials: OutboundCredentials | None = Field(
        default=None,
        description="answer 401/407 challenges from the trunk at the edge; a `register` "
        "trunk without it answers with its registration's username, password and realm",
    )
    tech_prefix: Annotated[str, StringConstraints(pattern=r"^[0-9*#]{1,16}$")] | None = Field(
        default=None,
        description="digits, * or # put in front of the called number sent (after translation)",
    )

    def outbound_credentials(self) -> OutboundCredentials | None:
        """What the edge answers challenges with: `credentials`, else the registration's."""
        if self.credentials is not None:
            return self.credentials
        if isinstance(self.auth, RegisterAuth):
            return OutboundCredentials.model_construct(
                username=self.auth.username, password=self.auth.password, realm=self.auth.realm
            )
        return None

    @cached_property
    def source_networks(self) -> tuple[IPNetwork, ...]:
        """The source networks this trunk's calls may come from (computed once)."""
        return tuple(self._sources())

    def sources(self) -> list[IPNetwork]:
        """The source networks this trunk's calls may come from."""
        return list(self.source_networks)

    def _sources(self) -> list[IPNetwork]:
        if self.security.allowed_sources:
            return list(self.security.allowed_sources)
        seen: dict[IPNetwork, None] = {}
        for p in self.peers:
            address = p.address
            if not isinstance(address, str):
                # from (int, length): the fast way (the edge's render, 10,000 trunks)
                net_type = ipaddress.IPv4Network if address.version == 4 else ipaddress.IPv6Network
                seen.setdefault(net_type((int(address), address.max_prefixlen)), None)
        for net in self.inbound_addresses:
            seen.setdefault(net, None)
        return list(seen)


class DidRange(Strict):
    """A block of E.164 numbers, both ends included, of the same length."""

    start: E164
    end: E164

    @model_validator(mode="after")
    def _order(self) -> DidRange:
        if len(self.start) != len(self.end):
            raise ValueError("start and end must have the same number of digits")
        if int(self.start[1:]) > int(self.end[1:]):
            raise ValueError("start is after end")
        return self

    def __contains__(self, number: str) -> bool:
        return (
            len(number) == len(self.start)
            and number.startswith("+")
            and number[1:].isdigit()
            and int(self.start[1:]) <= int(number[1:]) <= int(self.end[1:])
        )


class PbxGroup(Strict):
    """PBX hosts that answer the same DIDs (each renders the same dialplan for them). The
    edge sends a call to one member and, when it does not answer (no response, 408, 5xx,
    or the send fails), to the next; a member that failed a call, or does not answer the
    edge's OPTIONS probes, is skipped until it answers them again."""

    hosts: list[Name] = Field(min_length=1, description="PBX hosts, in failover order")
    strategy: Literal["failover", "round-robin"] = Field(
        default="failover",
        description="failover: the first member that is up takes every call; round-robin: "
        "calls are spread over the members that are up (both go on to the next on failure)",
    )


class Destination(Strict):
    """Where an inbound call goes: a context on a PBX host or on a PBX group, or a direct
    connection."""

    host: Name | None = Field(default=None, description="a PBX host")
    group: Name | None = Field(
        default=None, description="a PBX group (`pbx_groups`), instead of one host"
    )
    context: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,79}$")] | None = Field(
        default=None, description="Asterisk dialplan context on that host (every group member)"
    )
    trunk: Name | None = Field(default=None, description="a `direct` trunk to relay to")

    @model_validator(mode="after")
    def _one(self) -> Destination:
        given = [x for x in (self.host, self.group, self.trunk) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of host or group (with context), or trunk")
        if (self.host is not None or self.group is not None) and self.context is None:
            raise ValueError("a host or group destination needs a context")
        if self.trunk is not None and self.context is not None:
            raise ValueError("a trunk destination takes no context")
        return self


class Did(Strict):
    """Inbound numbers (a range or a pattern) and their destination."""

    name: Name = Field(description="unique label")
    range: DidRange | None = Field(default=None, description="a block of numbers")
    pattern: str | None = Field(default=None, description="regex over the E.164 number")
    destination: Destination

    _pattern = field_validator("pattern")(
        classmethod(lambda cls, v: v if v is None else _check_regex(v))
    )

    @model_validator(mode="after")
    def _one(self) -> Did:
        if (self.range is None) == (self.pattern is None):
            raise ValueError("give either range or pattern")
        return self

    def matches(self, number: str) -> bool:
        if self.range is not None:
            return number in self.range
        assert self.pattern is not None
        return re.fullmatch(self.pattern, number) is not None


FailoverOn = Annotated[
    str,
    StringConstraints(pattern=r"^(5xx|6xx|timeout|unreachable|capacity|[3-6]\d\d)$"),
    Field(description="5xx, 6xx, timeout, unreachable, capacity, or a response code"),
]


#: When a route goes on to its next trunk unless it says otherwise; also what the edge uses
#: for a call with no route (a DID served by a trunk, a call another edge relays).
DEFAULT_FAILOVER_ON = ("5xx", "timeout", "unreachable", "capacity")


class Route(Strict):
    """An outbound route: numbers (after normalization) -> trunks."""

    name: Name = Field(description="unique label")
    sites: list[Name] = Field(default_factory=list, description="empty: every site")
    pattern: str = Field(description="regex over the normalized number")
    exceptions: list[str] = Field(default_factory=list, description="regexes that skip the route")
    trunks: list[Name] = Field(min_length=1, description="in failover order")
    strategy: Literal["failover", "weighted"] = Field(
        default="failover", description="trunks in order, or spread by weight"
    )
    weights: dict[Name, int] = Field(default_factory=dict, description="for `weighted`")
    failover_on: list[FailoverOn] = Field(default_factory=lambda: list(DEFAULT_FAILOVER_ON))
    failover_timeout: int = Field(
        default=10, ge=1, le=120, description="seconds without an answer before the next peer"
    )

    _pattern = field_validator("pattern")(classmethod(lambda cls, v: _check_regex(v)))

    @field_validator("exceptions")
    @classmethod
    def _exceptions(cls, value: list[str]) -> list[str]:
        for v in value:
            _check_regex(v)
        return value

    def matches(self, number: str) -> bool:
        return re.fullmatch(self.pattern, number) is not None and not any(
            re.fullmatch(e, number) for e in self.exceptions
        )


class Flood(Strict):
    """Flood protection (Kamailio pike): more than `density` requests from one source in
    `sampling_time` seconds blocks it for `block_seconds`."""

    density: int = Field(default=30, ge=1, le=100000)
    sampling_time: int = Field(default=2, ge=1, le=300)
    block_seconds: int = Field(default=300, ge=1, le=86400)


class Security(Strict):
    """Edge-wide security policy."""

    flood: Flood = Field(default_factory=Flood)
    blocked_user_agents: list[str] = Field(
        default_factory=lambda: ["friendly-scanner", "sipvicious", "sipcli", "VaxSIPUserAgent"],
        description="User-Agent substrings dropped without an answer (case-insensitive)",
    )
    topology_hiding: bool = Field(
        default=True, description="no internal address in what the edge sends to a trunk"
    )


_PG_IDENT = r"^[a-z_][a-z0-9_]{0,62}$"


class RecordsPostgresql(Strict):
    """The PostgreSQL server every edge writes its call records to (Kamailio db_postgres);
    the edges must reach it, and `siporch calls` reads it through an edge."""

    host: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9.:-]{0,252}$",
        description="address or name of the server, as the edges reach it",
    )
    port: int = Field(default=5432, ge=1, le=65535)
    database: str = Field(default="siporch", pattern=_PG_IDENT)
    user: str = Field(default="siporch", pattern=_PG_IDENT)
    password: SecretStr = Field(description="keep it in Ansible Vault")

    @field_validator("password")
    @classmethod
    def _password(cls, value: SecretStr) -> SecretStr:
        # it travels in Kamailio's database URL (postgres://user:password@host/db), which
        # has no escaping: letters, digits and . _ ~ + = - only
        if not re.fullmatch(r"[A-Za-z0-9._~+=-]{1,128}", value.get_secret_value()):
            raise ValueError(
                "password must be 1-128 of letters, digits and . _ ~ + = - "
                "(it is part of Kamailio's database URL)"
            )
        return value


class Records(Strict):
    """Call records written by each edge (Kamailio acc): one per call and one per leg, in a
    local SQLite database outside the release directories (the default), or in one
    PostgreSQL database for every edge (docs/calls.md)."""

    enabled: bool = Field(default=True, description="write call records on every edge")
    backend: Literal["sqlite", "postgresql"] = Field(
        default="sqlite",
        description="sqlite: a database on each edge; postgresql: the server of `postgresql`",
    )
    postgresql: RecordsPostgresql | None = Field(
        default=None, description="the server, when `backend` is postgresql"
    )
    retention_days: int = Field(
        default=90, ge=1, le=3650, description="records older than this are deleted"
    )
    max_mb: int = Field(
        default=512,
        ge=1,
        le=2047,
        description="size bound of an edge's SQLite record database; the oldest records go "
        "first (PostgreSQL: bounded by the retention only)",
    )

    @model_validator(mode="after")
    def _backend(self) -> Records:
        if self.backend == "postgresql" and self.postgresql is None:
            raise ValueError("backend postgresql needs the `postgresql` section (host, password)")
        return self


class DialogKeepalive(Strict):
    """In-dialog OPTIONS the edge sends to both sides of every answered call (Kamailio's
    dialog keepalives): a side that does not answer (or answers 481) `failures` times in a
    row ends the call, with a BYE to both sides, 10 s after the last failure."""

    enabled: bool = Field(default=True, description="send dialog keepalives")
    interval: int = Field(
        default=30,
        ge=30,
        le=3600,
        description="seconds between keepalives of a call (Kamailio's shortest is 30)",
    )
    failures: int = Field(
        default=2,
        ge=1,
        le=10,
        description="keepalives in a row without an answer (or answered 481) before the "
        "call is ended",
    )


class Calls(Strict):
    """How calls whose far end is gone are ended (docs/kamailio.md, docs/asterisk.md): the
    edge's dialog keepalives, and the PBX's RTP timeouts on anchored calls."""

    keepalive: DialogKeepalive = Field(default_factory=DialogKeepalive)
    rtp_timeout: int = Field(
        default=60,
        ge=0,
        le=86400,
        description="seconds without RTP after which the PBX hangs up a call (0: never); "
        "a trunk's media.rtp_timeout overrides it for that trunk's inbound calls",
    )
    rtp_timeout_hold: int = Field(
        default=600,
        ge=0,
        le=86400,
        description="the same for a call on hold (0: never)",
    )


class Model(Strict):
    """The whole trunk model of an organisation."""

    version: Literal[1] = Field(default=1, description="model format version")
    organisation: str = Field(default="", description="shown by status")
    domain: str = Field(description="the organisation's SIP domain")
    sites: dict[Name, Site] = Field(min_length=1)
    hosts: dict[Name, Host] = Field(min_length=1)
    trunks: dict[Name, Trunk] = Field(default_factory=dict)
    pbx_groups: dict[Name, PbxGroup] = Field(
        default_factory=dict,
        description="PBX hosts that share DIDs, with failover between them (a DID's "
        "`destination.group`)",
    )
    inbound: list[Did] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)
    security: Security = Field(default_factory=Security)
    records: Records = Field(default_factory=Records)
    calls: Calls = Field(default_factory=Calls)

    def hosts_with_role(self, role: str, site: str | None = None) -> list[str]:
        return [
            n for n, h in self.hosts.items() if h.role == role and (site is None or h.site == site)
        ]

    def edge_pair(self, host: str) -> SiteEdges | None:
        """The redundancy of ``host``'s site when ``host`` is one of its listed edges."""
        h = self.hosts.get(host)
        site = self.sites.get(h.site) if h is not None else None
        if site is None or site.edges is None or host not in site.edges.hosts:
            return None
        return site.edges

    def edge_targets(self, site: str | None = None) -> list[str]:
        """The edges (of ``site``) others send SIP to: an active-standby pair counts once,
        as its first edge (at the pair's floating address, `sip_address`)."""
        seen: set[IPAddress] = set()
        out: list[str] = []
        for name in self.hosts_with_role("edge", site):
            address = self.sip_address(name)
            if address not in seen:
                seen.add(address)
                out.append(name)
        return out

    def sip_address(self, host: str) -> IPAddress:
        """Where the others reach ``host`` for SIP: the vip of its active-standby pair,
        else its own address."""
        pair = self.edge_pair(host)
        if pair is not None and pair.mode == "active-standby" and pair.vip is not None:
            return pair.vip
        return self.hosts[host].address

    def destination_hosts(self, destination: Destination) -> list[str]:
        """The PBX hosts of a DID's destination, in failover order (empty for a trunk)."""
        if destination.host is not None:
            return [destination.host]
        if destination.group is not None and destination.group in self.pbx_groups:
            return list(self.pbx_groups[destination.group].hosts)
        return []

    def routes_for_site(self, site: str) -> list[Route]:
        return [r for r in self.routes if not r.sites or site in r.sites]
