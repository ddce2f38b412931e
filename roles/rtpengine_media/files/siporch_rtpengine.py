#!/usr/bin/env python3
"""Host-side helper for the rtpengine_media role (standard library only).

Subcommands:
  check-tree RELEASE_DIR  the real rtpengine parses the release's rtpengine.conf
                          (`rtpengine --config-file F --version` fails on bad values) and every
                          key of the section is an option that this rtpengine knows; the
                          rtpengine is a supported version (10.5 or newer).
  ping                    the ng control port of the live config answers `ping`.
  sessions                print the number of sessions rtpengine carries now (a foreign
                          session counts while its call is in its edge's Redis database).
Exit status: 0 on success, 1 on a failed check.
"""

from __future__ import annotations

import configparser
import os
import re
import socket
import sys
import uuid
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # siporch_hostlib beside it
from siporch_hostlib import Failure, Helper, run

LIVE_ROOT = "/etc/siporch/current"
SECTION = "rtpengine"


def _read(conf: Path) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, comment_prefixes=("#", ";"))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(conf.read_text())
    except configparser.Error as exc:
        raise Failure(f"{conf.name}: {exc}") from exc
    if SECTION not in parser:
        raise Failure(f"{conf.name}: no [{SECTION}] section")
    return parser[SECTION]


# The oldest rtpengine the rendered configuration is made for (Debian 12's).
OLDEST_RTPENGINE = (10, 5)


def rtpengine_version(text: str) -> tuple[int, int]:
    """(major, minor) from the output of `rtpengine --version`."""
    m = re.search(r"Version:\s*(\d+)\.(\d+)", text)
    if not m:
        first = text.strip().splitlines()[0] if text.strip() else "nothing"
        raise Failure(f"cannot read the rtpengine version from `rtpengine --version`: {first}")
    return int(m.group(1)), int(m.group(2))


def require_rtpengine(version: tuple[int, int]) -> None:
    if version < OLDEST_RTPENGINE:
        have = ".".join(map(str, version))
        want = ".".join(map(str, OLDEST_RTPENGINE))
        raise Failure(f"rtpengine {have} is not supported: siporch needs rtpengine {want} or newer")


def check_tree(release: Path, binary: str) -> str:
    conf = release / "rtpengine" / "rtpengine.conf"
    if not conf.is_file():
        raise Failure(f"{conf} is missing")
    section = _read(conf)
    helptext = run([binary, "--help"])
    known = set(re.findall(r"--([a-z0-9-]+)", helptext.stdout + helptext.stderr))
    unknown = sorted(k for k in section if known and k not in known)
    if unknown:
        raise Failure(f"rtpengine.conf: options this rtpengine does not know: {unknown}")
    out = run([binary, "--config-file", str(conf), "--version"])
    if out.returncode != 0:
        detail = (out.stderr or out.stdout).strip()
        raise Failure(
            f"rtpengine rejected {conf.name} (exit {out.returncode}){': ' + detail if detail else ''}"
        )
    version = rtpengine_version(out.stdout + out.stderr)
    require_rtpengine(version)
    return (
        f"rtpengine {'.'.join(map(str, version))} accepts {conf.name} "
        f"({len(section)} option(s))"
    )


# ---------------------------------------------------------------- ng protocol (bencode)


