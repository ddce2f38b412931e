"""Delay and drop packets in a lab host with the kernel's NFQUEUE, in pure Python.

The lab injects delay and loss between two hosts with an nftables rule in the sending
host's network namespace (``ip daddr <peer> queue num N bypass``) and this small
process, started in the same namespace, which holds every queued packet for the
configured delay and then accepts it, or drops it with the configured probability.
It speaks the nfnetlink_queue protocol directly (only the packet id is copied to user
space), so it needs nothing but the standard library. ``netem`` would be the usual
tool; it is a kernel module that not every kernel has, NFQUEUE is built into more.

Run as ``python3 -m siporch.lab.nfqueue --queue N --delay-ms D --loss-percent P``.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
NF_DROP = 0
NF_ACCEPT = 1

_NLMSGHDR = struct.Struct("=IHHII")
_NFGENMSG = struct.Struct("!BBH")
_NLATTR = struct.Struct("=HH")


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attr(kind: int, payload: bytes) -> bytes:
    length = _NLATTR.size + len(payload)
    return _NLATTR.pack(length, kind) + payload + b"\0" * (_align(length) - length)


def _message(msg_type: int, queue: int, attrs: bytes, seq: int) -> bytes:
    body = _NFGENMSG.pack(socket.AF_UNSPEC, 0, queue) + attrs
    kind = (NFNL_SUBSYS_QUEUE << 8) | msg_type
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, NLM_F_REQUEST, seq, 0) + body


def bind_message(queue: int, seq: int = 1) -> bytes:
    """The config message that binds this socket to ``queue`` and copies metadata only."""
    cmd = _attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, socket.AF_INET))
    params = _attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META))
    return _message(NFQNL_MSG_CONFIG, queue, cmd + params, seq)


def verdict_message(queue: int, packet_id: int, verdict: int, seq: int = 0) -> bytes:
    """The message that accepts or drops the queued packet ``packet_id``."""
    attrs = _attr(NFQA_VERDICT_HDR, struct.pack("!II", verdict, packet_id))
    return _message(NFQNL_MSG_VERDICT, queue, attrs, seq)


def packet_ids(data: bytes) -> list[int]:
    """Packet ids of every NFQNL_MSG_PACKET in one netlink datagram."""
    ids: list[int] = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            break
        if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
            pos = offset + _NLMSGHDR.size + _NFGENMSG.size
            end = offset + length
            while pos + _NLATTR.size <= end:
                alen, atype = _NLATTR.unpack_from(data, pos)
                if alen < _NLATTR.size:
                    break
                if atype & 0x3FFF == NFQA_PACKET_HDR:
                    (pid,) = struct.unpack_from("!I", data, pos + _NLATTR.size)
                    ids.append(pid)
                    break
                pos += _align(alen)
        offset += _align(length)
    return ids


def _check_ack(data: bytes) -> None:
    _length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, 0)
    if kind == NLMSG_ERROR:
        (err,) = struct.unpack_from("=i", data, _NLMSGHDR.size)
        if err != 0:
            raise OSError(-err, f"nfnetlink_queue refused the bind: {os.strerror(-err)}")


def run(queue: int, delay_s: float, loss: float) -> None:
    """Serve ``queue`` until SIGTERM: hold each packet ``delay_s``, drop a ``loss`` share."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind((0, 0))
    msg = bind_message(queue)
    # Ask for an ACK so a refused bind is an error, not silence.
    msg = msg[:6] + struct.pack("=H", NLM_F_REQUEST | 4) + msg[8:]
    sock.send(msg)
    _check_ack(sock.recv(65536))
    print("ready", flush=True)
    pending: collections.deque[tuple[float, int]] = collections.deque()
    stop = False

    def _stop(_signo: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    rng = random.Random()
    while not stop:
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            _, pid = pending.popleft()
            sock.send(verdict_message(queue, pid, NF_ACCEPT))
        timeout = max(0.0, pending[0][0] - now) if pending else 0.5
        try:
            ready, _, _ = select.select([sock], [], [], timeout)
        except InterruptedError:
            continue
        if not ready:
            continue
        try:
            data = sock.recv(65536)
        except OSError:  # ENOBUFS: the kernel dropped messages; keep serving
            continue
        arrived = time.monotonic()
        for pid in packet_ids(data):
            if loss > 0 and rng.random() < loss:
                sock.send(verdict_message(queue, pid, NF_DROP))
            elif delay_s <= 0:
                sock.send(verdict_message(queue, pid, NF_ACCEPT))
            else:
                pending.append((arrived + delay_s, pid))
    for _, pid in pending:
        sock.send(verdict_message(queue, pid, NF_ACCEPT))
    sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m siporch.lab.nfqueue")
    parser.add_argument("--queue", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--loss-percent", type=float, default=0.0)
    args = parser.parse_args(argv)
    try:
        run(args.queue, args.delay_ms / 1000.0, args.loss_percent / 100.0)
    except OSError as exc:
        print(f"nfqueue: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
