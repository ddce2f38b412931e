"""`siporch deploy --json` and `siporch rollback --json`: the run as ``siporch.run/1`` (the
plan, each host's outcome, the failure, timings, the exit code), JSON alone on stdout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from siporch.cli import main
from siporch.deploy import runner
from siporch.deploy.outcome import (
    OUTCOMES,
    RUN_SCHEMA,
    SCHEMA,
    HostTimer,
    error_outcome,
    reload_kind,
    run_outcome,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "inventory" / "example"

DEPLOYED = {
    "playbook": "deploy",
    "release": "R2",
    "check_mode": False,
    "failed": False,
    "warnings": ["warning: trunk itsp-b: id 2 -> 3 on edge-central"],
    "hosts": [
        {"host": "edge-central", "before": "R1", "current": "R2",
         "reloads": ["kamailio:dispatcher.reload"],
         "changed_files": {"kamailio/db/dispatcher": "modified"}},
        {"host": "edge-branch", "before": "R1", "current": "R2", "reloads": [],
         "changed_files": {}},
        {"host": "pbx-central", "before": "", "current": "R2",
         "reloads": ["asterisk:restart"],
         "changed_files": {"asterisk/pjsip_siporch.conf": "added"}},
    ],
}  # fmt: skip

FAILED = {
    "playbook": "deploy",
    "release": "R2",
    "failed": True,
    "warnings": [],
    "hosts": [
        {"host": "edge-central", "before": "R1", "current": "R1",
         "reloads": ["kamailio:dispatcher.reload"],
         "changed_files": {"kamailio/db/dispatcher": "modified"},
         "rollback": "rolled back to R1"},
        {"host": "edge-branch", "before": "R1", "current": "R1", "reloads": [],
         "changed_files": {}, "rollback": "still on R1"},
        {"host": "pbx-central", "before": "R1", "current": "R1", "reloads": [],
         "changed_files": {},
         "failure": {"host": "pbx-central", "step": "Install the daemons",
                     "reason": "unreachable: Failed to connect to the host via ssh"},
         "rollback": "unreachable, not rolled back: it runs R1 or R2"},
        {"host": "pbx-central-2", "before": "R1", "current": "R1",
         "reloads": ["asterisk:pjsip reload"],
         "changed_files": {"asterisk/pjsip_siporch.conf": "modified"},
         "failure": {"host": "pbx-central-2", "step": "Check the PJSIP config",
                     "reason": "asterisk refused the config"},
         "rollback": "still on R1"},
    ],
}  # fmt: skip


def _valid(doc: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(RUN_SCHEMA)
    jsonschema.Draft202012Validator(RUN_SCHEMA).validate(doc)
    json.dumps(doc)  # plain JSON


def _hosts(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {h["host"]: h for h in doc["hosts"]}


def test_a_successful_deploy() -> None:
    result = runner.RunResult(0, {"edge-central": {"changed": 3}}, DEPLOYED, [], 42.04)
    doc = run_outcome(
        result, command="deploy", started=1_700_000_000.0, host_seconds={"edge-central": 12.34}
    ).to_dict()
    _valid(doc)
    assert doc["schema"] == SCHEMA == "siporch.run/1"
    assert (doc["command"], doc["check"], doc["ok"], doc["exit_code"]) == ("deploy", False, True, 0)
    assert doc["release"] == "R2" and doc["error"] is None and doc["refused"] is None
    hosts = _hosts(doc)
    assert hosts["edge-central"] == {
        "host": "edge-central", "outcome": "deployed", "before": "R1", "after": "R2",
        "release_changed": True, "reloads": ["kamailio:dispatcher.reload"],
        "reload_kind": "reload", "failure": None, "rollback": None, "seconds": 12.3,
    }  # fmt: skip
    # the same files under a new id: unchanged, the link moved
    assert hosts["edge-branch"]["outcome"] == "unchanged"
    assert hosts["edge-branch"]["release_changed"] is True
    assert hosts["edge-branch"]["reload_kind"] == "none"
    # a host with no release before
    assert (hosts["pbx-central"]["before"], hosts["pbx-central"]["reload_kind"]) == (None, "restart")
    assert doc["plan"] == {
        "hosts": {
            "edge-central": {"files": {"kamailio/db/dispatcher": "modified"},
                             "reloads": ["kamailio:dispatcher.reload"]},
            "edge-branch": {"files": {}, "reloads": []},
            "pbx-central": {"files": {"asterisk/pjsip_siporch.conf": "added"},
                            "reloads": ["asterisk:restart"]},
        },
        "changed_hosts": ["edge-central", "pbx-central"],
        "trunk_id_warnings": ["warning: trunk itsp-b: id 2 -> 3 on edge-central"],
    }  # fmt: skip
    assert doc["counts"] == {**dict.fromkeys(OUTCOMES, 0), "deployed": 2, "unchanged": 1}
    assert doc["timings"]["started"] == "2023-11-14T22:13:20Z"
    assert doc["timings"]["finished"] == "2023-11-14T22:14:02Z"
    assert doc["timings"]["seconds"] == 42.0
    assert doc["timings"]["hosts"] == {"edge-central": 12.3}
    assert doc["ansible"] == {
        "returncode": 0, "recap": {"edge-central": {"changed": 3}}, "output_tail": []
    }  # fmt: skip


def test_a_failed_deploy_names_each_hosts_fate() -> None:
    result = runner.RunResult(2, {}, FAILED, ["PLAY RECAP"], 30.0)
    doc = run_outcome(result, command="deploy").to_dict()
    _valid(doc)
    assert (doc["ok"], doc["exit_code"]) == (False, 1)
    hosts = _hosts(doc)
    assert {h: v["outcome"] for h, v in hosts.items()} == {
        "edge-central": "rolled_back",
        "edge-branch": "not_deployed",
        "pbx-central": "unreachable",
        "pbx-central-2": "failed",
    }
    assert hosts["pbx-central"]["failure"] == {
        "step": "Install the daemons",
        "reason": "unreachable: Failed to connect to the host via ssh",
        "unreachable": True,
    }
    assert hosts["pbx-central"]["rollback"] == "unreachable, not rolled back: it runs R1 or R2"
    assert hosts["pbx-central-2"]["failure"]["unreachable"] is False
    assert doc["error"].startswith("deploy failed on pbx-central (unreachable), pbx-central-2; ")
    # what the release changes is known where the comparison was the release's own: the
    # host that failed its check before switching; not for a host put back or not reached
    assert doc["plan"]["hosts"]["pbx-central-2"] == {
        "files": {"asterisk/pjsip_siporch.conf": "modified"},
        "reloads": ["asterisk:pjsip reload"],
    }
    for host in ("edge-central", "edge-branch", "pbx-central"):
        assert doc["plan"]["hosts"][host] == {"files": None, "reloads": None}, host
    assert doc["ansible"]["output_tail"] == []  # a host is blamed: no tail needed


def test_a_refused_deploy_exits_2_before_any_host() -> None:
    report = {"playbook": "deploy", "release": "R2", "failed": True, "hosts": [],
              "refused": "refusing to deploy: trunk ids would change",
              "warnings": ["warning: trunk a: id 1 -> 2 on edge-central"]}  # fmt: skip
    doc = run_outcome(runner.RunResult(2, {}, report, [], 5.0), command="deploy").to_dict()
    _valid(doc)
    assert (doc["exit_code"], doc["refused"], doc["error"]) == (
        2, report["refused"], report["refused"]
    )  # fmt: skip
    assert doc["hosts"] == [] and doc["plan"]["trunk_id_warnings"] == report["warnings"]


def test_check_mode_says_what_would_change() -> None:
    report = {**DEPLOYED, "check_mode": True}
    report["hosts"] = [{**h, "current": h["before"]} for h in DEPLOYED["hosts"]]
    doc = run_outcome(runner.RunResult(0, {}, report, [], 9.0), command="deploy", check=True).to_dict()
    _valid(doc)
    assert doc["check"] is True and doc["exit_code"] == 0
    assert {h["host"]: h["outcome"] for h in doc["hosts"]} == {
        "edge-central": "would_change", "edge-branch": "unchanged", "pbx-central": "would_change",
    }  # fmt: skip
    assert not any(h["release_changed"] for h in doc["hosts"])


def test_a_run_that_failed_with_no_host_to_blame_keeps_the_output_tail() -> None:
    """The rollback's target check fails outside a host's rescue: the hosts were left
    alone (not "unchanged"), and ansible-playbook's last lines say why."""
    report = {"playbook": "rollback", "release": "", "failed": False, "warnings": [],
              "hosts": [{"host": "edge-central", "before": "R1", "current": "R1", "reloads": [],
                         "changed_files": {}}]}  # fmt: skip
    output = [f"line {i}" for i in range(40)]
    doc = run_outcome(
        runner.RunResult(2, {}, report, output, 3.0), command="rollback", release="R0"
    ).to_dict()
    _valid(doc)
    assert (doc["command"], doc["release"], doc["exit_code"]) == ("rollback", "R0", 1)
    assert doc["error"] == "rollback failed (ansible-playbook exited 2)"
    assert doc["hosts"][0]["outcome"] == "not_deployed"
    assert doc["ansible"]["output_tail"] == output[-25:]


