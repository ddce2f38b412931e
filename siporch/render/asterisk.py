"""Asterisk on PBX hosts: PJSIP trunks, the DID dialplan, AMI for `siporch status`.

Every call between Asterisk and the outside world passes through an edge host:

* inbound, the edge relays the call with ``X-Siporch-Trunk: <trunk>``; each trunk has an
  endpoint identified by that header (``identify`` with ``match_header``), so the trunk's
  media, DTMF, timer and caller-ID options apply, and context ``siporch-inbound`` sends the
  DID to its destination context;
* outbound, context ``siporch-outbound`` dials ``PJSIP/<number>@siporch-edge-<edge>``, the
  endpoint of the site's edge; the edge picks the route and the trunk, and reports the
  trunk back in the ``X-Siporch-Trunk`` header of its responses.

The PBX's Asterisk is shared with the site: it keeps its packaged config directory
(``/etc/asterisk``) and its own files (phones, dialplan, contexts). siporch renders only its
own files (``SITE_INCLUDES``), which the site's ``pjsip.conf``, ``extensions.conf``,
and ``manager.conf`` pull in with ``#tryinclude`` lines that point at the current
release (``/etc/siporch/current/asterisk/...``); the deploy writes those lines.

The PBX side of every call is recorded too: the dialplan sets the CDR variable
``siporch_callid`` to the SIP Call-ID of the call's leg toward the edge (inbound: the
INVITE's; outbound: the one the PJSIP channel toward the edge sends), and siporch's
``cdr_sqlite3_custom`` category writes those CDRs to its own database (``CDR_DB``), which
``siporch calls`` joins to the edges' records by Call-ID (docs/calls.md).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field

from siporch.errors import SiporchError
from siporch.model.schema import Host, Model, Trunk
from siporch.numbers import digit_blocks
from siporch.render import files as file_meta
from siporch.render import model_part_json, stored_text
from siporch.render.env import render_template
from siporch.render.files import (
    CDR_FILE,
    EXTENSIONS_FILE,
    MANAGER_FILE,
    PJSIP_FILE,
    TRANSPORTS_FILE,
)

#: Where the current release's Asterisk files are (the site's include lines point here).
ASTERISK_DIR = "/etc/siporch/current/asterisk"
#: The site's Asterisk config directory (packaged default).
SITE_ETC = "/etc/asterisk"


#: siporch's own CDR database on a PBX (cdr_sqlite3_custom, one database per category):
#: the PBX side of each call, keyed by the SIP Call-ID the edge records too. Outside the
#: release directories (kept across deploys and rollbacks), in a directory only root and
#: Asterisk's user can enter (the asterisk_pbx role creates it).
CDR_DIR = "/var/lib/siporch/pbx-records"
CDR_DB = f"{CDR_DIR}/cdr.db"
#: The table and its columns, in the order of CDR_FIELDS.
CDR_TABLE = "siporch_cdr"
CDR_COLUMNS: list[str] = [
    "callid",
    "start",
    "answer",
    "end",
    "clid",
    "src",
    "dst",
    "dcontext",
    "channel",
    "dstchannel",
    "lastapp",
    "disposition",
    "duration",
    "billsec",
    "accountcode",
    "uniqueid",
    "linkedid",
]
#: cdr_sqlite3_custom "advanced" fields, one per column: the Call-ID is the CDR variable
#: siporch_callid the rendered dialplan sets; times as epoch seconds.
CDR_FIELDS: list[str] = [
    {
        "callid": "siporch_callid(uservar)",
        "start": "start(double)",
        "answer": "answer(double)",
        "end": "end(double)",
    }.get(column, column)
    for column in CDR_COLUMNS
]

#: site file in SITE_ETC -> siporch file it includes (from the current release).
SITE_INCLUDES: dict[str, str] = {
    "pjsip.conf": PJSIP_FILE,
    "extensions.conf": EXTENSIONS_FILE,
    "manager.conf": MANAGER_FILE,
    "cdr_sqlite3_custom.conf": CDR_FILE,
}

#: glob of a rendered path -> reload action; the first match wins.
RELOADS: list[tuple[str, str]] = file_meta.RELOADS["asterisk"]

#: Files that carry secrets: deployed with mode 0640, never shown in diffs.
SECRET_FILES: list[str] = file_meta.SECRET_FILES["asterisk"]

#: Model codec name -> Asterisk format name.
CODECS: dict[str, str] = {
    "pcmu": "ulaw",
    "pcma": "alaw",
    "g722": "g722",
    "g729": "g729",
    "opus": "opus",
    "gsm": "gsm",
}

#: Model session timer mode -> PJSIP ``timers``.
TIMERS: dict[str, str] = {"no": "no", "accept": "yes", "originate": "always", "always": "required"}

#: Model DTMF mode -> PJSIP ``dtmf_mode``.
DTMF: dict[str, str] = {"rfc4733": "rfc4733", "inband": "inband", "info": "info", "auto": "auto"}

#: Channel variables AMI adds to every channel event (``channelvars``), for `siporch status`.
CHANNEL_VARS: list[str] = ["SIPORCH_TRUNK", "SIPORCH_DIRECTION"]

#: Protocols the PBX may use toward an edge, in order of preference.
_EDGE_PROTOCOLS = ("udp", "tcp")

#: How often (seconds) the PBX qualifies each edge endpoint's contact with an OPTIONS, and
#: how long (seconds) it waits for the answer. A contact that does not answer in time is
#: marked unavailable: a Dial of that endpoint then fails at once (CHANUNAVAIL) and
#: `siporch-outbound` goes on to the next edge (active-active edges, or the backup site's),
#: where a Dial of a silent edge would wait for the INVITE transaction's timer B (32 s)
#: first. So a dead edge costs new calls its timer B for at most frequency + timeout
#: seconds (measured: docs/benchmarks.md), and the edge is tried again one qualify after
#: it answers. One OPTIONS per edge every 5 s is nothing to a Kamailio; the timeout is
#: Asterisk's default (an edge on the site's network answers within milliseconds).
EDGE_QUALIFY_FREQUENCY = 5
EDGE_QUALIFY_TIMEOUT = 3.0
#: The qualify of the other edges' endpoints (other sites' edges: the PBX never dials
#: them, they only send it calls), for the status alone.
EDGE_QUALIFY_FREQUENCY_OTHER = 30


class AsteriskRenderError(SiporchError):
    """The model cannot be rendered into an Asterisk configuration."""


# --------------------------------------------------------------------------------------
# DID ranges and patterns -> Asterisk extension patterns
# --------------------------------------------------------------------------------------


def _digit_class(lo: str, hi: str) -> str:
    """One pattern position covering the digits lo..hi."""
    if lo == hi:
        return lo
    if lo == "0" and hi == "9":
        return "X"
    return f"[{lo}-{hi}]"


def did_range_patterns(start: str, end: str) -> list[str]:
    """Asterisk extension patterns matching exactly the numbers start..end (both included).

    ``start`` and ``end`` have the same length and may share a non-digit prefix such as
    ``+``. A block of one number is returned as the plain number.
    """
    if len(start) != len(end):
        raise AsteriskRenderError(f"DID range {start}..{end}: ends differ in length")
    lead = 0
    while lead < len(start) and not start[lead].isdigit() and start[lead] == end[lead]:
        lead += 1
    head, lo, hi = start[:lead], start[lead:], end[lead:]
    if not (lo.isdigit() and hi.isdigit()):
        raise AsteriskRenderError(f"DID range {start}..{end}: not a range of numbers")
    if lo > hi:
        raise AsteriskRenderError(f"DID range {start}..{end}: start is after end")
    out = []
    for blk in digit_blocks(lo, hi):
        if not blk.first:
            out.append(head + blk.prefix)
        else:
            pattern = blk.prefix + _digit_class(blk.first, blk.last) + "X" * blk.free
            literal = pattern.isdigit()
            out.append(head + pattern if literal else "_" + head + pattern)
    return out


_ESCAPES = {"d": "[0-9]", "+": "[+]", "*": "[*]", ".": "[.]", "#": "#", "-": "-"}


def regex_to_posix(pattern: str) -> str:
    """A model DID regex (matched against the whole number) as a POSIX ERE for REGEX().

    Asterisk's ``REGEX()`` uses POSIX extended regular expressions; the model's are Python.
    The common subset converts (``\\d``, escaped ``+ * . # -``, classes, groups,
    alternation, counted repeats); anything else is refused rather than guessed. The result
    holds no backslash, quote or semicolon, so it needs no escaping in extensions.conf.
    """
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            nxt = pattern[i + 1] if i + 1 < len(pattern) else ""
            if nxt not in _ESCAPES:
                raise AsteriskRenderError(
                    f"DID pattern {pattern!r}: '\\{nxt}' has no POSIX equivalent here; "
                    "use \\d, character classes or escaped + * . # -"
                )
            out.append(_ESCAPES[nxt])
            i += 2
            continue
        if c in "\"';$`" and not (c == "$" and i == len(pattern) - 1):
            raise AsteriskRenderError(f"DID pattern {pattern!r}: character {c!r} is not allowed")
        if c == "(" and pattern[i + 1 : i + 2] == "?":
            raise AsteriskRenderError(
                f"DID pattern {pattern!r}: '(?' extensions have no POSIX equivalent"
            )
        if c == "?" and i > 0 and pattern[i - 1] in "*+?}":
            raise AsteriskRenderError(
                f"DID pattern {pattern!r}: lazy quantifiers have no POSIX equivalent"
            )
        out.append(c)
        i += 1
    body = "".join(out)
    if body.startswith("^"):
        body = body[1:]
    if body.endswith("$"):
        body = body[:-1]
    return f"^({body})$"


# --------------------------------------------------------------------------------------
# The view the templates read
# --------------------------------------------------------------------------------------


@dataclass
class TransportView:
    name: str
    protocol: str
    bind: str
    tls: dict[str, str] | None = None
    external_address: str | None = None


@dataclass
class EndpointView:
    name: str
    comment: str
    transport: str
    codecs: list[str]
    dtmf_mode: str
    direct_media: bool
    rtp_symmetric: bool
    media_encryption: str
    media_encryption_optimistic: bool
    timers: str
    timers_min_se: int
    timers_sess_expires: int
    allow_transfer: bool
    trust_id_inbound: bool
    trust_id_outbound: bool
    send_pai: bool
    t38: bool
    permit: list[str]
    accountcode: str | None = None
    set_vars: list[tuple[str, str]] = field(default_factory=list)
    from_user: str | None = None
    from_domain: str | None = None
    outbound_auth: str | None = None
    aor_contact: str | None = None
    qualify_frequency: int = 0
    qualify_timeout: float = 0.0
    identify_match: list[str] = field(default_factory=list)
    identify_header: str | None = None
    rtp_timeout: int = 0
    rtp_timeout_hold: int = 0


@dataclass
class RegistrationView:
    name: str
    endpoint: str
    transport: str
    auth: str
    username: str
    password: str
    realm: str | None
    server_uri: str
    client_uri: str
    outbound_proxy: str
    expiration: int
    #: the edge it goes through, when the trunk registers once per edge (else None)
    edge: str | None = None
    #: the first registration of its trunk: it carries the trunk's auth section
    with_auth: bool = True


@dataclass
class DidView:
    name: str
    comment: str
    context: str
    patterns: list[str]
    regex: str | None = None


@dataclass
class AsteriskView:
    host: str
    site: str
    address: str
    transports: list[TransportView]
    edge_transport: str
    acl_permit: list[str]
    trunks: list[EndpointView]
    edges: list[EndpointView]
    outbound_edges: list[str]
    registrations: list[RegistrationView]
    dids: list[DidView]
    pattern_dids: list[DidView]
    destination_contexts: list[str]
    ami: dict[str, object] | None
    channel_vars: list[str]


def _acl_entry(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    """An Asterisk ACL entry: address/netmask for IPv4, address/prefix for IPv6."""
    if net.version == 4:
        return net.with_netmask
    return net.with_prefixlen


def _host_net(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return _acl_entry(ipaddress.ip_network(address))


def _uri_host(address: ipaddress.IPv4Address | ipaddress.IPv6Address | str) -> str:
    text = str(address)
    return f"[{text}]" if ":" in text else text


def _transport_name(protocol: str, port: int) -> str:
    return f"siporch-{protocol}-{port}"


def _transports(name: str, host: Host) -> list[TransportView]:
    out = []
    seen: set[str] = set()
    for t in host.transports:
        tname = _transport_name(t.protocol, t.port)
        if tname in seen:
            raise AsteriskRenderError(f"host {name}: transport {t.protocol}/{t.port} twice")
        seen.add(tname)
        tls = None
        if t.protocol == "tls":
            if host.tls is None:
                raise AsteriskRenderError(f"host {name}: a TLS transport needs hosts.{name}.tls")
            tls = {
                "cert_file": host.tls.certificate,
                "priv_key_file": host.tls.private_key,
                "ca_list_file": host.tls.ca or "",
                "verify_server": "yes" if host.tls.verify_peer else "no",
                "verify_client": "yes" if host.tls.verify_peer else "no",
            }
        out.append(
            TransportView(
                name=tname,
                protocol=t.protocol,
                bind=f"{_uri_host(host.address)}:{t.port}",
                tls=tls,
                external_address=str(host.public_address) if host.public_address else None,
            )
        )
    return out


def _edge_hop(model: Model, pbx_name: str, pbx: Host, edge_name: str) -> tuple[str, str]:
    """(transport section of the PBX, SIP URI of the edge) for the PBX -> edge leg."""
    edge = model.hosts[edge_name]
    for proto in _EDGE_PROTOCOLS:
        ours = [t for t in pbx.transports if t.protocol == proto]
        theirs = [t for t in edge.transports if t.protocol == proto]
        if ours and theirs:
            # an edge of an active-standby pair: its floating address
            uri = f"sip:{_uri_host(model.sip_address(edge_name))}:{theirs[0].port}"
            if proto != "udp":
                uri += f";transport={proto}"
            return _transport_name(proto, ours[0].port), uri
    raise AsteriskRenderError(
        f"host {pbx_name} and edge {edge_name} share no UDP or TCP transport "
        "(the PBX reaches its edge over UDP or TCP)"
    )


def _outbound_edges(model: Model, pbx: Host) -> list[str]:
    """The edges a PBX sends its outbound calls to: its site's, else its backup site's."""
    edges = model.edge_targets(pbx.site)
    if not edges:
        backup = model.sites[pbx.site].backup_site
        if backup is not None:
            edges = model.edge_targets(backup)
    return edges


def _edge_sources(model: Model, edge_name: str) -> list[str]:
    """The addresses calls from an edge come from: its own; for an active-standby pair,
    the floating address and both edges' own."""
    pair = model.edge_pair(edge_name)
    if pair is None or pair.vip is None:
        return [_host_net(model.hosts[edge_name].address)]
    return [_host_net(pair.vip), *(_host_net(model.hosts[e].address) for e in pair.hosts)]


