"""The options every command shares, defined once, and the helpers that print.

Options (docs/cli.md):

* ``-i/--inventory`` (repeatable; env ``SIPORCH_INVENTORY``) and ``--vault-password-file``
  (env ``ANSIBLE_VAULT_PASSWORD_FILE``): every command that reads the model;
* ``--limit PATTERN``: an Ansible host pattern, as for ansible-playbook, on every command
  that reaches hosts;
* ``-v/--verbose`` (repeatable) and ``-q/--quiet``: more detail on stderr (the commands
  each host runs, ansible-playbook's output), or nothing on stdout (errors only; the exit
  code tells);
* ``--json``: the command's result as JSON on stdout;
* ``--timeout``: seconds per host.

Command modules import this module, never each other.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from siporch.errors import ModelError
from siporch.hosts import primary as primary
from siporch.model.loaded import LoadedModel

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_INVENTORY = "inventory/example"
INVENTORY_ENV = "SIPORCH_INVENTORY"

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)



def _vault_option(func: F) -> F:
    return click.option(
        "--vault-password-file",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        envvar="ANSIBLE_VAULT_PASSWORD_FILE",
        help="Ansible Vault password file (env ANSIBLE_VAULT_PASSWORD_FILE; default: "
        ".vault-pass in the inventory directory or beside it).",
    )(func)


def _inventory_default() -> list[str]:
    return [os.environ.get(INVENTORY_ENV) or DEFAULT_INVENTORY]


def inventory_options(func: F) -> F:
    """``-i/--inventory`` given once or several times, as for ansible-playbook (the
    function gets a tuple of paths; env ``SIPORCH_INVENTORY``), and
    ``--vault-password-file``."""
    func = _vault_option(func)
    func = click.option(
        "-i",
        "--inventory",
        type=click.Path(path_type=Path),
        multiple=True,
        default=_inventory_default,
        show_default=DEFAULT_INVENTORY,
        help="Ansible inventory source: a directory or a file such as hosts.yml or "
        "hosts.ini; repeat to combine several, as for ansible-playbook "
        f"(env {INVENTORY_ENV}). Hosts are reached with its settings and the ansible.cfg "
        "ansible-playbook would read.",
    )(func)
    return func


#: The same options (an older name).
inventory_sources_options = inventory_options


def limit_option(func: F) -> F:
    """``--limit PATTERN``: only the hosts an Ansible host pattern selects."""
    return click.option(
        "--limit",
        metavar="PATTERN",
        default=None,
        help="Only these hosts: an Ansible host pattern, as for ansible-playbook (names, "
        "groups, globs, a:b, a,b, !exclude).",
    )(func)


def json_option(what: str) -> Callable[[F], F]:
    """``--json``: print ``what`` as JSON (the function gets ``as_json``)."""

    def deco(func: F) -> F:
        return click.option("--json", "as_json", is_flag=True, help=f"Print {what} as JSON.")(
            func
        )

    return deco


def timeout_option(default: float, per: str = "host") -> Callable[[F], F]:
    """``--timeout SECONDS``: how long each host may take."""

    def deco(func: F) -> F:
        return click.option(
            "--timeout",
            type=float,
            default=default,
            show_default=True,
            help=f"Seconds each {per} may take.",
        )(func)

    return deco


_VERBOSITY = {"verbose": 0, "quiet": 0}


def _reset_output() -> None:
    _VERBOSITY.update(verbose=0, quiet=0)
    console.quiet = False
    logging.getLogger("siporch").setLevel(logging.WARNING)


def _apply_output(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Applies -v/-q for the run of the command; undone when its context closes."""
    if param.name == "verbose":
        ctx.call_on_close(_reset_output)
        _VERBOSITY["verbose"] = int(value or 0)
        logger = logging.getLogger("siporch")
        logger.setLevel(logging.DEBUG if value else logging.WARNING)
        if value and not any(getattr(h, "_siporch", False) for h in logger.handlers):
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("siporch: %(message)s"))
            handler._siporch = True  # type: ignore[attr-defined]
            logger.addHandler(handler)
    elif param.name == "quiet":
        console.quiet = bool(value)
        _VERBOSITY["quiet"] = int(bool(value))
    return value


def output_options(func: F) -> F:
    """``-v/--verbose`` (repeatable) and ``-q/--quiet``; read with :func:`verbosity`."""
    func = click.option(
        "-q",
        "--quiet",
        is_flag=True,
        expose_value=False,
        is_eager=False,
        callback=_apply_output,
        help="Nothing on stdout but --json output: errors only, the exit code tells.",
    )(func)
    func = click.option(
        "-v",
        "--verbose",
        count=True,
        expose_value=False,
        callback=_apply_output,
        help="More detail on stderr: each command run on a host; with deploy and rollback, "
        "ansible-playbook's own output.",
    )(func)
    return func


