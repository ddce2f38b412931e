"""rtpengine's ng control protocol: bencoded dictionaries over UDP, each behind a cookie.

A request is `<cookie> <bencoded dict>`; the reply repeats the cookie. Used by `status` for
`ping` and `statistics` (sessions, packet and error rates). rtpengine listens for ng on the
address given by `listen-ng`; from the controller it has to be reachable there.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from siporch.errors import MonitorError

Bencodable = int | str | bytes | list[Any] | dict[str, Any]


class BencodeError(ValueError):
    """Malformed bencoded data."""


def bencode(value: Any) -> bytes:
    """Encode ints, str/bytes, lists and dicts (keys sorted, as bencoding requires)."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list | tuple):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    if isinstance(value, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes) -> Any:
    """Decode bencoded data; byte strings come back as str when they are UTF-8."""
    value, end = _decode(data, 0)
    if end != len(data):
        raise BencodeError(f"trailing data at offset {end}")
    return value


def _decode(data: bytes, i: int) -> tuple[Any, int]:
    if i >= len(data):
        raise BencodeError("truncated data")
    c = data[i : i + 1]
    if c == b"i":
        end = data.index(b"e", i)
        try:
            return int(data[i + 1 : end]), end + 1
        except ValueError:
            raise BencodeError(f"bad integer at offset {i}") from None
    if c == b"l":
        i += 1
        items = []
        while data[i : i + 1] != b"e":
            v, i = _decode(data, i)
            items.append(v)
        return items, i + 1
    if c == b"d":
        i += 1
        d: dict[str, Any] = {}
        while data[i : i + 1] != b"e":
            k, i = _decode(data, i)
            v, i = _decode(data, i)
            d[k if isinstance(k, str) else k.decode("latin-1")] = v
        return d, i + 1
    if c.isdigit():
        colon = data.index(b":", i)
        n = int(data[i:colon])
        start = colon + 1
        raw = data[start : start + n]
        if len(raw) != n:
            raise BencodeError("truncated string")
        try:
            return raw.decode(), start + n
        except UnicodeDecodeError:
            return raw, start + n
    raise BencodeError(f"unexpected byte {c!r} at offset {i}")


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.waiting: dict[bytes, asyncio.Future[bytes]] = {}

    def datagram_received(self, data: bytes, addr: Any) -> None:
        cookie, _, _ = data.partition(b" ")
        fut = self.waiting.pop(cookie, None)
        if fut is not None and not fut.done():
            fut.set_result(data)

    def error_received(self, exc: Exception) -> None:
        for fut in self.waiting.values():
            if not fut.done():
                fut.set_exception(exc)
        self.waiting.clear()


async def ng_request(
    host: str, port: int, command: dict[str, Any], *, timeout: float = 2.0, retries: int = 2
) -> dict[str, Any]:
    """Send one ng command and return the decoded reply; raises `MonitorError`."""
    loop = asyncio.get_running_loop()
    try:
        transport, proto = await loop.create_datagram_endpoint(_Client, remote_addr=(host, port))
    except OSError as exc:
        raise MonitorError(f"rtpengine ng at {host}:{port}: {exc.strerror or exc}") from None
    where = f"{host}:{port}"
    try:
        for attempt in range(retries + 1):
            cookie, packet = ng_packet(command)
            fut: asyncio.Future[bytes] = loop.create_future()
            proto.waiting[cookie] = fut
            transport.sendto(packet)
            try:
                data = await asyncio.wait_for(fut, timeout=timeout / (retries + 1))
            except TimeoutError:
                proto.waiting.pop(cookie, None)
                if attempt == retries:
                    raise MonitorError(
                        f"rtpengine ng at {where} did not answer within {timeout:g} s"
                    ) from None
                continue
            except OSError as exc:
                raise MonitorError(f"rtpengine ng at {where}: {exc.strerror or exc}") from None
            return parse_reply(cookie, data, where)
        raise AssertionError("unreachable")  # pragma: no cover
    finally:
        transport.close()


async def ping(host: str, port: int, *, timeout: float = 2.0) -> bool:
    reply = await ng_request(host, port, {"command": "ping"}, timeout=timeout)
    return reply.get("result") == "pong"


async def statistics(host: str, port: int, *, timeout: float = 2.0) -> dict[str, Any]:
    """The `currentstatistics` part of rtpengine's `statistics`: sessions and rates."""
    reply = await ng_request(host, port, {"command": "statistics"}, timeout=timeout)
    return current_statistics(reply)


#: Run on the edge host over SSH: one ng request to 127.0.0.1, reply printed as hex.
#: rtpengine's ng protocol has no authentication, so it listens on loopback only and the
#: controller reaches it through SSH, as Ansible does.
REMOTE_NG = (
    "import socket,sys;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
    "s.settimeout(float(sys.argv[2]));"
    "s.sendto(bytes.fromhex(sys.argv[3]),('127.0.0.1',int(sys.argv[1])));"
    "sys.stdout.write(s.recv(65535).hex())"
)


def ng_packet(command: dict[str, Any]) -> tuple[bytes, bytes]:
    """(cookie, datagram) of one ng request."""
    cookie = os.urandom(6).hex().encode()
    return cookie, cookie + b" " + bencode(command)


def parse_reply(cookie: bytes, data: bytes, where: str) -> dict[str, Any]:
    head, _, body = data.partition(b" ")
    if head != cookie:
        raise MonitorError(f"rtpengine ng at {where}: reply for another request")
    try:
        reply = bdecode(body)
    except (BencodeError, ValueError) as exc:
        raise MonitorError(f"rtpengine ng at {where}: bad reply: {exc}") from None
    if not isinstance(reply, dict):
        raise MonitorError(f"rtpengine ng at {where}: reply is not a dictionary")
    if reply.get("result") == "error":
        raise MonitorError(f"rtpengine ng at {where}: {reply.get('error-reason', 'error')}")
    return reply


def current_statistics(reply: dict[str, Any]) -> dict[str, Any]:
    stats = reply.get("statistics", {})
    current = stats.get("currentstatistics", {}) if isinstance(stats, dict) else {}
    return {
        "sessions": _int(current.get("sessionstotal", current.get("sessionsown"))),
        "sessions_own": _int(current.get("sessionsown")),
        "sessions_foreign": _int(current.get("sessionsforeign")),
        "transcoded_media": _int(current.get("transcodedmedia")),
        "packet_rate": _int(current.get("packetrate")),
        "byte_rate": _int(current.get("byterate")),
        "error_rate": _int(current.get("errorrate")),
    }


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