def _media_encryption(trunk: Trunk) -> tuple[str, bool]:
    """(media_encryption, optimistic) of a trunk's endpoint.

    With ``bypass`` the PBX is the media end point toward the trunk, so it applies the
    trunk's SRTP policy itself. With ``anchor`` the edge's rtpengine faces the trunk and
    enforces the policy there; the PBX offers and accepts SDES-SRTP but also takes plain RTP
    from the edge (optimistic), whichever way the edge bridges the two legs.
    """
    if trunk.media.srtp == "off":
        return "no", False
    if trunk.media.mode == "bypass" and trunk.media.srtp == "required":
        return "sdes", False
    return "sdes", True


def _escape_value(value: str, what: str) -> str:
    """A value for a .conf line: ';' is escaped; line breaks are refused."""
    if "\n" in value or "\r" in value:
        raise AsteriskRenderError(f"{what}: a line break cannot go into an Asterisk config")
    return value.replace(";", "\\;")


def rtp_timeouts(model: Model, trunk: Trunk, *, endpoint: bool = True) -> tuple[int, int]:
    """(rtp_timeout, rtp_timeout_hold) of a trunk's calls on the PBX, 0 for none: the
    trunk's media settings, else the model's `calls`. None on the trunk's own endpoint with
    `bypass` (direct_media: the PBX may hand the media to the two ends and stop receiving
    it); the edge endpoints never take direct media."""
    if endpoint and trunk.media.mode == "bypass":
        return 0, 0
    active = trunk.media.rtp_timeout
    hold = trunk.media.rtp_timeout_hold
    return (
        model.calls.rtp_timeout if active is None else active,
        model.calls.rtp_timeout_hold if hold is None else hold,
    )


