"""Undecodable files and every vault password problem: exit 2, the file named, no traceback.

Each case runs the real command line (`python -m siporch validate -i ...`) in a subprocess.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from siporch.deploy import runner
from siporch.errors import SiporchError
from siporch.vault import VaultError, password_file
from tests.unit.test_model import EXAMPLE, example_data, make_inventory

REPO = Path(__file__).resolve().parents[2]


def validate(inv: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    environ = {k: v for k, v in os.environ.items() if k != "ANSIBLE_VAULT_PASSWORD_FILE"}
    environ.update(env or {}, PYTHONPATH=str(REPO))
    r = subprocess.run(
        [sys.executable, "-m", "siporch", "validate", "-i", str(inv), *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=REPO,
    )
    assert "Traceback" not in r.stderr, r.stderr
    assert "internal error" not in r.stderr, r.stderr
    return r.returncode, r.stderr


def first_line(stderr: str) -> str:
    return stderr.splitlines()[0]


def test_undecodable_model_file(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, example_data())
    model = inv / "group_vars/all/siporch.yml"
    lines = model.read_bytes().split(b"\n")
    lines[8] = b"  organisation: Caf\xe9 Corp"  # Latin-1, not UTF-8
    model.write_bytes(b"\n".join(lines))
    code, err = validate(inv)
    assert code == 2
    assert first_line(err) == (
        f"error: {model}:9: not UTF-8 text: byte 0xe9 at column 20 (save the file as UTF-8)"
    )


def test_undecodable_vault_file(tmp_path: Path) -> None:
    from ansible.parsing.vault import VaultLib, VaultSecret

    inv = make_inventory(tmp_path, example_data())
    password = (tmp_path / ".vault-pass").read_bytes().strip()
    lib = VaultLib([("default", VaultSecret(password))])
    vault = inv / "group_vars/all/vault.yml"
    vault.write_bytes(lib.encrypt(b"vault_ami_secret: x\nvault_other: \xff\n"))
    code, err = validate(inv)
    assert code == 2
    assert first_line(err) == (
        f"error: {vault}:2: not UTF-8 text: byte 0xff at column 14 (save the file as UTF-8)"
    )


@pytest.mark.parametrize("via", ["option", "default location"])
def test_empty_password_file(tmp_path: Path, via: str) -> None:
    inv = make_inventory(tmp_path, example_data())
    pw = tmp_path / ".vault-pass"
    pw.write_text("\n")
    args = ["--vault-password-file", str(pw)] if via == "option" else []
    code, err = validate(inv, *args)
    assert code == 2
    assert first_line(err) == f"error: {pw}: vault password file is empty"


def test_unreadable_password_file(tmp_path: Path) -> None:
    """A socket cannot be read, even by root (a mode-000 file can be, by root)."""
    inv = make_inventory(tmp_path, example_data())
    pw = tmp_path / "pw.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(pw))
        code, err = validate(inv, env={"ANSIBLE_VAULT_PASSWORD_FILE": str(pw)})
    assert code == 2
    assert first_line(err) == (
        f"error: {pw}: cannot read the vault password file: No such device or address"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a mode-000 file")
def test_password_file_without_permission(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, example_data())
    pw = tmp_path / ".vault-pass"
    pw.chmod(0)
    code, err = validate(inv)
    assert code == 2
    assert first_line(err) == f"error: {pw}: cannot read the vault password file: Permission denied"


def test_password_file_is_a_directory(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, example_data())
    (tmp_path / ".vault-pass").unlink()
    (tmp_path / ".vault-pass").mkdir()
    code, err = validate(inv)
    assert code == 2
    assert first_line(err) == (
        f"error: {tmp_path / '.vault-pass'}: vault password file is a directory, not a file"
    )
    # Given on the command line, the option itself refuses it.
    code, err = validate(inv, "--vault-password-file", str(tmp_path / ".vault-pass"))
    assert code == 2
    assert "is a directory" in err and str(tmp_path / ".vault-pass") in err


def test_missing_password_file(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, example_data())
    code, err = validate(inv, env={"ANSIBLE_VAULT_PASSWORD_FILE": str(tmp_path / "nope")})
    assert code == 2
    assert first_line(err) == f"error: {tmp_path / 'nope'}: vault password file does not exist"


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def test_failing_password_script(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, example_data())
    script = _script(tmp_path / "pw.sh", "echo 'vault locked' >&2\nexit 3\n")
    code, err = validate(inv, "--vault-password-file", str(script))
    assert code == 2
    assert f"error: {script}: vault password script failed (exit status 3)" in err.splitlines()


def test_password_script_printing_nothing(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, example_data())
    script = _script(tmp_path / "pw.sh", "exit 0\n")
    code, err = validate(inv, "--vault-password-file", str(script))
    assert code == 2
    assert first_line(err) == f"error: {script}: vault password script printed no password"


def test_working_password_script(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, example_data())
    password = (EXAMPLE.parent / ".vault-pass").read_text().strip()
    script = _script(tmp_path / "pw.sh", f"echo '{password}'\n")
    code, err = validate(inv, "--vault-password-file", str(script))
    assert code == 0, err


def test_deploy_commands_use_the_same_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`deploy`, `rollback` and `releases` find and check the file the same way."""
    monkeypatch.delenv("ANSIBLE_VAULT_PASSWORD_FILE", raising=False)
    inv = tmp_path / "inv"
    inv.mkdir()
    (tmp_path / ".vault-pass").write_text("")
    with pytest.raises(VaultError, match="vault password file is empty") as exc:
        runner.vault_password_file(inv, None)
    assert isinstance(exc.value, SiporchError) and exc.value.exit_code == 2
    (tmp_path / ".vault-pass").write_text("pw\n")
    assert runner.vault_password_file(inv, None) == password_file(inv) == tmp_path / ".vault-pass"
    monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD_FILE", str(tmp_path / "other"))
    with pytest.raises(VaultError, match="does not exist"):
        password_file(inv)


def test_one_vault_password_lookup_for_directories_files_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loader, the model cache and the deploy commands find the same file: given, else
    $ANSIBLE_VAULT_PASSWORD_FILE, else .vault-pass in the inventory directory (that of an
    inventory file) or its parent."""
    from siporch.vault import find_password_file

    monkeypatch.delenv("ANSIBLE_VAULT_PASSWORD_FILE", raising=False)
    inv = tmp_path / "env" / "prod"
    inv.mkdir(parents=True)
    (inv / "hosts.yml").write_text("all: {}\n")
    outer = tmp_path / "env" / ".vault-pass"
    outer.write_text("outer\n")
    assert find_password_file(inv) == outer
    assert find_password_file(inv / "hosts.yml") == outer
    inner = inv / ".vault-pass"
    inner.write_text("inner\n")
    assert find_password_file(inv) == find_password_file(inv / "hosts.yml") == inner
    assert password_file(inv / "hosts.yml") == inner
    other = tmp_path / "other-pass"
    other.write_text("other\n")
    monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD_FILE", str(other))
    assert find_password_file(inv) == other
    assert find_password_file(inv, outer) == outer
