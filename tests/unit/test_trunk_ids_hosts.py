"""Trunk ids against what the hosts run: each edge's manifest records the ids its files
use; the plan compares them with the candidate's and warns of each change; a deploy stops
before the rollout when a trunk the hosts run would change id without its own ``id:``;
``siporch render --ids-from-hosts`` numbers the trunks as the hosts do.

The controller without releases is a fresh ``SIPORCH_STATE`` (as in a CI pipeline): the
hosts' manifests are those of a release rendered under another state directory."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from siporch import core
from siporch.core import HostManifest, HostRead, IdChange, id_changes, id_refusal
from siporch.errors import SiporchError
from siporch.lifecycle import plan_for, trunk_ids_of_hosts
from siporch.model import load_model
from siporch.model.numbering import trunk_ids
from siporch.release import build_release, ids_from_hosts

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory" / "example"
EDGE = "edge-central"


# -- pure -------------------------------------------------------------------------------------


def test_a_host_manifest_keeps_its_trunk_ids_and_adds_none_it_had_not() -> None:
    data = {"id": "r1", "host": "e", "role": "edge", "files": {}, "trunk_ids": {"a": 1}}
    hm = HostManifest.from_json(data)
    assert hm.trunk_ids == {"a": 1}
    assert hm.to_json()["trunk_ids"] == {"a": 1}
    old = HostManifest.from_json({"id": "r1", "host": "p", "role": "pbx", "files": {}})
    assert old.trunk_ids is None and "trunk_ids" not in old.to_json()


def test_a_renumbered_trunk_is_a_change_per_trunk_with_its_hosts() -> None:
    running = {"e1": {"a": 1, "b": 2}, "e2": {"a": 1, "b": 2}, "pbx": None}
    got = id_changes(running, {"aaa": 1, "a": 2, "b": 3})
    assert got == [
        IdChange("a", 1, 2, ("e1", "e2"), False),
        IdChange("b", 2, 3, ("e1", "e2"), False),
    ]
    assert got[0].warning().startswith("warning: trunk a: id 1 -> 2 on e1, e2 (")
    assert "give it `id: 1`" in got[0].warning()


def test_the_refusal_names_trunk_old_and_new_id_and_the_fix() -> None:
    msg = id_refusal([IdChange("itsp-a", 1, 2, ("edge-central",), False)])
    assert msg is not None and "\n" not in msg
    assert msg.startswith(core.ID_REFUSAL)
    assert "trunk itsp-a: id 1 -> 2 (on edge-central)" in msg
    assert "trunks.itsp-a.id: 1" in msg and "siporch render --ids-from-hosts" in msg


def test_a_change_the_models_own_id_says_is_a_warning_only() -> None:
    got = id_changes({"e": {"a": 1}}, {"a": 7}, pinned=["a"])
    assert [c.pinned for c in got] == [True]
    assert id_refusal(got) is None
    assert "give it" not in got[0].warning()


def test_a_removed_trunk_or_an_unchanged_id_is_no_change() -> None:
    assert id_changes({"e": {"a": 1, "gone": 2}}, {"a": 1, "new": 3}) == []


def test_an_older_edge_manifest_falls_back_to_the_controllers_copy_of_its_release() -> None:
    hm = HostManifest.from_json({"id": "r1", "host": "e", "role": "edge", "files": {}})
    release = core.Manifest.from_json({"id": "r1", "hosts": {}, "trunk_ids": {"a": 4}})
    assert core.host_trunk_ids(hm, release) == {"a": 4}
    assert core.host_trunk_ids(hm, None) is None
    pbx = HostManifest.from_json({"id": "r1", "host": "p", "role": "pbx", "files": {}})
    assert core.host_trunk_ids(pbx, release) is None


# -- through the inventory, the releases and the plan -------------------------------------------


@pytest.fixture
def inv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SIPORCH_STATE", str(tmp_path / "deployer-state"))
    monkeypatch.setenv("SIPORCH_CACHE", "0")
    dest = tmp_path / "inv"
    shutil.copytree(EXAMPLE, dest)
    shutil.copy(EXAMPLE.parent / ".vault-pass", tmp_path / ".vault-pass")
    return dest


def _edit(inv: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    path = inv / "group_vars" / "all" / "siporch.yml"
    doc = yaml.safe_load(path.read_text())
    edit(doc["siporch"])
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def _first_trunk(m: dict[str, Any]) -> None:
    """A trunk whose name sorts before every other (a copy of itsp-c, other addresses)."""
    t = json.loads(json.dumps(m["trunks"]["itsp-c"]))
    t.pop("id", None)
    t["peers"] = [{"address": "203.0.113.200", "port": 5060, "transport": "udp"}]
    t["inbound_addresses"] = []
    t.get("security", {}).pop("allowed_sources", None)
    m["trunks"]["aaa-first"] = t


def _deployed(inv: Path) -> tuple[Path, Callable[..., Any]]:
    """Render the inventory's release (the one the hosts run) and a reader that reports
    it as each host's current release, with the host manifest shipped with it."""
    release = build_release(load_model(inv))
    manifests = {h: json.loads((release.path / h / "manifest.json").read_text())
                 for h in release.manifest["hosts"]}  # fmt: skip

    async def reader(host: str, address: str) -> HostRead:
        hm = manifests[host]
        files = {p: e["sha256"] for p, e in hm["files"].items()}
        return HostRead(release.id, files, hm)

    return release.path, reader


