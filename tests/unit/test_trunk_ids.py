"""Stable trunk ids: an id once given by a release of the inventory is kept; a new trunk
takes the lowest id free; a removed trunk's id is not given to another while a release of
the controller has it; a trunk's own ``id`` that another trunk keeps is an error."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from siporch.core import assign_ids, stable_ids
from siporch.errors import ModelError
from siporch.model import load_model
from siporch.model.numbering import trunk_ids
from siporch.release import TRUNK_IDS, build_release, id_base

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory" / "example"


# -- the numbering itself (pure) -------------------------------------------------------------


def test_without_a_base_ids_follow_name_order() -> None:
    explicit: dict[str, int | None] = {"b": None, "a": None, "c": 1}
    assert stable_ids(explicit, {}).ids == assign_ids(explicit) == {"b": 3, "a": 2, "c": 1}


def test_a_trunk_added_first_in_name_order_takes_the_lowest_free_id() -> None:
    kept = {"b": 1, "c": 2}
    got = stable_ids({"a": None, "b": None, "c": None}, kept)
    assert got.ids == {"a": 3, "b": 1, "c": 2} and not got.conflicts
    # what the plain numbering would have done: renumber b and c
    assert assign_ids({"a": None, "b": None, "c": None}) == {"a": 1, "b": 2, "c": 3}


def test_a_removed_trunks_id_is_not_reused_while_reserved() -> None:
    got = stable_ids({"b": None, "c": None, "d": None}, {"b": 2, "c": 3}, reserved={1, 2, 3})
    assert got.ids == {"b": 2, "c": 3, "d": 4}


def test_an_own_id_wins_and_frees_nothing_it_did_not_hold() -> None:
    got = stable_ids({"a": 7, "b": None}, {"a": 1, "b": 2})
    assert got.ids == {"a": 7, "b": 2} and not got.conflicts


def test_an_own_id_another_trunk_keeps_is_a_conflict() -> None:
    got = stable_ids({"a": None, "new": 1}, {"a": 1})
    assert [(c.trunk, c.id, c.holder) for c in got.conflicts] == [("new", 1, "a")]


# -- through the inventory, the loader and the releases --------------------------------------


@pytest.fixture
def inv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the example inventory, its releases in a state directory of its own."""
    monkeypatch.setenv("SIPORCH_STATE", str(tmp_path / "state"))
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


def test_adding_a_trunk_that_sorts_first_renumbers_no_other(inv: Path) -> None:
    before = trunk_ids(load_model(inv).model)
    first = build_release(load_model(inv))
    assert first.manifest[TRUNK_IDS] == before
    _edit(inv, _first_trunk)
    loaded = load_model(inv)
    after = trunk_ids(loaded.model)
    assert {n: after[n] for n in before} == before
    assert after["aaa-first"] == _lowest_free(before.values())
    second = build_release(loaded)
    assert second.manifest[TRUNK_IDS] == after
    # the edge's files use the kept ids: the dispatcher sets of the old trunks are unchanged
    # and the model changes say only that a trunk was added
    assert second.manifest["changes"] == ["trunk aaa-first added"]
    model_json = json.loads((second.path / "model.json").read_text())
    assert model_json["trunks"]["aaa-first"]["id"] == after["aaa-first"]


def _lowest_free(ids: Any) -> int:
    return min(set(range(1, 1000)) - set(ids))


def test_removing_a_trunk_keeps_the_others_and_its_id(inv: Path) -> None:
    from siporch.release import mark_deployed

    first = build_release(load_model(inv))
    before = trunk_ids(load_model(inv).model)
    gone = min(before, key=before.__getitem__)  # the trunk numbered 1
    _edit(inv, lambda m: _drop(m, gone))
    loaded = load_model(inv)
    after = trunk_ids(loaded.model)
    assert after == {n: i for n, i in before.items() if n != gone}
    second = build_release(loaded)
    changes = second.manifest["changes"]
    assert f"trunk {gone} removed" in changes
    assert not [c for c in changes if c.startswith("warning: trunk")], changes
    # the hosts still run the first release: a trunk added now does not take the removed
    # trunk's id
    mark_deployed(inv, first.id)
    _edit(inv, _first_trunk)
    assert id_base(inv).reserved >= {before[gone]}
    assert trunk_ids(load_model(inv).model)["aaa-first"] == _lowest_free(before.values())
    # once the release without it is deployed (and no release has it), the id is free
    mark_deployed(inv, second.id)
    assert trunk_ids(load_model(inv).model)["aaa-first"] == before[gone]


def _drop(m: dict[str, Any], name: str) -> None:
    del m["trunks"][name]
    for route in m.get("routes", []):
        route["trunks"] = [t for t in route["trunks"] if t != name]
        if "weights" in route:
            route["weights"].pop(name, None)
    m["routes"] = [r for r in m.get("routes", []) if r["trunks"]]
    for did in m.get("inbound", []):
        if did.get("trunk") == name:
            did.pop("trunk")


def test_a_pinned_id_another_trunk_keeps_is_an_error_naming_file_and_field(inv: Path) -> None:
    ids = trunk_ids(load_model(inv).model)
    build_release(load_model(inv))
    holder = next(n for n in sorted(ids) if n != "itsp-a")
    _edit(inv, lambda m: m["trunks"]["itsp-a"].update(id=ids[holder]))
    with pytest.raises(ModelError) as exc:
        load_model(inv)
    (problem,) = exc.value.problems
    assert problem.path == "trunks.itsp-a.id"
    assert "group_vars/all/siporch.yml" in problem.file
    assert holder in problem.message and "kept" in problem.message
    proc = subprocess.run(
        [sys.executable, "-m", "siporch", "validate", "-i", str(inv)],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "siporch.yml" in proc.stderr and "trunks.itsp-a.id" in proc.stderr


def test_the_plan_says_nothing_of_a_kept_id_and_warns_of_a_changed_one() -> None:
    from siporch.plan import semantic_diff

    old = {"trunks": {"a": {"id": None, "site": "x"}, "b": {"id": None, "site": "x"}}}
    # the same numbering, now written in the model (kept ids): no change at all
    kept = {"trunks": {"a": {"id": 1, "site": "x"}, "b": {"id": 2, "site": "x"}}}
    assert semantic_diff(old, kept) == []
    # an id that changes (here b's own id) is a warning naming the trunk and both ids
    moved = {"trunks": {"a": {"id": 1, "site": "x"}, "b": {"id": 5, "site": "x"}}}
    (line,) = semantic_diff(old, moved)
    assert line.startswith("warning: trunk b: id 2 -> 5")
