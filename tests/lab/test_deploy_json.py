"""`siporch deploy --json` and `siporch rollback --json` on the lab, as a pipeline reads them:
one JSON document on stdout (siporch.run/1), the progress on stderr, the exit code in both.

A peer added to itsp-a changes the dispatcher tables of the central edges only (the pair,
edge-central and edge-central-2, both run itsp-a): the check says so without touching a
host, the deploy reports both deployed (a reload) and every other host unchanged, the
rollback puts both back. Each test starts from the lab's
own model (deployed unless the hosts run it); the module leaves the lab on it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import callkit as ck
import pytest

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
#: the hosts the peer changes: the central pair, both of which run itsp-a
CHANGED = ("edge-central", "edge-central-2")
SIPORCH_HOSTS = ("edge-central", "edge-central-2", "edge-branch", "pbx-central", "pbx-central-2")
NEW_PEER = "198.18.1.12"
DISPATCHER = "kamailio/db/dispatcher"


def _siporch(*args: str) -> tuple[int, dict[str, Any], str]:
    """Run siporch with ``--json``; the exit code, the document (stdout must hold it and
    nothing else) and stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "siporch", *args, "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    try:
        doc: dict[str, Any] = json.loads(proc.stdout)
    except ValueError as exc:
        raise AssertionError(
            f"stdout is not one JSON document:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        ) from exc
    assert "Traceback" not in proc.stderr, proc.stderr
    _valid(doc)
    return proc.returncode, doc, proc.stderr


def _valid(doc: dict[str, Any]) -> None:
    from siporch.deploy.outcome import RUN_SCHEMA

    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator(RUN_SCHEMA).validate(doc)


def _current(lab: Any, host: str) -> str:
    proc = lab.run(host, "readlink /etc/siporch/current || true", check=True)
    return Path(proc.stdout.strip()).name


def _hosts(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {h["host"]: h for h in doc["hosts"]}


@pytest.fixture(scope="module")
def kit(lab: Any) -> Iterator[ck.Lab]:
    """The controller's deploy lock for the module; the lab's own model deployed again at
    the end (the rollback test leaves it there already: then a no-op)."""
    k = ck.Lab(lab)
    with ck.deploy_lock(wait=2400):
        try:
            yield k
        finally:
            ck.ensure_deployed(k, lab.inventory, SIPORCH_HOSTS)


@pytest.fixture(scope="module")
def peer_inv(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lab's model with one more peer on itsp-a."""
    inv = ck.copy_inventory(lab, tmp_path_factory.mktemp("json-peer"))
    ck.edit_model(
        inv,
        lambda m: m["trunks"]["itsp-a"]["peers"].append(
            {"address": NEW_PEER, "port": 5060, "transport": "udp", "priority": 3}
        ),
    )
    return inv


@pytest.fixture
def on_base(lab: Any, kit: ck.Lab) -> str:
    """Every host runs the lab's own model (deployed unless it does, daemons up); its
    release id."""
    ck.ensure_deployed(kit, lab.inventory, SIPORCH_HOSTS)
    releases = {_current(lab, h) for h in SIPORCH_HOSTS}
    assert len(releases) == 1, releases
    return releases.pop()


def test_check_json_plans_the_dispatcher_change_and_touches_nothing(
    lab: Any, on_base: str, peer_inv: Path
) -> None:
    code, doc, err = _siporch("deploy", "--check", "-i", str(peer_inv))
    assert code == 0 and doc["exit_code"] == 0 and doc["ok"], (doc["error"], err[-3000:])
    assert (doc["command"], doc["check"]) == ("deploy", True)
    hosts = _hosts(doc)
    assert set(SIPORCH_HOSTS) <= set(hosts)
    assert doc["plan"]["changed_hosts"] == list(CHANGED), doc["plan"]
    for changed in CHANGED:
        assert hosts[changed]["outcome"] == "would_change", hosts[changed]
        planned = doc["plan"]["hosts"][changed]
        assert planned["files"].get(DISPATCHER) == "modified", planned
        assert "kamailio:dispatcher.reload" in planned["reloads"], planned
    for host in set(SIPORCH_HOSTS) - set(CHANGED):
        assert hosts[host]["outcome"] == "unchanged", hosts[host]
        assert doc["plan"]["hosts"][host] == {"files": {}, "reloads": []}, host
    for host in SIPORCH_HOSTS:
        assert hosts[host]["before"] == hosts[host]["after"] == on_base, hosts[host]
        assert _current(lab, host) == on_base


def test_deploy_json_then_rollback_json(lab: Any, on_base: str, peer_inv: Path) -> None:
    # the deploy: the central edges reload their dispatcher tables, every other host is
    # unchanged
    code, doc, err = _siporch("deploy", "-i", str(peer_inv))
    assert code == 0 and doc["ok"], (doc["error"], err[-3000:])
    release = doc["release"]
    assert release and release != on_base
    hosts = _hosts(doc)
    for changed in CHANGED:
        edge = hosts[changed]
        assert (edge["outcome"], edge["before"], edge["after"]) == ("deployed", on_base, release)
        assert edge["reload_kind"] == "reload", edge
        assert "kamailio:dispatcher.reload" in edge["reloads"], edge
        assert edge["failure"] is None and edge["rollback"] is None
        assert edge["seconds"] is not None and 0 < edge["seconds"] <= doc["timings"]["seconds"]
        assert doc["plan"]["hosts"][changed]["files"].get(DISPATCHER) == "modified"
        assert doc["ansible"]["recap"][changed]["failed"] == 0
    for host in set(SIPORCH_HOSTS) - set(CHANGED):
        assert hosts[host]["outcome"] == "unchanged", hosts[host]
        assert hosts[host]["reload_kind"] == "none", hosts[host]
        assert hosts[host]["after"] == release  # an identical tree under the new id
    assert doc["counts"]["deployed"] == len(CHANGED)
    assert doc["counts"]["unchanged"] == len(hosts) - len(CHANGED)
    assert doc["ansible"]["returncode"] == 0
    for host in SIPORCH_HOSTS:
        assert _current(lab, host) == release

    # the rollback: every host back on the release it ran before
    code, back, err = _siporch("rollback", "-i", str(peer_inv))
    assert code == 0 and back["ok"], (back["error"], err[-3000:])
    assert (back["command"], back["release"]) == ("rollback", None)
    hosts = _hosts(back)
    for changed in CHANGED:
        edge = hosts[changed]
        assert (edge["outcome"], edge["before"], edge["after"]) == ("deployed", release, on_base)
        assert "kamailio:dispatcher.reload" in edge["reloads"]
        assert "kamailio:restart" not in edge["reloads"]
    for host in set(SIPORCH_HOSTS) - set(CHANGED):
        assert hosts[host]["outcome"] == "unchanged", hosts[host]
        assert (hosts[host]["before"], hosts[host]["after"]) == (release, on_base)
    for host in SIPORCH_HOSTS:
        assert _current(lab, host) == on_base
