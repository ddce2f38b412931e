"""The NFQUEUE delay process's netlink messages, byte for byte."""

from __future__ import annotations

import socket
import struct

from siporch.lab import nfqueue


def _packet_message(queue: int, packet_id: int) -> bytes:
    hdr = nfqueue._attr(nfqueue.NFQA_PACKET_HDR, struct.pack("!IHB", packet_id, 0x0800, 3))
    other = nfqueue._attr(9, b"\x00\x00\x00\x01")
    return nfqueue._message(nfqueue.NFQNL_MSG_PACKET, queue, other + hdr, 0)


def test_bind_message_layout() -> None:
    msg = nfqueue.bind_message(7, seq=5)
    length, kind, flags, seq, _pid = struct.unpack_from("=IHHII", msg)
    assert length == len(msg) and length % 4 == 0
    assert kind == (3 << 8) | 2  # NFNL_SUBSYS_QUEUE, NFQNL_MSG_CONFIG
    assert flags & 1 and seq == 5
    family, version, res_id = struct.unpack_from("!BBH", msg, 16)
    assert (family, version, res_id) == (socket.AF_UNSPEC, 0, 7)
    alen, atype = struct.unpack_from("=HH", msg, 20)
    assert (alen, atype) == (8, 1)
    assert struct.unpack_from("!BxH", msg, 24) == (1, socket.AF_INET)
    alen, atype = struct.unpack_from("=HH", msg, 28)
    assert (alen, atype) == (9, 2)
    assert struct.unpack_from("!IB", msg, 32) == (0, 1)  # copy range 0, COPY_META


def test_verdict_message_layout() -> None:
    msg = nfqueue.verdict_message(3, 0xDEADBEEF, nfqueue.NF_DROP)
    _length, kind, _flags, _seq, _pid = struct.unpack_from("=IHHII", msg)
    assert kind == (3 << 8) | 1
    assert struct.unpack_from("!H", msg, 18) == (3,)
    assert struct.unpack_from("=HH", msg, 20) == (12, 2)
    assert struct.unpack_from("!II", msg, 24) == (nfqueue.NF_DROP, 0xDEADBEEF)


def test_packet_ids_from_a_datagram_of_several_messages() -> None:
    data = _packet_message(1, 42) + _packet_message(1, 43)
    assert nfqueue.packet_ids(data) == [42, 43]


def test_packet_ids_ignores_other_messages_and_truncation() -> None:
    error = struct.pack("=IHHII", 20, 2, 0, 0, 0) + struct.pack("=i", 0)
    assert nfqueue.packet_ids(error) == []
    assert nfqueue.packet_ids(_packet_message(1, 9)[:10]) == []
    assert nfqueue.packet_ids(b"") == []
