"""After a full successful deploy or rollback, the controller remembers what runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from siporch.deploy.outcome import record_deployed
from siporch.deploy.runner import RunResult
from siporch.model import load_model
from siporch.release import build_release, deployed_release

EXAMPLE = Path(__file__).resolve().parents[2] / "inventory" / "example"


@pytest.fixture
def out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # SIPORCH_STATE: where the controller keeps releases and what it deployed.
    monkeypatch.setenv("SIPORCH_STATE", str(tmp_path))
    return tmp_path / "releases"


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


def test_state_defaults_beside_the_inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without SIPORCH_STATE, releases go to build/ beside the inventory directory."""
    import shutil

    from siporch.release import default_out, state_dir

    monkeypatch.delenv("SIPORCH_STATE", raising=False)
    inv = tmp_path / "proj" / "inventory"
    shutil.copytree(EXAMPLE, inv)
    shutil.copy(EXAMPLE.parent / ".vault-pass", inv.parent / ".vault-pass")
    assert state_dir(inv) == tmp_path / "proj" / "build"
    rel = build_release(load_model(inv))
    assert rel.path.parent == default_out(inv) == tmp_path / "proj" / "build" / "releases"
    record_deployed(inv, _result(0, [rel.id]), None)
    assert (tmp_path / "proj" / "build" / "state").is_dir()
    assert deployed_release(inv) == rel.id
