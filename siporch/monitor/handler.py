"""AMI events -> call and trunk state of one Asterisk host.

The handler is pure: it receives AMI events (any mapping of header -> value, a panoramisk
`Message` or a plain dict from a recorded stream) and keeps

* the trunk-side channels (calls) on the host: a channel on the PJSIP endpoint named as a
  trunk is an inbound call; a channel on `siporch-edge-<edge>` is an outbound call whose
  trunk comes from the `SIPORCH_TRUNK` channel variable;
* PJSIP contact reachability (`ContactStatus`, `ContactList`);
* outbound registration state (`Registry`, `OutboundRegistrationDetail`);
* per-trunk counters of call attempts and failures.

Dispatch is a table from event name to method (`HANDLERS`). Events about channels the
handler never saw (it connected while calls were up, or reconnected after a restart) are
tolerated: they are counted in `missing` and otherwise ignored, or, when they carry enough
to describe the channel, the channel is adopted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from siporch.monitor.topology import EDGE_ENDPOINT_PREFIX, TRUNK_VARIABLE

Event = Mapping[str, Any]

#: Hangup causes (Q.850) that are the caller's or callee's choice, not a trunk failure.
USER_CAUSES = frozenset({"0", "16", "17", "18", "19", "21", "26", "31"})
#: DialEnd statuses that are a failure of the trunk.
FAILED_DIAL = frozenset({"CONGESTION", "CHANUNAVAIL"})
#: Asterisk channel states (ChannelState numbers) -> text, for the `Status` action.
STATE_NAMES = {
    "0": "Down",
    "1": "Rsrvd",
    "2": "OffHook",
    "3": "Dialing",
    "4": "Ring",
    "5": "Ringing",
    "6": "Up",
    "7": "Busy",
    "8": "Dialing Offhook",
    "9": "Pre-ring",
}


@dataclass
class ChannelState:
    """One trunk-side channel: one call through a trunk."""

    uniqueid: str
    channel: str
    endpoint: str
    direction: str  # "inbound" | "outbound"
    trunk: str | None
    caller: str = ""
    callee: str = ""
    state: str = "Down"
    linkedid: str = ""
    created: float = 0.0
    answered: float | None = None
    codec: str = ""
    failed: bool = False

    def duration(self, now: float) -> float:
        return max(0.0, now - self.created)


@dataclass
class ContactState:
    aor: str
    uri: str
    endpoint: str
    status: str  # Reachable | Unreachable | NonQualified | Unknown | Created | Removed
    rtt_ms: float | None = None


@dataclass
class RegistrationState:
    name: str
    server_uri: str
    client_uri: str
    status: str  # Registered | Unregistered | Rejected | Failed | Stopped | ...
    endpoint: str = ""


@dataclass
class TrunkCounters:
    attempts: int = 0
    answered: int = 0
    failures: int = 0


@dataclass
class HandlerStats:
    events: int = 0
    missing: int = 0
    resets: int = 0


def endpoint_of(channel: str) -> tuple[str, str]:
    """`PJSIP/itsp-a-0000002a` -> ("PJSIP", "itsp-a")."""
    tech, _, rest = channel.partition("/")
    if not rest:
        return "", channel
    name, sep, suffix = rest.rpartition("-")
    if sep and suffix and all(c in "0123456789abcdefABCDEF;" for c in suffix):
        return tech, name
    return tech, rest


def dialled_number(dial_string: str) -> str:
    """The user part of a Dial() string: `+1202@siporch-edge-x` or `ep/sip:+1202@h`."""
    s = dial_string
    if "/" in s and "@" not in s.split("/", 1)[0]:
        s = s.split("/", 1)[1]
    s = s.split("@", 1)[0]
    for prefix in ("sips:", "sip:", "tel:"):
        if s.startswith(prefix):
            s = s[len(prefix) :]
    return s


class CallStateHandler:
    """Keeps the call and trunk state of one Asterisk host from its AMI events."""

    def __init__(
        self,
        host: str,
        trunks: Iterable[str],
        *,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self.host = host
        self.trunks = frozenset(trunks)
        self.clock = clock
        self.on_change = on_change
        self.channels: dict[str, ChannelState] = {}
        self.contacts: dict[tuple[str, str], ContactState] = {}
        self.registrations: dict[str, RegistrationState] = {}
        #: a `Registry` event named several registrations (same client and server URI: one
        #: trunk registered through each edge): they are to be read again by name
        self.registrations_unsure = False
        self.endpoints: dict[str, str] = {}  # endpoint name -> device state
        self.counters: dict[str, TrunkCounters] = {t: TrunkCounters() for t in self.trunks}
        self.stats = HandlerStats()
        self._ignored: set[str] = set()  # uniqueids of channels that are not trunk-side
        self._hung_up: set[str] | None = None  # during a sync: channels gone meanwhile
        self.HANDLERS: dict[str, Callable[[Event], None]] = {
            "Newchannel": self._on_newchannel,
            "Newstate": self._on_newstate,
            "NewCallerid": self._on_newcallerid,
            "VarSet": self._on_varset,
            "DialBegin": self._on_dialbegin,
            "DialEnd": self._on_dialend,
            "BridgeEnter": self._on_bridgeenter,
            "Hangup": self._on_hangup,
            "Status": self._on_status,
            "CoreShowChannel": self._on_status,
            "ContactStatus": self._on_contactstatus,
            "ContactList": self._on_contactlist,
            "ContactStatusDetail": self._on_contactlist,
            "Registry": self._on_registry,
            "OutboundRegistrationDetail": self._on_registration_detail,
            "EndpointList": self._on_endpointlist,
            "FullyBooted": self._on_fullybooted,
        }

    # ----------------------------------------------------------------------------- public

    def on_event(self, event: Event) -> None:
        """Apply one AMI event."""
        self.stats.events += 1
        name = event.get("Event")
        if name is None:
            return
        method = self.HANDLERS.get(name)
        if method is not None:
            method(event)

    def feed(self, events: Iterable[Event]) -> None:
        for event in events:
            self.on_event(event)

    def reset_calls(self) -> None:
        """Forget every channel (after a reconnect the host tells us again)."""
        self.channels.clear()
        self._ignored.clear()
        self.stats.resets += 1

    def reset(self) -> None:
        """Forget all volatile state; counters are kept (they are monotonic)."""
        self.reset_calls()
        self.contacts.clear()
        self.registrations.clear()
        self.endpoints.clear()

    def begin_sync(self) -> None:
        """A fresh view of the host follows (action answers), while events may go on."""
        self.reset()
        self._hung_up = set()

    def end_sync(self) -> None:
        self._hung_up = None

    def calls(self) -> list[ChannelState]:
        return sorted(self.channels.values(), key=lambda c: (c.created, c.uniqueid))

    def active_calls(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for ch in self.channels.values():
            key = ch.trunk or ""
            counts[key] = counts.get(key, 0) + 1
        return counts

    def registration_for(self, trunk: str) -> RegistrationState | None:
        regs = self.registrations_for(trunk)
        return regs[0] if regs else None

    def registrations_for(self, trunk: str) -> list[RegistrationState]:
        """Every outbound registration of ``trunk``: one (``<trunk>-reg``), or one per edge
        of an active-active site (``<trunk>-reg-<edge>``), by name."""
        reg = self.registrations.get(trunk)
        if reg is not None:
            return [reg]
        return sorted(
            (
                r
                for r in self.registrations.values()
                if r.endpoint == trunk or r.name.startswith(trunk + "-")
            ),
            key=lambda r: r.name,
        )

    def registrations_read(self) -> None:
        """The registrations were read again by name (after an unsure `Registry` event)."""
        self._changed("registrations")

    def contacts_for(self, trunk: str) -> list[ContactState]:
        return [
            c
            for c in self.contacts.values()
            if c.aor == trunk or c.endpoint == trunk or c.aor.startswith(trunk + "-")
        ]

    # ---------------------------------------------------------------------------- helpers

    def _changed(self, what: str) -> None:
        if self.on_change is not None:
            self.on_change(what)

    def _timestamp(self, event: Event) -> float:
        ts = event.get("Timestamp")
        if ts:
            try:
                return float(ts)
            except ValueError:
                pass
        return self.clock()

    def watches(self, endpoint: str) -> bool:
        """Whether the handler keeps state for this PJSIP endpoint."""
        return endpoint in self.trunks or endpoint.startswith(EDGE_ENDPOINT_PREFIX)

    def _classify(self, channel: str) -> tuple[str, str, str | None] | None:
        """(endpoint, direction, trunk) for a trunk-side channel, else None."""
        tech, endpoint = endpoint_of(channel)
        if tech != "PJSIP":
            return None
        if endpoint in self.trunks:
            return endpoint, "inbound", endpoint
        if endpoint.startswith(EDGE_ENDPOINT_PREFIX):
            return endpoint, "outbound", None
        return None

    def _new_channel(self, event: Event, ts: float) -> ChannelState | None:
        uid = event.get("Uniqueid", "")
        kind = self._classify(event.get("Channel", ""))
        if kind is None:
            self._ignored.add(uid)
            return None
        endpoint, direction, trunk = kind
        if direction == "inbound":
            caller = _number(event.get("CallerIDNum"))
            callee = event.get("Exten", "") or ""
        else:
            # an outgoing channel shows the remote party (the number dialled) as its caller
            # id, and the calling party as its connected line
            caller = _number(event.get("ConnectedLineNum"))
            callee = _number(event.get("CallerIDNum"))
        ch = ChannelState(
            uniqueid=uid,
            channel=event.get("Channel", ""),
            endpoint=endpoint,
            direction=direction,
            trunk=trunk,
            caller=caller,
            callee=callee if callee not in ("s", "") else "",
            state=event.get("ChannelStateDesc")
            or STATE_NAMES.get(event.get("ChannelState", ""), ""),
            linkedid=event.get("Linkedid", ""),
            created=ts,
        )
        self.channels[uid] = ch
        return ch

    def _chanvars(self, ch: ChannelState, event: Event, header: str = "ChanVariable") -> None:
        """Pick the trunk from `channelvars` headers (manager.conf) on a channel event."""
        values = event.get(header)
        if not values:
            return
        for item in values if isinstance(values, list) else (values,):
            if item.startswith(TRUNK_VARIABLE + "="):
                value = item[len(TRUNK_VARIABLE) + 1 :]
                if value and value != "(null)" and value != ch.trunk:
                    self._set_trunk(ch, value)
                return

    def _set_trunk(self, ch: ChannelState, value: str) -> None:
        first_time = ch.trunk is None
        ch.trunk = value
        if first_time:
            c = self._count(value)
            c.attempts += 1
            if ch.answered is not None:
                c.answered += 1
            if ch.failed:
                c.failures += 1
        self._changed("calls")

    def _get(self, uid: str) -> ChannelState | None:
        ch = self.channels.get(uid)
        if ch is None and uid not in self._ignored:
            self.stats.missing += 1
        return ch

    def _count(self, trunk: str | None) -> TrunkCounters:
        key = trunk or ""
        c = self.counters.get(key)
        if c is None:
            c = self.counters[key] = TrunkCounters()
        return c

    # --------------------------------------------------------------------- event handlers

    def _on_newchannel(self, event: Event) -> None:
        ch = self._new_channel(event, self._timestamp(event))
        if ch is None:
            return
        if ch.trunk is not None:
            self._count(ch.trunk).attempts += 1
        self._chanvars(ch, event)
        self._changed("calls")

    def _on_newstate(self, event: Event) -> None:
        uid = event.get("Uniqueid", "")
        ch = self.channels.get(uid)
        if ch is None:
            if uid in self._ignored:
                return
            # Adopt a channel we missed (connected during the call).
            ch = self._new_channel(event, self._timestamp(event))
            if ch is None:
                return
            self.stats.missing += 1
        ch.state = event.get("ChannelStateDesc", ch.state)
        if ch.state == "Up" and ch.answered is None:
            ch.answered = self._timestamp(event)
            if ch.trunk is not None:
                self._count(ch.trunk).answered += 1
        if ch.direction == "inbound":
            ch.caller = ch.caller or _number(event.get("CallerIDNum"))
        else:
            ch.callee = ch.callee or _number(event.get("CallerIDNum"))
            ch.caller = ch.caller or _number(event.get("ConnectedLineNum"))
        self._chanvars(ch, event)
        self._changed("calls")

    def _on_newcallerid(self, event: Event) -> None:
        ch = self.channels.get(event.get("Uniqueid", ""))
        if ch is not None and ch.direction == "inbound":
            ch.caller = _number(event.get("CallerIDNum")) or ch.caller

    def _on_varset(self, event: Event) -> None:
        if event.get("Variable") != TRUNK_VARIABLE:
            return
        ch = self._get(event.get("Uniqueid", ""))
        if ch is None:
            return
        value = event.get("Value", "")
        if not value or value == ch.trunk:
            return
        self._set_trunk(ch, value)

    def _on_dialbegin(self, event: Event) -> None:
        dest = self.channels.get(event.get("DestUniqueid", ""))
        if dest is None or dest.direction != "outbound":
            return
        number = dialled_number(event.get("DialString", ""))
        if number:
            dest.callee = number
        caller = _number(event.get("CallerIDNum")) or _number(event.get("DestConnectedLineNum"))
        if caller:
            dest.caller = caller
        self._changed("calls")

    def _on_dialend(self, event: Event) -> None:
        dest = self.channels.get(event.get("DestUniqueid", ""))
        if dest is None:
            return
        self._chanvars(dest, event, "DestChanVariable")
        if event.get("DialStatus", "") in FAILED_DIAL and not dest.failed:
            dest.failed = True
            self._count(dest.trunk).failures += 1

    def _on_bridgeenter(self, event: Event) -> None:
        ch = self.channels.get(event.get("Uniqueid", ""))
        if ch is not None and ch.trunk is None:
            self._chanvars(ch, event)

    def _on_hangup(self, event: Event) -> None:
        uid = event.get("Uniqueid", "")
        if self._hung_up is not None:
            self._hung_up.add(uid)
        ch = self.channels.pop(uid, None)
        if ch is None:
            if uid in self._ignored:
                self._ignored.discard(uid)
            else:
                self.stats.missing += 1
            return
        if ch.trunk is None:
            self._chanvars(ch, event)
        if ch.answered is None and not ch.failed and event.get("Cause", "0") not in USER_CAUSES:
            ch.failed = True
            self._count(ch.trunk).failures += 1
        self._changed("calls")

    def _on_status(self, event: Event) -> None:
        """A `Status` (or `CoreShowChannel`) list entry: the channel as it is now."""
        uid = event.get("Uniqueid", "")
        if self._hung_up is not None and uid in self._hung_up:
            return  # the entry is older than the Hangup event already applied
        now = self.clock()
        seconds = event.get("Seconds") or event.get("Duration") or "0"
        try:
            age = float(seconds) if ":" not in seconds else _hms(seconds)
        except ValueError:
            age = 0.0
        ch = self.channels.get(uid)
        if ch is None:
            ch = self._new_channel(event, now - age)
            if ch is None:
                return
        state = event.get("ChannelStateDesc") or STATE_NAMES.get(event.get("ChannelState", ""))
        if state:
            ch.state = state
        if ch.state == "Up" and ch.answered is None:
            ch.answered = now
        self._chanvars(ch, event)
        variables = event.get("Variable")
        if variables:
            for item in variables if isinstance(variables, list) else [variables]:
                key, _, value = item.partition("=")
                if key == TRUNK_VARIABLE and value and value != "(null)":
                    ch.trunk = value
        codec = event.get("Writeformat") or event.get("Readformat") or ""
        if codec:
            ch.codec = codec
        if ch.direction == "outbound":
            ch.callee = ch.callee or _number(event.get("CallerIDNum"))
            ch.caller = ch.caller or _number(event.get("ConnectedLineNum"))
        self._changed("calls")

    def _on_contactstatus(self, event: Event) -> None:
        aor = event.get("AOR", "")
        uri = event.get("URI", "")
        status = event.get("ContactStatus", "")
        key = (aor, uri)
        if status == "Removed":
            self.contacts.pop(key, None)
        else:
            c = self.contacts.get(key)
            if c is None:
                c = self.contacts[key] = ContactState(
                    aor, uri, event.get("EndpointName", ""), status
                )
            if status not in ("Created", "Updated"):
                c.status = status
            elif c.status in ("", "Created"):
                c.status = "Unknown"
            rtt = event.get("RoundtripUsec")
            c.rtt_ms = _rtt(rtt)
        self._changed("contacts")

    def _on_contactlist(self, event: Event) -> None:
        """`ContactList` (PJSIPShowContacts) or `ContactStatusDetail` (PJSIPShowEndpoint)."""
        aor = event.get("Aor", "") or event.get("AOR", "")
        uri = event.get("Uri", "") or event.get("URI", "")
        self.contacts[(aor, uri)] = ContactState(
            aor,
            uri,
            event.get("Endpoint", "") or event.get("EndpointName", ""),
            event.get("Status", "Unknown"),
            _rtt(event.get("RoundtripUsec")),
        )

    def _on_registry(self, event: Event) -> None:
        # res_pjsip_outbound_registration publishes Username=<client uri>, Domain=<server uri>
        client = event.get("Username", "")
        server = event.get("Domain", "")
        status = event.get("Status", "")
        same = [
            r
            for r in self.registrations.values()
            if r.client_uri == client and r.server_uri == server
        ]
        if len(same) == 1:
            same[0].status = status
        elif same:
            # one trunk registered through each edge: the event names no registration, so
            # which one changed is read again (PJSIPShowRegistrationsOutbound, by name)
            self.registrations_unsure = True
        else:
            name = _registration_name(self.trunks, client, server)
            self.registrations[name] = RegistrationState(name, server, client, status)
        self._changed("registrations")

    def _on_registration_detail(self, event: Event) -> None:
        name = event.get("ObjectName", "")
        self.registrations[name] = RegistrationState(
            name,
            event.get("ServerUri", ""),
            event.get("ClientUri", ""),
            event.get("Status", "Unknown"),
            event.get("Endpoint", ""),
        )

    def _on_endpointlist(self, event: Event) -> None:
        self.endpoints[event.get("ObjectName", "")] = event.get("DeviceState", "")

    def _on_fullybooted(self, event: Event) -> None:
        # Sent after every login: a fresh view of the host follows.
        self.reset_calls()


def _number(value: Any) -> str:
    if not value or value == "<unknown>":
        return ""
    return str(value)


def _rtt(value: Any) -> float | None:
    try:
        usec = float(value)
    except (TypeError, ValueError):
        return None
    return round(usec / 1000.0, 3) if usec > 0 else None


def _hms(text: str) -> float:
    parts = [float(p) for p in text.split(":")]
    total = 0.0
    for p in parts:
        total = total * 60 + p
    return total


def _registration_name(trunks: frozenset[str], client: str, server: str) -> str:
    for trunk in sorted(trunks, key=len, reverse=True):
        if trunk in client or trunk in server:
            return trunk
    return f"{client} -> {server}"
