"""The lab's DNS server: dnsmasq on the lab host ``dns`` (198.18.0.53).

It answers only the lab's names (no upstream server, no recursion: ``no-resolv`` and no
``server=``), with A, SRV and NAPTR records and short TTLs, so a record changed at run
time is seen within seconds. Every lab host's ``/etc/resolv.conf`` names it.

The records live in the dns host as JSON (``/etc/siporch-lab-dns/records.json``) and are
rendered into dnsmasq's configuration; a change rewrites the files and restarts dnsmasq
(SIGHUP does not re-read ``srv-host`` or ``naptr-record``). ``lab down`` drops the
changes with the host's overlay: a new lab starts from ``default_records()``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from siporch.errors import LabError
from siporch.lab import dnsquery, procs
from siporch.lab import hosts as hostfs
from siporch.lab.spec import DNS_ADDRESS, DNS_HOST, HOSTS, LAB_DOMAIN, LabPaths, host_by_name

CONF_DIR = "/etc/siporch-lab-dns"
CONFIG = f"{CONF_DIR}/dnsmasq.conf"
RECORDS_CONF = f"{CONF_DIR}/records.conf"
RECORDS_JSON = f"{CONF_DIR}/records.json"
PIDFILE = "/run/dnsmasq.pid"
LOG = "/var/log/dnsmasq.log"
TTL = 5
TYPES = ("A", "SRV", "NAPTR")
# Fields of one record's value, in order (see ``parse_value``).
FIELDS = {
    "A": ("address",),
    "SRV": ("priority", "weight", "port", "target"),
    "NAPTR": ("order", "preference", "flags", "service", "replacement"),
}
READY_S = 5.0
_LABEL = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?$")
_SERVICE = re.compile(r"^[A-Za-z0-9+:._-]{1,64}$")


@dataclass(frozen=True, order=True)
class DnsRecord:
    """One record: ``value`` is the type's fields separated by blanks (``FIELDS``)."""

    name: str
    type: str
    value: str

    def describe(self) -> str:
        return f"{self.name} {self.type} {self.value}"


def default_records() -> list[DnsRecord]:
    """The records of a new lab: ITSP C's NAPTR/SRV/A and ``<host>.lab.example``."""
    c = "itsp-c.example"
    out = [
        DnsRecord(c, "NAPTR", f"10 10 S SIP+D2U _sip._udp.{c}"),
        DnsRecord(c, "NAPTR", f"20 10 S SIPS+D2T _sips._tcp.{c}"),
        DnsRecord(f"_sip._udp.{c}", "SRV", f"10 10 5060 sip1.{c}"),
        DnsRecord(f"_sip._udp.{c}", "SRV", f"20 10 5060 sip2.{c}"),
        DnsRecord(f"_sips._tcp.{c}", "SRV", f"10 10 5061 sip1.{c}"),
        DnsRecord(f"_sips._tcp.{c}", "SRV", f"20 10 5061 sip2.{c}"),
        DnsRecord(f"sip1.{c}", "A", "198.18.1.60"),
        DnsRecord(f"sip2.{c}", "A", "198.18.1.61"),
        DnsRecord(f"wrong.{c}", "A", "198.18.1.61"),
    ]
    out += [DnsRecord(f"{h.name}.{LAB_DOMAIN}", "A", h.address) for h in HOSTS]
    return out


# --- validation -------------------------------------------------------------------------


def check_name(name: str) -> str:
    """A DNS name (letters, digits, ``-``, ``_``; labels of 1-63), lower case, no dot at
    the end; raises LabError otherwise."""
    clean = name.strip().rstrip(".").lower()
    labels = clean.split(".")
    if not clean or len(clean) > 253 or not all(_LABEL.match(p) for p in labels):
        raise LabError(f"dns: {name!r} is not a DNS name")
    return clean


def check_type(rtype: str) -> str:
    up = rtype.strip().upper()
    if up not in TYPES:
        raise LabError(f"dns: record type {rtype!r} is not one of {', '.join(TYPES)}")
    return up


