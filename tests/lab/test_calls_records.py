"""Call records in the lab: real calls through the deployed edge, read with `siporch calls`.

An inbound call (itsp-a1 -> the PBX), an outbound call (the PBX -> itsp-a1) and a call the
ITSP rejects (486 from both of itsp-a's SBCs) each leave one record on edge-central, with
the trunk, numbers after translation, codes and times; the summary's ASR and ACD match the
calls placed; the records survive a deploy of a new release and a rollback (the lab runs
its own model again afterwards). The central pair shares its dialogs over DMQ: a call
edge-central handles is recorded there once, not again by edge-central-2, which held a copy
of its dialog.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import callkit as ck
import pytest

from siporch.deploy import runner
from siporch.records import iso

pytestmark = pytest.mark.lab

EDGE = "198.18.0.10:5060"
HQ_DID = "2025550100"  # itsp-a's national format; +12025550100 -> the PBX (hq-main)
OUT_NUMBER = "3125550100"  # route national: itsp-a, sent as 13125550100
BUSY_NUMBER = "3125550199"
TALK_S = 3
DURING_S = 20  # the call up through a deploy
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def kit(lab: Any) -> Iterator[ck.Lab]:
    k = ck.Lab(lab)
    with ck.deploy_lock(wait=2400) as token:
        import os

        os.environ["SIPORCH_DEPLOY_LOCK"] = token
        try:
            ck.ensure_deployed(
                k,
                lab.inventory,
                ("edge-central", "edge-central-2", "edge-branch", "pbx-central", "pbx-central-2"),
            )
            subprocess.run(["siporch", "lab", "impair", "--clear"], capture_output=True, timeout=60)
            yield k
        finally:
            os.environ.pop("SIPORCH_DEPLOY_LOCK", None)


def calls(inv: Path, *args: str, host: str | None = "edge-central") -> list[dict[str, Any]]:
    """The records of ``host`` (every edge's: None)."""
    proc = subprocess.run(
        [sys.executable, "-m", "siporch", "calls", "-i", str(inv),
         *(["--host", host] if host else []), "--json", *args],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def wait_records(inv: Path, since: float, n: int, seconds: float = 30) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []

    def enough() -> bool:
        got[:] = calls(inv, "--since", f"{since:.3f}")
        return len(got) >= n

    ck.wait_for(enough, seconds, step=1.0)
    return got


def _iso(ts: float) -> str:
    """``ts`` as `siporch calls` prints times (UTC, milliseconds, Z)."""
    return iso(ts) or ""


def _run(inv: Path, playbook: str = "deploy-trunk.yml") -> dict[str, Any]:
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


@pytest.fixture(scope="module")
def placed(lab: Any, kit: ck.Lab) -> dict[str, Any]:
    """Three calls placed through the edge (answered inbound, answered outbound, busy
    outbound) and their records: ``since`` (a time before them) and ``recs``."""
    since = time.time() - 1
    # inbound: itsp-a1 calls the HQ number, the PBX answers (Echo); the caller hangs up
    inbound = ck.uac(kit, "itsp-a1", EDGE, HQ_DID, duration_ms=TALK_S * 1000)
    assert (inbound.successful, inbound.failed) == (1, 0), inbound.stderr
    # outbound: the PBX calls out through itsp-a, answered by itsp-a1; the PBX hangs up
    with ck.uas(kit, "itsp-a1") as a1, ck.uas(kit, "itsp-a2"):
        ck.originate(kit, OUT_NUMBER, seconds=TALK_S)
        assert ck.wait_for(lambda: any(m.startswith("BYE ") for m in a1.messages()), 30)
    # a call the ITSP rejects: 486 from both SBCs
    with ck.uas(kit, "itsp-a1", "uas_peer_busy"), ck.uas(kit, "itsp-a2", "uas_peer_busy"):
        ck.originate(kit, BUSY_NUMBER, seconds=TALK_S)
        recs = wait_records(lab.inventory, since, 3)
    return {"since": since, "recs": recs}


def test_calls_are_recorded(lab: Any, kit: ck.Lab, placed: dict[str, Any]) -> None:
    since, recs = placed["since"], placed["recs"]
    by_called = {r["called"]: r for r in recs}
    assert set(by_called) >= {"+12025550100", "1" + OUT_NUMBER, "1" + BUSY_NUMBER}, recs

    rin = by_called["+12025550100"]
    assert (rin["direction"], rin["trunk"], rin["result"], rin["code"]) == (
        "inbound", "itsp-a", "answered", 200,
    )  # fmt: skip
    assert rin["peer"] == kit.addr("itsp-a1")
    assert rin["duration"] == pytest.approx(TALK_S, abs=1.5)

    rout = by_called["1" + OUT_NUMBER]
    assert (rout["direction"], rout["trunk"], rout["result"]) == ("outbound", "itsp-a", "answered")
    assert rout["peer"] in (kit.addr("itsp-a1"), kit.addr("itsp-a2"))
    assert rout["duration"] == pytest.approx(TALK_S, abs=1.5)
    assert rout["pdd"] is not None and 0 <= rout["pdd"] < 5

    rbusy = by_called["1" + BUSY_NUMBER]
    assert (rbusy["result"], rbusy["code"], rbusy["answer"]) == ("busy", 486, None)

    release = ck.current_release(kit, "edge-central").rsplit("/", 1)[-1]
    assert {r["release"] for r in (rin, rout, rbusy)} == {release}
    for r in (rin, rout, rbusy):
        assert r["setup"] and r["setup"] >= time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(since))
    # readable by root and Kamailio's user only
    shown = kit.run(
        "edge-central",
        "stat -c '%a %U' /var/lib/siporch/records /var/lib/siporch/records/records.sqlite",
    ).split()
    assert shown[0] == "700" and shown[2] == "600", shown
    assert shown[1] == shown[3] and shown[1] in ("kamailio", "root"), shown


def test_summary_matches_the_calls_placed(lab: Any, placed: dict[str, Any]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "siporch", "calls", "-i", str(lab.inventory), "--host",
         "edge-central", "--since", f"{placed['since']:.3f}", "--summary", "--json"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = {r["trunk"]: r for r in map(json.loads, proc.stdout.splitlines())}
    a = rows["itsp-a"]
    assert (a["attempts"], a["answered"]) == (3, 2), rows
    assert a["asr"] == pytest.approx(2 / 3, abs=1e-3)
    assert a["acd"] == pytest.approx(TALK_S, abs=1.5)
    assert any(f.startswith("486 ") for f in a["top_failures"]), a


def test_masked_csv(lab: Any, placed: dict[str, Any]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "siporch", "calls", "-i", str(lab.inventory), "--host",
         "edge-central", "--since", f"{placed['since']:.3f}", "--csv", "--mask"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "3125550100" not in proc.stdout and "2025550100" not in proc.stdout
    assert proc.stdout.splitlines()[0].startswith("edge,setup,")


def test_records_survive_a_deploy_and_a_rollback(
    lab: Any, kit: ck.Lab, placed: dict[str, Any], tmp_path: Path
) -> None:
    since = placed["since"]
    before = {r["callid"] for r in calls(lab.inventory, "--since", f"{since:.3f}")}
    assert {r["callid"] for r in placed["recs"]} <= before
    inv = ck.copy_inventory(lab, tmp_path)
    ck.edit_model(inv, lambda m: m["trunks"]["itsp-a"].update(max_channels=37))
    first = ck.current_release(kit, "edge-central")
    # a call up through the deploy: answered before it starts, ended by the caller while it
    # runs or after it (DURING_S), recorded with its trunk, code and times like any other
    up_before = {d.get("call-id") for d in _dialogs(kit, "edge-central")}
    with ThreadPoolExecutor(1) as pool:
        during = pool.submit(
            ck.uac, kit, "itsp-a1", EDGE, HQ_DID, duration_ms=DURING_S * 1000, timeout_s=180
        )

        def answered() -> bool:
            assert not during.done(), during.result()
            return any(
                int(d.get("state", 0)) == 4 and d.get("call-id") not in up_before
                for d in _dialogs(kit, "edge-central")
            )

        assert ck.wait_for(answered, 30, step=0.2), "the call was not answered"
        deploy_start = time.time()
        deployed = _run(inv)
        deploy_end = time.time()
        placed_during = during.result(timeout=240)
    assert (placed_during.successful, placed_during.failed) == (1, 0), placed_during.stderr
    assert ck.current_release(kit, "edge-central") != first, deployed
    new = [
        r for r in wait_records(lab.inventory, since, len(before) + 1) if r["callid"] not in before
    ]
    assert len(new) == 1, new
    rec = new[0]
    assert (rec["direction"], rec["trunk"], rec["result"], rec["code"], rec["called"]) == (
        "inbound", "itsp-a", "answered", 200, "+12025550100",
    )  # fmt: skip
    assert rec["peer"] == kit.addr("itsp-a1")
    assert rec["duration"] == pytest.approx(DURING_S, abs=1.5)
    # set up under the release the edge ran then, answered before the deploy began, ended
    # after it began
    assert rec["release"] == first.rsplit("/", 1)[-1]
    assert rec["answer"] < _iso(deploy_start) < rec["end"], (rec, deploy_start, deploy_end)
    before.add(rec["callid"])
    after_deploy = {r["callid"] for r in calls(lab.inventory, "--since", f"{since:.3f}")}
    assert before <= after_deploy
    back = _run(inv, "rollback-trunk.yml")
    assert ck.current_release(kit, "edge-central") == first, back
    after_rollback = {r["callid"] for r in calls(lab.inventory, "--since", f"{since:.3f}")}
    assert before <= after_rollback
    # and the edge goes on recording, under the release it runs again
    with ThreadPoolExecutor(1) as pool:
        pool.submit(ck.uac, kit, "itsp-a1", EDGE, HQ_DID, duration_ms=1000).result(timeout=90)
    recs = wait_records(lab.inventory, since, len(before) + 1)
    newest = max(recs, key=lambda r: r["setup"])
    assert newest["release"] == first.rsplit("/", 1)[-1]


PAIR = ("edge-central", "edge-central-2")


def _dialogs(kit: ck.Lab, edge: str) -> list[dict[str, Any]]:
    """The edge's dialogs (dlg.list): call-id, to_uri, state (4 confirmed, 5 deleted)."""
    out = kit.rpc(edge, "dlg.list")
    if isinstance(out, dict):
        out = out.get("result", out)
    return [d for d in out if isinstance(d, dict)] if isinstance(out, list) else []


def _state(kit: ck.Lab, edge: str, callid: str) -> int | None:
    states = (int(d.get("state", 0)) for d in _dialogs(kit, edge) if d.get("call-id") == callid)
    return next(states, None)


def test_each_call_is_recorded_once_on_the_pair(lab: Any, kit: ck.Lab) -> None:
    """edge-central handles the call, edge-central-2 holds a copy of its dialog (DMQ); the
    call's end, replicated, removes the copy without running its dialog:end event route
    there: one record, edge-central's."""
    since = time.time() - 1
    # dialogs already there (a copy synced back after a restart may outlive its call)
    before = {str(d.get("call-id")) for d in _dialogs(kit, PAIR[0])}
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(ck.uac, kit, "itsp-a1", EDGE, HQ_DID, duration_ms=6000)
        found: list[str] = []

        def up_on_both() -> bool:
            ours = [
                str(d["call-id"])
                for d in _dialogs(kit, PAIR[0])
                if HQ_DID in str(d.get("to_uri", "")) + str(d.get("req_uri", ""))
                and int(d.get("state", 0)) == 4
                and str(d.get("call-id")) not in before
            ]
            found[:] = [c for c in ours if _state(kit, PAIR[1], c) == 4]
            return bool(found)

        replicated = ck.wait_for(up_on_both, 20, step=0.5)
        res = call.result(timeout=90)
    assert (res.successful, res.failed) == (1, 0), res.stderr
    assert replicated, (_dialogs(kit, PAIR[0]), _dialogs(kit, PAIR[1]))
    callid = found[0]
    # its record on edge-central; its copy on edge-central-2 ended (state 5) or removed
    assert ck.wait_for(
        lambda: any(r["callid"] == callid for r in calls(lab.inventory, "--since", f"{since:.3f}")),
        30,
        step=1.0,
    )
    assert ck.wait_for(lambda: _state(kit, PAIR[1], callid) in (None, 5), 30, step=0.5)

    def recorded() -> list[dict[str, Any]]:
        return [
            r for r in calls(lab.inventory, "--since", f"{since:.3f}", host=None)
            if r["callid"] == callid
        ]  # fmt: skip

    # edge-central-2 would have queued a record at the copy's end, written within 0.1 s
    assert not ck.wait_for(lambda: len(recorded()) > 1, 3, step=1.0), recorded()
    assert [r["edge"] for r in recorded()] == ["edge-central"]
