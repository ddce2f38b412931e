"""The lab provider ITSP C: its rendered Kamailio configuration (checked by the real
Kamailio when installed), its TLS configuration and the request recorder's parsing."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from siporch.errors import LabError
from siporch.lab import itsp_recorder, provider
from siporch.lab.spec import LabPaths

KAMAILIO = shutil.which("kamailio")

INVITE = (
    "INVITE sip:0041441234567@itsp-c.example SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK-1\r\n"
    'f: "Central Office" <sip:siporch-central@itsp-c.example>;tag=abc\r\n'
    "To: <sip:0041441234567@itsp-c.example>\r\n"
    "i: call-1@198.18.0.10\r\n"
    "CSeq: 2 INVITE\r\n"
    'P-Asserted-Identity: "Reception" <sip:+41441234567@itsp-c.example>\r\n'
    "P-Asserted-Identity: <tel:+41441234567>\r\n"
    "Privacy: id\r\n"
    "User-Agent: siporch-test\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: 200\r\n"
    "\r\n"
    "v=0\r\no=- 1 1 IN IP4 198.18.0.10\r\ns=-\r\nc=IN IP4 198.18.0.10\r\nt=0 0\r\n"
    "m=audio 30000 RTP/AVP 9 8 0 101\r\n"
    "a=rtpmap:9 G722/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
    "m=video 30002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
)
META = {"src_ip": "198.18.0.10", "src_port": 5060, "proto": "udp", "auth": "valid",
        "response": "relay", "host": "itsp-c1"}  # fmt: skip


def test_record_has_every_field() -> None:
    rec = itsp_recorder.record(META, INVITE, now=1764892800.25)
    assert rec["time"] == "2025-12-05T00:00:00.250Z"
    assert rec["method"] == "INVITE"
    assert rec["ruri"] == "sip:0041441234567@itsp-c.example"
    assert rec["from"] == {"uri": "sip:siporch-central@itsp-c.example", "display": "Central Office"}
    assert rec["to"] == {"uri": "sip:0041441234567@itsp-c.example", "display": ""}
    assert rec["pai"] == [
        {"uri": "sip:+41441234567@itsp-c.example", "display": "Reception"},
        {"uri": "tel:+41441234567", "display": ""},
    ]
    assert rec["privacy"] == "id"
    assert (rec["src_ip"], rec["src_port"], rec["proto"]) == ("198.18.0.10", 5060, "udp")
    assert rec["credentials"] is True and rec["auth"] == "valid"
    assert rec["call_id"] == "call-1@198.18.0.10"
    # Audio only, in the m= line's order; static payloads by name.
    assert rec["codecs"] == ["G722", "PCMA", "PCMU", "telephone-event"]
    assert rec["telephone_event"] is True
    assert rec["response"] == "relay"


def test_record_without_sdp_or_credentials() -> None:
    raw = (
        "REGISTER sip:itsp-c.example SIP/2.0\r\nFrom: <sip:u@itsp-c.example>;tag=1\r\n"
        "To: sip:u@itsp-c.example\r\nCall-ID: r1\r\nCSeq: 1 REGISTER\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    meta = {**META, "auth": "none", "response": "401", "proto": "TLS"}
    rec = itsp_recorder.record(meta, raw)
    assert rec["method"] == "REGISTER" and rec["response"] == "401"
    assert rec["credentials"] is False and rec["proto"] == "tls"
    assert rec["codecs"] == [] and rec["telephone_event"] is False
    assert rec["pai"] == [] and rec["privacy"] is None
    assert rec["to"] == {"uri": "sip:u@itsp-c.example", "display": ""}


def test_datagram_is_meta_line_then_request() -> None:
    data = (json.dumps(META) + "\n" + INVITE).encode()
    rec = itsp_recorder.parse_datagram(data)
    assert rec["host"] == "itsp-c1" and rec["method"] == "INVITE"
    bad = itsp_recorder.parse_datagram(b"not json\n" + INVITE.encode())
    assert bad["response"] == "unknown" and bad["method"] == "INVITE"


def test_sdp_codecs_without_telephone_event() -> None:
    codecs, dtmf = itsp_recorder.sdp_codecs("m=audio 1 RTP/AVP 18 0\na=rtpmap:18 G729/8000\n")
    assert codecs == ["G729", "PCMU"] and dtmf is False


def test_render_names_the_contract() -> None:
    files = provider.render("itsp-c2")
    cfg = files.kamailio_cfg
    for needle in (
        'alias="sip2.itsp-c.example"',
        "listen=udp:198.18.1.61:5060",
        "listen=tcp:198.18.1.61:5060",
        "listen=tls:198.18.1.61:5061",
        '#!define REALM "itsp-c.example"',
        '#!define AUTH_USER "siporch-central"',
        '#!define AUTH_PASSWORD "lab-itsp-c-secret"',
        'if ($si == "198.18.0.10")',
        'if ($si == "198.18.0.11")',
        'proxy_challenge(REALM, "1")',
        'www_challenge(REALM, "1")',
        "loose_route()",
        "record_route()",
    ):
        assert needle in cfg, needle
    assert "certificate = /etc/siporch/tls/itsp-c2.crt" in files.tls_cfg
    assert "198.18.1.60" not in cfg


def test_render_rejects_other_hosts() -> None:
    with pytest.raises(LabError, match="not a lab provider host"):
        provider.render("itsp-a1")


def test_received_and_clear(tmp_path: Path) -> None:
    paths = LabPaths(state=tmp_path / "state", cache=tmp_path / "cache")
    assert provider.received("itsp-c1", paths) == []
    path = provider.record_path("itsp-c1", paths)
    path.parent.mkdir(parents=True)
    rec = itsp_recorder.record(META, INVITE)
    path.write_text(json.dumps(rec) + "\n" + '{"half a line')
    assert provider.received("itsp-c1", paths) == [rec]
    provider.clear("itsp-c1", paths)
    assert provider.received("itsp-c1", paths) == []


@pytest.mark.skipif(KAMAILIO is None, reason="kamailio is not installed")
@pytest.mark.parametrize("host", provider.PROVIDER_HOSTS)
def test_kamailio_accepts_the_provider_config(host: str, tmp_path: Path) -> None:
    files = provider.render(host, etc=str(tmp_path), tls_dir=str(tmp_path))
    (tmp_path / "kamailio.cfg").write_text(files.kamailio_cfg)
    (tmp_path / "tls.cfg").write_text(files.tls_cfg)
    assert KAMAILIO is not None
    proc = subprocess.run(
        [KAMAILIO, "-c", "-f", str(tmp_path / "kamailio.cfg")],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