def _u16(text: str, what: str, rtype: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise LabError(f"dns: {rtype} {what} {text!r} is not a number 0-65535")
    return value


def parse_value(rtype: str, tokens: list[str]) -> str:
    """The canonical value of one record of ``rtype`` from its fields."""
    rtype = check_type(rtype)
    want = FIELDS[rtype]
    if len(tokens) != len(want):
        raise LabError(
            f"dns: a {rtype} record needs {len(want)} field(s) ({' '.join(want)}), "
            f"got {len(tokens)}: {' '.join(tokens)!r}"
        )
    if rtype == "A":
        try:
            address = ipaddress.IPv4Address(tokens[0])
        except ValueError as exc:
            raise LabError(f"dns: A address {tokens[0]!r} is not an IPv4 address") from exc
        return str(address)
    if rtype == "SRV":
        nums = [_u16(t, w, rtype) for t, w in zip(tokens[:3], want, strict=False)]
        return " ".join([*map(str, nums), check_name(tokens[3])])
    order, pref = (_u16(t, w, rtype) for t, w in zip(tokens[:2], want, strict=False))
    flags, service = tokens[2], tokens[3]
    if not re.fullmatch(r"[A-Za-z0-9]{0,8}", flags):
        raise LabError(f"dns: NAPTR flags {flags!r} must be letters or digits (e.g. S)")
    if not _SERVICE.match(service):
        raise LabError(f"dns: NAPTR service {service!r} is not a service (e.g. SIP+D2U)")
    return f"{order} {pref} {flags.upper()} {service} {check_name(tokens[4])}"


def parse_values(rtype: str, values: list[str]) -> list[str]:
    """Values of ``dns set``: each argument one record, or the fields of several records
    in a row (``10 10 5060 a 20 10 5060 b``): the blanks-separated fields are taken in
    groups of the type's field count."""
    rtype = check_type(rtype)
    tokens = [t for v in values for t in v.split()]
    size = len(FIELDS[rtype])
    if not tokens:
        raise LabError(f"dns: no value given for the {rtype} record")
    if len(tokens) % size:
        raise LabError(
            f"dns: {len(tokens)} field(s) do not make whole {rtype} records of {size} "
            f"({' '.join(FIELDS[rtype])})"
        )
    return [parse_value(rtype, tokens[i : i + size]) for i in range(0, len(tokens), size)]


# --- rendering --------------------------------------------------------------------------


def render_records(records: list[DnsRecord]) -> str:
    """dnsmasq's lines for ``records`` (host-record, srv-host, naptr-record)."""
    lines = ["# Written by siporch lab dns: do not edit (siporch lab dns set/reset)."]
    for rec in sorted(records, key=lambda r: (r.type, r.name, r.value)):
        f = rec.value.split()
        if rec.type == "A":
            lines.append(f"host-record={rec.name},{f[0]},{TTL}")
        elif rec.type == "SRV":
            lines.append(f"srv-host={rec.name},{f[3]},{f[2]},{f[0]},{f[1]}")
        else:
            lines.append(f"naptr-record={rec.name},{f[0]},{f[1]},{f[2]},{f[3]},,{f[4]}")
    return "\n".join(lines) + "\n"


def render_config() -> str:
    """dnsmasq's main configuration: lab names only, no upstream, short TTLs."""
    return "\n".join(
        [
            "# siporch lab DNS (dnsmasq): answers the lab's names only. Written by siporch.",
            "no-resolv",  # no upstream servers from resolv.conf ...
            "no-poll",
            "no-hosts",  # ... and no server= line: nothing is ever forwarded
            "domain-needed",
            "bogus-priv",
            "local=/example/",  # names under example are ours: NXDOMAIN when unknown
            "local=/18.198.in-addr.arpa/",
            "local=/19.198.in-addr.arpa/",
            f"listen-address={DNS_ADDRESS}",
            "listen-address=127.0.0.1",
            "bind-interfaces",
            "port=53",
            "user=root",
            f"pid-file={PIDFILE}",
            f"local-ttl={TTL}",
            f"max-ttl={TTL}",
            f"neg-ttl={TTL}",
            "log-queries",
            f"log-facility={LOG}",
            f"conf-file={RECORDS_CONF}",
            "",
        ]
    )


# --- the dns host -----------------------------------------------------------------------


def _root(paths: LabPaths) -> Path:
    return paths.host_root(DNS_HOST)


def _host_is_up(paths: LabPaths) -> bool:
    return Path(f"/run/netns/sipo-{DNS_HOST}").exists() and hostfs.is_mounted(_root(paths))


def _require_up(paths: LabPaths) -> None:
    if not _host_is_up(paths):
        raise LabError(f"the lab host {DNS_HOST} is not up", hint="run `siporch lab up` first")


def records(paths: LabPaths | None = None) -> list[DnsRecord]:
    """The records the lab's DNS serves now (the defaults before any change)."""
    paths = paths or LabPaths.default()
    path = _root(paths) / RECORDS_JSON.lstrip("/")
    try:
        data = json.loads(path.read_text())
        return [DnsRecord(str(d["name"]), str(d["type"]), str(d["value"])) for d in data]
    except (OSError, ValueError, KeyError, TypeError):
        return default_records()


def _write(paths: LabPaths, recs: list[DnsRecord]) -> None:
    conf = _root(paths) / CONF_DIR.lstrip("/")
    conf.mkdir(parents=True, exist_ok=True)
    for rel, text in (
        (RECORDS_JSON, json.dumps([asdict(r) for r in sorted(set(recs))], indent=2) + "\n"),
        (RECORDS_CONF, render_records(recs)),
        (CONFIG, render_config()),
    ):
        target = _root(paths) / rel.lstrip("/")
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, target)


