"""A tiny DNS client (standard library only): A, SRV and NAPTR questions over UDP.

It runs on the controller and inside lab hosts (``python3 -c "$(cat dnsquery.py)" NAME
TYPE [SERVER]`` prints the answer as JSON), so lab tests can see what a lab host's
resolver sees, SRV and NAPTR included, without adding a DNS tool to the lab root.
"""

from __future__ import annotations

import json
import random
import socket
import struct
import sys
from typing import Any

TYPES = {"A": 1, "SRV": 33, "NAPTR": 35}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def build_query(name: str, qtype: str, ident: int) -> bytes:
    header = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0)  # RD set, one question
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".") if p)
    return header + labels + b"\x00" + struct.pack("!HH", TYPES[qtype], 1)


def _name(data: bytes, pos: int) -> tuple[str, int]:
    """A (possibly compressed) name at ``pos``; returns it and the position after it."""
    labels: list[str] = []
    end = -1
    for _ in range(128):
        length = data[pos]
        if length & 0xC0 == 0xC0:
            if end < 0:
                end = pos + 2
            pos = ((length & 0x3F) << 8) | data[pos + 1]
            continue
        if length == 0:
            pos += 1
            break
        labels.append(data[pos + 1 : pos + 1 + length].decode(errors="replace"))
        pos += 1 + length
    return ".".join(labels), (end if end >= 0 else pos)


def _strings(data: bytes, pos: int, count: int) -> tuple[list[str], int]:
    out = []
    for _ in range(count):
        length = data[pos]
        out.append(data[pos + 1 : pos + 1 + length].decode(errors="replace"))
        pos += 1 + length
    return out, pos


def parse_response(data: bytes) -> dict[str, Any]:
    ident, flags, qd, an, _ns, _ar = struct.unpack("!HHHHHH", data[:12])
    pos = 12
    for _ in range(qd):
        _, pos = _name(data, pos)
        pos += 4
    answers: list[dict[str, Any]] = []
    for _ in range(an):
        name, pos = _name(data, pos)
        rtype, _cls, ttl, rdlen = struct.unpack("!HHIH", data[pos : pos + 10])
        pos += 10
        rdata = pos
        pos += rdlen
        entry: dict[str, Any] = {"name": name, "ttl": ttl}
        if rtype == 1:
            entry.update(type="A", address=socket.inet_ntoa(data[rdata : rdata + 4]))
        elif rtype == 33:
            prio, weight, port = struct.unpack("!HHH", data[rdata : rdata + 6])
            target, _ = _name(data, rdata + 6)
            entry.update(type="SRV", priority=prio, weight=weight, port=port, target=target)
        elif rtype == 35:
            order, pref = struct.unpack("!HH", data[rdata : rdata + 4])
            (flags_s, service, regexp), after = _strings(data, rdata + 4, 3)
            replacement, _ = _name(data, after)
            entry.update(
                type="NAPTR",
                order=order,
                preference=pref,
                flags=flags_s,
                service=service,
                regexp=regexp,
                replacement=replacement,
            )
        else:
            entry.update(type=str(rtype))
        answers.append(entry)
    return {"id": ident, "rcode": RCODES.get(flags & 0xF, str(flags & 0xF)), "answers": answers}


def query(name: str, qtype: str, server: str, port: int = 53, timeout: float = 2.0) -> dict[str, Any]:
    """Ask ``server`` one question; returns ``{"rcode", "answers": [...]}``."""
    ident = random.randrange(1 << 16)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(build_query(name, qtype.upper(), ident), (server, port))
        while True:
            data, _ = sock.recvfrom(4096)
            if len(data) >= 12 and struct.unpack("!H", data[:2])[0] == ident:
                return parse_response(data)


def resolv_conf_server(path: str = "/etc/resolv.conf") -> str:
    """The first ``nameserver`` of ``path`` (what the host's resolver asks)."""
    with open(path) as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                return parts[1]
    raise SystemExit(f"{path}: no nameserver line")


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1].upper() not in TYPES:
        print("usage: dnsquery NAME A|SRV|NAPTR [SERVER]", file=sys.stderr)
        return 2
    server = argv[2] if len(argv) > 2 else resolv_conf_server()
    print(json.dumps(query(argv[0], argv[1], server)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
