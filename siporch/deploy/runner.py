"""Run siporch's playbooks with ansible-playbook and turn their output into data.

The playbooks write a JSON summary (``siporch_report_file``); this module builds the
command line, streams the output to a progress callback (play, task, host results) and
returns a :class:`RunResult`. Nothing here prints: the CLI renders the events.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from siporch import resources, vault
from siporch.errors import DeployError, SiporchError

#: Settings siporch adds to the user's (its directory first), by environment variable and
#: the name of the same setting in ansible-core's configuration.
PATH_SETTINGS = {
    "ANSIBLE_ROLES_PATH": "DEFAULT_ROLES_PATH",
    "ANSIBLE_STRATEGY_PLUGINS": "DEFAULT_STRATEGY_PLUGIN_PATH",
    "ANSIBLE_FILTER_PLUGINS": "DEFAULT_FILTER_PLUGIN_PATH",
}

_PLAY = re.compile(r"^PLAY \[(?P<name>.*)\] \*+")
_TASK = re.compile(r"^TASK \[(?P<name>.*)\] \*+")
_HOST = re.compile(
    r"^(?P<status>ok|changed|fatal|failed|skipping|unreachable|included|rescued)"
    r": \[(?P<host>[^\]\s]+)"
)
_RECAP = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)"
    r"(?:\s+skipped=(?P<skipped>\d+))?(?:\s+rescued=(?P<rescued>\d+))?"
)


@dataclass(frozen=True)
class Event:
    """One line of progress: kind is play, task, host or recap."""

    kind: str
    name: str
    host: str = ""
    status: str = ""


@dataclass
class RunResult:
    returncode: int
    recap: dict[str, dict[str, int]] = field(default_factory=dict)
    report: dict[str, Any] | None = None
    output: list[str] = field(default_factory=list)
    duration: float = 0.0

    @property
    def changed(self) -> int:
        return sum(r.get("changed", 0) for r in self.recap.values())

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def failures(self) -> list[dict[str, str]]:
        hosts = (self.report or {}).get("hosts", [])
        return [
            {"host": h["host"], **h["failure"], "rollback": h.get("rollback", "")}
            for h in hosts
            if "failure" in h
        ]


def playbook_path(name: str) -> Path:
    return resources.playbook(name)


def ansible_playbook() -> str | None:
    """The ansible-playbook installed with this siporch (the same environment: `pipx install
    siporch` does not put it on PATH, and the roles' filters import siporch), else PATH's."""
    beside = Path(sys.executable).parent / "ansible-playbook"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("ansible-playbook")


def user_ansible_config(env: dict[str, str], cwd: Path) -> Path | None:
    """The ansible.cfg ansible-playbook would read by itself, if any (ANSIBLE_CONFIG,
    ./ansible.cfg, ~/.ansible.cfg, /etc/ansible/ansible.cfg, in Ansible's order)."""
    given = env.get("ANSIBLE_CONFIG", "").strip()
    if given:
        path = Path(given).expanduser()
        path = path / "ansible.cfg" if path.is_dir() else path
        if path.is_file():
            return path.resolve()
    candidates = []
    try:  # Ansible ignores ./ansible.cfg in a world-writable directory
        if not cwd.stat().st_mode & 0o002:
            candidates.append(cwd / "ansible.cfg")
    except OSError:
        pass
    if env.get("HOME"):
        candidates.append(Path(env["HOME"]) / ".ansible.cfg")
    candidates.append(Path("/etc/ansible/ansible.cfg"))
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    return None


def _effective_paths(config: Path, env: dict[str, str]) -> dict[str, list[str]]:
    """The search paths ansible-core would use with ``config`` and ``env``."""
    from ansible.config.manager import ConfigManager

    saved = dict(os.environ)
    try:
        # Ansible reads the environment (ANSIBLE_*, HOME) from os.environ: give it ``env``.
        os.environ.clear()
        os.environ.update(env)
        manager = ConfigManager(conf_file=str(config))
        # Defaults such as "{{ ANSIBLE_HOME ~ '/roles' }}" are templated as Ansible does.
        variables = {"ANSIBLE_HOME": manager.get_config_value("ANSIBLE_HOME")}
        out: dict[str, list[str]] = {}
        for key, setting in PATH_SETTINGS.items():
            value = manager.get_config_value(setting, variables=variables)
            out[key] = [str(v) for v in (value or [])]
        return out
    finally:
        os.environ.clear()
        os.environ.update(saved)


def ansible_env(base: dict[str, str] | None = None, cwd: Path | None = None) -> dict[str, str]:
    """The environment for ansible-playbook: the user's own Ansible settings, plus siporch's.

    The user's ansible.cfg (found as Ansible finds it) stays in force; only when there is
    none does ANSIBLE_CONFIG point to siporch's shipped one. siporch's roles, strategy and
    filter plugin directories are put in front of the user's search paths (environment
    variables built from the user's effective settings, so nothing of theirs is lost).
    """
    env = dict(os.environ if base is None else base)
    cwd = Path.cwd() if cwd is None else cwd
    config = user_ansible_config(env, cwd)
    if config is None:
        config = resources.ansible_cfg()
        env["ANSIBLE_CONFIG"] = str(config)
    ours = {
        "ANSIBLE_ROLES_PATH": resources.roles_dir(),
        "ANSIBLE_STRATEGY_PLUGINS": resources.strategy_plugins_dir(),
        "ANSIBLE_FILTER_PLUGINS": resources.filter_plugins_dir(),
    }
    theirs = _effective_paths(config, env)
    for key, path in ours.items():
        paths = [str(path)] + [p for p in theirs.get(key, []) if Path(p) != path]
        env[key] = os.pathsep.join(paths)
    return env


def vault_password_file(inventory: Path, given: Path | None) -> Path | None:
    """The vault password file for ansible-playbook (see :func:`siporch.vault.password_file`)."""
    return vault.password_file(inventory, given)


def build_command(
    playbook: str,
    inventory: Path | Sequence[Path],
    *,
    check: bool = False,
    diff: bool = False,
    limit: str | None = None,
    extra_vars: dict[str, Any] | None = None,
    vault_file: Path | None = None,
    report_file: Path | None = None,
    verbose: int = 0,
) -> list[str]:
    """The ansible-playbook command line for one of siporch's playbooks."""
    exe = ansible_playbook()
    if exe is None:
        raise SiporchError(
            "ansible-playbook is not installed", hint="pip install 'ansible-core>=2.19,<2.20'"
        )
    sources = [inventory] if isinstance(inventory, Path) else [Path(s) for s in inventory]
    for source in sources:
        if not source.exists():
            raise SiporchError(f"inventory {source} does not exist")
    # Every source, as for ansible-playbook -i; the render reads the model from all of them.
    resolved = [str(s.resolve()) for s in sources]
    variables: dict[str, Any] = {
        "siporch_inventory": resolved[0] if len(resolved) == 1 else resolved
    }
    # Render with this very siporch (the interpreter and package running now).
    variables["siporch_command"] = [sys.executable, "-m", "siporch"]
    if vault_file is not None:
        variables["siporch_vault_password_file"] = str(vault_file.resolve())
    if report_file is not None:
        variables["siporch_report_file"] = str(report_file)
    variables.update(extra_vars or {})
    cmd = [exe]
    for source in resolved:
        cmd += ["-i", source]
    cmd.append(str(playbook_path(playbook)))
    if vault_file is not None:
        cmd += ["--vault-password-file", str(vault_file.resolve())]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    if limit:
        # The controller plays (render, report) run on localhost: keep it in the run.
        cmd += ["--limit", f"{limit},localhost"]
    cmd += ["-e", json.dumps(variables, sort_keys=True)]
    if verbose:
        cmd.append("-" + "v" * min(verbose, 4))
    return cmd


def parse_line(line: str) -> Event | None:
    """Turn one line of ansible-playbook's default output into an event."""
    if m := _PLAY.match(line):
        return Event("play", m["name"])
    if m := _TASK.match(line):
        return Event("task", m["name"])
    if m := _HOST.match(line):
        return Event("host", "", m["host"], m["status"])
    if m := _RECAP.match(line):
        return Event("recap", line.strip(), m["host"])
    return None


def parse_recap(lines: Sequence[str]) -> dict[str, dict[str, int]]:
    recap: dict[str, dict[str, int]] = {}
    for line in lines:
        if m := _RECAP.match(line):
            recap[m["host"]] = {
                k: int(v) for k, v in m.groupdict().items() if k != "host" and v is not None
            }
    return recap


#: Environment variable: ``0`` (or ``off``, ``no``, ``false``) gives each run SSH master
#: connections of its own (a temporary control directory removed at the end).
SSH_PERSIST_ENV = "SIPORCH_SSH_PERSIST"


#: The longest control directory a master socket fits under: a socket path is at most 107
#: bytes, Ansible's socket names are 10 characters and OpenSSH binds the master first to the
#: name plus ``.`` and 16 random characters (``…/2eb7c3e4cc.f6oJWpelZLZpk6QF``), then
#: renames it.
MAX_CONTROL_DIR = 107 - len("/") - 10 - 17


def _network_namespace() -> str:
    """This process's network namespace (``4026531840``): the lab's private copies reuse
    the same addresses in other namespaces, and a master socket is reachable from any."""
    try:
        link = os.readlink("/proc/self/ns/net")
    except OSError:
        return "default"
    return re.sub(r"\D", "", link) or "default"


def ssh_control_dir(env: dict[str, str]) -> Path | None:
    """The directory of the SSH master sockets kept between runs, or None (then each run
    gets its own): ``$XDG_RUNTIME_DIR/siporch/ssh/<netns>`` or
    ``~/.cache/siporch/ssh/<netns>``, made 0700 and used only when it is a real directory
    of this user that nobody else can enter (a socket there is a logged-in session on a
    host)."""
    if env.get(SSH_PERSIST_ENV, "1").strip().lower() in ("0", "off", "no", "false"):
        return None
    runtime = env.get("XDG_RUNTIME_DIR", "").strip()
    home = env.get("HOME", "").strip()
    if runtime and Path(runtime).is_absolute():
        base = Path(runtime) / "siporch"
    elif home and Path(home).is_absolute():
        base = Path(home) / ".cache" / "siporch"
    else:
        return None
    path = base / "ssh" / _network_namespace()
    uid = os.getuid()
    try:
        for part in (base, base / "ssh", path):
            with contextlib.suppress(FileExistsError):
                part.mkdir(mode=0o700, parents=part is base)
            st = os.lstat(part)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o022:
                return None  # not ours, a link, or others may rename what is in it
        if os.lstat(path).st_mode & 0o077:
            os.chmod(path, 0o700)
            if os.lstat(path).st_mode & 0o077:
                return None
    except OSError:
        return None
    return path if len(str(path)) <= MAX_CONTROL_DIR else None


def run(
    cmd: list[str],
    report_file: Path | None = None,
    on_event: Callable[[Event], None] | None = None,
    on_line: Callable[[str], None] | None = None,
) -> RunResult:
    """Run ansible-playbook, streaming events; read the JSON report it writes."""
    import time

    cwd = Path.cwd()
    env = ansible_env(cwd=cwd)
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["ANSIBLE_NOCOLOR"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    # SSH master connections kept between runs (ControlPersist in ansible.cfg): the next
    # deploy skips the SSH handshakes. In a directory of this user's only, else in one of
    # this run (removed at the end); a control directory set in the environment is kept.
    own_dir = None
    if not env.get("ANSIBLE_SSH_CONTROL_PATH_DIR", "").strip():
        kept = ssh_control_dir(env)
        own_dir = None if kept is not None else tempfile.mkdtemp(prefix="siporch-cp-")
        env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = own_dir or str(kept)
    if report_file is not None:
        report_file.unlink(missing_ok=True)
    started = time.monotonic()
    output: list[str] = []
    try:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
    except OSError as exc:
        raise DeployError(f"cannot run ansible-playbook: {exc}") from exc
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.rstrip("\n")
        output.append(line)
        if on_line is not None:
            on_line(line)
        event = parse_line(line)
        if event is not None and on_event is not None:
            on_event(event)
    rc = proc.wait()
    if own_dir is not None:
        shutil.rmtree(own_dir, ignore_errors=True)
    report = None
    if report_file is not None and report_file.is_file():
        try:
            report = json.loads(report_file.read_text())
        except (OSError, json.JSONDecodeError):
            report = None
    return RunResult(rc, parse_recap(output), report, output, time.monotonic() - started)


def report_path() -> Path:
    """A fresh file for the playbook's JSON summary."""
    fd, name = tempfile.mkstemp(prefix="siporch-run-", suffix=".json")
    os.close(fd)
    return Path(name)