def pid(paths: LabPaths | None = None) -> int | None:
    """dnsmasq's pid in the dns host, when it runs."""
    paths = paths or LabPaths.default()
    return hostfs.pid_alive(_root(paths), PIDFILE)


def answers(timeout: float = 0.5) -> bool:
    """Whether the lab's DNS answers (a question about the dns host's own name)."""
    try:
        reply = dnsquery.query(f"{DNS_HOST}.{LAB_DOMAIN}", "A", DNS_ADDRESS, timeout=timeout)
    except OSError:
        return False
    return reply["rcode"] == "NOERROR"


def _start(paths: LabPaths) -> None:
    host = host_by_name(DNS_HOST)
    assert host is not None
    # dnsmasq daemonises; its own log goes to LOG, early failures to the start log.
    hostfs.spawn_in_host(
        host, paths, ["/usr/sbin/dnsmasq", f"--conf-file={CONFIG}"], "/var/log/dnsmasq.start.log"
    )
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        if pid(paths) is not None and answers(timeout=0.2):
            return
        time.sleep(0.02)
    log = _root(paths) / "var/log/dnsmasq.start.log"
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
    raise LabError(
        f"dnsmasq on {DNS_HOST} did not answer in {READY_S:g} s" + (f": {tail[0]}" if tail else "")
    )


def _stop(paths: LabPaths) -> None:
    running = pid(paths)
    if running is not None:
        procs.kill_processes([running], grace=2.0)


def ensure_running(paths: LabPaths | None = None) -> bool:
    """Start dnsmasq on the dns host unless it runs; writes the default records when the
    host has none. Returns True when it had to start it."""
    paths = paths or LabPaths.default()
    if pid(paths) is not None:
        return False
    _require_up(paths)
    _write(paths, records(paths))
    _start(paths)
    return True


def apply(recs: list[DnsRecord], paths: LabPaths | None = None) -> list[DnsRecord]:
    """Serve exactly ``recs``: rewrite dnsmasq's files and restart it."""
    paths = paths or LabPaths.default()
    _require_up(paths)
    _write(paths, recs)
    _stop(paths)
    _start(paths)
    return records(paths)


def set_record(
    name: str, rtype: str, values: list[str], paths: LabPaths | None = None
) -> list[DnsRecord]:
    """Replace every ``rtype`` record of ``name`` by ``values`` (see ``parse_values``);
    returns the records of ``name`` now served."""
    name, rtype = check_name(name), check_type(rtype)
    new = [DnsRecord(name, rtype, v) for v in parse_values(rtype, values)]
    paths = paths or LabPaths.default()
    kept = [r for r in records(paths) if not (r.name == name and r.type == rtype)]
    return [r for r in apply(kept + new, paths) if r.name == name]


def delete_record(
    name: str, rtype: str | None = None, paths: LabPaths | None = None
) -> list[DnsRecord]:
    """Remove the records of ``name`` (of ``rtype`` only, when given); returns those removed."""
    name = check_name(name)
    rtype = check_type(rtype) if rtype else None
    paths = paths or LabPaths.default()
    current = records(paths)
    gone = [r for r in current if r.name == name and (rtype is None or r.type == rtype)]
    if not gone:
        raise LabError(f"dns: no {rtype or ''} record of {name} to delete".replace("  ", " "))
    apply([r for r in current if r not in gone], paths)
    return gone


def reset(paths: LabPaths | None = None) -> list[DnsRecord]:
    """Back to ``default_records()``."""
    return apply(default_records(), paths)
