"""The PBX side of `siporch calls` in the lab: Asterisk's CDRs joined by Call-ID.

A real inbound call (itsp-a1 -> edge-central -> a PBX's Echo, on a DID of hq-main) and a
real outbound call (pbx-central -> edge-central -> itsp-a) each show, in
`siporch calls --json`, the CDR the PBX wrote to siporch's own database
(cdr_sqlite3_custom_siporch.conf): the PBX host, its channel, disposition and billsec.
The same rows come out masked in CSV; the database is private to root and Asterisk's user.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import callkit as ck
import pytest

from siporch.deploy import runner
from siporch.render.asterisk import CDR_DIR, CDR_FILE

pytestmark = pytest.mark.lab

EDGE = "198.18.0.10:5060"
HQ_DID = "2025550100"  # +12025550100 -> hq-main on the central PBXs (Echo)
OUT_NUMBER = "3125550100"  # route national: itsp-a, sent as 13125550100
TALK_S = 3
PBXS = ("pbx-central", "pbx-central-2")
# the PBXs dial the central pair's floating address: whichever edge holds it records the call
CENTRAL_EDGES = ("edge-central", "edge-central-2")
HOSTS = ("edge-central", "edge-branch", *PBXS)
REPO = Path(__file__).resolve().parents[2]


def _asterisk(kit: ck.Lab, host: str, command: str) -> str:
    return kit.run(host, ["asterisk", "-C", ck.ASTERISK_CONF, "-rx", command], timeout=30)


def _records_cdrs(kit: ck.Lab, host: str) -> bool:
    """The PBX runs a release with siporch's CDR mapping and the Call-ID dialplan."""
    live = "/etc/siporch/current/asterisk"
    out = kit.run(host, f"cat {live}/{CDR_FILE} {live}/extensions_siporch.conf 2>/dev/null")
    return f"[{CDR_DIR}/" in out and "siporch-outbound-dialing" in out


def _deploy(inv: Path) -> None:
    report = runner.report_path()
    cmd = runner.build_command(
        "deploy-trunk.yml",
        inv,
        vault_file=runner.vault_password_file(inv, None),
        report_file=report,
        extra_vars={"asterisk_pbx_health_registrations": False},
    )
    try:
        result = runner.run(cmd, report)
    finally:
        report.unlink(missing_ok=True)
    assert result.ok, "\n".join(result.output[-60:])


@pytest.fixture(scope="module")
def kit(lab: Any) -> Iterator[ck.Lab]:
    k = ck.Lab(lab)
    with ck.deploy_lock(wait=2400) as token:
        os.environ["SIPORCH_DEPLOY_LOCK"] = token
        try:
            # a release of the same model rendered before the CDR mapping existed has the
            # same model hash: deploy when the PBXs lack it, else only when needed
            if not all(_records_cdrs(k, p) for p in PBXS):
                _deploy(lab.inventory)
            ck.ensure_deployed(k, lab.inventory, HOSTS)
            subprocess.run(["siporch", "lab", "impair", "--clear"], capture_output=True, timeout=60)
            yield k
        finally:
            os.environ.pop("SIPORCH_DEPLOY_LOCK", None)


def siporch_calls(inv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "siporch", "calls", "-i", str(inv),
         *(a for e in CENTRAL_EDGES for a in ("--host", e)), *args],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc


def wait_pbx_side(inv: Path, since: float, called: str, seconds: float = 60) -> dict[str, Any]:
    """The record of the call to ``called`` once its PBX side is there (the CDR is written
    when the PBX's channel is gone, the edge's record at the BYE)."""
    found: dict[str, Any] = {}
    seen: list[dict[str, Any]] = []

    def ready() -> bool:
        out = siporch_calls(inv, "--json", "--since", f"{since:.3f}").stdout
        seen[:] = list(map(json.loads, out.splitlines()))
        for rec in seen:
            if rec["called"] == called and rec["pbx"]:
                found.update(rec)
                return True
        return False

    assert ck.wait_for(ready, seconds, step=1.0), (
        f"no record of {called} with a PBX side; the records since then: {seen}"
    )
    return found


def test_the_pbxs_load_the_cdr_backend_and_keep_the_database_private(kit: ck.Lab) -> None:
    for pbx in PBXS:
        shown = _asterisk(kit, pbx, "module show like cdr_sqlite3_custom")
        assert "cdr_sqlite3_custom.so" in shown and "Running" in shown, (pbx, shown)
        mode = kit.run(pbx, f"stat -c '%a' {CDR_DIR}").strip()
        assert mode == "700", (pbx, mode)


def test_inbound_call_shows_the_pbx_side(lab: Any, kit: ck.Lab) -> None:
    since = time.time() - 1
    call = ck.uac(kit, "itsp-a1", EDGE, HQ_DID, duration_ms=TALK_S * 1000)
    assert (call.successful, call.failed) == (1, 0), call.stderr
    rec = wait_pbx_side(lab.inventory, since, "+12025550100")
    assert (rec["direction"], rec["trunk"], rec["result"]) == ("inbound", "itsp-a", "answered")
    assert len(rec["pbx"]) == 1, rec["pbx"]
    side = rec["pbx"][0]
    assert side["host"] in PBXS
    assert side["channel"].startswith("PJSIP/itsp-a-"), side
    assert (side["disposition"], side["lastapp"]) == ("ANSWERED", "Echo"), side
    assert side["billsec"] == pytest.approx(TALK_S, abs=1.5)
    # the PBX answered after the edge saw the INVITE, within the call's own setup time
    assert side["start"] >= rec["setup"][:19]


def test_outbound_call_shows_the_pbx_side(lab: Any, kit: ck.Lab) -> None:
    since = time.time() - 1
    with ck.uas(kit, "itsp-a1") as a1, ck.uas(kit, "itsp-a2") as a2:
        ck.originate(kit, OUT_NUMBER, seconds=TALK_S)
        assert ck.wait_for(
            lambda: any(m.startswith("BYE ") for m in a1.messages() + a2.messages()), 30
        )
    rec = wait_pbx_side(lab.inventory, since, "1" + OUT_NUMBER)
    assert (rec["direction"], rec["trunk"], rec["result"]) == ("outbound", "itsp-a", "answered")
    # one CDR: the one whose destination is the PJSIP channel to the edge (the Local
    # channel's own CDR carries no Call-ID)
    assert len(rec["pbx"]) == 1, rec["pbx"]
    side = rec["pbx"][0]
    assert side["host"] == ck.PBX
    assert side["dstchannel"].startswith("PJSIP/siporch-edge-edge-central-"), side
    assert (side["disposition"], side["lastapp"]) == ("ANSWERED", "Dial"), side
    assert side["billsec"] == pytest.approx(TALK_S, abs=1.5)
    assert side["dcontext"] == "siporch-outbound"

    # masked CSV: no number left, in the edge's columns or the PBX's
    out = siporch_calls(lab.inventory, "--csv", "--mask", "--since", f"{since:.3f}").stdout
    assert OUT_NUMBER not in out
    rows = list(csv.DictReader(io.StringIO(out)))
    row = next(r for r in rows if r["callid"] == rec["callid"])
    assert row["pbx_host"] == ck.PBX and row["pbx_disposition"] == "ANSWERED"
    assert row["pbx_channel"].startswith("Local/312*****00@siporch-outbound-"), row
