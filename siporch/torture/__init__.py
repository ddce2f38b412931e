"""Malformed and torture SIP messages (modelled on RFC 4475) sent to an edge.

The messages live one per file in ``tests/data/rfc4475/<name>.sip``, written with LF line
ends and placeholders that are filled in at send time:

``{edge}`` the edge's address, ``{src}`` and ``{sport}`` the sender's address and port,
``{transport}`` ``UDP`` or ``TCP`` (for Via), ``{id}`` a token unique per send (branches,
Call-IDs), ``{clen}`` the length of the body as sent (messages whose Content-Length is the
point of the test carry a literal value instead).

`send()` sends one message from the current network namespace and records what came back:
the status lines of the replies, or nothing (a silent drop). Only the edge's address is
ever sent to; `LAB_NETWORK` guards it.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from siporch.errors import SiporchError

CASES_DIR = Path(__file__).resolve().parents[2] / "tests" / "data" / "rfc4475"
LAB_NETWORK = ipaddress.ip_network("198.18.0.0/15")
MARKER = "torture"


class TortureError(SiporchError):
    """A torture message could not be loaded or sent."""


@dataclass(frozen=True)
class Info:
    section: str  # RFC 4475 section ("" for cases beyond the RFC)
    title: str
    what: str


#: Every case: the RFC 4475 section it follows, its title there, what it exercises here.
CATALOG: dict[str, Info] = {
    "wsinv": Info(
        "3.1.1.1",
        "A Short Tortuous INVITE",
        "header names in odd case, compact forms, LWS around colons and in Via, folded "
        "lines, escaped quotes in display names, unknown headers and parameters",
    ),
    "intmeth": Info(
        "3.1.1.2",
        "Wide Range of Valid Characters",
        "unknown method made of every token character, odd but legal characters in the "
        "R-URI user, tags, Call-ID and a header name; UTF-8 in a header value",
    ),
    "esc01": Info(
        "3.1.1.3",
        "Valid Use of the % Escaping Mechanism",
        "%-escaped characters in R-URI user, To, From and Contact parameters",
    ),
    "escnull": Info(
        "3.1.1.4", "Escaped Nulls in URIs", "REGISTER with %00 in To, From and Contact users"
    ),
    "esc02": Info(
        "3.1.1.5",
        "Use of % When It Is Not an Escape",
        "% in the method name, display names and a header name, where it is no escape",
    ),
    "lwsdisp": Info(
        "3.1.1.6",
        "Message with No LWS between Display Name and <",
        "From display name glued to its <URI>",
    ),
    "longreq": Info(
        "3.1.1.7",
        "Long Values in Header Fields",
        "6.5 kB INVITE: long display name, tag parameter, Call-ID, 19 Via values, a header "
        "with 300 values, a 300-character Contact user",
    ),
    "dblreq": Info(
        "3.1.1.8",
        "Extra Trailing Octets in a UDP Datagram",
        "REGISTER with Content-Length 0 followed by a second (INVITE) message in the same "
        "datagram, which must be ignored",
    ),
    "semiuri": Info(
        "3.1.1.9",
        "Semicolon-Separated Parameters in URI User Part",
        "OPTIONS whose R-URI user holds ';par=...'",
    ),
    "transports": Info(
        "3.1.1.10",
        "Varied and Unknown Transport Types",
        "Via values with SCTP, TLS, TCP and an unknown transport",
    ),
    "mpart01": Info(
        "3.1.1.11",
        "Multipart MIME Message",
        "INVITE with a multipart/mixed body: SDP and an optional binary part",
    ),
    "unreason": Info(
        "3.1.1.12",
        "Unusual Reason Phrase",
        "a 200 response (no matching transaction) whose reason phrase is UTF-8 and symbols",
    ),
    "noreason": Info(
        "3.1.1.13", "Empty Reason Phrase", "a 100 response with an empty reason phrase"
    ),
    "badinv01": Info(
        "3.1.2.1",
        "Extraneous Header Field Separators",
        "runs of ';' and ',' in To, From, Via, Contact and inside CSeq",
    ),
    "clerr": Info(
        "3.1.2.2",
        "Content Length Larger Than Message",
        "Content-Length 9999 on a 150-byte body",
    ),
    "ncl": Info("3.1.2.3", "Negative Content-Length", "Content-Length -999"),
    "clshort": Info(
        "",
        "Content-Length smaller than the body (RFC 3261 18.3)",
        "Content-Length 37 on a longer SDP body: over UDP the rest is discarded, over TCP "
        "it is the start of the next message",
    ),
    "scalar02": Info(
        "3.1.2.4",
        "Request Scalar Fields with Overlarge Values",
        "REGISTER with Max-Forwards 300, a 20-digit CSeq, huge Expires, Via port 70000 and ttl 256",
    ),
    "scalarlg": Info(
        "3.1.2.5",
        "Response Scalar Fields with Overlarge Values",
        "a 503 response with a huge CSeq and Retry-After and a 4-digit warning code",
    ),
    "quotbal": Info(
        "3.1.2.6",
        "Unterminated Quoted String in Display Name",
        "To display name opens a quote that never closes",
    ),
    "ltgtruri": Info("3.1.2.7", "<> Enclosing Request-URI", "INVITE <sip:...> SIP/2.0"),
    "lwsruri": Info(
        "3.1.2.8",
        "Malformed SIP Request-URI (embedded LWS)",
        "a space inside the Request-URI ('; lr')",
    ),
    "lwsstart": Info(
        "3.1.2.9",
        "Multiple SP Separating Request-Line Elements",
        "two spaces between the request line's elements",
    ),
    "trws": Info(
        "3.1.2.10", "SP Characters at End of Request-Line", "request line ends with two spaces"
    ),
    "escruri": Info(
        "3.1.2.11",
        "Escaped Headers in SIP Request-URI",
        "Request-URI with an escaped Route header (?Route=%3C...%3E)",
    ),
    "baddate": Info(
        "3.1.2.12", "Invalid Time Zone in Date Header Field", "Date with EST instead of GMT"
    ),
    "regbadct": Info(
        "3.1.2.13",
        "Failure to Enclose name-addr URI in <>",
        "REGISTER Contact URI with headers (?Route=...) not enclosed in <>",
    ),
    "badaspec": Info("3.1.2.14", "Spaces within addr-spec", "spaces inside <...> in From and To"),
    "baddn": Info(
        "3.1.2.15",
        "Non-token Characters in Display Name",
        "unquoted display names with a comma",
    ),
    "badvers": Info("3.1.2.16", "Unknown Protocol Version", "SIP/7.0 in the request line and Via"),
    "mismatch01": Info(
        "3.1.2.17",
        "Start Line and CSeq Method Mismatch",
        "OPTIONS request line, CSeq method INVITE",
    ),
    "mismatch02": Info(
        "3.1.2.18",
        "Unknown Method with CSeq Method Mismatch",
        "NEWMETHOD request line, CSeq method INVITE",
    ),
    "bigcode": Info(
        "3.1.2.19", "Overlarge Response Code", "a response with status code 4294967301"
    ),
    "badbranch": Info(
        "3.2.1",
        "Missing Transaction Identifier",
        "Via branch is the bare magic cookie z9hG4bK",
    ),
    "insuf": Info(
        "3.3.1",
        "Missing Required Header Fields",
        "INVITE without Call-ID, From, To and Max-Forwards",
    ),
    "unkscm": Info("3.3.2", "Request-URI with Unknown Scheme", "OPTIONS nobodyKnowsThisScheme:..."),
    "novelsc": Info(
        "3.3.3",
        "Request-URI with Known but Atypical Scheme",
        "OPTIONS soap.beep://<edge>:3002",
    ),
    "unksm2": Info(
        "3.3.4",
        "Unknown URI Schemes in Header Fields",
        "REGISTER with isbn:, http: and name: URIs in To, From and Contact",
    ),
    "bext01": Info(
        "3.3.5", "Proxy-Require and Require", "Require and Proxy-Require of unknown options"
    ),
    "invut": Info("3.3.6", "Unknown Content-Type", "INVITE with an application/unknownformat body"),
    "regaut01": Info(
        "3.3.7",
        "Unknown Authorization Scheme",
        "REGISTER with Authorization: NoOneKnowsThisScheme",
    ),
    "multi01": Info(
        "3.3.8",
        "Multiple Values in Single Value Required Fields",
        "INVITE with two To, From, Call-ID, CSeq and Max-Forwards",
    ),
    "mcl01": Info(
        "3.3.9",
        "Multiple Content-Length Values",
        "Content-Length 0, 2 and 4 in one OPTIONS",
    ),
    "bcast": Info(
        "3.3.10",
        "200 OK Response with Broadcast Via Header Field Value",
        "a 200 whose second Via has maddr=198.19.255.255 (the lab's broadcast address, "
        "in place of 255.255.255.255) and ttl=1",
    ),
    "zeromf": Info("3.3.11", "Max-Forwards of Zero", "OPTIONS with Max-Forwards 0"),
    "zeromfinv": Info(
        "3.3.11", "Max-Forwards of Zero", "the same as an INVITE (must never be relayed)"
    ),
    "cparam01": Info(
        "3.3.12",
        "REGISTER with a Contact Header Parameter",
        "Contact without <> and an unknown header parameter",
    ),
    "cparam02": Info(
        "3.3.13",
        "REGISTER with a url-parameter",
        "Contact in <> with an unknown URI parameter",
    ),
    "regescrt": Info(
        "3.3.14",
        "REGISTER with a URL Escaped Header",
        "Contact URI with an escaped Route header",
    ),
    "sdp01": Info(
        "3.3.15",
        "Unacceptable Accept Offering",
        "INVITE with SDP whose Accept offers only text/nobodyknowsthis",
    ),
    "inv2543": Info(
        "3.4.1",
        "INVITE with RFC 2543 Syntax",
        "no branch, no Max-Forwards, no Content-Length, c=0.0.0.0 hold",
    ),
}

#: Cases also sent over TCP by the lab test and the report.
TCP_CASES = (
    "wsinv",
    "intmeth",
    "longreq",
    "dblreq",
    "mpart01",
    "clerr",
    "ncl",
    "clshort",
    "insuf",
    "badvers",
    "mcl01",
    "inv2543",
)

_STATUS = re.compile(rb"(?:\A|\r\n\r\n|\n\n)SIP/2\.0 ([0-9]+) ?([^\r\n]*)")


@dataclass(frozen=True)
class Case:
    name: str
    template: bytes

    @property
    def first_line(self) -> str:
        return self.template.split(b"\n", 1)[0].decode("utf-8", "replace")

    @property
    def is_response(self) -> bool:
        return self.first_line.startswith("SIP/")

    @property
    def method(self) -> str | None:
        return None if self.is_response else self.first_line.split(" ", 1)[0]

    @property
    def info(self) -> Info:
        return CATALOG.get(self.name, Info("", self.name, ""))


@dataclass
class Outcome:
    case: str
    transport: str
    source: str
    method: str | None
    replies: list[str] = field(default_factory=list)  # "404 No Such Number", in order
    sent: int = 0  # bytes
    error: str | None = None

    @property
    def final(self) -> str | None:
        for r in self.replies:
            code = r.split(" ", 1)[0]
            if code.isdigit() and int(code) >= 200:
                return r
        return None

    @property
    def verdict(self) -> str:
        if self.error:
            return f"error: {self.error}"
        if self.final:
            return self.final
        if self.replies:
            return f"{self.replies[-1]} only"
        return "no reply (dropped)"

    @property
    def call_answered(self) -> bool:
        """A 2xx to an INVITE: the edge accepted a call."""
        return self.method == "INVITE" and any(r[:1] == "2" for r in self.replies)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "final": self.final, "verdict": self.verdict}


def load_cases(directory: Path = CASES_DIR, names: list[str] | None = None) -> list[Case]:
    if not directory.is_dir():
        raise TortureError(f"no torture messages in {directory}")
    found = {p.stem: p for p in sorted(directory.glob("*.sip"))}
    if names:
        unknown = [n for n in names if n not in found]
        if unknown:
            raise TortureError(f"unknown case(s): {', '.join(unknown)}")
        found = {n: found[n] for n in names}
    return [Case(n, p.read_bytes()) for n, p in found.items()]


def render(
    template: bytes, *, edge: str, src: str, sport: int, transport: str, token: str
) -> bytes:
    """Fill the placeholders in, LF -> CRLF, {clen} = the body length as sent."""
    text = template.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    for key, value in (
        ("{edge}", edge),
        ("{src}", src),
        ("{sport}", str(sport)),
        ("{transport}", transport.upper()),
        ("{id}", token),
    ):
        text = text.replace(key.encode(), value.encode())
    if b"{clen}" in text:
        head, sep, body = text.partition(b"\r\n\r\n")
        text = head.replace(b"{clen}", str(len(body)).encode()) + sep + body
    return text


def statuses(data: bytes) -> list[str]:
    """Status lines ("404 Not Found") of every response in ``data``."""
    return [
        f"{m.group(1).decode()} {m.group(2).decode('utf-8', 'replace')}".strip()
        for m in _STATUS.finditer(data)
    ]


def _headers(message: bytes) -> dict[str, str]:
    compact = {"v": "via", "f": "from", "t": "to", "i": "call-id"}
    out: dict[str, str] = {}
    head = message.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    for line in head.split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            continue
        key = compact.get(name.strip().lower(), name.strip().lower())
        out.setdefault(key, value.strip())
    return out


def ack_for(request: bytes, response: bytes, edge: str) -> bytes | None:
    """The ACK of a non-2xx final response (so the edge stops retransmitting it)."""
    h = _headers(response)
    if not all(k in h for k in ("via", "from", "to", "call-id", "cseq")):
        return None
    parts = request.split(b"\r\n", 1)[0].split(b" ")
    ruri = parts[1].decode("utf-8", "replace") if len(parts) > 2 else ""
    if not ruri.startswith("sip:"):
        ruri = f"sip:{edge}"
    number = h["cseq"].split(" ", 1)[0]
    lines = [
        f"ACK {ruri} SIP/2.0",
        f"Via: {h['via'].split(',', 1)[0]}",
        f"From: {h['from']}",
        f"To: {h['to']}",
        f"Call-ID: {h['call-id']}",
        f"CSeq: {number} ACK",
        "Max-Forwards: 70",
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


def _check_target(edge: str) -> None:
    try:
        address = ipaddress.ip_address(edge)
    except ValueError:
        raise TortureError(f"{edge}: give the edge as an IP address") from None
    if address not in LAB_NETWORK and not address.is_loopback:
        raise TortureError(f"{edge} is not a lab address ({LAB_NETWORK}) nor loopback")


def send(
    case: Case,
    *,
    edge: str,
    src: str,
    transport: str = "udp",
    port: int = 5060,
    timeout: float = 1.0,
) -> Outcome:
    """Send one case to ``edge`` from ``src`` and gather the replies for up to ``timeout``."""
    _check_target(edge)
    transport = transport.lower()
    if transport not in ("udp", "tcp"):
        raise TortureError(f"unknown transport {transport}")
    outcome = Outcome(case.name, transport, src, case.method)
    token = f"{case.name}-{secrets.token_hex(6)}"
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    family = socket.AF_INET6 if ":" in edge else socket.AF_INET
    deadline = time.monotonic() + timeout
    with socket.socket(family, kind) as sock:
        try:
            sock.bind((src, 0))
            sock.settimeout(timeout)
            if transport == "tcp":
                sock.connect((edge, port))
            sport = sock.getsockname()[1]
            payload = render(
                case.template, edge=edge, src=src, sport=sport, transport=transport, token=token
            )
            if transport == "udp":
                sock.sendto(payload, (edge, port))
            else:
                sock.sendall(payload)
            outcome.sent = len(payload)
        except OSError as exc:
            outcome.error = exc.strerror or str(exc)
            return outcome
        received = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                chunk = sock.recv(65535)
            except TimeoutError:
                break
            except OSError as exc:
                outcome.error = exc.strerror or str(exc)
                break
            if not chunk:  # TCP closed by the edge
                break
            received += chunk
            new = statuses(chunk if transport == "udp" else received)
            outcome.replies = outcome.replies + new if transport == "udp" else new
            final = outcome.final
            if final and not case.is_response:
                if case.method == "INVITE" and not final.startswith("2"):
                    ack = ack_for(payload, chunk, edge)
                    if ack is not None:
                        try:
                            if transport == "udp":
                                sock.sendto(ack, (edge, port))
                            else:
                                sock.sendall(ack)
                        except OSError:
                            pass
                break
    return outcome


def send_all(
    cases: list[Case],
    *,
    edge: str,
    src: str,
    transport: str = "udp",
    timeout: float = 1.0,
    pause: float = 0.05,
) -> list[Outcome]:
    """Every case once, in order; bounded by ``len(cases) * (timeout + pause)``."""
    out = []
    for case in cases:
        out.append(send(case, edge=edge, src=src, transport=transport, timeout=timeout))
        time.sleep(pause)
    return out