def test_a_rollback_and_a_failed_undo() -> None:
    report = {"playbook": "rollback", "release": "", "failed": True, "warnings": [], "hosts": [
        {"host": "edge-central", "before": "R2", "current": "R1",
         "reloads": ["kamailio:dispatcher.reload"], "changed_files": {"a": "modified"}},
        {"host": "edge-branch", "before": "R2", "current": "R1", "reloads": [],
         "changed_files": {}, "rollback": "rollback to R2 failed at Reload: timeout"},
    ]}  # fmt: skip
    doc = run_outcome(runner.RunResult(0, {}, report, [], 3.0), command="rollback").to_dict()
    _valid(doc)
    assert doc["release"] is None
    assert [h["outcome"] for h in doc["hosts"]] == ["deployed", "rollback_failed"]


def test_error_outcome_and_reload_kind() -> None:
    doc = error_outcome("deploy", False, "inventory x does not exist", 2).to_dict()
    _valid(doc)
    assert (doc["exit_code"], doc["error"], doc["hosts"]) == (2, "inventory x does not exist", [])
    assert reload_kind([]) == "none"
    assert reload_kind(["kamailio:dispatcher.reload", "asterisk:pjsip reload"]) == "reload"
    assert reload_kind(["kamailio:dispatcher.reload", "rtpengine:restart"]) == "restart"


