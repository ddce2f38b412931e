"""After a full successful deploy or rollback, the controller remembers what runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from siporch.cli.cmd_deploy import record_deployed
from siporch.deploy.runner import RunResult
from siporch.model import load_model
from siporch.release import build_release, deployed_release

EXAMPLE = Path(__file__).resolve().parents[2] / "inventory" / "example"


@pytest.fixture
def out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    out = tmp_path / "releases"
    monkeypatch.setattr("siporch.release.DEFAULT_OUT", out)
    import siporch.cli.cmd_deploy as cmd

    real = cmd.mark_deployed
    monkeypatch.setattr(cmd, "mark_deployed", lambda inv, rid: real(inv, rid, out))
    return out


def _result(rc: int, currents: list[str]) -> RunResult:
    return RunResult(
        rc, report={"hosts": [{"host": f"h{i}", "current": c} for i, c in enumerate(currents)]}
    )


def test_success_on_one_release_is_recorded(out: Path) -> None:
    rel = build_release(load_model(EXAMPLE), out)
    record_deployed(EXAMPLE, _result(0, [rel.id, rel.id]), None)
    assert deployed_release(EXAMPLE, out) == rel.id
    # the same inventory named by another path is the same inventory
    assert deployed_release(EXAMPLE / ".." / "example", out) == rel.id


@pytest.mark.parametrize(
    ("rc", "same", "limit"), [(2, True, None), (0, False, None), (0, True, "edge-central")]
)
def test_failed_mixed_or_limited_runs_are_not(
    out: Path, rc: int, same: bool, limit: str | None
) -> None:
    rel = build_release(load_model(EXAMPLE), out)
    record_deployed(EXAMPLE, _result(rc, [rel.id, rel.id if same else "other"]), limit)
    assert deployed_release(EXAMPLE, out) is None
