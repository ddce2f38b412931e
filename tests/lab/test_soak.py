"""A short bounded soak on the lab (bench/soak.py): calls keep flowing through deploys, a
rollback, an Asterisk reload, a partition of an ITSP peer and a Kamailio killed in the
middle of a deploy. No call may drop because of a deploy or a rollback, and every host must
end on the release the model says."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def _soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak", REPO / "bench" / "soak.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


ERRORS = (
    "The following events occurred:\n"
    "2026-11-28\t11:31:46.002705\t1795865506.5: Aborting call on unexpected message for Call-Id "
    "'32-5055@198.18.1.10': while expecting '200' (index 9), received 'SIP/2.0 403 Forbidden\n"
    "Via: SIP/2.0/UDP 198.18.1.10:25060;branch=z9hG4bK-5055-32-8\nCSeq: 2 BYE\n"
    "Content-Length: 0\n\n"
    "'2026-11-28\t11:31:46.003803\t1795865506.6: Dead call 32-5055@198.18.1.10 (aborted at index 9), "
    "received 'SIP/2.0 404 Not Here\nCSeq: 3 BYE\n\n"
    "'2026-11-28\t11:33:46.002000\t1795865600.0: Call-Id: 80-5055@198.18.1.10, receive timeout on "
    "message siporch soak UAC:2 without label to jump to (ontimeout attribute): aborting call"
    "2026-11-28\t11:33:53.498475\t1795865610.0: Aborting call on unexpected message for Call-Id "
    "'91-5055@198.18.1.10': while expecting '180' (index 3), received 'SIP/2.0 500 Service "
    "Unavailable\nCSeq: 1 INVITE\n\n'"
)


def test_sipp_errors_are_read_per_call(tmp_path: Path) -> None:
    soak = _soak()
    path = tmp_path / "err"
    path.write_text(ERRORS)
    errors = soak.read_errors(path)
    assert errors == {
        32: (1795865506.5, "403 Forbidden to BYE"),
        80: (1795865600.0, "no answer (timeout)"),
        91: (1795865610.0, "500 Service Unavailable to INVITE"),
    }


def test_failures_are_blamed_on_what_ran_then() -> None:
    soak = _soak()
    deploy = soak.Step("deploy A", "deploy", 100.0, 140.0)
    kill = soak.Step("deploy B + kill", "fault-deploy", 200.0, 240.0, kill_at=220.0)
    steps = [deploy, kill]
    # answered before the deploy, BYE refused during it: the deploy's drop
    drop = soak.Call("inbound", 1, 90.0, answer=90.1, error_at=120.0)
    assert drop.state == "dropped"
    assert soak.attribute(drop, steps, 20.0) == "deploy A"
    # INVITE while Kamailio was dead: the fault's, although a deploy ran too
    failed = soak.Call("inbound", 2, 221.0, error_at=230.0)
    assert soak.attribute(failed, steps, 20.0) == "deploy B + kill"
    # a call that failed while nothing ran is blamed on nothing
    lonely = soak.Call("inbound", 3, 160.0, error_at=165.0)
    assert soak.attribute(lonely, steps, 20.0) == ""
    assert soak.Call("inbound", 4, 1.0, answer=1.1, done=21.2).state == "completed"
    # BYE sent while itsp-a1 was cut off, given up 5 s after the heal, when the next deploy
    # had begun: the partition's
    part = soak.Step("partition", "partition", 300.0, 315.0)
    after = soak.Step("deploy C", "deploy", 318.0, 350.0)
    late = soak.Call("inbound", 5, 285.0, answer=285.1, error_at=320.0)
    assert soak.attribute(late, [part, after], 20.0) == "partition"
    # an outbound call up on itsp-a2 was not cut off: the deploy's
    on_a2 = soak.Call("outbound", 6, 285.0, answer=285.1, error_at=320.0)
    assert soak.attribute(on_a2, [part, after], 20.0, ["itsp-a2"]) == "deploy C"
    assert soak.attribute(on_a2, [part, after], 20.0, ["itsp-a1"]) == "partition"
    # a BYE sent after the heal is not the partition's
    later = soak.Call("inbound", 7, 297.0, answer=297.1, error_at=330.0)
    assert soak.attribute(later, [part, after], 20.0) == "deploy C"


def _drops(report: dict[str, Any]) -> str:
    """Every dropped call with the step it is blamed on and SIPp's reason, and the steps
    with where the pair's floating address was: enough to tell a cause from a CI log."""
    soak = sys.modules.get("soak") or _soak()
    lines = [f"{report['totals']}", "dropped calls:"]
    lines += [f"  {soak.describe_drop(d)}" for d in report["dropped_calls"]]
    lines.append("steps (s from the first call; floating address before -> after):")
    lines += [
        f"  {s['start']}-{s['end']} {s['name']}: {'ok' if s['ok'] else 'failed'}"
        f" [{s.get('vip_before') or '-'} -> {s.get('vip_after') or '-'}] {str(s['detail'])[:160]}"
        for s in report["steps"]
    ]
    return "\n".join(lines)


@pytest.mark.lab
def test_short_soak(lab: Any, tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [
            sys.executable, str(REPO / "bench" / "soak.py"),
            "--minutes", "1.5", "--cps", "0.3", "--hold", "20", "--short", "--json", str(out),
        ],
        capture_output=True, text=True, cwd=REPO, timeout=2400,
    )  # fmt: skip
    assert out.exists(), proc.stdout + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    totals = report["totals"]
    # traffic flowed: at 0.3 cps for at least 1.5 minutes, at least 25 inbound calls placed
    assert report["directions"]["inbound"]["attempted"] >= 25, report["directions"]
    assert totals["completed"] > 0.8 * totals["attempted"], totals
    # zero drops by deploys and rollbacks (only the Kamailio kill may cost calls)
    assert totals["dropped_by_deploys_rollbacks_reloads"] == 0, _drops(report)
    kinds = [s["kind"] for s in report["steps"]]
    # the short timeline: a change, the reload, the rollback, the partition, the faulty
    # deploy and the last deploy of the lab model
    assert kinds.count("deploy") >= 2 and "rollback" in kinds and "partition" in kinds
    assert "asterisk-reload" in kinds, kinds
    fault = next(s for s in report["steps"] if s["kind"] == "fault-deploy")
    assert fault["kill_at"] is not None, fault
    # the deploy whose health gate met a dead Kamailio put every host back by itself; on a
    # systemd host the packaged unit (Restart=on-failure) may bring Kamailio back before the
    # gate looks, and then the deploy passes its gate: either way no host is left half-changed
    if not fault["rolled_back"]:
        assert lab.info.get("init") == "systemd" and fault["ok"], fault
    # after the fault every host is on a known release: the one the lab model renders to
    expected = report["expected_release"]
    assert expected.endswith(report["model_hash"][:8])
    assert report["final_releases"] == {h: expected for h in report["final_releases"]}
    for host in report["final_releases"]:
        current = lab.run(host, "readlink /etc/siporch/current", check=True).stdout
        assert Path(current.strip()).name == expected
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]


test_short_soak.lab_restarts = True  # type: ignore[attr-defined]  # kills Kamailio: run last