def _longest(values: list[int]) -> int:
    """The longest of some timeouts, where 0 (none) is longer than any."""
    if not values or 0 in values:
        return 0
    return max(values)


def _trunk_endpoint(
    model: Model, name: str, trunk: Trunk, transport: str, permit: list[str]
) -> EndpointView:
    encryption, optimistic = _media_encryption(trunk)
    set_vars = [("SIPORCH_TRUNK", name)]
    if trunk.max_channels is not None:
        set_vars.append(("SIPORCH_MAX_CHANNELS", str(trunk.max_channels)))
    forward_pai = trunk.pai == "forward"
    rtp_timeout, rtp_timeout_hold = rtp_timeouts(model, trunk)
    return EndpointView(
        name=name,
        comment=trunk.description or f"trunk {name}",
        transport=transport,
        codecs=[CODECS[c] for c in trunk.codecs],
        dtmf_mode=DTMF[trunk.dtmf],
        direct_media=trunk.media.mode == "bypass",
        rtp_symmetric=trunk.media.symmetric_rtp,
        media_encryption=encryption,
        media_encryption_optimistic=optimistic,
        timers=TIMERS[trunk.session_timers.mode],
        timers_min_se=trunk.session_timers.min_se,
        timers_sess_expires=trunk.session_timers.expires,
        allow_transfer=trunk.refer,
        trust_id_inbound=forward_pai,
        trust_id_outbound=forward_pai,
        send_pai=forward_pai,
        t38=trunk.t38,
        permit=permit,
        accountcode=name,
        set_vars=set_vars,
        from_user=_escape_value(trunk.from_user, f"trunks.{name}.from_user")
        if trunk.from_user
        else None,
        from_domain=_escape_value(trunk.from_domain, f"trunks.{name}.from_domain")
        if trunk.from_domain
        else None,
        outbound_auth=f"{name}-auth" if trunk.auth.type == "register" else None,
        identify_header=f"X-Siporch-Trunk: {name}",
        rtp_timeout=rtp_timeout,
        rtp_timeout_hold=rtp_timeout_hold,
    )


