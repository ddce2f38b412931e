"""The provider-shaped ITSP C (itsp-c1, itsp-c2) on its own, driven by SIPp from the
edges' and the gateway's namespaces: REGISTER gets 401 then 200 with credentials, an
INVITE without credentials gets 407, one with credentials is answered (200) and its
re-INVITE and BYE follow Record-Route, a non-customer gets 403, TLS presents the
provider's certificate, and the record file shows each request with its fields."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from siporch.lab import provider
from siporch.sipp import scenario

pytestmark = pytest.mark.lab
AUTH = ["-au", provider.USERNAME, "-ap", provider.PASSWORD]


def sipp(
    lab: Any, host: str, name: str, target: str, *extra: str, service: str = "0041441234567"
) -> tuple[int, str]:
    """One SIPp run of ``siporch/sipp/<name>.xml`` from ``host``'s namespace; returns its
    exit code and the messages it received."""
    exe = shutil.which("sipp")
    if exe is None:
        pytest.skip("sipp is not installed on the controller")
    addr = lab.address(host)
    with tempfile.TemporaryDirectory(prefix="siporch-provider-") as tmp:
        msg = Path(tmp) / "msg.log"
        argv = [
            "ip", "netns", "exec", lab.netns(host), exe, "-sf", str(scenario(name)),
            "-s", service, "-i", addr, "-mi", addr, "-p", "25093", "-m", "1", "-d", "300",
            "-nostdin", "-timeout", "20s", "-timeout_error", "-recv_timeout", "10000",
            "-trace_msg", "-message_file", str(msg), *extra, target,
        ]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp)
        return proc.returncode, msg.read_text(errors="replace") if msg.exists() else ""


def wait_records(host: str, want: Any, seconds: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + seconds
    while True:
        recs = [r for r in provider.received(host) if want(r)]
        if recs or time.monotonic() > deadline:
            return recs
        time.sleep(0.1)


@pytest.fixture
def providers(lab: Any) -> Any:
    # lab up (the session fixture) started them; a test before us may have stopped one.
    for host in provider.PROVIDER_HOSTS:
        provider.ensure_running(host)
        provider.clear(host)
    return lab


def test_register_is_challenged_401_then_accepted(providers: Any) -> None:
    code, msgs = sipp(providers, "edge-central", "register_auth", "198.18.1.60:5060", *AUTH)
    assert code == 0, msgs[-1500:]
    assert "SIP/2.0 401" in msgs and "SIP/2.0 200" in msgs
    recs = wait_records("itsp-c1", lambda r: r["method"] == "REGISTER" and r["credentials"])
    assert recs and recs[0]["response"] == "200"
    first = provider.received("itsp-c1")[0]
    assert first["method"] == "REGISTER" and first["response"] == "401"
    assert first["credentials"] is False and first["auth"] == "none"
    assert first["src_ip"] == "198.18.0.10" and first["proto"] == "udp"


@pytest.mark.parametrize(("host", "target", "transport"), [
    ("edge-central", "198.18.1.60:5060", "u1"),
    ("edge-branch", "198.18.1.61:5060", "t1"),
])  # fmt: skip
def test_invite_407_then_authenticated_call_completes(
    providers: Any, host: str, target: str, transport: str
) -> None:
    provider_host = "itsp-c1" if target.startswith("198.18.1.60") else "itsp-c2"
    code, msgs = sipp(providers, host, "uac_auth", target, *AUTH, "-t", transport)
    assert code == 0, msgs[-2000:]
    assert "SIP/2.0 407" in msgs
    assert "Record-Route:" in msgs  # the 200 came back through the provider
    recs = wait_records(provider_host, lambda r: r["method"] == "BYE")
    assert recs, provider.received(provider_host)
    all_recs = provider.received(provider_host)
    invites = [r for r in all_recs if r["method"] == "INVITE"]
    # the challenge, the authenticated INVITE, the re-INVITE (in dialog, relayed)
    assert [(r["response"], r["credentials"]) for r in invites] == [
        ("407", False), ("relay", True), ("relay", False)
    ]  # fmt: skip
    first, authed = invites[0], invites[1]
    assert first["call_id"] == authed["call_id"] == recs[0]["call_id"]
    assert authed["ruri"] == "sip:0041441234567@itsp-c.example"
    assert authed["from"] == {"uri": "sip:siporch-central@itsp-c.example", "display": "Central"}
    assert authed["to"]["uri"] == "sip:0041441234567@itsp-c.example"
    assert authed["pai"] == [{"uri": "sip:+41441234567@itsp-c.example", "display": "Reception"}]
    assert authed["privacy"] == "id"
    assert authed["codecs"] == ["PCMA", "PCMU", "telephone-event"]
    assert authed["telephone_event"] is True
    assert authed["src_ip"] == providers.address(host)
    assert authed["proto"] == ("udp" if transport == "u1" else "tcp")
    assert invites[2]["codecs"] == ["PCMA", "telephone-event"]
    methods = [r["method"] for r in all_recs]
    assert methods.count("ACK") >= 2 and recs[0]["response"] == "relay"


def test_invite_without_credentials_gets_407(providers: Any) -> None:
    code, msgs = sipp(providers, "edge-central", "uac_expect_reject", "198.18.1.61:5060")
    assert code == 0, msgs[-1500:]
    assert "SIP/2.0 407" in msgs and "SIP/2.0 403" not in msgs
    assert 'Proxy-Authenticate: Digest realm="itsp-c.example"' in msgs
    recs = wait_records("itsp-c2", lambda r: r["method"] == "INVITE")
    assert recs[0]["response"] == "407" and recs[0]["codecs"] == ["PCMU", "telephone-event"]


def test_a_non_customer_gets_403(providers: Any) -> None:
    code, msgs = sipp(providers, "pstn-gw", "uac_expect_reject", "198.18.1.60:5060", *AUTH)
    assert code == 0, msgs[-1500:]
    assert "SIP/2.0 403" in msgs and "SIP/2.0 407" not in msgs
    recs = wait_records("itsp-c1", lambda r: r["method"] == "INVITE")
    assert recs and recs[0]["response"] == "403"
    assert recs[0]["src_ip"] == "198.18.0.50"


def test_tls_presents_the_provider_certificate(providers: Any) -> None:
    lab = providers
    for host, name in provider.SIP_NAMES.items():
        proc = lab.run(
            "edge-central",
            f"openssl s_client -connect {lab.address(host)}:5061 -servername {name} "
            f"-CAfile /etc/siporch/tls/ca.crt -verify_hostname {name} -brief </dev/null",
            timeout=30,
        )
        text = proc.stdout + proc.stderr
        assert "Verification: OK" in text, text[-1500:]
        cert = lab.run(host, f"openssl x509 -noout -ext subjectAltName -in /etc/siporch/tls/{host}.crt")
        assert f"DNS:{name}" in cert.stdout and "DNS:itsp-c.example" in cert.stdout
