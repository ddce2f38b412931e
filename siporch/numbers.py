"""Number normalization, translation and routing, computed from the model.

This is the reference semantics the Kamailio edge implements in its dialplan and
dispatcher data: rules in order, first whole-number match wins; routes in order, the first
whose pattern matches and none of whose exceptions does.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from siporch.errors import SiporchError
from siporch.model.schema import Model, NumberRule

_BACKREF = re.compile(r"\\(\d)")


@dataclass(frozen=True)
class Step:
    rule: str
    before: str
    after: str


@dataclass(frozen=True)
class TrunkAttempt:
    trunk: str
    site: str
    number: str
    peers: list[str]
    via_edge: str | None = None
    weight: int | None = None
    steps: list[Step] = field(default_factory=list)


@dataclass
class RouteTrace:
    """What happens to one number, as `siporch route` shows it."""

    direction: str
    dialled: str
    site: str
    number: str
    steps: list[Step] = field(default_factory=list)
    route: str | None = None
    strategy: str | None = None
    failover_on: list[str] = field(default_factory=list)
    attempts: list[TrunkAttempt] = field(default_factory=list)
    destination: dict[str, str] | None = None
    did: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def substitute(rule: NumberRule, number: str) -> str | None:
    """Apply one rule; None if it does not match the whole number."""
    m = re.fullmatch(rule.match, number)
    if m is None:
        return None
    return _BACKREF.sub(lambda g: m.group(int(g.group(1))) or "", rule.replace)


def apply_rules(rules: list[NumberRule], number: str) -> tuple[str, list[Step]]:
    """First matching rule wins; no match leaves the number as it is."""
    for rule in rules:
        out = substitute(rule, number)
        if out is not None:
            return out, [Step(rule.name, number, out)]
    return number, []


def outbound(model: Model, dialled: str, site: str) -> RouteTrace:
    if site not in model.sites:
        raise SiporchError(f"unknown site '{site}' (sites: {', '.join(model.sites)})")
    number, steps = apply_rules(model.sites[site].normalization, dialled)
    trace = RouteTrace("outbound", dialled, site, number, steps)
    for route in model.routes_for_site(site):
        if not route.matches(number):
            continue
        trace.route = route.name
        trace.strategy = route.strategy
        trace.failover_on = list(route.failover_on)
        for name in route.trunks:
            trunk = model.trunks[name]
            sent, tsteps = apply_rules(trunk.translation.outbound, number)
            if trunk.strip_plus and sent.startswith("+"):
                tsteps = [*tsteps, Step("strip_plus", sent, sent[1:])]
                sent = sent[1:]
            via = None
            if trunk.site != site:
                edges = model.hosts_with_role("edge", trunk.site)
                via = edges[0] if edges else None
            peers = [
                # a domain without port: the edge resolves it per RFC 3263 (NAPTR/SRV)
                f"{p.transport}:{p.address} (DNS)"
                if p.is_name and p.port is None
                else f"{p.transport}:{p.address}:{p.effective_port}"
                for p in sorted(trunk.peers, key=lambda p: p.priority)
            ]
            weight = route.weights.get(name, 1) if route.strategy == "weighted" else None
            trace.attempts.append(TrunkAttempt(name, trunk.site, sent, peers, via, weight, tsteps))
        break
    return trace


def inbound(model: Model, received: str, trunk_name: str) -> RouteTrace:
    if trunk_name not in model.trunks:
        raise SiporchError(f"unknown trunk '{trunk_name}' (trunks: {', '.join(model.trunks)})")
    trunk = model.trunks[trunk_name]
    number, steps = apply_rules(trunk.translation.inbound, received)
    trace = RouteTrace("inbound", received, trunk.site, number, steps)
    for did in model.inbound:
        if did.matches(number):
            trace.did = did.name
            trace.destination = {
                k: v for k, v in did.destination.model_dump().items() if v is not None
            }
            group = did.destination.group
            if group is not None and group in model.pbx_groups:
                g = model.pbx_groups[group]
                trace.destination["hosts"] = ",".join(g.hosts)
                trace.destination["strategy"] = g.strategy
            break
    return trace


class DigitBlock(NamedTuple):
    """Every digit string of ``prefix``, then one digit in ``first``..``last``, then ``free``
    digits of any value. A block of one string is ``(string, "", "", 0)``."""

    prefix: str
    first: str
    last: str
    free: int


def digit_blocks(lo: str, hi: str) -> list[DigitBlock]:
    """The digit strings ``lo``..``hi`` (same length, ``lo <= hi``) as the fewest blocks,
    in order: a greedy split. The Kamailio edge writes them as htable prefixes, the PBX as
    extension patterns."""
    if lo == hi:
        return [DigitBlock(lo, "", "", 0)]
    i = 0
    while lo[i] == hi[i]:
        i += 1
    prefix, a, b = lo[:i], lo[i], hi[i]
    rest_lo, rest_hi = lo[i + 1 :], hi[i + 1 :]
    n = len(rest_lo)
    first, last = a, b
    out: list[DigitBlock] = []
    if rest_lo != "0" * n:
        out += [
            blk._replace(prefix=prefix + a + blk.prefix) for blk in digit_blocks(rest_lo, "9" * n)
        ]
        first = chr(ord(a) + 1)
    tail: list[DigitBlock] = []
    if rest_hi != "9" * n:
        tail = [
            blk._replace(prefix=prefix + b + blk.prefix) for blk in digit_blocks("0" * n, rest_hi)
        ]
        last = chr(ord(b) - 1)
    if first <= last:
        out.append(DigitBlock(prefix, first, last, n))
    return out + tail