def _edge_endpoint(
    model: Model,
    pbx_name: str,
    pbx: Host,
    edge_name: str,
    codecs: list[str],
    permit: list[str],
    dialled: bool = True,
) -> EndpointView:
    """The PJSIP endpoint of an edge on a PBX; ``dialled``: one of the edges the PBX
    sends its outbound calls to (qualified often: docs/asterisk.md)."""
    edge = model.hosts[edge_name]
    transport, uri = _edge_hop(model, pbx_name, pbx, edge_name)
    # Outbound calls (and calls relayed without a trunk header) land on this endpoint
    # whatever their trunk: the longest RTP timeouts of any trunk (the model's without one).
    timeouts = [rtp_timeouts(model, t, endpoint=False) for t in model.trunks.values()] or [
        (model.calls.rtp_timeout, model.calls.rtp_timeout_hold)
    ]
    return EndpointView(
        name=f"siporch-edge-{edge_name}",
        comment=f"edge {edge_name} (site {edge.site})",
        transport=transport,
        codecs=codecs,
        dtmf_mode="rfc4733",
        direct_media=False,
        rtp_symmetric=True,
        media_encryption="no",
        media_encryption_optimistic=False,
        # Outbound calls take their trunk's session timers and T.38 at the edge, per branch
        # (docs/kamailio.md): the PBX asks for the longest interval of any trunk (the edge
        # may only reduce it) and offers T.38 when some trunk takes it (the edge refuses it
        # with 488 toward a trunk that does not).
        timers="yes",
        timers_min_se=90,
        timers_sess_expires=max(
            (t.session_timers.expires for t in model.trunks.values()), default=1800
        ),
        allow_transfer=False,
        trust_id_inbound=True,
        trust_id_outbound=True,
        send_pai=True,
        t38=any(t.t38 for t in model.trunks.values()),
        permit=permit,
        aor_contact=uri,
        qualify_frequency=EDGE_QUALIFY_FREQUENCY if dialled else EDGE_QUALIFY_FREQUENCY_OTHER,
        qualify_timeout=EDGE_QUALIFY_TIMEOUT,
        identify_match=_edge_sources(model, edge_name),
        rtp_timeout=_longest([a for a, _ in timeouts]),
        rtp_timeout_hold=_longest([h for _, h in timeouts]),
    )


