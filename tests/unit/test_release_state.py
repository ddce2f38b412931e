"""The host-side reader of a deploy (roles/siporch_release/files/siporch_release_state.py),
run as discover.yml runs it (`python3 -c`), on a release tree in a temporary directory."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "roles" / "siporch_release" / "files" / "siporch_release_state.py"
HOSTLIB = SCRIPT.with_name("siporch_hostlib.py")  # run after it, as discover.yml runs it
RID = "20260101T000000Z-abc"


def _filters() -> ModuleType:
    path = REPO / "roles" / "siporch_release" / "filter_plugins" / "siporch_release.py"
    spec = importlib.util.spec_from_file_location("siporch_release_filters_state", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _state(root: Path, target: str = "") -> dict:
    out = subprocess.run(
        [sys.executable, "-c", HOSTLIB.read_text() + "\n" + SCRIPT.read_text(), str(root),
         target],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    return json.loads(out.stdout)


def _release(root: Path) -> dict:
    rel = root / "releases" / RID
    (rel / "kamailio" / "db").mkdir(parents=True)
    files = {"kamailio/kamailio.cfg": b"cfg\n", "kamailio/db/dispatcher": b"1 sip:a\n"}
    manifest = {"files": {}}
    for path, data in files.items():
        (rel / path).write_bytes(data)
        (rel / path).chmod(0o644)
        manifest["files"][path] = {"sha256": hashlib.sha256(data).hexdigest(), "mode": "0644"}
    (rel / "manifest.json").write_text(json.dumps(manifest))
    (root / "releases" / ".x.partial").mkdir()
    (root / "current").symlink_to(f"releases/{RID}")
    return manifest


def test_empty_host(tmp_path: Path) -> None:
    state = _state(tmp_path / "none", RID)
    assert state["current"] == "" and state["manifest"] == {} and state["releases"] == []
    assert state["target"] == {"exists": False, "checksum": "", "files": None}


def test_reads_the_running_release_and_hashes_the_target(tmp_path: Path) -> None:
    manifest = _release(tmp_path)
    state = _state(tmp_path, RID)
    assert state["current"] == RID
    assert state["manifest"] == manifest
    assert state["releases"] == [RID]  # the partial tree is not a release
    target = state["target"]
    assert target["exists"]
    data = (tmp_path / "releases" / RID / "manifest.json").read_bytes()
    assert target["checksum"] == hashlib.sha256(data).hexdigest()
    drift = _filters().siporch_release_drift(
        manifest, target["files"], f"{tmp_path}/releases/{RID}"
    )
    assert drift == {"modified": [], "missing": [], "extra": []}


def test_a_file_changed_on_the_host_is_seen(tmp_path: Path) -> None:
    manifest = _release(tmp_path)
    rel = tmp_path / "releases" / RID
    (rel / "kamailio" / "db" / "dispatcher").write_text("1 sip:b\n")
    (rel / "kamailio" / "kamailio.cfg").chmod(0o600)
    (rel / "kamailio" / "stray").write_text("x")
    state = _state(tmp_path, RID)
    drift = _filters().siporch_release_drift(
        manifest, state["target"]["files"], f"{tmp_path}/releases/{RID}"
    )
    assert sorted(drift["modified"]) == ["kamailio/db/dispatcher", "kamailio/kamailio.cfg"]
    assert drift["extra"] == ["kamailio/stray"]
    (rel / "kamailio" / "db" / "dispatcher").unlink()
    drift = _filters().siporch_release_drift(
        manifest, _state(tmp_path, RID)["target"]["files"], f"{tmp_path}/releases/{RID}"
    )
    assert drift["missing"] == ["kamailio/db/dispatcher"]


def test_hashes_the_installed_helpers(tmp_path: Path) -> None:
    helper = tmp_path / "siporch_kamailio.py"
    helper.write_text("print()\n")
    out = subprocess.run(
        [sys.executable, "-c", HOSTLIB.read_text() + "\n" + SCRIPT.read_text(), str(tmp_path),
         "", str(helper), "/nonexistent"],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    installed = json.loads(out.stdout)["installed"]
    assert installed == {
        str(helper): hashlib.sha256(b"print()\n").hexdigest(),
        "/nonexistent": "",
    }


def test_hashes_the_running_release_when_the_target_is_another(tmp_path: Path) -> None:
    manifest = _release(tmp_path)
    state = _state(tmp_path, "20260202T000000Z-new")
    assert state["target"]["exists"] is False
    drift = _filters().siporch_release_drift(
        manifest, state["current_files"], f"{tmp_path}/releases/{RID}"
    )
    assert drift == {"modified": [], "missing": [], "extra": []}
    assert _state(tmp_path, RID)["current_files"] is None


def test_runs_as_a_file_beside_the_scaffold(tmp_path: Path) -> None:
    """Installed beside siporch_hostlib.py, the reader runs as a file too."""
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path)],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    assert json.loads(out.stdout)["current"] == ""
