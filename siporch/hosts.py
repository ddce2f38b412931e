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

import contextlib
import json
import logging
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from siporch.core import MANIFEST, HostRead
from siporch.errors import MonitorError, SiporchError

log = logging.getLogger(__name__)

#: An inventory as the commands take it: one source, or several (``-i`` repeated).
Inventory = Path | Sequence[Path]

#: The link to the release a host runs.
CURRENT = "/etc/siporch/current"
#: Separates the parts of :func:`probe_command`'s output.
MARKER = "@@siporch@@"


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


def sources(inventory: Inventory) -> tuple[Path, ...]:
    """The inventory sources, in order."""
    return (inventory,) if isinstance(inventory, Path | str) else tuple(Path(s) for s in inventory)


def primary(inventory: Inventory) -> Path:
    """The first inventory source: the controller's state (releases, the last deploy) and
    the default vault password file are found beside it."""
    return sources(inventory)[0]


def _inventory_hostvars(inventory: Inventory) -> dict[str, dict[str, Any]]:
    """Every inventory host's ``ansible_*`` variables (read once per process)."""
    from siporch.model.loader import inventory_hosts

    srcs = sources(inventory)
    key = tuple(str(Path(s).resolve()) for s in srcs)
    if key not in _HOSTVARS:
        _HOSTVARS[key] = inventory_hosts(list(srcs))
    return _HOSTVARS[key]


def host_access(inventory: Inventory, host: str, address: str, timeout: float) -> HostAccess:
    """How to reach ``host`` (the model's ``address`` when the inventory gives none);
    raises `SiporchError` when it is not in the inventory or its connection is not ssh."""
    hv = _inventory_hostvars(inventory).get(host)
    if hv is None:
        raise SiporchError(f"{host}: not in the inventory")
    return resolve(host, {k: v for k, v in hv.items() if v is not None}, address, timeout)


# --------------------------------------------------------------------- host selection


def select(inventory: Inventory, limit: str | None, candidates: Sequence[str]) -> list[str]:
    """The ``candidates`` (host names, in their order) that the Ansible host pattern
    ``limit`` selects in the inventory, as ``ansible-playbook --limit`` would: names,
    groups, globs, ``a:b``, ``a,b``, ``!exclude``, ``&intersect``, ``~regex``. None
    selects every candidate. A pattern that selects none of them is an error."""
    if not limit:
        return list(candidates)
    chosen = set(_match(inventory, limit))
    out = [h for h in candidates if h in chosen]
    if not out:
        raise SiporchError(
            f"--limit {limit}: matches no host this command looks at",
            hint=f"hosts: {', '.join(candidates) or '(none)'}",
        )
    return out


def _match(inventory: Inventory, pattern: str) -> list[str]:
    """Host names the pattern selects in the inventory (ansible-core's InventoryManager)."""
    from ansible import constants as C
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    from siporch.vault import find_password_file, open_vault

    loader = DataLoader()
    password = find_password_file(primary(inventory))
    if password is not None and password.exists():
        with contextlib.suppress(SiporchError):
            loader.set_vault_secrets(open_vault(password).secrets)
    # a part of the pattern that matches nothing is not worth Ansible's warning: siporch
    # says it once, when the whole pattern selects none of the command's hosts
    mismatch = C.HOST_PATTERN_MISMATCH
    C.HOST_PATTERN_MISMATCH = "ignore"
    try:
        manager = InventoryManager(loader=loader, sources=[str(s) for s in sources(inventory)])
        return [h.name for h in manager.list_hosts(pattern)]
    except AnsibleError as exc:
        first = str(exc).strip().splitlines()[:1] or ["?"]
        raise SiporchError(f"--limit {pattern}: {first[0]}") from None
    finally:
        C.HOST_PATTERN_MISMATCH = mismatch


# --------------------------------------------------------------------- running commands


@dataclass(frozen=True)
class Completed:
    """A remote command that ran: its exit code and output."""

    returncode: int
    stdout: bytes
    stderr: bytes

    def last_error(self, limit: int = 200) -> str:
        """The last line of stderr (or the exit code), for a one-line message."""
        lines = self.stderr.decode(errors="replace").strip().splitlines()
        return (lines[-1] if lines else f"exit {self.returncode}")[:limit]