def _fresh_controller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    state = tmp_path / "fresh-state"
    monkeypatch.setenv("SIPORCH_STATE", str(state))
    return state / "releases"


def test_edge_manifests_record_every_trunks_id_and_pbx_manifests_none(inv: Path) -> None:
    release = build_release(load_model(inv))
    ids = trunk_ids(load_model(inv).model)
    for host, hm in release.manifest["hosts"].items():
        on_disk = json.loads((release.path / host / "manifest.json").read_text())
        if hm["role"] == "edge":
            assert hm["trunk_ids"] == on_disk["trunk_ids"] == ids, host
        else:
            assert "trunk_ids" not in on_disk, host
    assert release.manifest["trunk_ids_own"] == ["itsp-c"]


def test_a_release_made_before_hosts_recorded_their_ids_is_not_reused(inv: Path) -> None:
    first = build_release(load_model(inv))
    assert build_release(load_model(inv)).reused
    # as an older siporch wrote it (an earlier id: not in the same second as the next)
    older = first.path.with_name("20200101T000000Z-" + first.id.split("-", 1)[1])
    first.path.rename(older)
    data = json.loads((older / "manifest.json").read_text())
    data["id"] = older.name
    data.pop("trunk_ids_own")
    for hm in data["hosts"].values():
        hm.pop("trunk_ids", None)
    (older / "manifest.json").write_text(json.dumps(data))
    again = build_release(load_model(inv))
    assert not again.reused and again.id != older.name
    assert build_release(load_model(inv)).id == again.id  # and the new one is reused


