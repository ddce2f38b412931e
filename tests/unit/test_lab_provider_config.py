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


RUN = r"""
set -u
ip link set lo up
cleanup() {{ kill $REC $UAS $KAM 2>/dev/null; sleep 0.5; kill -9 $REC $UAS $KAM 2>/dev/null; }}
trap cleanup EXIT
python3 {recorder} 5099 {dir}/received.jsonl & REC=$!
sipp -sf {scenarios}/uas_provider.xml -i 127.0.0.1 -p 5080 -t u1 -mi 127.0.60.1 -nostdin \
  >/dev/null 2>&1 & UAS=$!
kamailio -DD -E -f {dir}/kamailio.cfg -Y {dir} -m 32 -M 8 > {dir}/kamailio.log 2>&1 & KAM=$!
# each listening before the first request (up to 60 s: a loaded machine starts them slowly)
up() {{ ss -ltn | grep -q 127.0.60.1:5060 && ss -lun | grep -q 127.0.0.1:5099 \
  && ss -lun | grep -q 127.0.0.1:5080; }}
for i in $(seq 600); do up && break; sleep 0.1; done
uac() {{ sipp -nostdin -m 1 -timeout 20s -timeout_error -recv_timeout 10000 "$@" >/dev/null 2>&1; echo $?; }}
echo "register $(uac -sf {scenarios}/register_auth.xml -i 127.0.10.1 -p 25091 \
  -au siporch-central -ap lab-itsp-c-secret 127.0.60.1:5060)"
echo "call $(uac -sf {scenarios}/uac_auth.xml -s 0041441234567 -i 127.0.10.1 -mi 127.0.10.1 \
  -p 25092 -d 200 -au siporch-central -ap lab-itsp-c-secret -t t1 127.0.60.1:5060)"
echo "wrongpass $(uac -sf {scenarios}/uac_auth.xml -s 1 -i 127.0.10.1 -p 25094 -recv_timeout 1500 -au siporch-central \
  -ap nope 127.0.60.1:5060)"
echo "stranger $(uac -sf {scenarios}/uac_expect_reject.xml -s 123 -i 127.0.20.1 -p 25093 \
  127.0.60.1:5060)"
sleep 0.5
"""


@pytest.mark.skipif(
    KAMAILIO is None or shutil.which("sipp") is None or shutil.which("unshare") is None,
    reason="needs kamailio, sipp and unshare",
)
def test_provider_runs_on_this_machines_kamailio(tmp_path: Path) -> None:
    """The provider's configuration on the controller's Kamailio (Debian 12's 5.6), in a
    private network namespace of loopback addresses only (the lab runs it on sid's 6.1):
    401/200, 407 then a call with re-INVITE and BYE over TCP, a wrong password challenged
    again, a stranger refused, each request recorded."""
    import os

    if os.geteuid() != 0:
        pytest.skip("a private network namespace needs root")
    files = provider.render("itsp-c1", etc=str(tmp_path), tls_dir=str(tmp_path))
    cfg = files.kamailio_cfg.replace("198.18.1.60", "127.0.60.1")
    cfg = cfg.replace('"198.18.0.10"', '"127.0.10.1"')
    (tmp_path / "kamailio.cfg").write_text(cfg)
    tls = files.tls_cfg.replace("itsp-c1.crt", "c.crt").replace("itsp-c1.key", "c.key")
    (tmp_path / "tls.cfg").write_text(tls)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=sip1.itsp-c.example",
         "-keyout", str(tmp_path / "c.key"), "-out", str(tmp_path / "c.crt")],
        check=True, capture_output=True,
    )  # fmt: skip
    shutil.copy(tmp_path / "c.crt", tmp_path / "ca.crt")
    script = RUN.format(
        recorder=itsp_recorder.__file__, dir=tmp_path, scenarios=Path(provider.scenario("x").parent)
    )
    proc = subprocess.run(
        ["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, timeout=120,
        cwd=tmp_path, check=False,
    )  # fmt: skip
    results = dict(line.split() for line in proc.stdout.splitlines() if line.count(" ") == 1)
    assert results == {"register": "0", "call": "0", "wrongpass": "1", "stranger": "0"}, (
        proc.stdout + proc.stderr + (tmp_path / "kamailio.log").read_text()[-2000:]
    )
    recs = [json.loads(x) for x in (tmp_path / "received.jsonl").read_text().splitlines()]
    got = [(r["method"], r["response"], r["auth"], r["proto"]) for r in recs]
    assert got[:2] == [("REGISTER", "401", "none", "udp"), ("REGISTER", "200", "valid", "udp")]
    call = [g for r, g in zip(recs, got, strict=True) if r["call_id"] == recs[2]["call_id"]]
    assert call == [
        ("INVITE", "407", "none", "tcp"),
        ("INVITE", "relay", "valid", "tcp"),
        ("ACK", "relay", "none", "tcp"),
        ("INVITE", "relay", "none", "tcp"),
        ("ACK", "relay", "none", "tcp"),
        ("BYE", "relay", "none", "tcp"),
    ]
    wrong = [g for g in got if g[0] == "INVITE" and g[2] == "invalid"]
    assert wrong and all(g[1] == "407" for g in wrong)
    assert got[-1] == ("INVITE", "403", "none", "udp")
    assert recs[-1]["src_ip"] == "127.0.20.1"
