"""The lab's DNS: record defaults, value parsing, dnsmasq rendering, the `lab dns` CLI
and the tiny DNS client, without touching the machine."""

from __future__ import annotations

import socket
import struct
import threading
from pathlib import Path

import pytest

from siporch.cli import main
from siporch.errors import LabError
from siporch.lab import dns, dnsquery
from siporch.lab.spec import DNS_ADDRESS, HOSTS, host_by_name


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    code = exc.value.code
    return (code if isinstance(code, int) else 1), out, err


def test_dns_host_and_providers_are_lab_hosts() -> None:
    dns_host = host_by_name("dns")
    assert dns_host is not None and dns_host.address == DNS_ADDRESS == "198.18.0.53"
    assert dns_host.role == "dns" and not any(g.startswith("siporch") for g in dns_host.groups)
    for name, address in (("itsp-c1", "198.18.1.60"), ("itsp-c2", "198.18.1.61")):
        host = host_by_name(name)
        assert host is not None and host.address == address and host.groups == ("lab_peers",)
        assert "itsp-c.example" in host.tls_names


def test_default_records_are_the_contract() -> None:
    got = {(r.name, r.type, r.value) for r in dns.default_records()}
    c = "itsp-c.example"
    assert {
        (c, "NAPTR", f"10 10 S SIP+D2U _sip._udp.{c}"),
        (c, "NAPTR", f"20 10 S SIPS+D2T _sips._tcp.{c}"),
        (f"_sip._udp.{c}", "SRV", f"10 10 5060 sip1.{c}"),
        (f"_sip._udp.{c}", "SRV", f"20 10 5060 sip2.{c}"),
        (f"_sips._tcp.{c}", "SRV", f"10 10 5061 sip1.{c}"),
        (f"_sips._tcp.{c}", "SRV", f"20 10 5061 sip2.{c}"),
        (f"sip1.{c}", "A", "198.18.1.60"),
        (f"sip2.{c}", "A", "198.18.1.61"),
        (f"wrong.{c}", "A", "198.18.1.61"),
    } <= got
    for host in HOSTS:
        assert (f"{host.name}.lab.example", "A", host.address) in got


def test_render_records_in_dnsmasq_syntax() -> None:
    recs = [
        dns.DnsRecord("a.example", "A", "198.18.1.1"),
        dns.DnsRecord("a.example", "A", "198.18.1.2"),
        dns.DnsRecord("_sip._udp.a.example", "SRV", "10 20 5060 a.example"),
        dns.DnsRecord("a.example", "NAPTR", "10 5 S SIP+D2U _sip._udp.a.example"),
    ]
    lines = dns.render_records(recs).splitlines()
    assert "host-record=a.example,198.18.1.1,5" in lines
    assert "host-record=a.example,198.18.1.2,5" in lines
    # srv-host=<name>,<target>,<port>,<priority>,<weight>
    assert "srv-host=_sip._udp.a.example,a.example,5060,10,20" in lines
    # naptr-record=<name>,<order>,<preference>,<flags>,<service>,<regexp>,<replacement>
    assert "naptr-record=a.example,10,5,S,SIP+D2U,,_sip._udp.a.example" in lines


def test_config_answers_only_lab_names_with_short_ttls() -> None:
    lines = dns.render_config().splitlines()
    assert "no-resolv" in lines and "no-hosts" in lines
    assert not any(line.startswith("server=") for line in lines)
    assert f"listen-address={DNS_ADDRESS}" in lines and "bind-interfaces" in lines
    assert "local-ttl=5" in lines and "max-ttl=5" in lines
    assert f"conf-file={dns.RECORDS_CONF}" in lines


@pytest.mark.parametrize(
    ("rtype", "values", "want"),
    [
        ("A", ["198.18.1.62"], ["198.18.1.62"]),
        ("a", ["198.18.1.62", "198.18.1.63"], ["198.18.1.62", "198.18.1.63"]),
        ("SRV", ["10 10 5060 sip1.itsp-c.example"], ["10 10 5060 sip1.itsp-c.example"]),
        (
            "SRV",
            ["10", "10", "5060", "Sip1.Itsp-C.example.", "20 10 5060 sip2.itsp-c.example"],
            ["10 10 5060 sip1.itsp-c.example", "20 10 5060 sip2.itsp-c.example"],
        ),
        (
            "NAPTR",
            ["10 10 s SIP+D2U _sip._udp.itsp-c.example"],
            ["10 10 S SIP+D2U _sip._udp.itsp-c.example"],
        ),
    ],
)
def test_parse_values(rtype: str, values: list[str], want: list[str]) -> None:
    assert dns.parse_values(rtype, values) == want


