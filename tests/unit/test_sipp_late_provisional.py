"""The callers' SIPp scenarios keep an answered call when a 1xx to its INVITE comes after the
200 (RFC 3261 17.1.1.2: the UAC ignores it). A proxy under load resends its last provisional
to a resent INVITE, and that 180 can cross the 200; SIPp ends a call on any message its
scenario does not expect. Real SIPp on loopback, both sides."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from bench import soak

REPO = Path(__file__).resolve().parents[2]
UAS = REPO / "tests" / "data" / "sipp" / "uas_late_180.xml"

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp is not installed")


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _calls(uac: Path, tmp_path: Path) -> int:
    uas_port, uac_port = _free_udp_port(), _free_udp_port()
    uas = subprocess.Popen(
        ["sipp", "-sf", str(UAS), "-i", "127.0.0.1", "-p", str(uas_port), "-m", "2", "-nostdin",
         "-timeout", "20"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        uac_run = subprocess.run(
            ["sipp", "-sf", str(uac), "-i", "127.0.0.1", "-p", str(uac_port),
             f"127.0.0.1:{uas_port}", "-s", "100", "-m", "2", "-r", "2", "-d", "500",
             "-nostdin", "-timeout", "20"],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30,
        )  # fmt: skip
    finally:
        uas.kill()
        uas.wait()
    return uac_run.returncode


@pytest.mark.parametrize("name", ["uac_rr", "uac_rtp"])
def test_product_callers_ignore_a_late_180(name: str, tmp_path: Path) -> None:
    assert _calls(REPO / "siporch" / "sipp" / f"{name}.xml", tmp_path) == 0


def test_soak_caller_ignores_a_late_180(tmp_path: Path) -> None:
    uac = tmp_path / "soak_uac.xml"
    uac.write_text(soak.UAC_SCENARIO)
    assert _calls(uac, tmp_path) == 0
