"""The redeploy of an unchanged release restores files changed on the host (filters)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
ROOT = "/etc/siporch/releases/r1"


def _filters() -> ModuleType:
    path = REPO / "roles" / "siporch_release" / "filter_plugins" / "siporch_release.py"
    spec = importlib.util.spec_from_file_location("siporch_release_filters", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


MANIFEST = {
    "files": {
        "kamailio/kamailio.cfg": {"sha256": "a" * 64, "mode": "0644", "reload": "kamailio:restart"},
        "kamailio/db/dispatcher": {
            "sha256": "b" * 64,
            "mode": "0644",
            "reload": "kamailio:dispatcher.reload",
        },
        "kamailio/db/address": {
            "sha256": "c" * 64,
            "mode": "0644",
            "reload": "kamailio:permissions.addressReload",
        },
        "asterisk/pjsip.conf": {
            "sha256": "d" * 64,
            "mode": "0640",
            "secret": True,
            "reload": "asterisk:pjsip.reload",
        },
    }
}


def _found(**changes: tuple[str, str] | None) -> list[dict[str, object]]:
    out: list[dict[str, object]] = [
        {"path": f"{ROOT}/manifest.json", "checksum": "x", "mode": "0644"}
    ]
    for path, spec in MANIFEST["files"].items():
        key = path.replace("/", "_").replace(".", "_")
        if key in changes:
            change = changes[key]
            if change is None:
                continue
            checksum, mode = change
        else:
            checksum, mode = spec["sha256"], spec["mode"]
        out.append({"path": f"{ROOT}/{path}", "checksum": checksum, "mode": mode})
    return out


def test_an_intact_release_has_no_drift() -> None:
    f = _filters()
    drift = f.siporch_release_drift(MANIFEST, _found(), ROOT)
    assert drift == {"modified": [], "missing": [], "extra": []}
    assert f.siporch_heal_actions(MANIFEST, []) == []


def test_edited_lost_extra_and_mode_changes_are_found() -> None:
    f = _filters()
    found = _found(
        kamailio_db_dispatcher=("e" * 64, "0644"),
        kamailio_db_address=None,
        asterisk_pjsip_conf=("d" * 64, "0644"),  # secret file opened to everyone
    )
    found.append({"path": f"{ROOT}/kamailio/db/dispatcher.orig", "checksum": "f", "mode": "0644"})
    drift = f.siporch_release_drift(MANIFEST, found, ROOT)
    assert drift == {
        "modified": ["asterisk/pjsip.conf", "kamailio/db/dispatcher"],
        "missing": ["kamailio/db/address"],
        "extra": ["kamailio/db/dispatcher.orig"],
    }


def test_restoring_reloads_only_what_the_files_need() -> None:
    f = _filters()
    assert f.siporch_heal_actions(MANIFEST, ["kamailio/db/dispatcher"]) == [
        "kamailio:dispatcher.reload"
    ]
    actions = f.siporch_heal_actions(MANIFEST, ["kamailio/kamailio.cfg", "kamailio/db/dispatcher"])
    assert actions == ["kamailio:restart"]
    changes = f.siporch_heal_changes({"files": ["kamailio/db/dispatcher"], "extra": ["x"]})
    assert changes == {"kamailio/db/dispatcher": "restored", "x": "removed (not in the release)"}


def test_failure_reason_of_a_failed_task() -> None:
    """The reason the deploy and rollback playbooks record for a failed host (one filter
    for both): the first failed item of a loop; stderr, else stdout, else msg; cut at 600
    characters; "unreachable: " for a host out of reach."""
    reason = _filters().siporch_failure_reason
    assert reason({"msg": " non-zero return code ", "stderr": " boom\n", "stdout": "x"}) == "boom"
    assert reason({"msg": "m", "stderr": "", "stdout": " out "}) == "out"
    assert reason({"msg": "only msg"}) == "only msg"
    assert reason({}) == reason(None) == "failed"
    loop = {
        "msg": "One or more items failed",
        "results": [{"failed": False, "stderr": "ok"}, {"failed": True, "stderr": "second"}],
    }
    assert reason(loop) == "second"
    assert reason({"unreachable": True, "msg": "Failed to connect"}) == (
        "unreachable: Failed to connect"
    )
    long = " ".join(["word"] * 200)
    cut = reason({"msg": long})
    assert cut.endswith("...") and len(cut) <= 600 and long.startswith(cut[:-3])
    assert reason({"msg": "w" * 603}) == "w" * 603  # Jinja's leeway: no cut within 5


def test_the_playbooks_record_failures_with_the_filter() -> None:
    text = (REPO / "playbooks" / "tasks" / "deploy_host.yml").read_text()
    assert "ansible_failed_result | siporch_failure_reason" in text
    # the rollback's hosts go through the deploy's (its rescue included)
    rollback = (REPO / "playbooks" / "rollback-trunk.yml").read_text()
    assert "ansible.builtin.import_tasks: tasks/deploy_host.yml" in rollback
    # a failed part of the quick call: its output through the same filter
    text = (REPO / "playbooks" / "tasks" / "deploy_host.yml").read_text()
    assert "{'stderr': siporch_release_quick_failure.reason} | siporch_failure_reason" in text
    for path in (REPO / "playbooks").rglob("*.yml"):
        assert "selectattr('failed')" not in path.read_text(), path
