"""The quick deploy of a host in one call (roles/siporch_release/files/siporch_release_quick.py,
run as roles/siporch_release/tasks/quick.yml runs it: the program of the action
siporch_release_quick, the scaffold, the spec and the script, on the standard input of
`python3 -`) on release trees in a temporary directory, and its plan
(siporch_quick_plan)."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "roles" / "siporch_release" / "files" / "siporch_release_quick.py"
HOSTLIB = SCRIPT.with_name("siporch_hostlib.py")
R0, R1, R2 = "20260101T000000Z-old", "20260102T000000Z-aaa", "20260103T000000Z-bbb"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the helper gives files to root")


def _filters() -> ModuleType:
    path = REPO / "roles" / "siporch_release" / "filter_plugins" / "siporch_release.py"
    spec = importlib.util.spec_from_file_location("siporch_release_filters_quick", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _action() -> ModuleType:
    path = REPO / "roles" / "siporch_release" / "action_plugins" / "siporch_release_quick.py"
    spec = importlib.util.spec_from_file_location("siporch_release_quick_action", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _quick(spec: dict[str, Any], stdin: bool = False) -> tuple[int, dict[str, Any], str]:
    """The call as the action makes it; ``stdin``: the spec on stdin after `python3 -c`."""
    if stdin:
        argv, data = (
            [sys.executable, "-c", HOSTLIB.read_text() + SCRIPT.read_text()],
            json.dumps(spec),
        )
    else:
        argv, data = (
            [sys.executable, "-"],
            _action().program(HOSTLIB.read_text(), SCRIPT.read_text(), spec),
        )
    proc = subprocess.run(argv, input=data, capture_output=True, text=True, timeout=60, check=False)
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def _manifest(files: dict[str, bytes], rid: str) -> dict[str, Any]:
    return {
        "id": rid,
        "files": {
            path: {
                "sha256": hashlib.sha256(data).hexdigest(),
                "mode": "0644",
                "secret": False,
                "reload": "kamailio:dispatcher.reload" if "dispatcher" in path else "none",
            }
            for path, data in files.items()
        },
    }


def _release(root: Path, rid: str, files: dict[str, bytes]) -> str:
    rel = root / "releases" / rid
    for path, data in files.items():
        (rel / path).parent.mkdir(parents=True, exist_ok=True)
        (rel / path).write_bytes(data)
        (rel / path).chmod(0o644)
    text = json.dumps(_manifest(files, rid), indent=2, sort_keys=True) + "\n"
    (rel / "manifest.json").write_text(text)
    return text


OLD = {
    "kamailio/kamailio.cfg": b"cfg\n",
    "kamailio/db/dispatcher": b"1 sip:a\n",
    "kamailio/db/gone": b"x\n",
}
NEW = {"kamailio/kamailio.cfg": b"cfg\n", "kamailio/db/dispatcher": b"1 sip:a\n1 sip:b\n"}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "siporch"
    _release(root, R0, OLD)
    _release(root, R1, OLD)
    (root / "current").symlink_to(f"releases/{R1}")
    return root


def _switch(root: Path, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    bundle = tmp_path / "bundle"
    text = _release(bundle, R2, NEW)
    plan = _filters().siporch_quick_plan(
        json.loads(text),
        json.loads((root / "releases" / R1 / "manifest.json").read_text()),
        _hashes(root / "releases" / R1),
        str(root / "releases" / R1),
    )
    files = _filters().siporch_quick_files(
        plan["write"], str(bundle / "releases" / R2), json.loads(text), {}
    )
    return {
        "id": R2,
        "kind": "deploy",
        "manifest": text,
        "write": files,
        "remove": plan["remove"],
    } | extra


def _hashes(top: Path) -> list[dict[str, str]]:
    return [
        {"path": str(p), "checksum": hashlib.sha256(p.read_bytes()).hexdigest(), "mode": "0644"}
        for p in sorted(top.rglob("*"))
        if p.is_file()
    ]


def _tree_check(marker: Path, path: str, tree: Path) -> dict[str, Any]:
    """A tree check that passes when ``path`` is in ``tree``, and touches ``marker``."""
    script = f'test -f "$1/{path}" && touch {marker}'
    return {"name": "tree", "argv": ["sh", "-c", script, "sh", str(tree)]}


OK = {"name": "ok", "argv": ["true"]}
BAD = {"name": "bad", "argv": ["sh", "-c", "echo it broke >&2; exit 1"]}


def test_unchanged_host_runs_steps_and_gates_without_a_switch(root: Path) -> None:
    rc, out, _ = _quick(
        {"root": str(root), "checks": [OK], "steps": [OK], "gates": [OK, OK | {"name": "ok2"}]}
    )
    assert rc == 0 and out["quick"] and not out["switched"]
    assert set(out["gates"]) == {"ok", "ok2"}
    assert os.readlink(root / "current") == f"releases/{R1}"


def test_a_failed_check_changes_nothing(root: Path, tmp_path: Path) -> None:
    rc, out, _ = _quick(
        {"root": str(root), "checks": [OK, BAD], "switch": _switch(root, tmp_path), "steps": [BAD]}
    )
    assert rc == 0 and out == {"quick": False, "why": "bad"}
    assert os.readlink(root / "current") == f"releases/{R1}"
    assert not (root / "releases" / R2).exists()


@needs_root
def test_new_release_made_from_the_running_one_checked_and_switched(
    root: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "checked"
    check = _tree_check(marker, "kamailio/kamailio.cfg", root / "releases" / R2)
    spec = {"root": str(root), "checks": [OK], "switch": _switch(root, tmp_path, tree_checks=[check]),
            "steps": [OK], "gates": [OK], "prune": [R0]}  # fmt: skip
    rc, out, err = _quick(spec)
    assert rc == 0, err
    assert out["quick"] and out["switched"]
    assert marker.exists()
    assert os.readlink(root / "current") == f"releases/{R2}"
    new = root / "releases" / R2
    assert (new / "kamailio" / "db" / "dispatcher").read_bytes() == NEW["kamailio/db/dispatcher"]
    assert not (new / "kamailio" / "db" / "gone").exists()
    assert (new / "manifest.json").read_text() == spec["switch"]["manifest"]
    assert oct(new.stat().st_mode & 0o777) == "0o755"
    assert (root / "history").read_text().split()[1:] == ["deploy", R2]
    assert not (root / "releases" / R0).exists()  # pruned
    assert (root / "releases" / R1 / "kamailio" / "db" / "gone").exists()  # the old one kept
    assert not list((root / "releases").glob(".*partial"))


TABLES = {"name": "Check the Kamailio tables (db_text)", "db_text": "kamailio/db"}
HEADER = b"id(int,auto) setid(int) destination(string)\n"


@needs_root
@pytest.mark.parametrize(
    ("table", "problem"),
    [
        (HEADER + b"1:1:sip\\:198.19.128.1\\:5060\n", ""),
        (HEADER + b"1:1:sip\\:a\n2:sip\\:b\n", "dispatcher:3: 2 fields, header has 3"),
        (b"id(int,auto) setid(number)\n", "dispatcher: bad column header 'setid(number)'"),
        (b"", "dispatcher: empty table file (no header)"),
    ],
)
def test_a_change_of_tables_only_is_checked_for_their_structure(
    root: Path, tmp_path: Path, table: bytes, problem: str
) -> None:
    """The tree check of a change of Kamailio's tables only (db_text, in the call): a
    header of typed columns and as many fields in every row (escaped colons are not
    separators); a table that fails it removes the new release and switches nothing."""
    NEW["kamailio/db/dispatcher"], saved = table, NEW["kamailio/db/dispatcher"]
    try:
        spec = {
            "root": str(root),
            "checks": [OK],
            "switch": _switch(root, tmp_path, tree_checks=[TABLES]),
        }
    finally:
        NEW["kamailio/db/dispatcher"] = saved
    rc, out, err = _quick(spec)
    assert rc == 0, err
    if not problem:
        assert out["quick"] and out["switched"], out
        assert os.readlink(root / "current") == f"releases/{R2}"
        return
    assert not out["quick"] and out["why"] == f"{TABLES['name']}: db_text tables: {problem}"
    assert os.readlink(root / "current") == f"releases/{R1}"
    assert not (root / "releases" / R2).exists()


@needs_root
def test_a_failed_tree_check_removes_the_new_release_and_switches_nothing(
    root: Path, tmp_path: Path
) -> None:
    spec = {"root": str(root), "checks": [OK], "switch": _switch(root, tmp_path, tree_checks=[BAD])}
    rc, out, _ = _quick(spec)
    assert rc == 0 and not out["quick"] and "it broke" in out["why"]
    assert os.readlink(root / "current") == f"releases/{R1}"
    assert not (root / "releases" / R2).exists()


@needs_root
def test_a_failed_gate_after_the_switch_says_so(root: Path, tmp_path: Path) -> None:
    gate = BAD | {"tries": 2, "delay": 0.05}
    spec = {
        "root": str(root),
        "checks": [OK],
        "switch": _switch(root, tmp_path),
        "gates": [OK, gate],
    }
    rc, out, err = _quick(spec)
    assert rc == 1
    assert out["quick"] and out["switched"] and out["failed"] == "bad: it broke"
    # the rescue records the failed part by its name, its output as the reason
    assert (out["step"], out["reason"]) == ("bad", "it broke")
    assert "bad: it broke" in err
    assert os.readlink(root / "current") == f"releases/{R2}"


@needs_root
def test_failed_gates_each_named_and_the_spec_on_stdin(root: Path) -> None:
    """Two gates fail: each by its name; the script also reads its spec on stdin."""
    bad2 = {"name": "worse", "argv": ["sh", "-c", "echo no >&2; exit 1"]}
    spec = {"root": str(root), "checks": [OK], "gates": [OK, BAD, bad2]}
    rc, out, _ = _quick(spec, stdin=True)
    assert rc == 1 and out["quick"] and not out["switched"]
    assert sorted(out["step"].split("; ")) == ["bad", "worse"]
    assert sorted(out["failed"].split("; ")) == ["bad: it broke", "worse: no"]
    assert os.readlink(root / "current") == f"releases/{R1}"


@needs_root
def test_a_tree_that_would_differ_from_the_manifest_is_not_switched_to(
    root: Path, tmp_path: Path
) -> None:
    spec = _switch(root, tmp_path)
    # edited on the host after the run read it: the copy would carry the edit
    (root / "releases" / R1 / "kamailio" / "kamailio.cfg").write_bytes(b"edited\n")
    rc, out, _ = _quick({"root": str(root), "checks": [OK], "switch": spec})
    assert rc == 0 and not out["quick"] and "kamailio/kamailio.cfg" in out["why"]
    assert os.readlink(root / "current") == f"releases/{R1}"
    assert not (root / "releases" / R2).exists()


def test_plan_takes_reloads_and_refuses_restarts(root: Path) -> None:
    f = _filters()
    old = _manifest(OLD, R1)
    new = _manifest(NEW, R2)
    hashes = _hashes(root / "releases" / R1)
    plan = f.siporch_quick_plan(new, old, hashes, str(root / "releases" / R1))
    assert plan["ok"] and plan["actions"] == ["kamailio:dispatcher.reload"]
    assert plan["write"] == ["kamailio/db/dispatcher"] and plan["remove"] == ["kamailio/db/gone"]
    assert plan["changed"] == {"kamailio/db/dispatcher": "modified", "kamailio/db/gone": "removed"}
    cfg = json.loads(json.dumps(new))
    cfg["files"]["kamailio/kamailio.cfg"].update(sha256="other", reload="kamailio:restart")
    assert (
        f.siporch_quick_plan(cfg, old, hashes, str(root / "releases" / R1))["why"]
        == "a daemon restarts"
    )
    assert not f.siporch_quick_plan(new, old, None, "x")["ok"]
    assert not f.siporch_quick_plan(new, {}, hashes, "x")["ok"]
    assert not f.siporch_quick_plan(new, old, hashes, str(root / "releases" / R1), True)["ok"]
    # a file of the running release edited on the host is written from the release
    (root / "releases" / R1 / "kamailio" / "kamailio.cfg").write_bytes(b"edited\n")
    plan = f.siporch_quick_plan(
        new, old, _hashes(root / "releases" / R1), str(root / "releases" / R1)
    )
    assert plan["write"] == ["kamailio/db/dispatcher", "kamailio/kamailio.cfg"]
    assert plan["changed"] == {"kamailio/db/dispatcher": "modified", "kamailio/db/gone": "removed"}


def test_an_edge_of_a_pair_takes_a_reload_in_one_call_unless_keepalived_changes(
    tmp_path: Path,
) -> None:
    """keepalived's own part of the call checks its install and gates on the pair; a
    change of keepalived.conf (a keepalived check and reload) goes step by step."""
    f = _filters()
    conf = {"keepalived/keepalived.conf": b"vrrp_instance x {}\n"}
    root = tmp_path / "siporch"
    _release(root, R1, {**OLD, **conf})
    hashes = _hashes(root / "releases" / R1)

    def manifest(files: dict[str, bytes], rid: str) -> dict[str, Any]:
        out = _manifest(files, rid)
        out["files"]["keepalived/keepalived.conf"]["reload"] = "keepalived:reload"
        return out

    old = manifest({**OLD, **conf}, R1)
    plan = f.siporch_quick_plan(
        manifest({**NEW, **conf}, R2), old, hashes, str(root / "releases" / R1)
    )
    assert plan["ok"] and plan["actions"] == ["kamailio:dispatcher.reload"], plan
    assert "keepalived/keepalived.conf" not in plan["write"]
    other = {"keepalived/keepalived.conf": b"vrrp_instance y {}\n"}
    plan = f.siporch_quick_plan(
        manifest({**NEW, **other}, R2), old, hashes, str(root / "releases" / R1)
    )
    assert not plan["ok"] and plan["why"] == "keepalived's config changes"


def test_files_shipped_with_their_mode_and_group(tmp_path: Path) -> None:
    (tmp_path / "kamailio" / "db").mkdir(parents=True)
    (tmp_path / "kamailio" / "db" / "credentials").write_bytes(b"\x00secret\n")
    manifest = {
        "files": {"kamailio/db/credentials": {"sha256": "x", "mode": "0640", "secret": True}}
    }
    out = _filters().siporch_quick_files(
        ["kamailio/db/credentials"], str(tmp_path), manifest, {"kamailio": "kamailio"}
    )
    assert out == [
        {
            "path": "kamailio/db/credentials",
            "data": base64.b64encode(b"\x00secret\n").decode(),
            "mode": "0640",
            "group": "kamailio",
        }
    ]


STATE = SCRIPT.with_name("siporch_release_state.py")


def _stored_state(root: Path) -> dict[str, Any]:
    """What a rollback's discover reads of the host (the state script with --stored)."""
    proc = subprocess.run(
        [sys.executable, "-c", HOSTLIB.read_text() + "\n" + STATE.read_text(), "--stored",
         str(root)],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    state: dict[str, Any] = json.loads(proc.stdout)
    return state


@pytest.fixture
def rolled(root: Path) -> Path:
    """A host that runs R2 (NEW), went live over R1 (OLD): a rollback goes to R1."""
    _release(root, R2, NEW)
    (root / "current").unlink()
    (root / "current").symlink_to(f"releases/{R2}")
    return root


def _back(root: Path, state: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The switch of a rollback to R1, as tasks/quick.yml makes it from the plan."""
    plan = _filters().siporch_quick_plan(
        state["stored"][R1]["manifest"], state["manifest"], state["current_files"],
        str(root / "releases" / R2),
    )  # fmt: skip
    assert plan["ok"], plan
    assert plan["actions"] == ["kamailio:dispatcher.reload"]
    return {"id": R1, "stored": True, "checksum": state["stored"][R1]["checksum"],
            "kind": "back"} | extra  # fmt: skip


def test_the_state_read_of_a_rollback_has_every_manifest_and_the_running_files(
    rolled: Path,
) -> None:
    state = _stored_state(rolled)
    assert state["current"] == R2 and sorted(state["stored"]) == [R0, R1, R2]
    text = (rolled / "releases" / R1 / "manifest.json").read_bytes()
    assert state["stored"][R1] == {
        "manifest": json.loads(text),
        "checksum": hashlib.sha256(text).hexdigest(),
    }
    assert sorted(f["path"] for f in state["current_files"]) == sorted(
        str(rolled / "releases" / R2 / p) for p in [*NEW, "manifest.json"]
    )


@needs_root
def test_a_rollback_switches_to_the_release_on_the_host_as_it_is(
    rolled: Path, tmp_path: Path
) -> None:
    before = {p: p.stat().st_mtime_ns for p in (rolled / "releases" / R1).rglob("*")}
    marker = tmp_path / "checked"
    checks = [_tree_check(marker, "kamailio/db/gone", rolled / "releases" / R1)]
    switch = _back(rolled, _stored_state(rolled), tree_checks=checks)
    rc, out, err = _quick({"root": str(rolled), "switch": switch, "gates": [OK]})
    assert rc == 0, err
    assert out["quick"] and out["switched"], out
    assert marker.exists()
    assert os.readlink(rolled / "current") == f"releases/{R1}"
    assert (rolled / "history").read_text().split()[1:] == ["back", R1]
    # not made again: the same files, untouched; the release rolled back from kept
    assert {p: p.stat().st_mtime_ns for p in (rolled / "releases" / R1).rglob("*")} == before
    assert (rolled / "releases" / R2 / "manifest.json").exists()
    assert not list((rolled / "releases").glob(".*"))


@pytest.mark.parametrize("tamper", ["edited", "extra", "missing", "manifest", "check"])
def test_a_rollback_to_a_release_that_differs_on_the_host_changes_nothing(
    rolled: Path, tamper: str
) -> None:
    """A file of the target edited, added or lost on the host since it was made, its
    manifest not the one planned with, or its tree check failing: no quick rollback, and
    nothing is changed (the step by step rollback checks it again and fails there)."""
    spec = _back(rolled, _stored_state(rolled))
    rel = rolled / "releases" / R1
    if tamper == "edited":
        (rel / "kamailio" / "kamailio.cfg").write_bytes(b"edited\n")
    elif tamper == "extra":
        (rel / "kamailio" / "db" / "more").write_bytes(b"x\n")
    elif tamper == "missing":
        (rel / "kamailio" / "db" / "gone").unlink()
    elif tamper == "manifest":
        (rel / "manifest.json").write_text((rel / "manifest.json").read_text() + " ")
    else:
        spec["tree_checks"] = [BAD]
    tree = sorted(str(p) for p in rolled.rglob("*"))
    rc, out, err = _quick({"root": str(rolled), "checks": [OK], "switch": spec, "steps": [BAD]})
    assert rc == 0 and not out["quick"], (out, err)
    why = {
        "edited": "differs from its manifest: kamailio/kamailio.cfg",
        "extra": "differs from its manifest: kamailio/db/more",
        "missing": "differs from its manifest: kamailio/db/gone",
        "manifest": "not the one planned with",
        "check": "bad: it broke",
    }[tamper]
    assert why in out["why"], out
    assert os.readlink(rolled / "current") == f"releases/{R2}"
    assert not (rolled / "history").exists()
    assert sorted(str(p) for p in rolled.rglob("*")) == tree  # nothing removed or made


def test_a_schema_step_runs_unless_its_schema_was_applied(root: Path, tmp_path: Path) -> None:
    """A schema step (records.sql, the CDR mapping) is skipped when its file is byte for
    byte the one its stamp says was applied with success to a database still there; a
    missing stamp, another file or a database gone runs it."""
    hostlib = _hostlib()
    schema, db, stamp = tmp_path / "records.sql", tmp_path / "records.sqlite", tmp_path / "stamp"
    schema.write_text("CREATE TABLE IF NOT EXISTS acc (id INTEGER);\n")
    marker = tmp_path / "ran"
    step = {
        "name": "Create or upgrade the call-record database",
        "argv": ["sh", "-c", 'echo x >> "$1"', "sh", str(marker)],
        "schema": {"file": str(schema), "stamp": str(stamp)},
    }

    def ran() -> bool:
        rc, out, err = _quick({"root": str(root), "checks": [OK], "steps": [step]})
        assert rc == 0 and out["quick"], err
        skipped = step["name"] in out["skipped"]
        assert skipped != (step["name"] in out["times"])
        return not skipped

    assert ran()  # no stamp
    db.write_text("")
    hostlib.schema_stamp_write(str(stamp), schema.read_bytes(), str(db))
    assert not ran()  # the same schema, applied
    assert marker.read_text() == "x\n"
    schema.write_text("CREATE TABLE IF NOT EXISTS acc (id INTEGER, callid TEXT);\n")
    assert ran()  # another schema
    hostlib.schema_stamp_write(str(stamp), schema.read_bytes(), str(db))
    assert not ran()
    db.unlink()
    assert ran()  # the database gone
    db.write_text("")
    stamp.write_text("{not json")
    assert ran()  # a stamp that cannot be read
    hostlib.schema_stamp_clear(str(stamp))
    assert ran()  # cleared (before a helper applies a schema)


def _hostlib() -> ModuleType:
    spec = importlib.util.spec_from_file_location("siporch_hostlib_quick", HOSTLIB)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


FAKE_HELPER = '''
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from siporch_hostlib import Failure, Helper


def _fail(a):
    print("some output")
    raise Failure("the gate failed: " + a.what)


def _crash(a):
    raise KeyError("boom")


def _slow(a):
    time.sleep(0.3)
    print("slow done")
    return "ok"


def helper():
    h = Helper("siporch_fake")
    h.command("ok", lambda a: "all good")
    h.command("fail", _fail).add_argument("what")
    h.command("crash", _crash)
    h.command("slow", _slow)
    return h


def main(argv):
    return helper().main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
'''


@pytest.fixture
def fake_helper(tmp_path: Path) -> Path:
    """A Python helper on the Helper scaffold of siporch_hostlib, installed as the roles
    install theirs (the scaffold beside it), runnable as a file."""
    helpers = tmp_path / "helpers"
    helpers.mkdir()
    (helpers / "siporch_hostlib.py").write_text(HOSTLIB.read_text())
    path = helpers / "siporch_fake.py"
    path.write_text("#!" + sys.executable + "\n" + FAKE_HELPER)
    path.chmod(0o755)
    return path


def test_gates_in_process_pass_and_fail_as_their_processes_would(
    root: Path, fake_helper: Path
) -> None:
    """A Python helper's gate run by its main() in the call's own process passes and
    fails as the helper run as a process does: the same failure, by the gate's name, with
    the same output as the reason (a Failure, bad usage, an exception's traceback); what
    the gates print never mixes with the call's JSON."""
    helper = str(fake_helper)
    gates = [
        {"name": "ok", "argv": [helper, "ok"]},
        {"name": "fails", "argv": [helper, "fail", "on purpose"]},
        {"name": "usage", "argv": [helper, "no-such-command"]},
        {"name": "slow", "argv": [helper, "slow"], "tries": 2, "delay": 0.05},
    ]
    outs = {}
    for in_process in (False, True):
        spec = {
            "root": str(root),
            "checks": [OK],
            "gates": [g | {"in_process": in_process} for g in gates],
        }
        rc, out, err = _quick(spec)
        assert rc == 1 and out["quick"] and not out["switched"], err
        outs[in_process] = out
    # the failures in the order the gates ended, each by its name
    for key in ("step", "failed"):
        assert sorted(outs[True][key].split("; ")) == sorted(outs[False][key].split("; "))
    assert sorted(outs[True]["step"].split("; ")) == ["fails", "usage"]
    failed = dict(f.split(": ", 1) for f in outs[True]["failed"].split("; "))
    assert failed["fails"] == "the gate failed: on purpose"
    assert "invalid choice: 'no-such-command'" in failed["usage"]
    crash = {"name": "crash", "argv": [helper, "crash"], "in_process": True}
    rc, out, _ = _quick({"root": str(root), "checks": [OK], "gates": [crash]})
    assert rc == 1 and out["step"] == "crash" and "KeyError: 'boom'" in out["reason"]


def test_gates_in_process_run_at_once_and_a_missing_file_passes_its_gate(
    root: Path, fake_helper: Path, tmp_path: Path
) -> None:
    helper = str(fake_helper)
    gates = [
        {"name": f"slow{n}", "argv": [helper, "slow"], "in_process": True} for n in range(4)
    ] + [
        {"name": "no table", "argv": [helper, "fail", "x"], "in_process": True,
         "if_file": str(tmp_path / "missing")},
    ]  # fmt: skip
    rc, out, err = _quick({"root": str(root), "checks": [OK], "gates": gates})
    assert rc == 0, err
    assert set(out["gates"]) == {"slow0", "slow1", "slow2", "slow3", "no table"}
    assert out["times"]["gates"] < 1.0  # four gates of 0.3 s each, at once