def test_host_timer_times_the_rollout_not_the_read() -> None:
    ticks = iter(range(100))
    inner: list[Any] = []

    class Inner:
        def event(self, e: Any) -> None:
            inner.append(e)

        def line(self, line: str) -> None:
            inner.append(line)

    timer = HostTimer(Inner(), clock=lambda: float(next(ticks)))
    events = [
        runner.Event("play", "Read the release each host runs"),
        runner.Event("host", "", "a", "ok"),  # not counted
        runner.Event("play", "Deploy the release host by host"),
        runner.Event("host", "", "a", "ok"),
        runner.Event("host", "", "a", "changed"),
        runner.Event("host", "", "b", "ok"),
        runner.Event("host", "", "a", "ok"),
    ]
    for e in events:
        timer.event(e)
    timer.line("x")
    assert timer.seconds() == {"a": 3.0, "b": 0.0}
    assert inner == [*events, "x"]


# --------------------------------------------------------------------------- the CLI


def _cli(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    args: list[str],
    result: runner.RunResult | Exception,
) -> tuple[int, str, str, dict[str, Any]]:
    import importlib

    module = importlib.import_module(f"siporch.cli.cmd_{name}")
    seen: dict[str, Any] = {}

    def fake_run(playbook: str, inventory: Any, **kw: Any) -> runner.RunResult:
        seen.update(kw, playbook=playbook)
        reporter = kw["reporter"]
        reporter.event(runner.Event("play", "Deploy the release host by host"))
        reporter.event(runner.Event("host", "", "edge-central", "changed"))
        reporter.line("TASK [something] ****")
        if isinstance(result, Exception):
            raise result
        return result

    monkeypatch.setattr(module, "run_with_progress", fake_run)
    monkeypatch.setattr(module, "record_deployed", lambda *a: None)
    with pytest.raises(SystemExit) as exc:
        main([name, "-i", str(EXAMPLE), *args])
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err, seen


