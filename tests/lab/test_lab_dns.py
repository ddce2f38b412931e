"""The lab's DNS server (dnsmasq on the host dns, 198.18.0.53), seen from inside lab hosts:
A, SRV and NAPTR of ITSP C, every host's lab.example name, nothing from outside, and a
record changed at run time (`siporch lab dns set`) seen at once."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from siporch.lab import dns, dnsquery

pytestmark = pytest.mark.lab
QUERY_SRC = Path(dnsquery.__file__).read_text()
C = "itsp-c.example"


def ask(lab: Any, host: str, name: str, rtype: str) -> dict[str, Any]:
    """The host's own resolver's server (its /etc/resolv.conf) asked from inside it."""
    proc = lab.run(host, ["python3", "-c", QUERY_SRC, name, rtype], timeout=20, check=True)
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


@pytest.fixture
def lab_dns(lab: Any) -> Iterator[Any]:
    dns.reset()
    yield lab
    dns.reset()


def test_every_host_resolves_through_the_lab_dns(lab_dns: Any) -> None:
    lab = lab_dns
    for host in lab.hosts:
        text = (lab.root(host) / "etc/resolv.conf").read_text()
        assert "nameserver 198.18.0.53" in text, host
    assert "198.18.0.53" not in Path("/etc/resolv.conf").read_text()
    out = lab.run("edge-central", "getent hosts sip1.itsp-c.example", check=True).stdout
    assert out.split() == ["198.18.1.60", "sip1.itsp-c.example"]
    out = lab.run("pbx-central", "getent hosts itsp-c2.lab.example", check=True).stdout
    assert out.split()[0] == "198.18.1.61"


def test_naptr_srv_and_a_records(lab_dns: Any) -> None:
    lab = lab_dns
    naptr = ask(lab, "edge-central", C, "NAPTR")
    assert naptr["rcode"] == "NOERROR"
    got = sorted(
        (a["order"], a["preference"], a["flags"], a["service"], a["replacement"])
        for a in naptr["answers"]
    )
    assert got == [
        (10, 10, "S", "SIP+D2U", f"_sip._udp.{C}"),
        (20, 10, "S", "SIPS+D2T", f"_sips._tcp.{C}"),
    ]
    assert all(a["ttl"] <= 5 for a in naptr["answers"])
    for name, port in ((f"_sip._udp.{C}", 5060), (f"_sips._tcp.{C}", 5061)):
        srv = ask(lab, "edge-branch", name, "SRV")
        got_srv = sorted((a["priority"], a["weight"], a["port"], a["target"]) for a in srv["answers"])
        assert got_srv == [(10, 10, port, f"sip1.{C}"), (20, 10, port, f"sip2.{C}")]
    for name, address in ((f"sip1.{C}", "198.18.1.60"), (f"sip2.{C}", "198.18.1.61"),
                          (f"wrong.{C}", "198.18.1.61"), ("dns.lab.example", "198.18.0.53")):
        a = ask(lab, "edge-central", name, "A")
        assert [x["address"] for x in a["answers"]] == [address], name


def test_only_lab_names_nothing_forwarded(lab_dns: Any) -> None:
    lab = lab_dns
    unknown = ask(lab, "edge-central", f"nothing.{C}", "A")
    assert unknown["rcode"] == "NXDOMAIN" and unknown["answers"] == []
    outside = ask(lab, "edge-central", "deb.debian.org", "A")
    assert outside["rcode"] == "REFUSED" and outside["answers"] == []


def test_a_changed_record_is_seen_at_once_and_reset_restores_it(lab_dns: Any) -> None:
    lab = lab_dns
    cmd = [sys.executable, "-m", "siporch", "lab", "dns", "set", f"_sip._udp.{C}", "SRV",
           f"10 10 5060 sip2.{C}", f"20 10 5070 wrong.{C}"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert f"wrong.{C}" in proc.stdout
    srv = ask(lab, "edge-central", f"_sip._udp.{C}", "SRV")
    assert sorted((a["priority"], a["port"], a["target"]) for a in srv["answers"]) == [
        (10, 5060, f"sip2.{C}"),
        (20, 5070, f"wrong.{C}"),
    ]
    dns.set_record(f"sip1.{C}", "A", ["198.18.1.61"])
    assert [a["address"] for a in ask(lab, "edge-branch", f"sip1.{C}", "A")["answers"]] == [
        "198.18.1.61"
    ]
    dns.delete_record(f"sip2.{C}", "A")
    assert ask(lab, "edge-central", f"sip2.{C}", "A")["rcode"] == "NXDOMAIN"
    proc = subprocess.run(
        [sys.executable, "-m", "siporch", "lab", "dns", "reset"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    srv = ask(lab, "edge-central", f"_sip._udp.{C}", "SRV")
    assert sorted(a["target"] for a in srv["answers"]) == [f"sip1.{C}", f"sip2.{C}"]
    assert [a["address"] for a in ask(lab, "edge-central", f"sip2.{C}", "A")["answers"]] == [
        "198.18.1.61"
    ]
    assert sorted(dns.records()) == sorted(dns.default_records())


def test_lab_up_restarts_a_stopped_dns(lab_dns: Any) -> None:
    """(Runs after the other lab tests: it stops a lab daemon.)"""
    from siporch.lab import lab as lab_mod
    from siporch.lab import procs
    from tests.conftest import EXAMPLE, LAB_INVENTORY

    pid = dns.pid()
    assert pid is not None
    procs.kill_processes([pid])
    assert "dnsmasq not running" in (lab_mod.status().to_json()["hosts"]["dns"]["problem"] or "")
    result = lab_mod.up(EXAMPLE, LAB_INVENTORY)
    assert result.ok
    assert dns.pid() not in (None, pid)
    assert ask(lab_dns, "edge-central", f"sip1.{C}", "A")["answers"][0]["address"] == "198.18.1.60"


test_lab_up_restarts_a_stopped_dns.lab_restarts = True  # type: ignore[attr-defined]
