"""The torture messages on disk and how they are rendered, sent and read back (loopback)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from siporch import torture
from siporch.torture import CATALOG, TCP_CASES, TortureError, load_cases, render

REQUIRED = [
    "wsinv",
    "intmeth",
    "esc01",
    "lwsdisp",
    "longreq",
    "dblreq",
    "semiuri",
    "transports",
    "mpart01",
    "unreason",
    "noreason",
    "badinv01",
    "clerr",
    "scalar02",
    "scalarlg",
    "quotbal",
    "ltgtruri",
    "lwsruri",
    "lwsstart",
    "trws",
    "escruri",
    "baddate",
    "regbadct",
    "badaspec",
    "baddn",
    "badvers",
    "mismatch01",
    "mismatch02",
    "bigcode",
    "badbranch",
    "insuf",
    "unkscm",
    "novelsc",
    "unksm2",
    "bext01",
    "invut",
    "regaut01",
    "multi01",
    "mcl01",
    "bcast",
    "zeromf",
    "cparam01",
    "cparam02",
    "regescrt",
    "sdp01",
    "inv2543",
    "ncl",
    "escnull",
    "esc02",
]


def _render(case: torture.Case, transport: str = "udp") -> bytes:
    return render(
        case.template,
        edge="198.18.0.10",
        src="198.18.1.10",
        sport=40000,
        transport=transport,
        token="tok123",
    )


def test_every_case_on_disk_and_in_the_catalog() -> None:
    names = {c.name for c in load_cases()}
    assert set(REQUIRED) <= names
    assert names == set(CATALOG)
    assert set(TCP_CASES) <= names
    readme = (torture.CASES_DIR / "README.md").read_text()
    for name in names:
        assert f"`{name}.sip`" in readme, f"{name} missing from the README"


@pytest.mark.parametrize("case", load_cases(), ids=lambda c: c.name)
def test_rendered_message(case: torture.Case) -> None:
    data = _render(case)
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    assert b"{" + b"edge}" not in data and b"{clen}" not in data and b"{id}" not in data
    head, _, body = data.partition(b"\r\n\r\n")
    if b"{clen}" in case.template:
        lengths = [
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith((b"content-length", b"l:"))
        ]
        assert lengths == [str(len(body)).encode()]
    if not case.is_response:
        # every request carries the marker somewhere a PBX would show it
        assert torture.MARKER.encode() in data
    # only lab addresses and .invalid names
    for token in data.replace(b";", b" ").replace(b">", b" ").split():
        if token.count(b".") == 3 and token[:1].isdigit():
            addr = token.split(b":")[0].decode()
            assert addr.startswith(("198.18.", "198.19.", "0.0.0.0")), addr


def test_clen_is_the_body_as_sent() -> None:
    (case,) = load_cases(names=["mpart01"])
    data = _render(case)
    head, _, body = data.partition(b"\r\n\r\n")
    assert f"Content-Length: {len(body)}".encode() in head
    assert b"--boundary-42--" in body


def test_literal_content_lengths_kept() -> None:
    clerr, ncl = load_cases(names=["clerr", "ncl"])
    assert b"Content-Length: 9999\r\n" in _render(clerr)
    assert b"Content-Length: -999\r\n" in _render(ncl)


def test_transport_in_via() -> None:
    (case,) = load_cases(names=["lwsdisp"])
    assert b"Via: SIP/2.0/TCP 198.18.1.10:40000;branch=z9hG4bKtok123" in _render(case, "tcp")


def test_case_kinds() -> None:
    cases = {c.name: c for c in load_cases()}
    assert cases["bigcode"].is_response and cases["bigcode"].method is None
    assert cases["intmeth"].method == "~odd.Method-9_*+`.%really'!~"
    assert cases["wsinv"].method == "INVITE"


def test_unknown_case_and_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(TortureError, match="unknown case"):
        load_cases(names=["nosuch"])
    with pytest.raises(TortureError):
        load_cases(tmp_path / "none")


def test_statuses_and_ack() -> None:
    reply = (
        b"SIP/2.0 404 No Such Number\r\nVia: SIP/2.0/UDP 198.18.1.10:40000;branch=z9hG4bKx\r\n"
        b"From: <sip:caller@example.invalid>;tag=1\r\nTo: <sip:torture@198.18.0.10>;tag=ab\r\n"
        b"Call-ID: c1\r\nCSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    assert torture.statuses(reply) == ["404 No Such Number"]
    assert torture.statuses(reply + b"SIP/2.0 100 \r\n\r\n") == ["404 No Such Number", "100"]
    request = b"INVITE sip:torture@198.18.0.10 SIP/2.0\r\n\r\n"
    ack = torture.ack_for(request, reply, "198.18.0.10")
    assert ack is not None
    assert ack.startswith(b"ACK sip:torture@198.18.0.10 SIP/2.0\r\n")
    assert b"CSeq: 7 ACK\r\n" in ack and b"To: <sip:torture@198.18.0.10>;tag=ab\r\n" in ack
    assert torture.ack_for(request, b"SIP/2.0 404 x\r\n\r\n", "198.18.0.10") is None


def test_outcome_verdicts() -> None:
    o = torture.Outcome("wsinv", "udp", "198.18.1.10", "INVITE")
    assert o.verdict == "no reply (dropped)" and not o.call_answered
    o.replies = ["100 Trying"]
    assert o.verdict == "100 Trying only"
    o.replies = ["100 Trying", "200 OK"]
    assert o.final == "200 OK" and o.call_answered
    r = torture.Outcome("bcast", "udp", "198.18.1.10", None, ["200 OK"])
    assert not r.call_answered


def test_refuses_non_lab_targets() -> None:
    (case,) = load_cases(names=["zeromf"])
    for target in ("192.0.2.1", "8.8.8.8", "edge.example.com"):
        with pytest.raises(TortureError):
            torture.send(case, edge=target, src="127.0.0.1")


def test_send_over_loopback_udp() -> None:
    """A loopback responder plays the edge: the reply is read, the ACK comes back."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(3)
    port = server.getsockname()[1]
    got: list[bytes] = []

    def respond() -> None:
        data, peer = server.recvfrom(65535)
        got.append(data)
        head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        keep = [h for h in head[1:] if h.split(b":", 1)[0].lower() in (b"via", b"from", b"to")]
        keep += [h for h in head[1:] if h.lower().startswith((b"call-id", b"cseq"))]
        reply = b"SIP/2.0 404 No Such Number\r\n" + b"\r\n".join(keep) + b"\r\n\r\n"
        server.sendto(reply, peer)
        got.append(server.recvfrom(65535)[0])

    t = threading.Thread(target=respond)
    t.start()
    try:
        (case,) = load_cases(names=["baddate"])
        out = torture.send(case, edge="127.0.0.1", src="127.0.0.1", port=port, timeout=2)
    finally:
        t.join(5)
        server.close()
    assert out.replies == ["404 No Such Number"] and out.verdict == "404 No Such Number"
    assert got[0].startswith(b"INVITE sip:torture-baddate@127.0.0.1 SIP/2.0\r\n")
    assert got[1].startswith(b"ACK ")


def test_markdown_table() -> None:
    from siporch.torture.lab import Batch, markdown

    runs = [
        Batch(
            "UDP", "itsp-a1", "udp", outcomes=[{"case": "zeromf", "verdict": "483 Too Many Hops"}]
        ),
        Batch("TCP", "itsp-a1", "tcp", outcomes=[]),
    ]
    text = markdown(runs)
    assert "| `zeromf.sip` | 3.3.11 | Max-Forwards of Zero | 483 Too Many Hops | - |" in text
