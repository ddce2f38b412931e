"""The options every command shares (siporch/cli/common.py): one inventory variable,
SIPORCH_INVENTORY, for every command; ``--limit`` as an Ansible host pattern wherever a
command reaches hosts; ``-q``; the lab commands apart in ``--help``; route's ``--trunk``."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from siporch.cli import cli as root
from siporch.errors import SiporchError
from siporch.hosts import select

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory" / "example"
ALL = ["edge-central", "edge-central-2", "edge-branch", "pbx-central", "pbx-central-2"]

#: Commands that read the inventory (``-i``); those that reach hosts take ``--limit`` too.
INVENTORY = ["validate", "render", "diff", "route", "call", "deploy", "releases", "rollback",
             "status", "calls", "exporter", "drift"]  # fmt: skip
LIMIT = ["diff", "deploy", "releases", "rollback", "status", "calls", "exporter", "drift"]


def command(name: str) -> click.Command:
    cmd: click.Command = importlib.import_module(f"siporch.cli.cmd_{name}").cli
    return cmd


#: What a command needs to parse at all.
REQUIRED = {"route": ["+12025550100"], "call": ["123", "--from", "x"],
            "exporter": ["--listen", "127.0.0.1:9"]}  # fmt: skip


def params(name: str, args: list[str]) -> dict[str, object]:
    """The values the command would get (parsed only, nothing runs)."""
    with command(name).make_context(name, [*REQUIRED.get(name, []), *args]) as ctx:
        return dict(ctx.params)


@pytest.mark.parametrize("name", INVENTORY)
def test_siporch_inventory_is_honoured_by(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SIPORCH_INVENTORY", str(tmp_path / "inv"))
    assert params(name, [])["inventory"] == (tmp_path / "inv",)
    # -i wins over the environment, and may be repeated
    got = params(name, ["-i", "a.yml", "-i", "b.yml"])["inventory"]
    assert got == (Path("a.yml"), Path("b.yml"))


@pytest.mark.parametrize("name", INVENTORY)
def test_the_default_inventory_without_the_variable(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SIPORCH_INVENTORY", raising=False)
    assert params(name, [])["inventory"] == (Path("inventory/example"),)


@pytest.mark.parametrize("name", INVENTORY)
def test_the_vault_password_file_from_ansibles_variable(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD_FILE", str(tmp_path / "pass"))
    assert params(name, [])["vault_password_file"] == tmp_path / "pass"


@pytest.mark.parametrize("name", LIMIT)
def test_limit_is_taken_by(name: str) -> None:
    assert params(name, ["--limit", "siporch_edge:!edge-branch"])["limit"] == (
        "siporch_edge:!edge-branch"
    )


@pytest.mark.parametrize("name", INVENTORY)
def test_verbose_and_quiet_are_taken_by(name: str) -> None:
    from siporch.cli import common

    with command(name).make_context(name, [*REQUIRED.get(name, []), "-v", "-v"]):
        assert common.verbosity() == 2
    with command(name).make_context(name, [*REQUIRED.get(name, []), "-q"]):
        assert common.verbosity() == -1 and common.console.quiet
    # undone when the command's context closes: nothing leaks into the next command
    assert common.verbosity() == 0 and not common.console.quiet


@pytest.mark.parametrize(
    ("pattern", "hosts"),
    [
        ("edge-central", ["edge-central"]),
        ("siporch_edge", ["edge-central", "edge-central-2", "edge-branch"]),
        ("siporch_edge:!edge-branch", ["edge-central", "edge-central-2"]),
        ("edge-*", ["edge-central", "edge-central-2", "edge-branch"]),
        ("pbx-central,edge-branch", ["edge-branch", "pbx-central"]),
        ("siporch_edge:&edge-branch", ["edge-branch"]),
        ("~edge-c.*", ["edge-central", "edge-central-2"]),
        ("all", ALL),
        (None, ALL),
    ],
)
def test_limit_selects_as_ansible_does(pattern: str | None, hosts: list[str]) -> None:
    assert select(EXAMPLE, pattern, ALL) == hosts


def test_limit_matching_nothing_is_an_error(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SiporchError, match="--limit nothing-here: matches no host"):
        select(EXAMPLE, "nothing-here", ALL)
    assert "WARNING" not in capfd.readouterr().err  # said once, by siporch


def test_status_limit_filters_the_hosts_looked_at() -> None:
    from siporch.monitor.topology import from_inventory

    vault = REPO / "inventory" / ".vault-pass"
    topo = from_inventory(EXAMPLE, vault, limit="siporch_edge:!edge-branch")
    assert [e.name for e in topo.edges] == ["edge-central", "edge-central-2"] and not topo.pbxs
    topo = from_inventory(EXAMPLE, vault, limit="pbx-*")
    assert [p.name for p in topo.pbxs] == ["pbx-central", "pbx-central-2"] and not topo.edges


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(root, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_diff_limit_plans_only_the_selected_hosts(tmp_path: Path) -> None:
    inv = tmp_path / "inv"
    shutil.copytree(EXAMPLE, inv)
    shutil.copy(REPO / "inventory" / ".vault-pass", tmp_path / ".vault-pass")
    out = tmp_path / "releases"
    code, stdout, _ = run("render", "-i", str(inv), "--out", str(out), "--json")
    assert code == 0
    rid = json.loads(stdout)["id"]
    code, stdout, _ = run("diff", "-i", str(inv), "--out", str(out), "--against", rid, "--json")
    assert sorted(json.loads(stdout)["hosts"]) == sorted(ALL)
    code, stdout, _ = run(
        "diff", "-i", str(inv), "--out", str(out), "--against", rid, "--json",
        "--limit", "siporch_edge",
    )  # fmt: skip
    assert code == 0
    assert sorted(json.loads(stdout)["hosts"]) == ["edge-branch", "edge-central", "edge-central-2"]


@pytest.mark.parametrize("name", ["status", "calls", "drift", "diff"])
def test_siporch_inventory_is_read_by(name: str, tmp_path: Path) -> None:
    """End to end: the command reads the inventory the variable names (here: a missing one,
    so nothing is reached) and says so in one line, exit 2."""
    missing = tmp_path / "nowhere"
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from siporch.cli import main; main(sys.argv[1:])", name],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**os.environ, "SIPORCH_INVENTORY": str(missing), "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert str(missing) in proc.stderr and "Traceback" not in proc.stderr


def test_quiet_prints_nothing_on_stdout() -> None:
    vault = str(REPO / "inventory" / ".vault-pass")
    code, stdout, _ = run("validate", "-i", str(EXAMPLE), "--vault-password-file", vault, "-q")
    assert code == 0 and stdout == ""
    code, stdout, _ = run("validate", "-i", str(EXAMPLE), "--vault-password-file", vault)
    assert code == 0 and stdout.startswith("ok: ")
    code, stdout, _ = run(
        "validate", "-i", str(EXAMPLE), "--vault-password-file", vault, "-q", "--json"
    )
    assert json.loads(stdout)["valid"] is True


def test_lab_commands_are_listed_apart_in_help() -> None:
    _, stdout, _ = run("--help")
    main, _, lab = stdout.partition("Lab commands")
    assert "  lab " in lab and "  call " in lab
    assert "  lab " not in main and "  call " not in main
    assert "  deploy " in main and "  status " in main


def test_route_trunk_and_its_older_spelling() -> None:
    vault = str(REPO / "inventory" / ".vault-pass")
    base = ["route", "-i", str(EXAMPLE), "--vault-password-file", vault, "--json", "2025550100"]
    code, new, _ = run(*base, "--trunk", "itsp-a")
    code_old, old, _ = run(*base, "--from", "itsp-a")
    assert (code, new) == (code_old, old)
    assert json.loads(new)["direction"] == "inbound"
    with pytest.raises(SiporchError, match="--site and --trunk cannot be combined"):
        run(*base, "--trunk", "itsp-a", "--site", "central")
