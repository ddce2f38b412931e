"""siporch deploy"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from siporch.cli.common import console, err_console, inventory_options, primary
from siporch.deploy import runner
from siporch.deploy.progress import run_with_progress
from siporch.errors import DeployError
from siporch.release import mark_deployed


def _outcome(host: dict[str, Any]) -> str:
    if "failure" in host:
        reason = str(host["failure"].get("reason", ""))
        why = " (unreachable)" if reason.startswith("unreachable") else ""
        return f"[red]failed at {escape(host['failure']['step'])}{why}[/red]"
    if "rollback" in host:
        return f"[yellow]{escape(host['rollback'])}[/yellow]"
    return "ok"


def failure_summary(report: dict[str, Any], what: str) -> tuple[list[str], str]:
    """The lines that explain a failed run (plain text: host, step, reason, then what
    became of every host of the run) and the one-line error."""
    hosts = report.get("hosts", [])
    failed = [h for h in hosts if "failure" in h]
    lines = [f"{what} FAILED"]
    for h in failed:
        f = h["failure"]
        lines.append(f'  {h["host"]} failed at "{f.get("step", "?")}": {f.get("reason", "?")}')
    lines.append("every host of the run:")
    back, kept, lost = [], [], []
    for h in hosts:
        note = str(h.get("rollback") or f"on {h.get('current') or '(none)'}")
        lines.append(f"  {h['host']}: {note}")
        if note.startswith("rolled back"):
            back.append(h["host"])
        elif note.startswith(("still on", "no earlier release", "not deployed", "on ")):
            kept.append(h["host"])
        else:
            lost.append(h["host"])
    where = ", ".join(
        h["host"]
        + (
            " (unreachable)"
            if str(h["failure"].get("reason", "")).startswith("unreachable")
            else ""
        )
        for h in failed
    )
    parts = [f"{len(back)} host(s) rolled back"] if back else []
    if kept:
        parts.append(f"{len(kept)} unchanged")
    if lost:
        parts.append(f"NOT rolled back: {', '.join(lost)}")
    message = f"{what} failed on {where}; " + (", ".join(parts) or "no host was changed")
    return lines, message


def print_result(result: runner.RunResult, what: str) -> int:
    """The per-host outcome of a deploy or rollback; the exit code."""
    report = result.report or {}
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


def record_deployed(inventory: Path, result: runner.RunResult, limit: str | None) -> None:
    """After a full successful run, remember the one release every host now runs (for
    `siporch diff` and `siporch drift`)."""
    hosts = (result.report or {}).get("hosts", [])
    currents = {h.get("current") for h in hosts}
    if result.ok and not limit and len(currents) == 1 and None not in currents:
        mark_deployed(inventory, str(currents.pop()))


@click.command()
@inventory_options
@click.option(
    "--check", is_flag=True, help="Show what would change (files and reloads); touch nothing."
)
@click.option(
    "--diff",
    is_flag=True,
    help="Ansible's --diff: the file changes per host (always on with --check; -v shows them).",
)
@click.option("--limit", metavar="HOSTS", help="Only these hosts (Ansible host pattern).")
@click.option(
    "--force",
    is_flag=True,
    help="Restart rtpengine or Asterisk even while they carry calls (their media is lost).",
)
@click.option(
    "--serial", type=click.IntRange(1), default=1, show_default=True, help="Hosts per batch."
)
@click.option(
    "--keep", type=click.IntRange(1), default=10, show_default=True, help="Releases kept per host."
)
@click.option("-v", "--verbose", is_flag=True, help="Show ansible-playbook's own output.")
def cli(
    inventory: tuple[Path, ...],
    vault_password_file: Path | None,
    check: bool,
    diff: bool,
    limit: str | None,
    force: bool,
    serial: int,
    keep: int,
    verbose: bool,
) -> int:
    """Render the trunk model and deploy it to every host, one batch at a time.

    Each host checks the release with its real daemons, switches /etc/siporch/current
    atomically, reloads the least the change needs and passes a health gate; any failure
    puts every host of the run back on its previous release.
    """
    vault = runner.vault_password_file(primary(inventory), vault_password_file)
    result = run_with_progress(
        console,
        "deploy-trunk.yml",
        inventory,
        check=check,
        diff=diff,
        limit=limit,
        extra_vars={"siporch_force": force, "siporch_serial": serial, "siporch_keep": keep},
        vault_file=vault,
        verbose=verbose,
    )
    code = print_result(result, "check" if check else "deploy")
    if not check:
        record_deployed(primary(inventory), result, limit)
    return code