def _registering_pbx(model: Model, trunk: Trunk) -> list[str]:
    """The PBX host that keeps a `register` trunk registered: the first by name of the
    trunk's site, else the first by name (one registration per trunk: two PBXs of a site
    registering the same account would have the provider fork each call to both)."""
    own = sorted(model.hosts_with_role("pbx", trunk.site))
    if own:
        return own[:1]
    every = sorted(model.hosts_with_role("pbx"))
    return every[:1]


def registration_edges(model: Model, trunk: Trunk) -> list[str]:
    """The edges a `register` trunk registers through, one registration each: every edge
    of an active-active site with ``auth.contacts: per-edge`` (the provider holds one
    binding per edge, each edge's own address as the contact); else one, the site's first
    edge (an active-standby pair: its floating address). Empty when the site has no edge
    (the PBX's own outbound edges then serve: :func:`_registration`)."""
    auth = trunk.auth
    assert auth.type == "register"
    site = model.sites.get(trunk.site)
    pair = site.edges if site is not None else None
    if pair is not None and pair.mode == "active-active" and auth.contacts == "per-edge":
        return list(pair.hosts)
    return model.hosts_with_role("edge", trunk.site)[:1]


def _registrations(
    model: Model, pbx_name: str, pbx: Host, name: str, trunk: Trunk
) -> list[RegistrationView]:
    """The registrations of a `register` trunk: one (``<trunk>-reg``), or one per edge
    (``<trunk>-reg-<edge>``, :func:`registration_edges`), which share the trunk's auth."""
    edges = registration_edges(model, trunk)
    if len(edges) < 2:
        return [_registration(model, pbx_name, pbx, name, trunk)]
    return [
        _registration(model, pbx_name, pbx, name, trunk, edge=e, first=i == 0)
        for i, e in enumerate(edges)
    ]


