"""rtpengine ng (bencode) and Kamailio JSON-RPC parsing, on answers recorded from rtpengine
10.5 and Kamailio 5.6; errors from unreachable daemons."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siporch.errors import MonitorError
from siporch.monitor import kamailio, rtpengine
from siporch.monitor.rtpengine import BencodeError, bdecode, bencode

DATA = Path(__file__).resolve().parents[1] / "data" / "ami"


def test_bencode_known_values() -> None:
    assert bencode({"command": "ping"}) == b"d7:command4:pinge"
    assert bencode({"b": 1, "a": [1, "x"]}) == b"d1:ali1e1:xe1:bi1ee"
    assert bdecode(b"d6:result4:ponge") == {"result": "pong"}


@given(
    st.recursive(
        st.integers() | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
        max_leaves=20,
    )
)
def test_bencode_roundtrip(value: object) -> None:
    assert bdecode(bencode(value)) == value


@pytest.mark.parametrize("bad", [b"i12", b"d3:abc", b"x", b"5:ab", b"i1ei2e"])
def test_bdecode_rejects_malformed(bad: bytes) -> None:
    with pytest.raises((BencodeError, ValueError)):
        bdecode(bad)


def test_recorded_statistics_roundtrip() -> None:
    stats = json.loads((DATA / "rtpengine-statistics.json").read_text())
    assert bdecode(bencode(stats)) == stats
    assert stats["statistics"]["currentstatistics"]["sessionstotal"] == 0


def test_dispatcher_list_of_kamailio_56() -> None:
    result = json.loads((DATA / "kamailio-dispatcher-list.json").read_text())
    targets = kamailio.parse_dispatcher_list(result)
    assert [(t.set_id, t.host, t.state) for t in targets] == [
        (100001, "127.0.0.1", "down"),
        (1, "127.0.0.1", "up"),
        (1, "127.0.0.1", "up"),
    ]
    assert [t.priority for t in targets] == [0, 2, 1]
    assert kamailio.parse_dispatcher_list(None) == []


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_rtpengine_silent_is_a_clear_error() -> None:
    port = _free_udp_port()
    with pytest.raises(MonitorError, match=f"rtpengine ng at 127.0.0.1:{port}"):
        asyncio.run(rtpengine.statistics("127.0.0.1", port, timeout=0.3))


def test_rtpengine_reply_with_cookie_is_matched() -> None:
    """A stand-in answering like rtpengine (cookie echoed) over real UDP on loopback."""

    async def run() -> bool:
        loop = asyncio.get_running_loop()

        class Echo(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.t = transport

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                cookie, _, body = data.partition(b" ")
                assert bdecode(body) == {"command": "ping"}
                self.t.sendto(b"wrong " + bencode({"result": "pong"}), addr)  # type: ignore[attr-defined]
                self.t.sendto(cookie + b" " + bencode({"result": "pong"}), addr)  # type: ignore[attr-defined]

        transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
        try:
            return await rtpengine.ping("127.0.0.1", port, timeout=1)
        finally:
            transport.close()

    assert asyncio.run(run()) is True


def test_kamailio_refused_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(MonitorError, match=r"dispatcher\.list: .*[Rr]efused"):
        asyncio.run(kamailio.dispatcher_list(f"http://127.0.0.1:{port}/RPC", timeout=1))
    with pytest.raises(MonitorError, match="No such file"):
        asyncio.run(kamailio.dispatcher_list("unix:/nonexistent/kamailio_rpc.sock", timeout=1))
