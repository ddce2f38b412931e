"""The Ansible Vault password: where it is found, and opening the vault with it.

One place for both the model loader (which decrypts secrets itself) and the deploy commands
(which hand the file to ansible-playbook). The password file is, in order: the one given
(``--vault-password-file``), ``$ANSIBLE_VAULT_PASSWORD_FILE``, ``<inventory>/.vault-pass``,
``<inventory>/../.vault-pass``. An executable file is a script that prints the password, as
for Ansible. Every problem with it is a :class:`VaultError` naming the file (exit code 2).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from siporch.errors import SiporchError

ENV = "ANSIBLE_VAULT_PASSWORD_FILE"
DEFAULT_NAME = ".vault-pass"


class VaultError(SiporchError):
    """The vault password file cannot give a password."""

    exit_code = 2

    def __init__(self, file: Path | str, reason: str) -> None:
        super().__init__(f"{file}: {reason}")
        self.file = str(file)
        self.reason = reason


def default_candidates(inventory: Path) -> tuple[Path, Path]:
    """Where a vault password file is looked for by default, in order:
    ``<inventory>/.vault-pass``, ``<inventory>/../.vault-pass``."""
    return inventory / DEFAULT_NAME, inventory.parent / DEFAULT_NAME


def default_password_file(inventory: Path) -> Path | None:
    """The first of :func:`default_candidates` that exists."""
    for candidate in default_candidates(inventory):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return None


def find_password_file(inventory: Path | None, given: Path | None = None) -> Path | None:
    """The vault password file to use, unchecked, or None when there is none: ``given``,
    else ``$ANSIBLE_VAULT_PASSWORD_FILE``, else :func:`default_password_file` of the
    inventory directory (or of the directory of an inventory file)."""
    if given is not None:
        return given
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    if inventory is None:
        return None
    return default_password_file(inventory if inventory.is_dir() else inventory.parent)


def password_file(inventory: Path | None, given: Path | None = None) -> Path | None:
    """:func:`find_password_file`, checked: it exists and can give a password."""
    path = find_password_file(inventory, given)
    if path is not None:
        check_password_file(path)
    return path


def _is_script(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def check_password_file(path: Path) -> None:
    """Raise :class:`VaultError` unless ``path`` is a readable, non-empty password file or
    an executable script (a script is only run when the vault is opened)."""
    if not path.exists():
        raise VaultError(path, "vault password file does not exist")
    if path.is_dir():
        raise VaultError(path, "vault password file is a directory, not a file")
    if _is_script(path):
        return
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise VaultError(
            path, f"cannot read the vault password file: {exc.strerror or exc}"
        ) from None
    if not data.strip():
        raise VaultError(path, "vault password file is empty")


def open_vault(path: Path) -> Any:
    """An ``ansible.parsing.vault.VaultLib`` holding the password of ``path``."""
    check_password_file(path)
    from ansible.errors import AnsibleError
    from ansible.parsing.dataloader import DataLoader
    from ansible.parsing.vault import VaultLib, get_file_vault_secret

    try:
        secret = get_file_vault_secret(filename=str(path), loader=DataLoader())
        secret.load()
    except AnsibleError as exc:
        raise VaultError(path, _reason(path, exc)) from None
    return VaultLib([("default", secret)])


def _reason(path: Path, exc: Exception) -> str:
    text = str(getattr(exc, "message", "") or exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    status = re.search(r"returned non-zero \((-?\d+)\)", first)
    if status:
        return f"vault password script failed (exit status {status.group(1)})"
    if _is_script(path):
        if "Invalid vault password" in first:
            return "vault password script printed no password"
        return f"vault password script failed: {first}"
    if "Invalid vault password" in first:
        return "vault password file is empty"
    return f"cannot use the vault password file: {first}"