def _registration(
    model: Model,
    pbx_name: str,
    pbx: Host,
    name: str,
    trunk: Trunk,
    *,
    edge: str | None = None,
    first: bool = True,
) -> RegistrationView:
    """One registration of ``trunk``: through ``edge`` (named after it), else through the
    site's first edge."""
    auth = trunk.auth
    assert auth.type == "register"
    edges = (
        [edge]
        if edge
        else (model.hosts_with_role("edge", trunk.site) or _outbound_edges(model, pbx))
    )
    if not edges:
        raise AsteriskRenderError(
            f"trunk {name} registers through an edge, but site {trunk.site} has none"
        )
    transport, edge_uri = _edge_hop(model, pbx_name, pbx, edges[0])
    peer = trunk.peers[0]
    if auth.registrar:
        server = auth.registrar if auth.registrar.startswith("sip") else f"sip:{auth.registrar}"
    elif peer.is_name and peer.port is None:
        # a name without a port: the edge resolves it per RFC 3263 (NAPTR, SRV), as it does
        # for calls; a port would mean A/AAAA only
        server = f"sip:{peer.address}"
        if peer.transport != "udp":
            server += f";transport={peer.transport}"
    else:
        server = f"sip:{_uri_host(peer.address)}:{peer.effective_port}"
        if peer.transport != "udp":
            server += f";transport={peer.transport}"
    domain = auth.realm or server.split(":", 1)[1].split(";", 1)[0]
    where = f"trunks.{name}.auth"
    return RegistrationView(
        name=f"{name}-reg-{edge}" if edge else f"{name}-reg",
        endpoint=name,
        transport=transport,
        auth=f"{name}-auth",
        username=_escape_value(auth.username, f"{where}.username"),
        password=_escape_value(auth.password.get_secret_value(), f"{where}.password"),
        realm=_escape_value(auth.realm, f"{where}.realm") if auth.realm else None,
        server_uri=_escape_value(server, f"{where}.registrar"),
        client_uri=_escape_value(f"sip:{auth.username}@{domain}", f"{where}.username"),
        outbound_proxy=_escape_value(edge_uri + ";lr", "edge"),
        expiration=auth.expiry,
        edge=edge,
        with_auth=first,
    )


