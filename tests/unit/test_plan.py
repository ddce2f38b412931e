"""The plan: semantic summary and the least reloads."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

from siporch.model import load_model
from siporch.plan import TOPOH_WARNING, changed_files, file_diff, reload_actions, semantic_diff
from siporch.release import sanitized_model

EXAMPLE = Path(__file__).resolve().parents[2] / "inventory" / "example"


def _model() -> dict:  # type: ignore[type-arg]
    return sanitized_model(load_model(EXAMPLE).model)


def test_no_change_is_empty() -> None:
    assert semantic_diff(_model(), _model()) == []


def test_peer_added_and_removed() -> None:
    old = _model()
    new = copy.deepcopy(old)
    new["trunks"]["itsp-a"]["peers"].append(
        dict(new["trunks"]["itsp-a"]["peers"][0], address="203.0.113.7")
    )
    del new["trunks"]["itsp-a"]["peers"][0]
    assert semantic_diff(old, new) == [
        "trunk itsp-a: peer 203.0.113.7 added",
        "trunk itsp-a: peer 203.0.113.10 removed",
    ]


def test_topology_hiding_change_warns_that_calls_up_lose_their_dialogs() -> None:
    old = _model()
    assert TOPOH_WARNING not in semantic_diff(old, copy.deepcopy(old))
    off = copy.deepcopy(old)
    off["security"]["topology_hiding"] = False
    assert semantic_diff(old, off)[-1] == TOPOH_WARNING
    domain = copy.deepcopy(old)
    domain["domain"] = "other.example.com"
    assert semantic_diff(old, domain) == [
        f"model: domain {old['domain']} -> other.example.com",
        TOPOH_WARNING,
    ]


def test_trunks_routes_and_secrets() -> None:
    old = _model()
    new = copy.deepcopy(old)
    new["trunks"]["itsp-d"] = new["trunks"].pop("itsp-branch")
    new["trunks"]["itsp-a"]["max_channels"] = 40
    new["trunks"]["itsp-b"]["auth"]["password"] = "sha256:00"
    new["routes"].reverse()
    lines = semantic_diff(old, new)
    assert "trunk itsp-d added" in lines
    assert "trunk itsp-branch removed" in lines
    assert "trunk itsp-a: max_channels 30 -> 40" in lines
    assert "trunk itsp-b: auth.password changed (secret)" in lines
    assert any(line.startswith("routes reordered:") for line in lines)
    assert not any("sha256" in line for line in lines)


def _hm(**files: tuple[str, str]) -> dict:  # type: ignore[type-arg]
    return {"files": {p: {"sha256": h, "reload": a} for p, (h, a) in files.items()}}


def test_reload_actions_least_needed() -> None:
    old = _hm(
        **{
            "kamailio/kamailio.cfg": ("a", "kamailio:restart"),
            "kamailio/db/dispatcher": ("b", "kamailio:dispatcher.reload"),
        }
    )
    new = _hm(
        **{
            "kamailio/kamailio.cfg": ("a", "kamailio:restart"),
            "kamailio/db/dispatcher": ("c", "kamailio:dispatcher.reload"),
        }
    )
    assert reload_actions(old, new) == ["kamailio:dispatcher.reload"]
    assert reload_actions(old, old) == []


def test_restart_supersedes_runtime_reloads() -> None:
    old = _hm(
        **{
            "kamailio/kamailio.cfg": ("a", "kamailio:restart"),
            "kamailio/db/dialplan": ("b", "kamailio:dialplan.reload"),
            "asterisk/x": ("q", "asterisk:pjsip reload"),
        }
    )
    new = _hm(
        **{
            "kamailio/kamailio.cfg": ("z", "kamailio:restart"),
            "kamailio/db/dialplan": ("c", "kamailio:dialplan.reload"),
            "asterisk/x": ("r", "asterisk:pjsip reload"),
        }
    )
    assert reload_actions(old, new) == ["kamailio:restart", "asterisk:pjsip reload"]


def test_fresh_host_starts_each_daemon_once() -> None:
    new = _hm(
        **{
            "kamailio/kamailio.cfg": ("a", "kamailio:restart"),
            "kamailio/db/dialplan": ("b", "kamailio:dialplan.reload"),
            "rtpengine/rtpengine.conf": ("c", "rtpengine:restart"),
        }
    )
    assert reload_actions(None, new) == ["kamailio:restart", "rtpengine:restart"]


def test_changed_files_and_diff_masks_secrets() -> None:
    assert changed_files(
        {"a": {"sha256": "1"}, "b": {"sha256": "2"}},
        {"a": {"sha256": "1"}, "b": {"sha256": "3"}, "c": {"sha256": "4"}},
    ) == {"b": "modified", "c": "added"}
    text = file_diff(
        {"x.conf": b"a\n", "s.conf": b"password=old-pw\nhost=a\n"},
        {"x.conf": b"b\n", "s.conf": b"password=new-pw\nhost=b\n"},
        {"s.conf"},
        "old",
        "new",
    )
    assert "-a\n+b\n" in text
    assert "old-pw" not in text and "new-pw" not in text
    assert " password=********\n-host=a\n+host=b\n" in text


def test_bad_inventory_exits_2_without_traceback(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "siporch", "validate", "-i", str(tmp_path / "none")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert "inventory directory does not exist" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_trunk_that_would_change_id_is_warned_about() -> None:
    """Trunks without ``id`` count in name order: adding one before others renumbers them
    (dispatcher sets, groups, dialplan ids, htable keys, dialog profiles), and the plan
    says so; a trunk with its own id keeps it."""
    old = _model()
    new = copy.deepcopy(old)
    first = sorted(new["trunks"])[0]
    new["trunks"]["aaa-new"] = copy.deepcopy(new["trunks"][first])
    lines = semantic_diff(old, new)
    assert "trunk aaa-new added" in lines
    warnings = [line for line in lines if line.startswith("warning: trunk ")]
    implicit = sorted(n for n, t in old["trunks"].items() if t.get("id") is None)
    assert implicit and len(warnings) == len(implicit)
    assert warnings[0].startswith(f"warning: trunk {implicit[0]}: id 1 -> 2 ")
    assert warnings[0].endswith("give it `id: 1` in the model to keep it")
    pinned = copy.deepcopy(new)
    for i, name in enumerate(implicit, 1):
        pinned["trunks"][name]["id"] = i
    pinned["trunks"]["aaa-new"]["id"] = None
    assert not [x for x in semantic_diff(old, pinned) if x.startswith("warning: trunk ")]
    assert not [x for x in semantic_diff(old, copy.deepcopy(old)) if x.startswith("warning")]


def _variants(base: dict) -> list[dict]:
    """Models that differ from ``base`` in every way the summary tells apart."""
    out = []

    def variant(change) -> None:  # type: ignore[no-untyped-def]
        m = copy.deepcopy(base)
        change(m)
        out.append(m)

    names = list(base["trunks"])
    variant(lambda m: m["trunks"][names[0]].update(max_channels=7))
    variant(lambda m: m["trunks"].pop(names[0]))
    variant(lambda m: m["trunks"].update({"zz-new": copy.deepcopy(m["trunks"][names[-1]])}))
    variant(lambda m: m["trunks"].update({"aa-new": copy.deepcopy(m["trunks"][names[-1]])}))
    variant(lambda m: m["trunks"][names[-1]].update(id=77))
    variant(lambda m: m["trunks"][names[0]]["peers"].append({"address": "192.0.2.99"}))
    variant(lambda m: m["inbound"].reverse())
    variant(lambda m: m["inbound"].pop())
    variant(lambda m: m["inbound"][0].update(name="renamed"))
    variant(lambda m: m["routes"].pop(0))
    variant(lambda m: m["routes"].reverse())
    variant(lambda m: m.update(domain="other.example.com"))
    variant(lambda m: m["security"].update(topology_hiding=False))
    variant(lambda m: m.pop("records"))
    variant(lambda m: m["hosts"].pop(next(iter(m["hosts"]))))
    variant(lambda m: m["sites"].clear())
    variant(lambda m: m.update(inbound=[]))
    return out


def test_summary_of_texts_is_the_summary_of_models() -> None:
    """`semantic_diff_text` (only what differs decoded) says what `semantic_diff` says, for
    every pair of a model and its variants, with the trunks' ids given or not, and reads a
    text of another layout whole."""
    from siporch.core import assign_ids
    from siporch.plan import semantic_diff_text
    from siporch.release import model_json

    base = json.loads(model_json(sanitized_model(load_model(EXAMPLE).model)))
    models = [base, *_variants(base)]

    def ids(m: dict) -> dict[str, int]:
        return assign_ids({n: t.get("id") for n, t in (m.get("trunks") or {}).items()})

    pairs = 0
    for old in models:
        for new in models:
            old_text, new_text = model_json(old), model_json(new)
            want = semantic_diff(json.loads(old_text), json.loads(new_text))  # as releases do
            assert semantic_diff_text(old_text, new_text, (ids(old), ids(new))) == want
            assert semantic_diff_text(old_text, new_text) == want
            indented = json.dumps(json.loads(old_text), indent=2)  # an older layout
            assert semantic_diff_text(indented, new_text) == want
            pairs += 1
        text = model_json(old)
        assert semantic_diff_text(None, text) == semantic_diff(None, json.loads(text))
    assert pairs == len(models) ** 2
