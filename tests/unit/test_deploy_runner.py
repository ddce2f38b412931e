"""siporch.deploy.runner and siporch.deploy.releases: command lines and output parsing."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from siporch.deploy import runner
from siporch.deploy.releases import host_releases, release_time
from siporch.errors import DeployError, SiporchError

REPO = Path(__file__).resolve().parents[2]


def test_parse_lines() -> None:
    assert runner.parse_line("PLAY [Deploy the release host by host] ****") == runner.Event(
        "play", "Deploy the release host by host"
    )
    assert runner.parse_line("TASK [kamailio_edge : Reload Kamailio data over RPC] ***") == (
        runner.Event("task", "kamailio_edge : Reload Kamailio data over RPC")
    )
    assert runner.parse_line("changed: [edge-central] => (item=x)") == runner.Event(
        "host", "", "edge-central", "changed"
    )
    assert runner.parse_line("fatal: [pbx-central]: FAILED! => ") == runner.Event(
        "host", "", "pbx-central", "fatal"
    )
    assert runner.parse_line("some other line") is None


def test_parse_recap() -> None:
    lines = [
        "PLAY RECAP *****",
        "edge-central               : ok=64   changed=0    unreachable=0    failed=0    "
        "skipped=17   rescued=0    ignored=0   ",
        "localhost                  : ok=6    changed=2    unreachable=0    failed=1    "
        "skipped=0    rescued=0    ignored=0   ",
    ]
    recap = runner.parse_recap(lines)
    assert recap["edge-central"]["ok"] == 64
    assert recap["localhost"]["failed"] == 1
    assert runner.RunResult(0, recap).changed == 2


def test_build_command(tmp_path: Path) -> None:
    vault = tmp_path / ".vault-pass"
    vault.write_text("x\n")
    cmd = runner.build_command(
        "deploy-trunk.yml",
        tmp_path,
        check=True,
        diff=True,
        limit="edge-central",
        extra_vars={"siporch_force": True},
        vault_file=vault,
        report_file=tmp_path / "r.json",
    )
    assert cmd[-2] == "-e"
    extra = json.loads(cmd[-1])
    assert extra["siporch_force"] is True
    assert extra["siporch_inventory"] == str(tmp_path.resolve())
    assert extra["siporch_report_file"] == str(tmp_path / "r.json")
    assert "--check" in cmd and "--diff" in cmd
    # The controller plays must stay in a limited run.
    assert cmd[cmd.index("--limit") + 1] == "edge-central,localhost"
    assert cmd[cmd.index("--vault-password-file") + 1] == str(vault.resolve())
    assert cmd[3] == str(REPO / "playbooks" / "deploy-trunk.yml")


def test_build_command_errors(tmp_path: Path) -> None:
    with pytest.raises(SiporchError, match="does not exist"):
        runner.build_command("deploy-trunk.yml", tmp_path / "missing")
    with pytest.raises(SiporchError, match="is missing"):
        runner.build_command("nope.yml", tmp_path)


def test_vault_password_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the environment's password file is the fallback: none here
    monkeypatch.delenv("ANSIBLE_VAULT_PASSWORD_FILE", raising=False)
    inv = tmp_path / "lab"
    inv.mkdir()
    assert runner.vault_password_file(inv, None) is None
    (tmp_path / ".vault-pass").write_text("pw\n")
    assert runner.vault_password_file(inv, None) == tmp_path / ".vault-pass"
    (inv / ".vault-pass").write_text("pw\n")
    assert runner.vault_password_file(inv, None) == inv / ".vault-pass"
    with pytest.raises(SiporchError):
        runner.vault_password_file(inv, tmp_path / "nope")


def _entry(rid: str, files: dict[str, str]) -> dict[str, object]:
    reloads = {
        "kamailio/kamailio.cfg": "kamailio:restart",
        "kamailio/db/dispatcher": "kamailio:dispatcher.reload",
        "kamailio/db/address": "kamailio:permissions.addressReload",
    }
    return {
        "id": rid,
        "installed": "2026-01-01T00:00:00Z",
        "model_hash": "ab" * 32,
        "files": files,
        "reloads": {p: reloads[p] for p in files},
    }


def test_host_releases_changes_and_current() -> None:
    base = {"kamailio/kamailio.cfg": "c1", "kamailio/db/dispatcher": "d1"}
    listing = {
        "current": "20260102T000000Z-bbbbbbbb",
        "releases": [
            _entry("20260103T000000Z-cccccccc", {**base, "kamailio/kamailio.cfg": "c2"}),
            _entry("20260101T000000Z-aaaaaaaa", base),
            _entry("20260102T000000Z-bbbbbbbb", {**base, "kamailio/db/dispatcher": "d2"}),
        ],
    }
    rows = host_releases("edge-central", listing)
    assert [r.id[:8] for r in rows] == ["20260101", "20260102", "20260103"]
    assert rows[0].changes == ["first release on this host"]
    assert rows[1].changes == ["kamailio:dispatcher.reload"]
    assert rows[2].changes == ["kamailio:restart"]
    assert [r.current for r in rows] == [False, True, False]
    assert rows[1].time == "2026-01-02T00:00:00Z"
    assert rows[0].model_hash == "ab" * 6


def test_host_releases_error() -> None:
    with pytest.raises(DeployError, match="unreachable"):
        host_releases("x", {"error": "unreachable"})


def test_release_time_fallback() -> None:
    assert release_time("not-an-id", "2026-01-01T00:00:00Z") == "2026-01-01T00:00:00Z"


def test_host_releases_marks_the_rollback_target_from_the_history() -> None:
    base = {"kamailio/kamailio.cfg": "c1"}
    a, b, c = "20260101T000000Z-aaaaaaaa", "20260102T000000Z-bbbbbbbb", "20260103T000000Z-cccccccc"
    listing = {
        "current": c,
        "releases": [_entry(a, base), _entry(b, base), _entry(c, base)],
        "history": f"t deploy {a}\nt deploy {b}\nt back {a}\nt deploy {c}\n",
    }
    rows = host_releases("edge-central", listing)
    assert [r.rollback for r in rows] == [True, False, False]
    assert [r.current for r in rows] == [False, False, True]


def test_ssh_control_dir_is_kept_per_user_and_network_namespace() -> None:
    """The SSH master sockets kept between runs: under the user's runtime directory (else
    ~/.cache), one directory per network namespace, 0700; never a directory others can
    enter or rename, never when switched off, never a socket path too long."""
    with tempfile.TemporaryDirectory(prefix="cp", dir="/tmp") as short:
        _control_dirs(Path(short))
    deep = Path("/tmp") / ("d" * 80)
    assert runner.ssh_control_dir({"XDG_RUNTIME_DIR": str(deep)}) is None
    shutil.rmtree(deep, ignore_errors=True)
    # at the limit: the socket OpenSSH binds first (name + "." + 16 characters) still fits
    # in a 108-byte sun_path; one byte more and it would not (a CI's pytest-120 base dir)
    ns = runner._network_namespace()
    for extra, fits in ((0, True), (1, False)):
        room = runner.MAX_CONTROL_DIR + extra - len(f"/tmp//siporch/ssh/{ns}")
        base = Path("/tmp") / ("e" * room)
        got = runner.ssh_control_dir({"XDG_RUNTIME_DIR": str(base)})
        assert (got is not None) is fits, (len(str(base)), got)
        if got is not None:
            assert len(str(got / "2eb7c3e4cc.f6oJWpelZLZpk6QF")) == 107
        shutil.rmtree(base, ignore_errors=True)


def _control_dirs(tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    got = runner.ssh_control_dir({"XDG_RUNTIME_DIR": str(runtime)})
    assert got is not None and got.parent == runtime / "siporch" / "ssh"
    assert got.name.isdigit() or got.name == "default"
    assert got.stat().st_mode & 0o777 == 0o700
    got.chmod(0o755)  # made too open: closed again
    assert runner.ssh_control_dir({"XDG_RUNTIME_DIR": str(runtime)}) == got
    assert got.stat().st_mode & 0o777 == 0o700
    home = tmp_path / "home"
    home.mkdir()
    got = runner.ssh_control_dir({"HOME": str(home)})
    assert got is not None and got.parent == home / ".cache" / "siporch" / "ssh"
    (home / ".cache" / "siporch" / "ssh").chmod(0o777)  # others could rename it
    assert runner.ssh_control_dir({"HOME": str(home)}) is None
    assert runner.ssh_control_dir({"XDG_RUNTIME_DIR": str(tmp_path)}) is not None
    (tmp_path / "siporch").rename(tmp_path / "moved")
    (tmp_path / "siporch").symlink_to(tmp_path / "moved")
    assert runner.ssh_control_dir({"XDG_RUNTIME_DIR": str(tmp_path)}) is None
    off = {"XDG_RUNTIME_DIR": str(runtime), "SIPORCH_SSH_PERSIST": "0"}
    assert runner.ssh_control_dir(off) is None
    assert runner.ssh_control_dir({}) is None
