"""The provider's request recorder (standard library only; runs inside a provider host).

The provider's Kamailio sends one UDP datagram per request it receives to
127.0.0.1:RECORDER_PORT: a JSON line of what its script saw and decided (source, transport,
credentials, response) and then the request exactly as received. This turns each into one
JSON line of ``/var/log/siporch-itsp/received.jsonl`` (see ``record()`` for the fields).

Usage inside the host: ``python3 itsp_recorder.py [PORT [FILE]]``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from typing import Any

RECORDER_PORT = 5099
RECORD_FILE = "/var/log/siporch-itsp/received.jsonl"
COMPACT = {"f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length",
           "c": "content-type", "v": "via", "k": "supported", "s": "subject"}  # fmt: skip
STATIC_PAYLOADS = {"0": "PCMU", "3": "GSM", "4": "G723", "8": "PCMA", "9": "G722",
                   "18": "G729"}  # fmt: skip


def parse_message(raw: str) -> tuple[str, dict[str, list[str]], str]:
    """First line, headers (lower-case full names -> values in order) and body."""
    head, _, body = raw.replace("\r\n", "\n").partition("\n\n")
    lines = head.split("\n")
    unfolded: list[str] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and unfolded:
            unfolded[-1] += " " + line.strip()
        elif line:
            unfolded.append(line)
    headers: dict[str, list[str]] = {}
    for line in unfolded:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        key = COMPACT.get(key, key)
        headers.setdefault(key, []).append(value.strip())
    return lines[0].strip(), headers, body


def name_addr(value: str | None) -> dict[str, str] | None:
    """``"Name" <sip:u@h>;tag=x`` -> ``{"uri": "sip:u@h", "display": "Name"}``."""
    if value is None:
        return None
    value = value.strip()
    if "<" in value:
        display, _, rest = value.partition("<")
        uri = rest.partition(">")[0]
        display = display.strip()
        if display.startswith('"') and display.endswith('"') and len(display) >= 2:
            display = display[1:-1].replace('\\"', '"')
        return {"uri": uri.strip(), "display": display}
    return {"uri": value.split(";", 1)[0].strip(), "display": ""}


def sdp_codecs(body: str) -> tuple[list[str], bool]:
    """The audio codecs of an SDP offer in the m= line's order (rtpmap names; static
    payload types without an rtpmap by their RFC 3551 name) and whether telephone-event
    is among them."""
    formats: list[str] = []
    rtpmap: dict[str, str] = {}
    in_audio = False
    for line in body.replace("\r\n", "\n").split("\n"):
        if line.startswith("m="):
            parts = line[2:].split()
            in_audio = bool(parts) and parts[0] == "audio"
            if in_audio and not formats:
                formats = parts[3:]
        elif in_audio and line.startswith("a=rtpmap:"):
            pt, _, enc = line[len("a=rtpmap:") :].partition(" ")
            rtpmap[pt.strip()] = enc.split("/", 1)[0].strip()
    names = [rtpmap.get(pt, STATIC_PAYLOADS.get(pt, pt)) for pt in formats]
    return names, any(n.lower() == "telephone-event" for n in names)


def record(meta: dict[str, Any], raw: str, now: float | None = None) -> dict[str, Any]:
    """One line of received.jsonl for a request ``raw`` and the script's ``meta``."""
    now = time.time() if now is None else now
    first, headers, body = parse_message(raw)
    parts = first.split()
    method = parts[0] if parts else ""
    ruri = parts[1] if len(parts) > 1 else ""

    def one(name: str) -> str | None:
        values = headers.get(name)
        return values[0] if values else None

    ctype = (one("content-type") or "").lower()
    codecs, dtmf = sdp_codecs(body) if "application/sdp" in ctype else ([], False)
    pai = headers.get("p-asserted-identity", [])
    auth = str(meta.get("auth", "none"))
    cseq = one("cseq") or ""
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z",
        "ts": round(now, 3),
        "host": meta.get("host"),
        "method": method,
        "ruri": ruri,
        "from": name_addr(one("from")),
        "to": name_addr(one("to")),
        "pai": [name_addr(v) for v in pai],
        "privacy": one("privacy"),
        "src_ip": meta.get("src_ip"),
        "src_port": meta.get("src_port"),
        "proto": str(meta.get("proto", "")).lower(),
        "auth": auth,
        "credentials": auth == "valid",
        "call_id": one("call-id"),
        "cseq": cseq,
        "user_agent": one("user-agent"),
        "codecs": codecs,
        "telephone_event": dtmf,
        "response": meta.get("response"),
    }


def parse_datagram(data: bytes, now: float | None = None) -> dict[str, Any]:
    text = data.decode("utf-8", errors="replace")
    first, _, raw = text.partition("\n")
    try:
        meta = json.loads(first)
    except ValueError:
        meta = {"response": "unknown", "error": "bad meta line"}
    return record(meta, raw, now)


def serve(port: int, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind(("127.0.0.1", port))
    while True:
        data, _ = sock.recvfrom(65535)
        try:
            line = json.dumps(parse_datagram(data), separators=(",", ":"))
        except Exception as exc:  # a record is never worth the recorder
            line = json.dumps({"time": time.time(), "error": f"unparsable request: {exc}"})
        # Opened per line with O_APPEND: `clear()` may truncate or remove the file.
        with open(path, "a") as fh:
            fh.write(line + "\n")


if __name__ == "__main__":
    serve(
        int(sys.argv[1]) if len(sys.argv) > 1 else RECORDER_PORT,
        sys.argv[2] if len(sys.argv) > 2 else RECORD_FILE,
    )
