"""Trunk ids against what the hosts run, from a controller without releases (a fresh
clone, a CI pipeline): the lab runs the lab model deployed with this code (each edge's
manifest records its trunk ids); a copy of the inventory gets a trunk whose name sorts
first, which in name order would renumber the others.

1. `siporch diff` warns of each trunk whose id changes, with the hosts that run it, and
   says that a deploy would stop; `deploy --check` warns the same and touches nothing.
2. `siporch deploy` refuses before touching any host: exit 2, one line naming the trunk,
   its old and new id and the fix; every host's `current` link is unchanged and the
   refused release is on no host.
3. `siporch render --ids-from-hosts` numbers the trunks as the hosts do: the plan then
   has no id change (the new trunk takes a free id).

Nothing is deployed but the lab model, to the edges (whose files number the trunks): they
are left running it. The lab's other modules renumber trunks as they switch models
(SIPORCH_RENUMBER_TRUNKS, tests/conftest.py); these tests run without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import callkit as ck
import pytest
import yaml

from siporch.core import ID_REFUSAL
from siporch.deploy import runner

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
HOSTS = ("edge-central", "edge-central-2", "edge-branch", "pbx-central", "pbx-central-2")
EDGES = ("edge-branch", "edge-central", "edge-central-2")
NEW = "aaa-first"


def _run(inv: Path, **kw: Any) -> runner.RunResult:
    report = runner.report_path()
    extra = {"asterisk_pbx_health_registrations": False, **kw.pop("extra_vars", {})}
    cmd = runner.build_command(
        "deploy-trunk.yml",
        inv,
        vault_file=runner.vault_password_file(inv, None),
        report_file=report,
        extra_vars=extra,
        **kw,
    )
    try:
        return runner.run(cmd, report)
    finally:
        report.unlink(missing_ok=True)


def _siporch(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "SIPORCH_STATE": str(state)}
    env.pop("SIPORCH_RENUMBER_TRUNKS", None)  # the lab's other modules renumber; not here
    proc = subprocess.run(
        [sys.executable, "-m", "siporch", *args],
        capture_output=True, text=True, timeout=600, cwd=REPO, env=env,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def _current(lab: Any, host: str) -> str:
    """The release ``host`` runs; "" on a host that runs none yet (a fresh lab's PBXs, since
    the module deploys the edges only)."""
    proc = lab.run(host, "readlink /etc/siporch/current || true", check=True)
    return Path(proc.stdout.strip()).name


def _add_first(model: dict[str, Any]) -> None:
    """A trunk whose name sorts before every other (a copy of itsp-c, a lab address)."""
    t = json.loads(json.dumps(model["trunks"]["itsp-c"]))
    t.pop("id", None)
    t["peers"] = [{"address": "198.18.1.200", "port": 5060, "transport": "udp"}]
    t["inbound_addresses"] = []
    t.get("security", {}).pop("allowed_sources", None)
    model["trunks"][NEW] = t


@pytest.fixture(scope="module")
def deployed(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The lab model deployed with this code (its own controller state); the release every
    host runs and the trunk ids the edges record."""
    # every host on the lab model first (on a fresh lab the PBXs run no release yet)
    with ck.deploy_lock(wait=2400):
        ck.ensure_deployed(ck.Lab(lab), lab.inventory, HOSTS)
    state = tmp_path_factory.mktemp("ids-deployer")
    saved = os.environ.get("SIPORCH_STATE")
    os.environ["SIPORCH_STATE"] = str(state)
    try:
        base = ck.copy_inventory(lab, tmp_path_factory.mktemp("ids-base"))
        # the edges: their files number the trunks (the PBXs' manifests record no ids)
        result = _run(base, limit="siporch_edge")
        assert result.ok, "\n".join(result.output[-60:])
        assert result.report is not None
        release = result.report["release"]
        for host in EDGES:
            assert _current(lab, host) == release, host
        running = {host: _current(lab, host) for host in HOSTS}
        ids = {}
        for edge in EDGES:
            manifest = json.loads(
                (lab.root(edge) / "etc/siporch/current/manifest.json").read_text()
            )
            ids[edge] = manifest["trunk_ids"]
        assert all(ids[edge] == ids[EDGES[0]] for edge in EDGES), ids
    finally:
        if saved is None:
            os.environ.pop("SIPORCH_STATE", None)
        else:
            os.environ["SIPORCH_STATE"] = saved
    yield {"release": release, "ids": ids[EDGES[0]], "running": running}