@pytest.mark.parametrize("extra", [[], ["-v"], ["-q"]])
def test_deploy_json_is_alone_on_stdout(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], extra: list[str]
) -> None:
    result = runner.RunResult(0, {}, DEPLOYED, ["PLAY [x] ***"], 10.0)
    code, out, err, seen = _cli(monkeypatch, capsys, "deploy", ["--json", *extra], result)
    assert code == 0, err
    doc = json.loads(out)  # nothing but the document
    _valid(doc)
    assert doc["command"] == "deploy" and doc["exit_code"] == 0
    assert seen["playbook"] == "deploy-trunk.yml" and seen["check"] is False
    if extra == ["-v"]:
        assert "TASK [something]" in err  # ansible-playbook's lines: on stderr
    if extra == ["-q"]:
        assert err == ""


def test_deploy_json_failure_exits_1_with_the_document(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err, _ = _cli(
        monkeypatch, capsys, "deploy", ["--json"], runner.RunResult(2, {}, FAILED, [], 10.0)
    )
    assert code == 1
    doc = json.loads(out)
    assert doc["exit_code"] == 1 and doc["ok"] is False
    assert 'pbx-central failed at "Install the daemons": unreachable' in err
    assert f"siporch: {doc['error']}" in err
    assert "Traceback" not in err


def test_deploy_json_refusal_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    report = {"release": "R2", "hosts": [], "refused": "refusing to deploy: ids", "warnings": []}
    code, out, err, _ = _cli(
        monkeypatch, capsys, "deploy", ["--json", "--check"], runner.RunResult(2, {}, report, [], 1.0)
    )
    assert code == 2
    assert json.loads(out)["refused"] == "refusing to deploy: ids"
    assert "siporch: refusing to deploy: ids" in err


def test_deploy_json_when_the_run_cannot_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from siporch.errors import SiporchError

    code, out, err, _ = _cli(
        monkeypatch, capsys, "deploy", ["--json"], SiporchError("ansible-playbook is not installed")
    )
    assert code == 2
    doc = json.loads(out)
    assert (doc["exit_code"], doc["error"]) == (2, "ansible-playbook is not installed")
    assert "siporch: ansible-playbook is not installed" in err


def test_rollback_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    report = {"playbook": "rollback", "release": "", "failed": False, "warnings": [], "hosts": [
        {"host": "edge-central", "before": "R2", "current": "R1",
         "reloads": ["kamailio:dispatcher.reload"], "changed_files": {"a": "modified"}},
    ]}  # fmt: skip
    code, out, err, seen = _cli(
        monkeypatch, capsys, "rollback", ["R1", "--json"], runner.RunResult(0, {}, report, [], 4.0)
    )
    assert code == 0, err
    doc = json.loads(out)
    _valid(doc)
    assert (doc["command"], doc["release"]) == ("rollback", "R1")
    assert doc["hosts"][0]["outcome"] == "deployed"
    assert doc["timings"]["hosts"]["edge-central"] == 0.0
    assert seen["extra_vars"]["siporch_release"] == "R1"


def test_deploy_without_json_prints_the_table(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _, _ = _cli(
        monkeypatch, capsys, "deploy", [], runner.RunResult(0, {}, DEPLOYED, [], 10.0)
    )
    assert code == 0
    assert "deploy: release R2" in out and "deploy done in 10.0 s" in out


@pytest.mark.parametrize("as_json", [False, True])
def test_a_bad_model_stops_the_deploy_before_ansible_with_exit_2(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    as_json: bool,
) -> None:
    import shutil

    from siporch.cli import cmd_deploy

    inv = tmp_path / "inv"
    shutil.copytree(EXAMPLE, inv)
    model = inv / "group_vars" / "all" / "siporch.yml"
    text = model.read_text()
    assert "max_channels: 30" in text
    model.write_text(text.replace("max_channels: 30", "max_channels: lots", 1))

    def never(*a: Any, **kw: Any) -> None:
        raise AssertionError("ansible-playbook ran on a bad model")

    monkeypatch.setattr(cmd_deploy, "run_with_progress", never)
    vault = EXAMPLE.parent / ".vault-pass"
    args = ["deploy", "-i", str(inv), "--vault-password-file", str(vault)]
    with pytest.raises(SystemExit) as exc:
        main([*args, *(["--json"] if as_json else [])])
    out, err = capsys.readouterr()
    assert exc.value.code == 2
    assert f"{model}:" in err and "max_channels: must be a whole number" in err
    assert "Traceback" not in err
    if as_json:
        assert json.loads(out)["exit_code"] == 2
