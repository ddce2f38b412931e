"""What `siporch deploy` prints when a run fails: host, step, reason, every host's fate."""

from __future__ import annotations

import pytest

from siporch.cli.common import print_result
from siporch.deploy import runner
from siporch.deploy.outcome import failure_summary
from siporch.errors import DeployError

REPORT = {
    "playbook": "deploy",
    "release": "R2",
    "failed": True,
    "hosts": [
        {"host": "edge-central", "before": "R1", "current": "R1", "reloads": ["kamailio:dispatcher.reload"], "rollback": "rolled back to R1"},
        {"host": "edge-branch", "before": "R1", "current": "R1", "reloads": [], "rollback": "rolled back to R1"},
        {
            "host": "pbx-central",
            "before": "R1",
            "current": "R1",
            "reloads": [],
            "failure": {"host": "pbx-central", "step": "Install the daemons", "reason": "unreachable: Task failed: Failed to connect to the host via ssh"},
            "rollback": "unreachable, not rolled back: it runs R1 or R2",
        },
    ],
}  # fmt: skip


def test_unreachable_host_is_named_with_step_and_reason() -> None:
    lines, message = failure_summary(REPORT, "deploy")
    text = "\n".join(lines)
    assert 'pbx-central failed at "Install the daemons": unreachable: Task failed' in text
    assert "  edge-central: rolled back to R1" in lines
    assert "  edge-branch: rolled back to R1" in lines
    assert "  pbx-central: unreachable, not rolled back: it runs R1 or R2" in lines
    assert message == (
        "deploy failed on pbx-central (unreachable); 2 host(s) rolled back, "
        "NOT rolled back: pbx-central"
    )


def test_a_failed_check_leaves_every_host_back(capsys: pytest.CaptureFixture[str]) -> None:
    report = {
        "release": "R2",
        "hosts": [
            {"host": "edge-central", "before": "R1", "current": "R1", "rollback": "rolled back to R1",
             "failure": {"step": "Check the Kamailio tree", "reason": "kamailio -c failed"}},
            {"host": "edge-branch", "before": "R1", "current": "R1", "rollback": "still on R1"},
        ],
    }  # fmt: skip
    result = runner.RunResult(returncode=2, report=report)
    with pytest.raises(DeployError) as exc:
        print_result(result, "deploy")
    assert str(exc.value) == "deploy failed on edge-central; 1 host(s) rolled back, 1 unchanged"
    out, err = capsys.readouterr()
    assert 'edge-central failed at "Check the Kamailio tree": kamailio -c failed' in err
    assert "edge-branch: still on R1" in err
    assert "failed at Check the Kamailio tree" in out  # the table