def test_from_a_fresh_controller_the_plan_warns_and_a_deploy_would_refuse(
    inv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = trunk_ids(load_model(inv).model)
    _, reader = _deployed(inv)
    out = _fresh_controller(tmp_path, monkeypatch)
    _edit(inv, _first_trunk)
    loaded = load_model(inv)
    after = trunk_ids(loaded.model)
    assert after["aaa-first"] == 1 and after["itsp-a"] != before["itsp-a"]  # name order
    plan = plan_for((inv,), loaded, out_dir=out, reader=reader)
    moved = {c.trunk: (c.old, c.new) for c in plan.id_changes}
    assert moved == {n: (before[n], after[n]) for n in before if before[n] != after[n]}
    assert all(EDGE in c.hosts and not c.pinned for c in plan.id_changes)
    assert plan.refusal is not None and "trunk itsp-a: id" in plan.refusal
    data = plan.to_json()
    assert data["refusal"] == plan.refusal
    assert {c["trunk"] for c in data["trunk_id_changes"]} == set(moved)


def test_the_models_own_ids_let_the_deploy_go_on(
    inv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = trunk_ids(load_model(inv).model)
    _, reader = _deployed(inv)
    out = _fresh_controller(tmp_path, monkeypatch)

    def pin_and_add(m: dict[str, Any]) -> None:
        _first_trunk(m)
        for name, i in before.items():
            m["trunks"][name]["id"] = i

    _edit(inv, pin_and_add)
    plan = plan_for((inv,), load_model(inv), out_dir=out, reader=reader)
    assert plan.id_changes == () and plan.refusal is None


def test_a_pinned_new_id_is_a_warning_not_a_refusal(inv: Path, tmp_path: Path) -> None:
    before = trunk_ids(load_model(inv).model)
    _, reader = _deployed(inv)
    out = tmp_path / "deployer-state" / "releases"  # the others keep their ids

    def move(m: dict[str, Any]) -> None:
        m["trunks"]["itsp-a"]["id"] = 77

    _edit(inv, move)
    plan = plan_for((inv,), load_model(inv), out_dir=out, reader=reader)
    assert [(c.trunk, c.old, c.new, c.pinned) for c in plan.id_changes] == [
        ("itsp-a", before["itsp-a"], 77, True)
    ]
    assert plan.refusal is None


def test_ids_learnt_from_the_hosts_keep_every_trunk_and_stay_for_later_renders(
    inv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = trunk_ids(load_model(inv).model)
    _, reader = _deployed(inv)
    out = _fresh_controller(tmp_path, monkeypatch)
    _edit(inv, _first_trunk)
    learnt = trunk_ids_of_hosts((inv,), load_model(inv), out_dir=out, reader=reader)
    assert learnt == before
    with ids_from_hosts(learnt):
        loaded = load_model(inv)
        release = build_release(loaded)
    after = trunk_ids(loaded.model)
    assert {n: after[n] for n in before} == before
    assert after["aaa-first"] not in before.values()
    assert release.manifest["trunk_ids"] == after
    # the render after it, without the hosts, keeps them (the controller has the release)
    later = load_model(inv)
    assert trunk_ids(later.model) == after
    plan = plan_for((inv,), later, out_dir=out, reader=reader)
    assert plan.id_changes == () and plan.refusal is None


def test_hosts_that_number_a_trunk_differently_are_an_error(
    inv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, reader = _deployed(inv)

    async def split(host: str, address: str) -> HostRead:
        read = await reader(host, address)
        if host == "edge-branch" and read.manifest is not None:
            manifest = {**read.manifest, "trunk_ids": {**read.manifest["trunk_ids"], "itsp-a": 99}}
            return HostRead(read.release, read.files, manifest)
        return read

    out = _fresh_controller(tmp_path, monkeypatch)
    with pytest.raises(SiporchError, match="number trunk itsp-a differently"):
        trunk_ids_of_hosts((inv,), load_model(inv), out_dir=out, reader=split)


# -- the deploy playbook's gate (the role's filter) and the CLI's reading of it -----------------


def _filter() -> Any:
    import importlib.util

    path = REPO / "roles/siporch_release/filter_plugins/siporch_release.py"
    spec = importlib.util.spec_from_file_location("siporch_release_filters", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FilterModule().filters()["siporch_trunk_id_check"]


def test_the_deploy_gate_refuses_and_check_mode_only_warns(
    inv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    running_path, _ = _deployed(inv)
    running = {
        h.name: json.loads((h / "manifest.json").read_text())
        for h in running_path.iterdir()
        if h.is_dir()
    }
    running["new-host"] = {}  # never deployed
    _fresh_controller(tmp_path, monkeypatch)
    _edit(inv, _first_trunk)
    candidate = build_release(load_model(inv))
    check = _filter()
    got = check(str(candidate.path), running)
    assert got["refusal"].startswith(core.ID_REFUSAL)
    assert any(w.startswith("warning: trunk itsp-a: id ") for w in got["warnings"])
    assert not any("would stop" in w for w in got["warnings"])
    dry = check(str(candidate.path), running, True)
    assert dry["warnings"][-1].startswith("warning: a deploy would stop here: ")
    assert check(str(running_path), running) == {"warnings": [], "refusal": ""}
    asked = check(str(candidate.path), running, False, True)
    assert asked["refusal"] == "" and "renumbered as asked" in asked["warnings"][-1]


def test_the_cli_exits_2_with_the_refusal_of_the_report() -> None:
    from siporch.cli.common import print_result
    from siporch.deploy.runner import RunResult

    report = {"refused": "refusing to deploy: trunk ids would change ...", "hosts": [],
              "warnings": ["warning: trunk a: id 1 -> 2 on e"]}  # fmt: skip
    result = RunResult(2, {}, report, [], 1.0)
    with pytest.raises(SiporchError) as exc:
        print_result(result, "deploy")
    assert exc.value.exit_code == 2 and str(exc.value) == report["refused"]
