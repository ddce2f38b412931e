"""Cross-checks the types alone cannot express: references, overlaps, resilience.

Each finding is ``(loc, message, severity)``; the loader turns it into a Problem with the
file and line. Pure functions over a validated Model.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

from siporch.model.schema import Did, Model, Route

Finding = tuple[tuple[Any, ...], str, str]


def _err(loc: tuple[Any, ...], msg: str) -> Finding:
    return (loc, msg, "error")


def _warn(loc: tuple[Any, ...], msg: str) -> Finding:
    return (loc, msg, "warning")


def _choices(names: Any) -> str:
    names = sorted(names)
    return ", ".join(names) if names else "none defined"


def check_model(model: Model) -> list[Finding]:
    out: list[Finding] = []
    for check in (
        _refs,
        _names,
        _dids,
        _sources,
        _tls,
        _pbx_edges,
        _edge_pairs,
        _resilience,
        _capacity,
        _providers,
        _unused,
    ):
        out.extend(check(model))
    return out


def _refs(m: Model) -> Iterator[Finding]:
    sites, hosts, trunks = m.sites, m.hosts, m.trunks
    for name, site in sites.items():
        if site.backup_site is not None:
            if site.backup_site not in sites:
                yield _err(
                    ("sites", name, "backup_site"),
                    f"unknown site '{site.backup_site}' (sites: {_choices(sites)})",
                )
            elif site.backup_site == name:
                yield _err(("sites", name, "backup_site"), "a site cannot be its own backup")
    for name, host in hosts.items():
        if host.site not in sites:
            yield _err(
                ("hosts", name, "site"), f"unknown site '{host.site}' (sites: {_choices(sites)})"
            )
        if host.role == "pbx" and host.ami is None:
            yield _warn(
                ("hosts", name, "ami"), "PBX host without AMI: `siporch status` cannot see it"
            )
    for name, trunk in trunks.items():
        if trunk.site not in sites:
            yield _err(
                ("trunks", name, "site"), f"unknown site '{trunk.site}' (sites: {_choices(sites)})"
            )
        elif not m.hosts_with_role("edge", trunk.site):
            yield _err(
                ("trunks", name, "site"),
                f"site '{trunk.site}' has no edge host to carry this trunk",
            )
        if trunk.auth.type == "register" and not trunk.auth.password.get_secret_value():
            yield _err(("trunks", name, "auth", "password"), "registration needs a password")
        if trunk.caller_id.policy != "fixed" and trunk.caller_id.number:
            yield _warn(
                ("trunks", name, "caller_id", "number"), "number is used only with policy 'fixed'"
            )
    for gname, group in m.pbx_groups.items():
        for j, h in enumerate(group.hosts):
            if h not in hosts:
                yield _err(
                    ("pbx_groups", gname, "hosts", j),
                    f"unknown host '{h}' (hosts: {_choices(hosts)})",
                )
            elif hosts[h].role != "pbx":
                yield _err(
                    ("pbx_groups", gname, "hosts", j),
                    f"host '{h}' is an {hosts[h].role}, not a pbx",
                )
        if len(set(group.hosts)) != len(group.hosts):
            yield _err(("pbx_groups", gname, "hosts"), "a host is listed twice")
    used_groups = {d.destination.group for d in m.inbound}
    for gname in m.pbx_groups:
        if gname not in used_groups:
            yield _warn(("pbx_groups", gname), "no DID points at this group")
    for i, did in enumerate(m.inbound):
        d = did.destination
        if d.group is not None and d.group not in m.pbx_groups:
            yield _err(
                ("inbound", i, "destination", "group"),
                f"unknown PBX group '{d.group}' (pbx_groups: {_choices(m.pbx_groups)})",
            )
        if d.host is not None:
            if d.host not in hosts:
                yield _err(
                    ("inbound", i, "destination", "host"),
                    f"unknown host '{d.host}' (hosts: {_choices(hosts)})",
                )
            elif hosts[d.host].role != "pbx":
                yield _err(
                    ("inbound", i, "destination", "host"),
                    f"host '{d.host}' is an {hosts[d.host].role}, not a pbx",
                )
        if d.trunk is not None and d.trunk not in trunks:
            yield _err(
                ("inbound", i, "destination", "trunk"),
                f"unknown trunk '{d.trunk}' (trunks: {_choices(trunks)})",
            )
    for i, route in enumerate(m.routes):
        for j, s in enumerate(route.sites):
            if s not in sites:
                yield _err(
                    ("routes", i, "sites", j), f"unknown site '{s}' (sites: {_choices(sites)})"
                )
        for j, t in enumerate(route.trunks):
            if t not in trunks:
                yield _err(
                    ("routes", i, "trunks", j), f"unknown trunk '{t}' (trunks: {_choices(trunks)})"
                )
        if len(set(route.trunks)) != len(route.trunks):
            yield _err(("routes", i, "trunks"), "a trunk is listed twice")
        for t in route.weights:
            if t not in route.trunks:
                yield _err(
                    ("routes", i, "weights", t),
                    f"'{t}' is not one of this route's trunks ({', '.join(route.trunks)})",
                )
        if route.weights and route.strategy != "weighted":
            yield _warn(("routes", i, "weights"), "weights are used only with strategy 'weighted'")


def _names(m: Model) -> Iterator[Finding]:
    sections: tuple[tuple[str, Sequence[Did | Route]], ...] = (
        ("inbound", m.inbound),
        ("routes", m.routes),
    )
    for section, items in sections:
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            if item.name in seen:
                yield _err(
                    (section, i, "name"),
                    f"duplicate name '{item.name}' (also {section}[{seen[item.name]}])",
                )
            else:
                seen[item.name] = i
    ids: dict[int, str] = {}
    for name, trunk in m.trunks.items():
        if trunk.id is not None:
            if trunk.id in ids:
                yield _err(
                    ("trunks", name, "id"), f"id {trunk.id} is also used by trunk '{ids[trunk.id]}'"
                )
            ids[trunk.id] = name
    addrs: dict[Any, str] = {}
    for name, host in m.hosts.items():
        key = (host.address, host.role)
        if key in addrs:
            yield _err(
                ("hosts", name, "address"),
                f"address {host.address} is also host '{addrs[key]}' ({host.role})",
            )
        addrs[key] = name
    for name, trunk in m.trunks.items():
        seen_peer: set[tuple[Any, int]] = set()
        for i, p in enumerate(trunk.peers):
            key2 = (p.address, p.effective_port)
            if key2 in seen_peer:
                yield _err(
                    ("trunks", name, "peers", i),
                    f"peer {p.address}:{p.effective_port} is listed twice",
                )
            seen_peer.add(key2)


def _dids(m: Model) -> Iterator[Finding]:
    ranges = [(i, d.range) for i, d in enumerate(m.inbound) if d.range is not None]
    ranges.sort(key=lambda x: (len(x[1].start), int(x[1].start[1:])))
    for (i, a), (j, b) in itertools.pairwise(ranges):
        if len(a.start) == len(b.start) and int(b.start[1:]) <= int(a.end[1:]):
            yield _err(
                ("inbound", j, "range"),
                f"{b.start}..{b.end} overlaps inbound[{i}] '{m.inbound[i].name}' ({a.start}..{a.end})",
            )


def _sources(m: Model) -> Iterator[Finding]:
    """One source address must identify one trunk: a sweep over sorted address intervals."""
    intervals = []
    sources = {name: trunk.sources() for name, trunk in m.trunks.items()}
    for name, nets in sources.items():
        for net in nets:
            first, last = int(net.network_address), int(net.broadcast_address)
            intervals.append((net.version, first, last, name, net))
    intervals.sort(key=lambda x: (x[0], x[1], -x[2]))
    reported: set[tuple[str, str]] = set()
    widest: tuple[int, int, str, Any] | None = None  # (version, last, trunk, net)
    for version, first, last, name, net in intervals:
        if widest is not None and widest[0] == version and first <= widest[1]:
            other, onet = widest[2], widest[3]
            if other != name and (name, other) not in reported:
                reported.add((name, other))
                yield _err(
                    ("trunks", name),
                    f"source {net} is also claimed by trunk '{other}' ({onet}): "
                    "an address must identify one trunk",
                )
        if widest is None or widest[0] != version or last > widest[1]:
            widest = (version, last, name, net)
    for hname, host in m.hosts.items():
        for name, nets in sources.items():
            if any(host.address in net for net in nets if net.version == host.address.version):
                yield _err(
                    ("trunks", name), f"source networks include host '{hname}' ({host.address})"
                )


def _tls(m: Model) -> Iterator[Finding]:
    for name, host in m.hosts.items():
        protos = {t.protocol for t in host.transports}
        if "tls" in protos and host.tls is None:
            yield _err(("hosts", name, "tls"), "a tls transport needs certificate and private_key")
        seen: set[tuple[str, int]] = set()
        for i, t in enumerate(host.transports):
            if (t.protocol, t.port) in seen:
                yield _err(
                    ("hosts", name, "transports", i), f"{t.protocol}/{t.port} is listed twice"
                )
            seen.add((t.protocol, t.port))
    for name, trunk in m.trunks.items():
        edges = m.hosts_with_role("edge", trunk.site)
        for i, p in enumerate(trunk.peers):
            if p.transport != "udp" and edges:
                missing = [
                    e
                    for e in edges
                    if p.transport not in {t.protocol for t in m.hosts[e].transports}
                ]
                if missing:
                    yield _err(
                        ("trunks", name, "peers", i, "transport"),
                        f"{p.transport} peer, but edge(s) {', '.join(missing)} have no {p.transport} transport",
                    )
        if trunk.media.srtp != "off" and not any(p.transport == "tls" for p in trunk.peers):
            yield _warn(
                ("trunks", name, "media", "srtp"),
                "SRTP keys (SDES) would travel unencrypted: use a tls peer",
            )


def _pbx_edges(m: Model) -> Iterator[Finding]:
    """Every PBX reaches every edge over UDP or TCP (the PBX <-> edge leg)."""
    for pname in m.hosts_with_role("pbx"):
        ours = {t.protocol for t in m.hosts[pname].transports} - {"tls"}
        for ename in m.hosts_with_role("edge"):
            theirs = {t.protocol for t in m.hosts[ename].transports} - {"tls"}
            if not ours & theirs:
                yield _err(
                    ("hosts", pname, "transports"),
                    f"no UDP or TCP transport in common with edge '{ename}' "
                    f"({', '.join(sorted(theirs)) or 'none'}): the PBX reaches its edges over them",
                )


def _edge_pairs(m: Model) -> Iterator[Finding]:
    """A site's `edges`: its own edge hosts, each once; an active-standby pair of two with
    a vip inside the network they share."""
    for sname, site in m.sites.items():
        pair = site.edges
        if pair is None:
            continue
        loc = ("sites", sname, "edges")
        for j, h in enumerate(pair.hosts):
            if h not in m.hosts:
                yield _err((*loc, "hosts", j), f"unknown host '{h}' (hosts: {_choices(m.hosts)})")
            elif m.hosts[h].role != "edge":
                yield _err((*loc, "hosts", j), f"host '{h}' is a {m.hosts[h].role}, not an edge")
            elif m.hosts[h].site != sname:
                yield _err((*loc, "hosts", j), f"edge '{h}' belongs to site '{m.hosts[h].site}'")
        if len(set(pair.hosts)) != len(pair.hosts):
            yield _err((*loc, "hosts"), "a host is listed twice")
        unlisted = [e for e in m.hosts_with_role("edge", sname) if e not in pair.hosts]
        if unlisted:
            yield _err(
                (*loc, "hosts"),
                f"edge(s) {', '.join(unlisted)} of site '{sname}' are not listed: list every "
                "edge of the site",
            )
        if pair.mode == "active-standby":
            if len(pair.hosts) != 2:
                yield _err(
                    (*loc, "hosts"),
                    f"active-standby needs exactly 2 edges, {len(pair.hosts)} are listed",
                )
            if pair.vip is None:
                yield _err((*loc, "vip"), "active-standby needs the floating address vip")
            if pair.network is None:
                yield _err((*loc, "network"), "active-standby needs the network of the vip")
        elif pair.vip is not None:
            yield _err((*loc, "vip"), "a vip is used only with mode active-standby")
        if pair.vip is not None and pair.network is not None:
            if pair.vip.version != pair.network.version or pair.vip not in pair.network:
                yield _err((*loc, "vip"), f"{pair.vip} is not inside network {pair.network}")
            elif pair.vip in (pair.network.network_address, pair.network.broadcast_address):
                yield _err((*loc, "vip"), f"{pair.vip} is not a host address of {pair.network}")
        if pair.vip is not None:
            for hname, host in m.hosts.items():
                if pair.vip in (host.address, host.public_address):
                    yield _err((*loc, "vip"), f"{pair.vip} is the address of host '{hname}'")
        if pair.network is not None:
            for h in pair.hosts:
                member = m.hosts.get(h)
                if member is not None and (
                    member.address.version != pair.network.version
                    or member.address not in pair.network
                ):
                    yield _err(
                        (*loc, "network"),
                        f"edge '{h}' ({member.address}) is not inside network {pair.network}",
                    )
        for h in pair.hosts:
            member = m.hosts.get(h)
            if member is not None and any(
                t.port == pair.dmq_port and t.protocol == "udp" for t in member.transports
            ):
                yield _err(
                    (*loc, "dmq_port"),
                    f"udp/{pair.dmq_port} is a SIP transport of edge '{h}': DMQ needs its own port",
                )


def _resilience(m: Model) -> Iterator[Finding]:
    for sname, site in m.sites.items():
        if site.kind != "branch":
            continue
        routes = m.routes_for_site(sname)
        if not routes:
            yield _warn(("sites", sname), "branch site has no outbound route")
            continue
        backup = any(t in m.trunks and m.trunks[t].site != sname for r in routes for t in r.trunks)
        if not backup:
            yield _warn(
                ("sites", sname),
                "branch site has no backup route: no route of this site uses another site's trunk",
            )


def _capacity(m: Model) -> Iterator[Finding]:
    for i, route in enumerate(m.routes):
        if route.strategy == "weighted":
            for t in route.trunks:
                if t in m.trunks and t not in route.weights:
                    yield _warn(("routes", i, "weights"), f"no weight for '{t}': it gets weight 1")


# ----- providers: peers by name, inbound trust, media toward the provider


def _unused(m: Model) -> Iterator[Finding]:
    for name, site in m.sites.items():
        if site.country_code is not None:
            yield _warn(
                ("sites", name, "country_code"),
                "not used (the site's normalization rules carry its country code): remove it",
            )


def _inbound_names(m: Model) -> dict[tuple[str, str], str]:
    """(site, peer name) -> a trunk with that peer whose inbound calls are trusted (by its
    blocks or its resolved addresses)."""
    out: dict[tuple[str, str], str] = {}
    for name, trunk in m.trunks.items():
        if (
            trunk.inbound_addresses
            or trunk.security.allowed_sources
            or trunk.inbound_trust_resolved
        ):
            for p in trunk.peers:
                if p.is_name:
                    out.setdefault((trunk.site, str(p.address)), name)
    return out


def _providers(m: Model) -> Iterator[Finding]:
    trusted_names = _inbound_names(m)
    for name, trunk in m.trunks.items():
        named = [p for p in trunk.peers if p.is_name]
        explicit = bool(trunk.inbound_addresses or trunk.security.allowed_sources)
        # A second account at the same provider (same peer name, same site) sends calls
        # only: the provider's calls come in as the trunk that holds its blocks (one
        # source names one trunk), not with 403.
        shared = all((trunk.site, str(p.address)) in trusted_names for p in named)
        if (
            trunk.kind == "itsp"
            and named
            and not explicit
            and not trunk.inbound_trust_resolved
            and not shared
        ):
            has_ip_peer = len(named) < len(trunk.peers)
            if not has_ip_peer:
                yield _warn(
                    ("trunks", name, "inbound_addresses"),
                    "peers are host names and no inbound block is given: calls from this "
                    "provider get 403 (give its signalling networks in inbound_addresses, "
                    "or set inbound_trust_resolved: true)",
                )
        if trunk.inbound_trust_resolved and not named:
            yield _warn(
                ("trunks", name, "inbound_trust_resolved"),
                "no peer is a host name: inbound_trust_resolved changes nothing",
            )
        if trunk.inbound_trust_resolved and trunk.security.allowed_sources:
            yield _warn(
                ("trunks", name, "inbound_trust_resolved"),
                "security.allowed_sources is set: only those networks are trusted",
            )
        if (
            trunk.kind == "itsp"
            and trunk.media.mode == "bypass"
            and m.security.topology_hiding
            and not trunk.media.allow_internal_addresses
        ):
            yield _err(
                ("trunks", name, "media", "mode"),
                "bypass sends the PBX's internal media addresses to the provider, against "
                "security.topology_hiding: use mode anchor, or set "
                "media.allow_internal_addresses: true to accept it",
            )
        if trunk.media.allow_internal_addresses and (
            trunk.kind != "itsp" or trunk.media.mode != "bypass"
        ):
            yield _warn(
                ("trunks", name, "media", "allow_internal_addresses"),
                "used only with mode bypass on an itsp trunk",
            )