def bencode(value: object) -> bytes:
    if isinstance(value, bytes):
        return str(len(value)).encode() + b":" + value
    if isinstance(value, str):
        return bencode(value.encode())
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, list):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    if isinstance(value, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"
    raise TypeError(type(value))


def bdecode(data: bytes, pos: int = 0) -> tuple[object, int]:
    c = data[pos : pos + 1]
    if c == b"i":
        end = data.index(b"e", pos)
        return int(data[pos + 1 : end]), end + 1
    if c in (b"l", b"d"):
        pos += 1
        items: list[object] = []
        while data[pos : pos + 1] != b"e":
            item, pos = bdecode(data, pos)
            items.append(item)
        if c == b"l":
            return items, pos + 1
        return {
            (k.decode() if isinstance(k, bytes) else k): v
            for k, v in zip(items[::2], items[1::2], strict=True)
        }, pos + 1
    colon = data.index(b":", pos)
    length = int(data[pos:colon])
    start = colon + 1
    return data[start : start + length], start + length


def ng_address(conf: Path) -> tuple[str, int]:
    section = _read(conf)
    listen = section.get("listen-ng", "")
    if not listen:
        raise Failure(f"{conf.name}: no listen-ng")
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return host, int(port)


def ng(conf: Path, command: dict[str, object], timeout: float = 2.0) -> dict[str, object]:
    host, port = ng_address(conf)
    cookie = uuid.uuid4().hex[:12].encode()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        for _ in range(3):
            sock.sendto(cookie + b" " + bencode(command), (host, port))
            try:
                while True:
                    data = sock.recv(1 << 20)
                    if data.startswith(cookie + b" "):
                        reply, _ = bdecode(data, len(cookie) + 1)
                        if not isinstance(reply, dict):
                            raise Failure("rtpengine: malformed ng reply")
                        return reply
            except TimeoutError:
                continue
    raise Failure(f"rtpengine ng on {host}:{port} does not answer")


class _Redis:
    """The few Redis commands the guard needs (RESP over a socket; no client library)."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.reader = self.sock.makefile("rb")

    def __enter__(self) -> _Redis:
        return self

    def __exit__(self, *_: object) -> None:
        self.reader.close()
        self.sock.close()

    def call(self, *args: bytes) -> int | bytes:
        """One command, its one-line reply (AUTH, SELECT: a status; EXISTS: an integer);
        an error reply raises Failure."""
        head = b"*%d\r\n" % len(args)
        self.sock.sendall(head + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
        line = self.reader.readline()
        if not line.endswith(b"\r\n"):
            raise OSError("Redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b":":
            return int(rest)
        if kind == b"+":
            return rest
        raise Failure(f"Redis: {rest.decode(errors='replace')}")


def _redis_target(value: str) -> tuple[str | None, str, int]:
    """(password, host, port) of rtpengine's ``redis = [PW@]HOST:PORT/DB``."""
    password, _, rest = value.strip().rpartition("@")
    host, _, port = rest.partition("/")[0].rpartition(":")
    return password or None, host.strip("[]"), int(port)


def replicated(conf: Path, callids: list[bytes], timeout: float = 2.0) -> int:
    """How many of ``callids`` still have their key (rtpengine's key is the call-id) in one
    of the databases this rtpengine follows (``subscribe-keyspace``): the other edges'
    live calls. A foreign session whose key is gone is a replica whose deletion this
    rtpengine never saw (it was not subscribed then, or Redis lost the notification); it
    carries no call."""
    section = _read(conf)
    dbs = [int(d) for d in re.split(r"[;,\s]+", section.get("subscribe-keyspace", "")) if d]
    if not dbs or not callids:
        return 0
    password, host, port = _redis_target(section.get("redis", ""))
    live = 0
    with _Redis(host, port, timeout) as redis:
        if password:
            redis.call(b"AUTH", password.encode())
        for db in dbs:
            redis.call(b"SELECT", str(db).encode())
            for i in range(0, len(callids), 500):
                count = redis.call(b"EXISTS", *callids[i : i + 500])
                live += count if isinstance(count, int) else 0
    return live


def _calls(conf: Path) -> list[object] | None:
    """The Call-IDs of every session rtpengine holds (ng ``list``), None when unreadable."""
    listed = ng(conf, {"command": "list", "limit": "100000"}).get("calls")
    return listed if isinstance(listed, list) else None


def sessions(conf: Path) -> int:
    """The sessions that carry calls: rtpengine's own, and the foreign ones (replicas of
    another edge's calls, through Redis) whose call is still in that edge's database.
    When Redis cannot be asked, every foreign session counts."""
    reply = ng(conf, {"command": "statistics"})
    stats = reply.get("statistics")
    if isinstance(stats, dict):
        current = stats.get("currentstatistics")
        if isinstance(current, dict):
            own = current.get("sessionsown", 0)
            foreign = current.get("sessionsforeign", 0)
            if isinstance(own, int) and isinstance(foreign, int):
                if foreign == 0:
                    return own
                listed = _calls(conf)
                if listed is None:
                    return own + foreign
                ids = [c if isinstance(c, bytes) else str(c).encode() for c in listed]
                try:
                    live = replicated(conf, ids)
                except (OSError, ValueError, Failure) as exc:
                    print(f"rtpengine: foreign sessions not checked in Redis: {exc}", file=sys.stderr)
                    return own + foreign
                return own + min(foreign, live)
    listed = _calls(conf)
    if listed is not None:
        return len(listed)
    raise Failure("rtpengine: cannot read the session count")


def ping(conf: Path) -> str:
    reply = ng(conf, {"command": "ping"})
    if reply.get("result") != b"pong":
        raise Failure(f"rtpengine answered ping with {reply!r}")
    return "rtpengine ng: pong"


def helper() -> Helper:
    h = Helper("siporch_rtpengine", __doc__)
    h.parser.add_argument("--conf", default=f"{LIVE_ROOT}/rtpengine/rtpengine.conf")
    p = h.command("check-tree", lambda a: check_tree(Path(a.release), a.rtpengine))
    p.add_argument("release")
    p.add_argument("--rtpengine", default="rtpengine")
    h.command("ping", lambda a: ping(Path(a.conf)))
    h.command("sessions", lambda a: sessions(Path(a.conf)))
    return h


def main(argv: list[str]) -> int:
    return helper().main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