@pytest.mark.parametrize(
    ("rtype", "values", "message"),
    [
        ("MX", ["10 a.example"], "not one of"),
        ("A", ["198.18.1"], "not an IPv4 address"),
        ("A", [], "no value"),
        ("SRV", ["10 10 5060"], "whole SRV records"),
        ("SRV", ["10 10 99999 a.example"], "0-65535"),
        ("SRV", ["10 x 5060 a.example"], "0-65535"),
        ("SRV", ["10 10 5060 bad..name"], "not a DNS name"),
        ("NAPTR", ["10 10 S SIP+D2U"], "whole NAPTR records"),
        ("NAPTR", ["10 10 S! SIP+D2U a.example"], "flags"),
    ],
)
def test_parse_values_rejects(rtype: str, values: list[str], message: str) -> None:
    with pytest.raises(LabError, match=message):
        dns.parse_values(rtype, values)


def test_check_name() -> None:
    assert dns.check_name("_SIP._udp.Example.") == "_sip._udp.example"
    for bad in ("", "a..b", "-a.example", "a b", "x" * 64 + ".example"):
        with pytest.raises(LabError):
            dns.check_name(bad)


def test_records_fall_back_to_the_defaults(tmp_path: Path) -> None:
    from siporch.lab.spec import LabPaths

    paths = LabPaths(state=tmp_path / "state", cache=tmp_path / "cache")
    assert sorted(dns.records(paths)) == sorted(dns.default_records())


def test_cli_set_bad_value_is_exit_2_before_root(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    code, _, err = run_cli(["lab", "dns", "set", "x.example", "SRV", "10 10 5060"], capsys)
    assert code == 2
    assert "whole SRV records" in err and "Traceback" not in err
    code, _, err = run_cli(["lab", "dns", "set", "x.example", "TXT", "hello"], capsys)
    assert code == 2 and "not one of A, SRV, NAPTR" in err
    code, _, err = run_cli(["lab", "dns", "set", "x.example", "A", "198.18.1.9"], capsys)
    assert code == 2 and "needs root" in err


def test_cli_set_needs_a_value(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["lab", "dns", "set", "x.example", "A"], capsys)
    assert code == 2 and "VALUE" in err


def test_cli_dns_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["lab", "dns", "--help"], capsys)
    assert code == 0
    for sub in ("show", "set", "delete", "reset"):
        assert sub in out


def test_cli_set_passes_the_parsed_record(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, object] = {}

    def fake_set(name: str, rtype: str, values: list[str]) -> list[dns.DnsRecord]:
        seen.update(name=name, rtype=rtype, values=values)
        return [dns.DnsRecord(name, rtype.upper(), v) for v in dns.parse_values(rtype, values)]

    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr(dns, "set_record", fake_set)
    code, out, _ = run_cli(
        ["lab", "dns", "set", "--json", "_sip._udp.itsp-c.example", "srv",
         "10 10 5060 sip2.itsp-c.example"],
        capsys,
    )  # fmt: skip
    assert code == 0
    assert seen == {
        "name": "_sip._udp.itsp-c.example",
        "rtype": "srv",
        "values": ["10 10 5060 sip2.itsp-c.example"],
    }
    assert '"value": "10 10 5060 sip2.itsp-c.example"' in out


def _answer(query: bytes) -> bytes:
    """A hand-made DNS answer to ``query``: one SRV and one NAPTR record, compressed."""
    ident = query[:2]
    question = query[12:]
    header = ident + struct.pack("!HHHHH", 0x8580, 1, 2, 0, 0)
    srv_rdata = struct.pack("!HHH", 10, 20, 5060) + b"\x04sip1\xc0\x0c"
    naptr_rdata = (
        struct.pack("!HH", 10, 10) + b"\x01S" + b"\x07SIP+D2U" + b"\x00"
        + b"\x04_sip\x04_udp\xc0\x0c"
    )  # fmt: skip
    answers = b"\xc0\x0c" + struct.pack("!HHIH", 33, 1, 5, len(srv_rdata)) + srv_rdata
    answers += b"\xc0\x0c" + struct.pack("!HHIH", 35, 1, 5, len(naptr_rdata)) + naptr_rdata
    return header + question + answers


def test_dnsquery_parses_srv_and_naptr_with_compression() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        data, peer = server.recvfrom(512)
        server.sendto(_answer(data), peer)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        reply = dnsquery.query("itsp-c.example", "SRV", "127.0.0.1", port=port)
    finally:
        thread.join(timeout=5)
        server.close()
    assert reply["rcode"] == "NOERROR"
    srv, naptr = reply["answers"]
    assert srv == {
        "name": "itsp-c.example", "ttl": 5, "type": "SRV", "priority": 10, "weight": 20,
        "port": 5060, "target": "sip1.itsp-c.example",
    }  # fmt: skip
    assert naptr["flags"] == "S" and naptr["service"] == "SIP+D2U"
    assert naptr["replacement"] == "_sip._udp.itsp-c.example"


def test_dnsquery_builds_a_standard_question() -> None:
    q = dnsquery.build_query("sip1.itsp-c.example", "NAPTR", 0x1234)
    assert q[:4] == b"\x12\x34\x01\x00"
    assert q[12:] == b"\x04sip1\x06itsp-c\x07example\x00" + struct.pack("!HH", 35, 1)