@pytest.fixture
def fresh(lab: Any, tmp_path: Path) -> dict[str, Path]:
    """A copy of the inventory with the new trunk, and an empty controller state."""
    inv = ck.copy_inventory(lab, tmp_path)
    ck.edit_model(inv, _add_first)
    state = tmp_path / "fresh-state"
    state.mkdir()
    return {"inv": inv, "state": state}


def _moved(inv: Path, ids: dict[str, int]) -> dict[str, tuple[int, int]]:
    """What name order (a controller without releases) does to the ids the hosts run, in
    the model of ``inv``: {trunk: (old, new)} of each trunk it renumbers."""
    from siporch.core import assign_ids

    doc = yaml.safe_load((inv / "group_vars" / "all" / "siporch.yml").read_text())
    trunks = doc["siporch"]["trunks"]
    new = assign_ids({n: (t or {}).get("id") for n, t in trunks.items()})
    return {n: (ids[n], new[n]) for n in ids if n in new and new[n] != ids[n]}


def test_the_plan_warns_and_the_deploy_refuses_before_touching_any_host(
    lab: Any, deployed: dict[str, Any], fresh: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    inv, state = fresh["inv"], fresh["state"]
    moved = _moved(inv, deployed["ids"])
    assert "itsp-a" in moved, moved

    # diff: a warning per trunk, with the hosts that run it; a deploy would stop
    r = _siporch(state, "diff", "-i", str(inv), "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    plan = json.loads(r.stdout)
    got = {c["trunk"]: (c["old"], c["new"]) for c in plan["trunk_id_changes"]}
    assert got == moved
    for change in plan["trunk_id_changes"]:
        assert change["hosts"] == list(EDGES) and change["pinned"] is False
    assert plan["refusal"].startswith(ID_REFUSAL)
    r = _siporch(state, "diff", "-i", str(inv), "--stat")
    old, new = moved["itsp-a"]
    assert f"warning: trunk itsp-a: id {old} -> {new} on {', '.join(EDGES)}" in r.stdout
    assert "a deploy would stop" in r.stderr

    # deploy --check: the same warnings in its summary, nothing touched
    monkeypatch.setenv("SIPORCH_STATE", str(state))
    monkeypatch.delenv("SIPORCH_RENUMBER_TRUNKS", raising=False)
    result = _run(inv, check=True, limit="siporch_edge")
    assert result.ok, "\n".join(result.output[-60:])
    assert result.report is not None
    warnings = result.report["warnings"]
    assert any(w.startswith(f"warning: trunk itsp-a: id {old} -> {new} ") for w in warnings)
    assert warnings[-1].startswith("warning: a deploy would stop here: " + ID_REFUSAL)
    for host in HOSTS:
        assert _current(lab, host) == deployed["running"][host], host

    # deploy: refused in one line, exit 2, no host touched
    r = _siporch(state, "deploy", "-i", str(inv))
    assert r.returncode == 2, r.stdout[-3000:] + r.stderr
    refusal = [line for line in r.stderr.splitlines() if line.startswith("siporch: ")]
    assert len(refusal) == 1, r.stderr
    assert refusal[0].startswith("siporch: " + ID_REFUSAL)
    assert f"trunk itsp-a: id {old} -> {new}" in refusal[0]
    assert f"trunks.itsp-a.id: {old}" in refusal[0] and "--ids-from-hosts" in refusal[0]
    rendered = [p.name for p in (state / "releases").iterdir() if p.name[:1].isdigit()]
    assert rendered
    for host in HOSTS:
        assert _current(lab, host) == deployed["running"][host], host
        on_host = lab.run(host, "ls /etc/siporch/releases", check=True).stdout.split()
        assert not set(rendered) & set(on_host), host


def test_render_ids_from_hosts_numbers_the_trunks_as_the_hosts_do(
    lab: Any, deployed: dict[str, Any], fresh: dict[str, Path]
) -> None:
    inv, state = fresh["inv"], fresh["state"]
    r = _siporch(state, "render", "-i", str(inv), "--ids-from-hosts", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    release = json.loads(r.stdout)["id"]
    manifest = json.loads((state / "releases" / release / "manifest.json").read_text())
    ids = manifest["trunk_ids"]
    assert {n: ids[n] for n in deployed["ids"]} == deployed["ids"]
    assert ids[NEW] not in deployed["ids"].values()
    # the plan of the next deploy, from this controller: no id changes, nothing refused
    r = _siporch(state, "diff", "-i", str(inv), "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    plan = json.loads(r.stdout)
    assert plan["trunk_id_changes"] == [] and plan["refusal"] is None
    assert plan["summary"] is None or f"trunk {NEW} added" in plan["summary"]
    for host in HOSTS:
        assert _current(lab, host) == deployed["running"][host], host