async def run(access: HostAccess, remote: str, *, timeout: float, root: bool = False) -> Completed:
    """Run the shell command ``remote`` on the host (as root through its become: ``root``),
    within ``timeout`` seconds; raises `MonitorError` when ssh cannot run or the host does
    not answer in time."""
    argv = access.argv(remote, root=root)
    log.debug("%s: %s", access.host, shlex.join(argv))
    import asyncio  # here: a command answered from the cache never starts a loop

    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise MonitorError(f"{access.host}: cannot run ssh: {exc.strerror or exc}") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout)
    except TimeoutError:
        # ssh may have given up by itself at the same moment (ConnectTimeout)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise MonitorError(f"{access.host}: no answer over SSH within {timeout:g} s") from None
    return Completed(proc.returncode or 0, out, err)


async def ssh_run(
    inventory: Inventory | None,
    host: str,
    address: str,
    remote: list[str],
    *,
    timeout: float,
    root: bool = False,
) -> Completed | None:
    """Run ``remote`` (an argv) on a host with the inventory's settings; None when the host
    cannot be reached so (not in the inventory, not ssh, ssh missing, no answer in time)."""
    access = try_access(inventory, host, address, timeout)
    if access is None:
        return None
    try:
        return await run(access, shlex.join(remote), timeout=timeout, root=root)
    except MonitorError:
        return None


def try_access(
    inventory: Inventory | None, host: str, address: str, timeout: float
) -> HostAccess | None:
    """:func:`host_access`, or None when the host cannot be reached over SSH."""
    if inventory is None:
        return None
    try:
        return host_access(inventory, host, address, timeout)
    except SiporchError:
        return None


# ------------------------------------------------------------------ what a host runs


async def read_current(
    inventory: Inventory | None, host: str, address: str, *, timeout: float
) -> str | None:
    """The id of the release a host runs (where ``/etc/siporch/current`` points); None when
    unknown (no link, or the host cannot be read)."""
    res = await ssh_run(inventory, host, address, ["readlink", CURRENT], timeout=timeout)
    if res is None:
        return None
    text = res.stdout.decode(errors="replace").strip()
    if res.returncode != 0 or not text:
        return None
    return text.rstrip("/").rsplit("/", 1)[-1]


def probe_command() -> str:
    """Shell run on a host: readlink of current, sha256 of each file, the release manifest."""
    return (
        f"readlink {CURRENT} || true; echo; echo {MARKER}; "
        f"if [ -d {CURRENT}/ ]; then cd {CURRENT}/ && "
        "find . -type f -print0 | sort -z | xargs -0 -r sha256sum; fi; "
        f"echo {MARKER}; cat {CURRENT}/{MANIFEST} 2>/dev/null || true"
    )


def parse_sha256sum(text: str) -> dict[str, str]:
    """`sha256sum` output (``<hex>  ./path``) -> {relative path: hex}."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        digest, sep, path = line.partition("  ")
        if not sep or len(digest) != 64:
            continue
        path = path[2:] if path.startswith("./") else path
        out[path] = digest
    return out


def parse_host_probe(text: str) -> HostRead:
    """The output of :func:`probe_command`: link, hashes, manifest, separated by markers;
    raises `SiporchError` when it is not that."""
    parts: list[str] = [""]
    for line in text.splitlines():
        if line == MARKER:
            parts.append("")
        else:
            parts[-1] += line + "\n"
    if len(parts) < 3:
        raise SiporchError("unexpected answer from the host (no release probe output)")
    link = parts[0].strip()
    if not link:
        return HostRead(None, {})
    release = link.rstrip("/").rsplit("/", 1)[-1]
    files = parse_sha256sum(parts[1])
    try:
        manifest = json.loads(parts[2]) if parts[2].strip() else None
    except json.JSONDecodeError:
        manifest = None
    return HostRead(release, files, manifest if isinstance(manifest, dict) else None)


async def read_host(inventory: Inventory, host: str, address: str, timeout: float) -> HostRead:
    """What a host runs, read over SSH as root (a release's files may be readable by root
    only); raises `MonitorError` when it cannot be read."""
    try:
        access = host_access(inventory, host, address, timeout)
    except MonitorError:
        raise
    except SiporchError as exc:
        raise MonitorError(str(exc)) from None
    res = await run(access, probe_command(), timeout=timeout * 2, root=True)
    if res.returncode != 0:
        reason = res.stderr.decode(errors="replace").strip().splitlines()
        raise MonitorError(
            f"{host}: SSH failed (exit {res.returncode}): {reason[-1] if reason else ''}"
        )
    try:
        return parse_host_probe(res.stdout.decode(errors="replace"))
    except SiporchError as exc:
        raise MonitorError(f"{host}: {exc}") from None
