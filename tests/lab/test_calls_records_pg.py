"""Call records in PostgreSQL in the lab: the lab's model with ``records.backend:
postgresql`` (the lab's server on db-central, password from a vars file as from a vault),
real calls through the deployed edges, read with `siporch calls`.

The same calls and checks as tests/lab/test_calls_records.py (inbound, outbound, a call the
ITSP rejects; the summary's ASR/ACD; masked CSV), then: the records survive a restart of
Kamailio and the edge goes on recording; retention deletes the edge's own old records in
the shared database and leaves another edge's. The lab's own model (SQLite records) is
deployed again at the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import callkit as ck
import pytest
import yaml

from siporch.deploy import runner
from siporch.lab import records_db

pytestmark = pytest.mark.lab

EDGE = "198.18.0.10:5060"
HQ_DID = "2025550100"
OUT_NUMBER = "3125550100"
BUSY_NUMBER = "3125550199"
TALK_S = 3
REPO = Path(__file__).resolve().parents[2]
HOSTS = ("edge-central", "edge-branch", "pbx-central")


def _deploy(inv: Path, playbook: str = "deploy-trunk.yml") -> dict[str, Any]:
    report = runner.report_path()
    cmd = runner.build_command(
        playbook,
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
    assert result.report is not None
    out: dict[str, Any] = result.report
    return out


def pg_inventory(lab: Any, dest: Path) -> Path:
    inv = ck.copy_inventory(lab, dest)
    (inv / "group_vars" / "all" / "records.yml").write_text(
        yaml.safe_dump({"vault_records_password": records_db.LAB_PASSWORD})
    )
    ck.edit_model(
        inv,
        lambda m: m.update(
            records={
                "backend": "postgresql",
                "retention_days": 30,
                "postgresql": {
                    "host": lab.address(records_db.RECORDS_DB_HOST),
                    "database": records_db.DATABASE,
                    "user": records_db.USER,
                    "password": "{{ vault_records_password }}",
                },
            }
        ),
    )
    return inv


@pytest.fixture(scope="module")
def kit(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ck.Lab, Path]]:
    import os

    k = ck.Lab(lab)
    inv = pg_inventory(lab, tmp_path_factory.mktemp("records-pg"))
    with ck.deploy_lock(wait=2400) as token:
        os.environ["SIPORCH_DEPLOY_LOCK"] = token
        try:
            records_db.ensure_running()
            _deploy(inv)
            subprocess.run(["siporch", "lab", "impair", "--clear"], capture_output=True, timeout=60)
            yield k, inv
        finally:
            try:
                # the lab's own model (SQLite records) again, for the modules after this one
                ck.ensure_deployed(k, lab.inventory, HOSTS)
            finally:
                os.environ.pop("SIPORCH_DEPLOY_LOCK", None)


def siporch_calls(inv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "siporch", "calls", "-i", str(inv), *args],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip


def calls(inv: Path, *args: str) -> list[dict[str, Any]]:
    proc = siporch_calls(inv, "--host", "edge-central", "--json", *args)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def wait_records(inv: Path, since: float, n: int, seconds: float = 30) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []

    def enough() -> bool:
        got[:] = calls(inv, "--since", f"{since:.3f}")
        return len(got) >= n

    ck.wait_for(enough, seconds, step=1.0)
    return got


def psql(kit: ck.Lab, sql: str) -> str:
    return kit.run(
        records_db.RECORDS_DB_HOST,
        ["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-A", "-t", "-h",
         "/run/postgresql", "-d", records_db.DATABASE, "-c", sql],
    ).strip()  # fmt: skip


@pytest.fixture(scope="module")
def placed(kit: tuple[ck.Lab, Path]) -> dict[str, Any]:
    """Three calls placed through edge-central (answered inbound, answered outbound, busy
    outbound) and their records, read from PostgreSQL: ``since`` (a time before them) and
    ``recs``. Each test that reads them asks for this fixture, so any test runs alone."""
    k, inv = kit
    since = time.time() - 1
    inbound = ck.uac(k, "itsp-a1", EDGE, HQ_DID, duration_ms=TALK_S * 1000)
    assert (inbound.successful, inbound.failed) == (1, 0), inbound.stderr
    with ck.uas(k, "itsp-a1") as a1, ck.uas(k, "itsp-a2"):
        ck.originate(k, OUT_NUMBER, seconds=TALK_S)
        assert ck.wait_for(lambda: any(m.startswith("BYE ") for m in a1.messages()), 30)
    with ck.uas(k, "itsp-a1", "uas_peer_busy"), ck.uas(k, "itsp-a2", "uas_peer_busy"):
        ck.originate(k, BUSY_NUMBER, seconds=TALK_S)
        recs = wait_records(inv, since, 3)
    return {"since": since, "recs": recs}


def test_calls_are_recorded_in_postgresql(
    lab: Any, kit: tuple[ck.Lab, Path], placed: dict[str, Any]
) -> None:
    k, _ = kit
    recs = placed["recs"]
    by_called = {r["called"]: r for r in recs}
    assert set(by_called) >= {"+12025550100", "1" + OUT_NUMBER, "1" + BUSY_NUMBER}, recs

    rin = by_called["+12025550100"]
    assert (rin["edge"], rin["direction"], rin["trunk"], rin["result"], rin["code"]) == (
        "edge-central", "inbound", "itsp-a", "answered", 200,
    )  # fmt: skip
    assert rin["peer"] == k.addr("itsp-a1")
    assert rin["duration"] == pytest.approx(TALK_S, abs=1.5)

    rout = by_called["1" + OUT_NUMBER]
    assert (rout["direction"], rout["trunk"], rout["result"]) == ("outbound", "itsp-a", "answered")
    assert rout["duration"] == pytest.approx(TALK_S, abs=1.5)
    assert rout["pdd"] is not None and 0 <= rout["pdd"] < 5

    rbusy = by_called["1" + BUSY_NUMBER]
    assert (rbusy["result"], rbusy["code"], rbusy["answer"]) == ("busy", 486, None)
    # both SBCs answered 486: the first is a failed leg of the call
    assert [leg["code"] for leg in rbusy["failed_legs"]][-1:] == ["486"], rbusy

    release = ck.current_release(k, "edge-central").rsplit("/", 1)[-1]
    assert {r["release"] for r in (rin, rout, rbusy)} == {release}
    # in the server, not in a file on the edge
    assert int(psql(k, "SELECT count(*) FROM calls WHERE edge = 'edge-central'")) >= 3


def test_summary_matches_the_calls_placed(
    kit: tuple[ck.Lab, Path], placed: dict[str, Any]
) -> None:
    _, inv = kit
    proc = siporch_calls(
        inv, "--host", "edge-central", "--since", f"{placed['since']:.3f}", "--summary", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    rows = {r["trunk"]: r for r in map(json.loads, proc.stdout.splitlines())}
    a = rows["itsp-a"]
    assert (a["attempts"], a["answered"]) == (3, 2), rows
    assert a["asr"] == pytest.approx(2 / 3, abs=1e-3)
    assert a["acd"] == pytest.approx(TALK_S, abs=1.5)
    assert any(f.startswith("486 ") for f in a["top_failures"]), a


def test_masked_csv(kit: tuple[ck.Lab, Path], placed: dict[str, Any]) -> None:
    _, inv = kit
    proc = siporch_calls(inv, "--since", f"{placed['since']:.3f}", "--csv", "--mask")
    assert proc.returncode == 0, proc.stderr
    assert "3125550100" not in proc.stdout and "2025550100" not in proc.stdout
    assert proc.stdout.splitlines()[0].startswith("edge,setup,")


def test_records_survive_a_kamailio_restart(
    kit: tuple[ck.Lab, Path], placed: dict[str, Any]
) -> None:
    k, inv = kit
    since = placed["since"]
    before = {r["callid"] for r in calls(inv, "--since", f"{since:.3f}")}
    assert {r["callid"] for r in placed["recs"]} <= before
    pid_before = k.run("edge-central", "systemctl show -p MainPID --value kamailio").strip()
    k.run("edge-central", "systemctl restart kamailio", timeout=90)
    assert ck.wait_for(
        lambda: (
            k.run("edge-central", "systemctl is-active kamailio").strip() == "active"
            and k.run("edge-central", "systemctl show -p MainPID --value kamailio").strip()
            not in ("", "0", pid_before)
        ),
        60,
    )
    after = {r["callid"] for r in calls(inv, "--since", f"{since:.3f}")}
    assert before <= after
    # the restarted edge records again (its first call may find the edge still starting)
    ok = False
    for _ in range(5):
        r = ck.uac(k, "itsp-a1", EDGE, HQ_DID, duration_ms=1000)
        if r.successful == 1:
            ok = True
            break
        time.sleep(2)
    assert ok
    recs = wait_records(inv, since, len(before) + 1)
    assert len({r["callid"] for r in recs} - before) >= 1


def test_calls_go_on_while_the_server_is_down_and_are_recorded_once_when_it_is_back(
    kit: tuple[ck.Lab, Path],
) -> None:
    """PostgreSQL stopped (fast shutdown: the edge's connections are cut): the edge goes on
    taking calls; their records wait in its queue (route RECORDS_WRITE tries the server
    every second) and are written, each once, when the server is back."""
    k, _ = kit
    since = time.time() - 1
    postmaster = records_db.pid()
    assert postmaster is not None
    os.kill(postmaster, signal.SIGINT)
    try:
        assert ck.wait_for(lambda: records_db.pid() is None, 30)
        r = ck.uac(k, "itsp-a1", EDGE, HQ_DID, calls=4, rate=4, duration_ms=500)
        assert (r.successful, r.failed) == (4, 0), r.stderr
    finally:
        records_db.ensure_running()

    def written() -> str:
        return psql(
            k,
            "SELECT count(*) || ' ' || count(DISTINCT callid) FROM calls "
            f"WHERE edge = 'edge-central' AND setup >= {since}",
        )

    assert ck.wait_for(lambda: written() == "4 4", 30, step=1.0), written()


def test_retention_deletes_the_edges_own_old_records(kit: tuple[ck.Lab, Path]) -> None:
    """30 days of retention: a 40-day-old record of edge-central goes within a trim run
    (every 15 s); one of another edge in the same database is that edge's to delete."""
    k, _ = kit
    old = time.time() - 40 * 86400
    marker = f"retention-{int(time.time())}"
    psql(
        k,
        "INSERT INTO calls (callid, edge, trunk, code, setup, legs) VALUES "
        f"('{marker}-own', 'edge-central', 'itsp-a', 200, {old}, 1), "
        f"('{marker}-other', 'edge-elsewhere', 'itsp-a', 200, {old}, 1)",
    )

    def gone() -> bool:
        return psql(k, f"SELECT count(*) FROM calls WHERE callid = '{marker}-own'") == "0"

    assert ck.wait_for(gone, 40, step=1.0)
    assert psql(k, f"SELECT count(*) FROM calls WHERE callid = '{marker}-other'") == "1"
    psql(k, f"DELETE FROM calls WHERE callid = '{marker}-other'")


def test_the_exporter_counts_the_edges_records_in_postgresql(
    kit: tuple[ck.Lab, Path], placed: dict[str, Any]
) -> None:
    """The exporter reads edge-central's rows of the shared database (at least the calls
    ``placed``): its call counter is the server's count of that edge's records."""
    from test_exporter_records import Exporter, total

    k, inv = kit
    want = int(psql(k, "SELECT count(*) FROM calls WHERE edge = 'edge-central'"))
    answered = int(
        psql(
            k,
            "SELECT count(*) FROM calls WHERE edge = 'edge-central' AND code BETWEEN 200 AND 299",
        )
    )
    assert want >= 3
    exporter = Exporter(inv)
    exporter.start()
    try:
        got = exporter.read_once()
    finally:
        exporter.stop()
    assert total(got, "siporch_trunk_calls_total", edge="edge-central") == want, got
    assert total(got, "siporch_trunk_answered_calls_total", edge="edge-central") == answered