def _dids(model: Model, host: str) -> tuple[list[DidView], list[DidView], list[str]]:
    """The DIDs ``host`` answers (:func:`_host_dids`), kept between renders by the hash of
    what they are computed from (:func:`siporch.render.stored_text`)."""
    inputs = json.dumps(
        {
            "host": host,
            "inbound": model_part_json(model, "inbound"),
            "pbx_groups": model_part_json(model, "pbx_groups"),
        },
        sort_keys=True,
    )

    built: list[tuple[list[DidView], list[DidView], list[str]]] = []

    def build() -> str:
        built.append(_host_dids(model, host))
        ranges, patterns, contexts = built[0]
        return json.dumps(
            [
                [(d.name, d.comment, d.context, d.patterns, d.regex) for d in ranges],
                [(d.name, d.comment, d.context, d.patterns, d.regex) for d in patterns],
                contexts,
            ]
        )

    text = stored_text("asterisk/dids", inputs, build)
    if built:  # built just now (not read back): the same values as the text's
        return built[0]
    ranges, patterns, contexts = json.loads(text)
    return [DidView(*d) for d in ranges], [DidView(*d) for d in patterns], contexts


def _host_dids(model: Model, host: str) -> tuple[list[DidView], list[DidView], list[str]]:
    ranges: list[DidView] = []
    patterns: list[DidView] = []
    contexts: list[str] = []
    for did in model.inbound:
        dest = did.destination
        if host not in model.destination_hosts(dest):
            continue
        assert dest.context is not None
        if dest.context not in contexts:
            contexts.append(dest.context)
        if did.range is not None:
            ranges.append(
                DidView(
                    name=did.name,
                    comment=f"{did.range.start}..{did.range.end}",
                    context=dest.context,
                    patterns=did_range_patterns(did.range.start, did.range.end),
                )
            )
        else:
            assert did.pattern is not None
            patterns.append(
                DidView(
                    name=did.name,
                    comment=did.pattern,
                    context=dest.context,
                    patterns=[],
                    regex=regex_to_posix(did.pattern),
                )
            )
    clash = [c for c in contexts if c.startswith("siporch-")]
    if clash:
        raise AsteriskRenderError(
            f"host {host}: DID destination context {clash[0]!r}: names starting with "
            "'siporch-' are reserved for the rendered dialplan"
        )
    return ranges, patterns, contexts


