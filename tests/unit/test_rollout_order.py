"""The rollout order of deploy-trunk.yml (filter siporch_rollout_order): the hosts that run
no release go at once (their edges with the unchanged hosts, then their PBXs), the changed
hosts that run a release keep the batches and the pair rule they had."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "roles" / "siporch_release" / "filter_plugins" / "siporch_rollout.py"

_spec = importlib.util.spec_from_file_location("_siporch_rollout", PLUGIN)
assert _spec is not None and _spec.loader is not None
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
order = _module.siporch_rollout_order

EDGES = ["edge-central", "edge-central-2", "edge-branch"]
PBXS = ["pbx-central", "pbx-central-2"]
HOSTS = EDGES + PBXS
#: the lab's sites: one pair (edge-central, edge-central-2), one edge alone
MODEL: dict[str, Any] = {
    "hosts": {
        "edge-central": {"site": "central"},
        "edge-central-2": {"site": "central"},
        "edge-branch": {"site": "branch"},
        "pbx-central": {"site": "central"},
        "pbx-central-2": {"site": "central"},
    },
    "sites": {
        "central": {"edges": {"hosts": ["edge-central", "edge-central-2"]}},
        "branch": {"edges": None},
    },
}

# What the read play leaves of a host: a release that the deploy leaves unchanged, changes,
# none at all; a failed read; not read (outside --limit).
STATES = ("unchanged", "changed", "fresh", "failed", "unread")


def _facts(state: str) -> dict[str, Any]:
    if state == "unchanged":
        return {"siporch_release_before": "r1", "siporch_release_current": "r1",
                "siporch_release_unchanged": True}  # fmt: skip
    if state == "changed":
        return {"siporch_release_before": "r1", "siporch_release_current": "r1",
                "siporch_release_unchanged": False}  # fmt: skip
    if state == "fresh":
        return {"siporch_release_before": "", "siporch_release_current": "",
                "siporch_release_unchanged": False}  # fmt: skip
    if state == "failed":
        return {"siporch_release_before": "", "siporch_deploy_failure": {"host": "x"}}
    return {"ansible_host": "198.18.0.1"}  # unread: inventory variables only


def _hostvars(states: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {h: _facts(states[h]) for h in HOSTS}


def _ansible_batches(hosts: list[str], serial: list[int], limit: set[str]) -> list[list[str]]:
    """The batches Ansible makes of a play's hosts (those in --limit) with a list serial:
    each size in turn, the last one repeated."""
    play = [h for h in hosts if h in limit]
    out, i, n = [], 0, 0
    while i < len(play):
        size = serial[min(n, len(serial) - 1)]
        out.append(play[i : i + size])
        i, n = i + size, n + 1
    return out


def _old_rollout(states: dict[str, str], serial: int) -> list[list[str]]:
    """The batches of the host-by-host play before the hosts with no release went at once
    (the play's former Jinja): unchanged hosts first, `serial: [unchanged + N, N]`, the
    pair's later edges skipped; hosts outside --limit out of the play."""
    hv = _hostvars(states)
    unchanged = [h for h in HOSTS
                 if "siporch_deploy_failure" not in hv[h] and hv[h].get("siporch_release_unchanged")]  # fmt: skip
    hosts = unchanged + [h for h in HOSTS if h not in unchanged]
    later = {h for h in HOSTS if h not in unchanged and h == "edge-central-2"}
    limit = {h for h in HOSTS if states[h] != "unread"}
    batches = _ansible_batches(hosts, [len(unchanged) + serial, serial], limit)
    return [b for b in ([h for h in b if h not in later] for b in batches) if b]


def _deployed(result: dict[str, Any], states: dict[str, str]) -> list[list[str]]:
    """The batches in which the host-by-host play deploys hosts (the pair's later edges
    skipped, hosts outside --limit left out), as Ansible cuts them."""
    limit = {h for h in HOSTS if states[h] != "unread"}
    later = set(result["pair_later"])
    batches = _ansible_batches(result["hosts"], result["serial"], limit)
    return [b for b in ([h for h in b if h not in later] for b in batches) if b]


def test_the_first_deploy_of_the_lab_goes_in_two_batches() -> None:
    """Five fresh hosts: the three edges (both edges of the pair with them), then the two
    PBXs (their registrations go through the edges)."""
    states = dict.fromkeys(HOSTS, "fresh")
    result = order(HOSTS, _hostvars(states), EDGES, MODEL, 1)
    assert result["batches"] == [EDGES, PBXS]
    assert result["hosts"] == HOSTS
    assert result["serial"] == [3, 2, 1]
    assert result["pair_later"] == []
    assert result["fresh"] == HOSTS
    assert _deployed(result, states) == [EDGES, PBXS]


def test_hosts_that_run_a_release_go_as_before() -> None:
    """Every host changed: one at a time, edge-central-2 in the pair's own play."""
    states = dict.fromkeys(HOSTS, "changed")
    result = order(HOSTS, _hostvars(states), EDGES, MODEL, 1)
    assert result["pair_later"] == ["edge-central-2"]
    assert result["fresh"] == []
    assert _deployed(result, states) == [
        ["edge-central"],
        ["edge-branch"],
        ["pbx-central"],
        ["pbx-central-2"],
    ]


def test_unchanged_hosts_go_with_the_fresh_edges_and_a_new_pbx_after_the_changed_edges() -> None:
    """A PBX added to a site that runs: the edges the release changes (they learn of the
    PBX) are deployed one by one before it, the unchanged host goes in the first batch."""
    states = {"edge-central": "changed", "edge-central-2": "changed", "edge-branch": "unchanged",
              "pbx-central": "changed", "pbx-central-2": "fresh"}  # fmt: skip
    result = order(HOSTS, _hostvars(states), EDGES, MODEL, 1)
    assert _deployed(result, states) == [
        ["edge-branch", "edge-central"],
        ["pbx-central-2"],
        ["pbx-central"],
    ]
    assert result["pair_later"] == ["edge-central-2"]


def test_a_fresh_edge_beside_an_edge_of_its_pair_that_runs() -> None:
    """The fresh edge goes first (no call on it); the pair's edge that runs is deployed as a
    changed host, never in the fresh edge's batch."""
    states = {"edge-central": "changed", "edge-central-2": "fresh", "edge-branch": "fresh",
              "pbx-central": "changed", "pbx-central-2": "changed"}  # fmt: skip
    result = order(HOSTS, _hostvars(states), EDGES, MODEL, 2)
    assert result["pair_later"] == []
    assert _deployed(result, states) == [
        ["edge-central-2", "edge-branch"],
        ["edge-central", "pbx-central"],
        ["pbx-central-2"],
    ]
    states["edge-central"], states["edge-central-2"] = "fresh", "changed"
    result = order(HOSTS, _hostvars(states), EDGES, MODEL, 2)
    assert result["pair_later"] == ["edge-central-2"]  # in its place: its batch is pbx-central
    assert _deployed(result, states) == [
        ["edge-central", "edge-branch"],
        ["pbx-central"],
        ["pbx-central-2"],
    ]


def test_hosts_outside_the_limit_shift_no_batch() -> None:
    """--limit pbx-central-2,edge-central-2: the hosts not read come last in the play's
    list, so that the batch sizes fit the hosts Ansible keeps."""
    states = dict.fromkeys(HOSTS, "unread")
    states["edge-central-2"] = states["pbx-central-2"] = "fresh"
    result = order(HOSTS, _hostvars(states), EDGES, MODEL, 1)
    assert result["batches"] == [["edge-central-2"], ["pbx-central-2"]]
    assert _deployed(result, states) == [["edge-central-2"], ["pbx-central-2"]]


@pytest.mark.parametrize("serial", [None, "", "x", 0, -3, "2"])
def test_a_bad_or_small_serial_is_one_or_its_number(serial: Any) -> None:
    states = dict.fromkeys(HOSTS, "changed")
    result = order(HOSTS, _hostvars(states), EDGES, MODEL, serial)
    assert result["serial"][-1] == (2 if serial == "2" else 1)
    assert all(size > 0 for size in result["serial"])


def test_no_host_at_all() -> None:
    assert order([], {}, [], None, 1) == {
        "hosts": [], "serial": [1], "pair_later": [], "fresh": [], "batches": []
    }  # fmt: skip


CASES = [
    (dict(zip(HOSTS, combo, strict=True)), serial)
    for combo in itertools.product(STATES, repeat=len(HOSTS))
    for serial in (1, 2, 4)
]


def test_every_case_keeps_the_rules() -> None:
    """Every mix of host states (5 hosts, 5 states each) and serial 1, 2, 4."""
    for states, serial in CASES:
        hv = _hostvars(states)
        result = order(HOSTS, hv, EDGES, MODEL, serial)
        why = (states, serial, result)
        assert sorted(result["hosts"]) == sorted(HOSTS), why
        assert all(isinstance(s, int) and s > 0 for s in result["serial"]), why
        batches = _deployed(result, states)
        assert batches == [
            b for b in ([h for h in b if h not in result["pair_later"]] for b in result["batches"]) if b
        ], why  # fmt: skip
        kind = {h: states[h] for h in HOSTS}
        if "fresh" not in kind.values():
            assert batches == _old_rollout(states, serial), why  # as before
        where = {h: i for i, b in enumerate(batches) for h in b}
        for i, batch in enumerate(batches):
            running = [h for h in batch if kind[h] in ("changed", "failed")]
            assert len(running) <= serial, why
            # never two edges of the pair that run a release in one batch
            assert {"edge-central", "edge-central-2"} - set(running), why
            # fresh PBXs alone, after every edge deployed in this play
            if any(kind[h] == "fresh" and h in PBXS for h in batch):
                assert all(kind[h] == "fresh" and h in PBXS for h in batch), why
                assert all(where[e] < i for e in EDGES if e in where), why
        # the fresh edges and the unchanged hosts all in the first batch
        first = {h for h in HOSTS if kind[h] == "unchanged" or (kind[h] == "fresh" and h in EDGES)}
        if first:
            assert first <= set(batches[0]), why
        # a pair's later edge that runs a release only after the main play
        for h in result["pair_later"]:
            assert kind[h] in ("changed", "failed") and h == "edge-central-2", why
        if kind["edge-central-2"] in ("changed", "failed") and kind["edge-central"] != "unread":
            assert "edge-central-2" in result["pair_later"], why


ORDER_PLAYBOOK = """
- name: Leave the facts of a read
  hosts: siporch_edge:siporch_pbx
  gather_facts: false
  tasks:
    - name: Set the facts
      ansible.builtin.set_fact:
        siporch_release_before: "{{ state_before }}"
        siporch_release_current: "{{ state_before }}"
        siporch_release_unchanged: "{{ state_unchanged }}"

- name: Order
  hosts: localhost
  gather_facts: false
  vars:
    siporch: {model}
  tasks: {tasks}
"""


@pytest.mark.skipif(shutil.which("ansible-playbook") is None, reason="no ansible-playbook")
def test_the_playbook_task_orders_with_hostvars(tmp_path: Path) -> None:
    """deploy-trunk.yml's own "Order the rollout" task, run by Ansible over hostvars (the
    filter reads Ansible's lazy host variables), with --limit and -e siporch_serial."""
    plays = yaml.safe_load((REPO / "playbooks" / "deploy-trunk.yml").read_text())
    task = next(
        t for p in plays for t in p.get("tasks", []) if t.get("name") == "Order the rollout"
    )
    show = {"ansible.builtin.copy": {
        "dest": str(tmp_path / "out.json"), "mode": "0644",
        "content": "{{ {'hosts': siporch_rollout_hosts, 'serial': siporch_rollout_serial,"
                   " 'later': siporch_rollout_pair_later} | to_json }}"}}  # fmt: skip
    (tmp_path / "play.yml").write_text(
        ORDER_PLAYBOOK.replace("{model}", json.dumps(MODEL)).replace(
            "{tasks}", json.dumps([task, {"name": "Show", **show}])
        )
    )
    fresh = {"state_before": "", "state_unchanged": False}
    changed = {"state_before": "r1", "state_unchanged": False}
    inventory = {"all": {
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
        "children": {
            "siporch_edge": {"hosts": {"edge-central": fresh, "edge-central-2": fresh,
                                       "edge-branch": changed}},
            "siporch_pbx": {"hosts": {"pbx-central": fresh, "pbx-central-2": changed}},
        }}}  # fmt: skip
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_FILTER_PLUGINS=str(PLUGIN.parent))  # fmt: skip

    def run(*extra: str) -> dict[str, Any]:
        proc = subprocess.run(
            ["ansible-playbook", "-i", str(tmp_path / "hosts.yml"), str(tmp_path / "play.yml"), *extra],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out: dict[str, Any] = json.loads((tmp_path / "out.json").read_text())
        return out

    assert run() == {
        "hosts": ["edge-central", "edge-central-2", "edge-branch", "pbx-central", "pbx-central-2"],
        "serial": [2, 1, 1, 1, 1],
        "later": [],
    }
    assert run(
        "--limit", "localhost,pbx-central,pbx-central-2,edge-branch", "-e", "siporch_serial=2"
    ) == {
        "hosts": ["edge-branch", "pbx-central", "pbx-central-2", "edge-central", "edge-central-2"],
        "serial": [1, 1, 1, 2],
        "later": [],
    }
