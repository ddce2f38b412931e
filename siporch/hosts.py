"""Reaching hosts: the inventory, SSH with Ansible's settings, become, timeouts.

Every command that reaches a host by itself (``siporch status``, ``drift``, ``diff``,
``calls``, the exporter) goes through this module; the deploy, rollback and ``releases``
commands run siporch's playbooks, which reach the hosts through ansible-playbook with the
same inventory and the same ``--limit`` patterns (:func:`select`).

The host's variables (inventory, group_vars, host_vars) and the user's ansible.cfg (the
one ansible-playbook would read from the current directory) are resolved by ansible-core
itself: ``remote_user``, ``private_key_file``, ``port``, ``ssh_args``, ``ssh_common_args``
(a jump host, for instance), ``ssh_extra_args``, ``host_key_checking`` and
``ssh_executable``. siporch adds only what it needs after them (ssh keeps the first value
of an option, so the user's settings win): no password prompt, a connection timeout.

Commands that need root (reading a release's files, the call records) run through
``become`` when the host has it (``ansible_become`` or ansible.cfg's
``[privilege_escalation] become``), with the ``sudo`` method: ``sudo -n`` (no password
prompt: a password-protected sudo is reported as a failure, never waited for).

What a host runs (its ``/etc/siporch/current`` release, the sha256 of each file and the
release's manifest) is read here too (:func:`read_host`): the plan's base
(`siporch.lifecycle`) and drift (`siporch.deploy.drift`) both start from it.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from siporch.errors import SiporchError


@dataclass(frozen=True)
class HostAccess:
    """The ssh command line of one host (without the remote command) and, when the host
    uses become, the prefix that runs a command as the become user."""

    host: str
    ssh: list[str]
    become: list[str] = field(default_factory=list)
    local: bool = False

    def argv(self, remote: str, *, root: bool = False) -> list[str]:
        """argv that runs the shell command ``remote`` on the host (as root: ``root``)."""
        command = remote
        if root and self.become:
            command = shlex.join([*self.become, "sh", "-c", remote])
        if self.local:
            return ["sh", "-c", command]
        return [*self.ssh, command]


def _split(value: Any) -> list[str]:
    if not value:
        return []
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return shlex.split(str(value))


def resolve(host: str, hostvars: dict[str, Any], address: str, timeout: float) -> HostAccess:
    """The access to ``host`` from its (templated) ``ansible_*`` variables and ansible.cfg."""
    from ansible.errors import AnsibleError

    try:
        return _resolve(host, hostvars, address, timeout)
    except AnsibleError as exc:
        first = str(exc).strip().splitlines()[:1] or ["?"]
        raise SiporchError(f"{host}: its Ansible connection settings: {first[0]}") from None


def _resolve(host: str, hostvars: dict[str, Any], address: str, timeout: float) -> HostAccess:
    from ansible import constants as C
    from ansible.plugins.loader import become_loader, connection_loader

    variables = {"inventory_hostname": host, **hostvars}
    connection = str(variables.get("ansible_connection") or "ssh")
    become = variables.get("ansible_become")
    if become is None:
        become = C.DEFAULT_BECOME
    method = str(variables.get("ansible_become_method") or C.DEFAULT_BECOME_METHOD)
    prefix: list[str] = []
    if _true(become) and method == "sudo":
        become_loader.get("sudo", class_only=True)  # its option definitions
        bopts = C.config.get_plugin_options("become", "sudo", variables=variables)
        user = str(bopts.get("become_user") or "root")
        prefix = [str(bopts.get("become_exe") or "sudo"), "-n", "-u", user, "--"]
    if connection == "local":
        return HostAccess(host, [], prefix, local=True)
    if connection not in ("ssh", "ansible.builtin.ssh", "smart"):
        raise SiporchError(
            f"{host}: ansible_connection {connection} is not one siporch can use by itself "
            "(status and drift reach hosts over ssh)"
        )
    connection_loader.get("ssh", class_only=True)
    opts = C.config.get_plugin_options("connection", "ssh", variables=variables)
    cmd = [str(opts.get("ssh_executable") or "ssh"), *_split(opts.get("ssh_args"))]
    # Ansible's own options, in its order (ssh_args first, common and extra args last)
    if not opts.get("host_key_checking", True):
        cmd += ["-o", "StrictHostKeyChecking=no"]
    if opts.get("port"):
        cmd += ["-o", f"Port={opts['port']}"]
    if opts.get("private_key_file"):
        key = Path(str(opts["private_key_file"])).expanduser()
        cmd += ["-o", f"IdentityFile={key}"]
    cmd += ["-o", "KbdInteractiveAuthentication=no", "-o", "PasswordAuthentication=no"]
    if opts.get("remote_user"):
        cmd += ["-o", f"User={opts['remote_user']}"]
        if prefix and str(opts["remote_user"]) == prefix[3]:
            prefix = []  # already the become user
    cmd += _split(opts.get("ssh_common_args")) + _split(opts.get("ssh_extra_args"))
    # siporch's: after the user's, so theirs win
    cmd += ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(1, int(timeout))}"]
    cmd += ["-o", "StrictHostKeyChecking=accept-new"]
    target = str(opts.get("host") or variables.get("ansible_host") or address)
    return HostAccess(host, [*cmd, target], prefix)


def _true(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on", "y", "t")
    return bool(value)


_HOSTVARS: dict[tuple[str, ...], dict[str, dict[str, Any]]] = {}


def _inventory_hostvars(inventory: Path | Sequence[Path]) -> dict[str, dict[str, Any]]:
    """Every inventory host's ``ansible_*`` variables (read once per process)."""
    from siporch.model.loader import inventory_hosts

    sources = (inventory,) if isinstance(inventory, Path | str) else tuple(inventory)
    key = tuple(str(Path(s).resolve()) for s in sources)
    if key not in _HOSTVARS:
        _HOSTVARS[key] = inventory_hosts([Path(s) for s in sources])
    return _HOSTVARS[key]


def host_access(
    inventory: Path | Sequence[Path], host: str, address: str, timeout: float
) -> HostAccess:
    """How to reach ``host`` (the model's ``address`` when the inventory gives none);
    raises `SiporchError` when it is not in the inventory or its connection is not ssh."""
    hv = _inventory_hostvars(inventory).get(host)
    if hv is None:
        raise SiporchError(f"{host}: not in the inventory")
    return resolve(host, {k: v for k, v in hv.items() if v is not None}, address, timeout)