def build_view(model: Model, host: str) -> AsteriskView:
    """Everything the Asterisk templates need, computed once from the model."""
    pbx = model.hosts[host]
    if pbx.role != "pbx":
        raise AsteriskRenderError(f"host {host} is not a pbx host")
    # an active-standby pair is one endpoint, at its floating address
    edges_all = model.edge_targets()
    outbound_edges = _outbound_edges(model, pbx)
    if not outbound_edges:
        raise AsteriskRenderError(
            f"host {host}: site {pbx.site} has no edge host (nor has its backup site); "
            "the PBX sends every call through an edge"
        )
    transports = _transports(host, pbx)
    edge_transport, _ = _edge_hop(model, host, pbx, outbound_edges[0])
    permit = list(dict.fromkeys(a for e in edges_all for a in _edge_sources(model, e)))
    permit_local = [*permit, "127.0.0.1/255.255.255.255"]

    codecs: list[str] = []
    for trunk in model.trunks.values():
        for c in trunk.codecs:
            if CODECS[c] not in codecs:
                codecs.append(CODECS[c])
    if not codecs:
        codecs = ["ulaw", "alaw"]

    trunks = [
        _trunk_endpoint(model, name, trunk, edge_transport, permit_local)
        for name, trunk in model.trunks.items()
    ]
    edges = [
        _edge_endpoint(model, host, pbx, e, codecs, permit_local, e in outbound_edges)
        for e in edges_all
    ]
    registrations = [
        r
        for name, trunk in model.trunks.items()
        if trunk.auth.type == "register" and host in _registering_pbx(model, trunk)
        for r in _registrations(model, host, pbx, name, trunk)
    ]
    ranges, patterns, contexts = _dids(model, host)

    ami = None
    if pbx.ami is not None:
        ami_permit = [_acl_entry(n) for n in pbx.ami.permit]
        if "127.0.0.1/255.255.255.255" not in ami_permit:
            ami_permit.append("127.0.0.1/255.255.255.255")
        ami = {
            "bind": str(pbx.ami.bind or pbx.address),
            "port": pbx.ami.port,
            "user": pbx.ami.user,
            "secret": _escape_value(pbx.ami.secret.get_secret_value(), f"hosts.{host}.ami.secret"),
            "permit": ami_permit,
        }

    return AsteriskView(
        host=host,
        site=pbx.site,
        address=str(pbx.address),
        transports=transports,
        edge_transport=edge_transport,
        acl_permit=permit_local,
        trunks=trunks,
        edges=edges,
        outbound_edges=[f"siporch-edge-{e}" for e in outbound_edges],
        registrations=registrations,
        dids=ranges,
        pattern_dids=patterns,
        destination_contexts=contexts,
        ami=ami,
        channel_vars=CHANNEL_VARS,
    )


#: The files siporch owns on a PBX (in ``asterisk/`` of the release); nothing else.
FILES: list[str] = [PJSIP_FILE, TRANSPORTS_FILE, EXTENSIONS_FILE, MANAGER_FILE, CDR_FILE]


def include_line(site_file: str) -> str:
    """The line the deploy keeps in the site's ``site_file`` (e.g. ``pjsip.conf``)."""
    return f"#tryinclude {ASTERISK_DIR}/{SITE_INCLUDES[site_file]}"


def render(model: Model, host: str) -> dict[str, str]:
    """The Asterisk files of a PBX host, relative to its release root."""
    view = build_view(model, host)
    return {
        f"asterisk/{name}": render_template(
            f"asterisk/{name}.j2",
            v=view,
            file=name,
            asterisk_dir=ASTERISK_DIR,
            transports_file=TRANSPORTS_FILE,
            ami_enabled=view.ami is not None,
            cdr={
                "enabled": model.records.enabled,
                "retention_days": model.records.retention_days,
                "db": CDR_DB,
                "table": CDR_TABLE,
                "columns": CDR_COLUMNS,
                "fields": CDR_FIELDS,
            },
        )
        for name in FILES
    }
