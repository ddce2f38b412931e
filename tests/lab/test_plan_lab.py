"""A plan's base is what the hosts run, read from them: not the controller's history.

1. After a local `siporch render` of a changed model (no deploy), `siporch diff` still
   reports the change, against the release each host runs.
2. From a fresh copy of the inventory and an empty release directory (as in a CI
   pipeline), `deploy --check --diff` shows only the real change: the PBX counts as
   changed, its pjsip.conf diff is shown with every secret as ********, and no site,
   host or trunk is reported as added.

The module deploys the lab model first (other tests deploy other models and code to the
same lab), and compares the expected change with the rendered files themselves.
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

from siporch.deploy import runner
from siporch.model import load_model
from siporch.render import render_release

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
HOSTS = ("edge-central", "edge-central-2", "edge-branch", "pbx-central", "pbx-central-2")
PBX = "pbx-central"
NEW_SECRET = "lab-rotated-Secret-7Q"
NEW_USER = "renamed-lab"


def _edit(model: dict[str, Any]) -> None:
    """One trunk changes: its registration user and password (pjsip.conf of the PBX)."""
    auth = model["trunks"]["itsp-b"]["auth"]
    auth["username"] = NEW_USER
    auth["password"] = NEW_SECRET


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


def _expected(base: Path, changed: Path) -> dict[str, set[str]]:
    """The paths whose rendered bytes differ, per host (straight from the renderer)."""
    old = render_release(load_model(base).model)
    new = render_release(load_model(changed).model)
    out = {}
    for host in HOSTS:
        paths = set(old[host]) | set(new[host])
        out[host] = {p for p in paths if old[host].get(p) != new[host].get(p)}
    return out


def _current(lab: Any, host: str) -> str:
    proc = lab.run(host, "readlink /etc/siporch/current", check=True)
    return Path(proc.stdout.strip()).name


def _siporch(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "siporch", *args],
        capture_output=True, text=True, timeout=300, cwd=REPO, env=env,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture(scope="module")
def deployed(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Deploy the lab model with this code; return the base inventory, the release every
    host runs, and the secret the running pjsip.conf holds."""
    # One controller: every inventory copy of this module keeps its releases in one state
    # directory (as a CI pipeline's controller does), so the model of the release the hosts
    # run is at hand for the plan's summary.
    state = tmp_path_factory.mktemp("plan-state")
    saved = os.environ.get("SIPORCH_STATE")
    os.environ["SIPORCH_STATE"] = str(state)
    base = ck.copy_inventory(lab, tmp_path_factory.mktemp("plan-base"))
    result = _run(base)
    assert result.ok, "\n".join(result.output[-60:])
    assert result.report is not None
    release = result.report["release"]
    for host in HOSTS:
        assert _current(lab, host) == release
    conf = (lab.root(PBX) / "etc/siporch/current/asterisk/pjsip_siporch.conf").read_text()
    old_secret = next(
        line.split("=", 1)[1].strip()
        for line in conf.splitlines()
        if line.replace(" ", "").startswith("password=")
    )
    yield {"base": base, "release": release, "old_secret": old_secret, "state": state}
    if saved is None:
        os.environ.pop("SIPORCH_STATE", None)
    else:
        os.environ["SIPORCH_STATE"] = saved


def test_diff_after_a_local_render_compares_with_what_hosts_run(
    lab: Any, deployed: dict[str, Any], tmp_path: Path
) -> None:
    inv = ck.copy_inventory(lab, tmp_path)
    ck.edit_model(inv, _edit)
    expected = _expected(deployed["base"], inv)
    assert expected[PBX] == {"asterisk/pjsip_siporch.conf"}
    # rendered (the newest local release of this inventory), never deployed
    r = _siporch("render", "-i", str(inv), "--json")
    assert r.returncode == 0, r.stderr
    candidate = json.loads(r.stdout)["id"]
    assert candidate != deployed["release"]

    r = _siporch("diff", "-i", str(inv), "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    plan = json.loads(r.stdout)
    assert plan["unknown"] == []
    for host in HOSTS:
        h = plan["hosts"][host]
        assert h["base"] == {
            "state": "runs", "release": deployed["release"], "manifest_source": "host",
            "error": None,
        }  # fmt: skip
        assert set(h["files"]) == expected[host], host
    assert "trunk itsp-b: auth.username examplecorp -> renamed-lab" in plan["summary"]

    r = _siporch("diff", "-i", str(inv))
    assert r.returncode == 1
    assert f"{PBX}: runs {deployed['release']}" in r.stdout
    assert "no changes" not in r.stdout
    assert f"+username = {NEW_USER}" in r.stdout
    assert "password = ********" in r.stdout
    everything = r.stdout + r.stderr
    assert NEW_SECRET not in everything and deployed["old_secret"] not in everything


def test_deploy_check_from_a_fresh_inventory_shows_only_the_real_change(
    lab: Any, deployed: dict[str, Any], tmp_path: Path
) -> None:
    inv = ck.copy_inventory(lab, tmp_path)
    ck.edit_model(inv, _edit)
    expected = _expected(deployed["base"], inv)
    empty = tmp_path / "releases"  # no release history at all on this "controller"
    result = _run(inv, check=True, diff=True, extra_vars={"siporch_release_out": str(empty)})
    output = "\n".join(result.output)
    assert result.ok, output[-6000:]
    assert result.report is not None
    files = {h["host"]: set(h["changed_files"]) for h in result.report["hosts"]}
    assert files == expected
    for h in result.report["hosts"]:
        assert h["before"] == deployed["release"]
    # the PBX counts as changed, the edges do not
    assert result.recap[PBX]["changed"] >= 1, result.recap
    for host in HOSTS:
        if not expected[host]:
            assert result.recap[host]["changed"] == 0, (host, result.recap)
    # nothing is reported as new: the base is what the hosts run
    for noun in ("site central", "host edge-central", "trunk itsp-a"):
        assert f"{noun} added" not in output
    assert "model changes: not known" in output  # the hosts' model is not in `empty`
    # the masked diff of pjsip.conf, never a secret
    assert f"+username = {NEW_USER}" in output
    assert "password = ********" in output
    assert NEW_SECRET not in output and deployed["old_secret"] not in output
    # and check mode touched nothing
    for host in HOSTS:
        assert _current(lab, host) == deployed["release"]