def verbosity() -> int:
    """-1 with ``-q``, else the number of ``-v``."""
    return -1 if _VERBOSITY["quiet"] else _VERBOSITY["verbose"]


def host_options(func: F) -> F:
    """What every command that reads the model and reaches hosts takes: the inventory,
    the vault, ``--limit``, ``-v/-q``."""
    return inventory_options(limit_option(output_options(func)))


def kamailio_rpc_option(func: F) -> F:
    return click.option(
        "--kamailio-rpc",
        default="http://{address}:5071/RPC",
        envvar="SIPORCH_KAMAILIO_RPC",
        show_default=True,
        help="Kamailio JSON-RPC of an edge: an http(s) URL or unix:PATH; {address} "
        "and {name} are replaced (env SIPORCH_KAMAILIO_RPC).",
    )(func)


def monitor_options(func: F) -> F:
    """The options of the commands that watch the live hosts (status, exporter)."""
    options = [
        host_options,
        click.option(
            "--host",
            "hosts",
            multiple=True,
            metavar="NAME",
            help="Only this host (repeatable; an unknown name is an error).",
        ),
        timeout_option(3.0),
        click.option("--no-edges", is_flag=True, help="Do not query Kamailio and rtpengine."),
        click.option(
            "--releases/--no-releases",
            default=True,
            show_default=True,
            help="Read the release each host runs (/etc/siporch/current) over SSH.",
        ),
        kamailio_rpc_option,
        click.option(
            "--rtpengine-ng",
            default="ssh",
            envvar="SIPORCH_RTPENGINE_NG",
            show_default=True,
            help="How to reach an edge's rtpengine: 'ssh' (its 127.0.0.1:ng_port through "
            "SSH with the inventory's settings) or HOST:PORT ({address}, {ng_port} replaced).",
        ),
        click.option(
            "--ami-secret-file",
            type=click.Path(path_type=Path, dir_okay=False, exists=True),
            default=None,
            hidden=True,
            help="Read the AMI secret from this file instead of the model (for checks).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def out_option(func: F) -> F:
    """``--out``: the directory of release bundles (default: beside the inventory)."""
    return click.option(
        "--out",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        show_default="$SIPORCH_STATE/releases, else build/releases beside the inventory directory",
        help="Directory of release bundles on the controller.",
    )(func)


def out_dir(out: Path | None, inventory: Path | Sequence[Path]) -> Path:
    """``--out`` if given, else the releases directory of ``inventory``'s state directory."""
    from siporch.release import default_out

    if out is not None:
        return out
    return default_out(primary(inventory))


def load(inventory: Path | Sequence[Path], vault_password_file: Path | None) -> LoadedModel:
    """Load the model; print its warnings to stderr."""
    from siporch import cache

    loaded: LoadedModel = cache.load_model(inventory, vault_password_file)
    for w in loaded.warnings:
        err_console.print(f"[yellow]{escape(str(w))}[/yellow]", soft_wrap=True)
    return loaded


def print_model_error(exc: ModelError) -> None:
    for p in exc.problems:
        colour = "red" if p.severity == "error" else "yellow"
        where = escape(p.file) + (f": [bold]{escape(p.path)}[/bold]" if p.path else "")
        err_console.print(
            f"[{colour}]{p.severity}[/{colour}]: {where}: {escape(p.message)}", soft_wrap=True
        )
    n = sum(1 for p in exc.problems if p.severity == "error")
    err_console.print(
        f"siporch: the trunk model has {n} error(s); nothing was changed", soft_wrap=True
    )


# ------------------------------------------------------------------- playbook runs


class PlaybookProgress:
    """The live display of a playbook run (a `siporch.deploy.progress.Reporter`): each
    play, each changed or failed host, a spinner with the current task; ansible-playbook's
    own lines with ``verbose``, the file diffs with ``diffs``."""

    def __init__(self, out: Console, *, verbose: bool = False, diffs: bool = False) -> None:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.out = out
        self.verbose = verbose
        self.diffs = diffs
        self.play = ""
        self.task = ""
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=out,
            transient=True,
        )
        self.bar = self.progress.add_task("starting ansible-playbook", total=None)

    def __enter__(self) -> PlaybookProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def event(self, event: Any) -> None:
        if event.kind == "play":
            self.play = event.name
            self.out.print(f"[bold]{escape(event.name)}[/bold]", soft_wrap=True, highlight=False)
        elif event.kind == "task":
            self.task = event.name
        elif event.kind == "host" and event.status in ("changed", "fatal", "failed"):
            colour = "yellow" if event.status == "changed" else "red"
            self.out.print(
                f"  [{colour}]{event.status}[/{colour}] {event.host}: {escape(self.task)}",
                soft_wrap=True,
                highlight=False,
            )
        self.progress.update(self.bar, description=f"{self.play} · {self.task}")

    def line(self, line: str) -> None:
        if self.verbose or (self.diffs and line.startswith(("---", "+++", "-", "+", "@@"))):
            self.out.print(line, markup=False, highlight=False, soft_wrap=True)


def _outcome(host: dict[str, Any]) -> str:
    from siporch.deploy.outcome import unreachable

    if "failure" in host:
        why = " (unreachable)" if unreachable(host) else ""
        return f"[red]failed at {escape(host['failure']['step'])}{why}[/red]"
    if "rollback" in host:
        return f"[yellow]{escape(host['rollback'])}[/yellow]"
    return "ok"


def print_result(result: Any, what: str) -> int:
    """The per-host outcome of a deploy or rollback (a `runner.RunResult`); the exit code."""
    from rich.table import Table

    from siporch.deploy.outcome import failure_summary
    from siporch.errors import DeployError, SiporchError

    report = result.report or {}
    for line in report.get("warnings") or ():  # trunks whose id changes
        err_console.print(f"[yellow]{escape(str(line))}[/yellow]", soft_wrap=True)
    if report.get("refused"):  # stopped before any host was touched
        raise SiporchError(str(report["refused"]))
    hosts = report.get("hosts", [])
    if hosts:
        table = Table(title=f"{what}: release {report.get('release', '?')}", title_justify="left")
        for col in ("host", "before", "now", "reloads", "outcome"):
            table.add_column(col)
        for h in hosts:
            table.add_row(
                h["host"],
                h.get("before") or "-",
                h.get("current") or "-",
                escape(", ".join(h.get("reloads", [])) or "none"),
                _outcome(h),
            )
        console.print(table)
    changed = result.changed
    if result.ok:
        summary = "nothing changed" if changed == 0 else f"{changed} change(s)"
        console.print(f"{what} done in {result.duration:.1f} s: {summary}", highlight=False)
        return 0
    if not result.failures():
        tail = "\n".join(result.output[-25:])
        err_console.print(tail, markup=False, highlight=False)
        raise DeployError(f"{what} failed (ansible-playbook exited {result.returncode})")
    lines, message = failure_summary(report, what)
    for line in lines:
        err_console.print(line, markup=False, highlight=False, soft_wrap=True)
    raise DeployError(message)


def run_reporter(as_json: bool, *, diffs: bool = False) -> PlaybookProgress | None:
    """The live display of a deploy or rollback: on stdout, or with ``--json`` on stderr
    (stdout holds the JSON only); none with ``-q`` and ``--json``."""
    if as_json:
        if verbosity() < 0:
            return None
        return PlaybookProgress(err_console, verbose=verbosity() > 0, diffs=diffs)
    return PlaybookProgress(console, verbose=verbosity() > 0, diffs=diffs)


def echo_run_json(outcome: Any) -> None:
    """A run (a `siporch.deploy.outcome.RunOutcome`) as ``siporch.run/1`` on stdout."""
    import json

    click.echo(json.dumps(outcome.to_dict(), indent=2))


def print_run_json(outcome: Any) -> int:
    """``--json`` of deploy and rollback: the run (a `siporch.deploy.outcome.RunOutcome`)
    as ``siporch.run/1`` on stdout; the failure's lines and one-line message on stderr;
    the exit code (0 ok, 1 the run failed, 2 refused before any host was touched)."""
    from siporch.errors import DeployError, SiporchError

    echo_run_json(outcome)
    if outcome.exit_code == 0:
        return 0
    if verbosity() >= 0:
        for h in outcome.hosts:
            if h.failure is not None:
                err_console.print(
                    f'{h.host} failed at "{h.failure.step}": {h.failure.reason}',
                    markup=False, highlight=False, soft_wrap=True,
                )  # fmt: skip
        for line in outcome.output_tail:
            err_console.print(line, markup=False, highlight=False, soft_wrap=True)
    error = SiporchError if outcome.exit_code == 2 else DeployError
    raise error(outcome.error or f"{outcome.command} failed")
