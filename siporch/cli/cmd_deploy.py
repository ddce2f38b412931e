"""siporch deploy"""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from siporch.cli.common import console, err_console, inventory_options
from siporch.deploy import runner
from siporch.deploy.progress import run_with_progress
from siporch.errors import DeployError
from siporch.release import mark_deployed


def print_result(result: runner.RunResult, what: str) -> int:
    """The per-host outcome of a deploy or rollback; the exit code."""
    report = result.report or {}
    hosts = report.get("hosts", [])
    if hosts:
        table = Table(title=f"{what}: release {report.get('release', '?')}", title_justify="left")
        for col in ("host", "before", "now", "reloads", "outcome"):
            table.add_column(col)
        for h in hosts:
            outcome = "ok"
            if "failure" in h:
                outcome = f"[red]failed at {escape(h['failure']['step'])}[/red]"
            elif "rollback" in h:
                outcome = f"[yellow]{escape(h['rollback'])}[/yellow]"
            table.add_row(
                h["host"],
                h.get("before") or "-",
                h.get("current") or "-",
                escape(", ".join(h.get("reloads", [])) or "none"),
                outcome,
            )
        console.print(table)
    changed = result.changed
    if result.ok:
        summary = "nothing changed" if changed == 0 else f"{changed} change(s)"
        console.print(f"{what} done in {result.duration:.1f} s: {summary}", highlight=False)
        return 0
    for f in result.failures():
        err_console.print(
            f"[red]{escape(f['host'])}[/red] failed at [bold]{escape(f['step'])}[/bold]: "
            f"{escape(f['reason'])}",
            soft_wrap=True,
        )
        if f.get("rollback"):
            err_console.print(f"  {escape(f['rollback'])}", soft_wrap=True)
    if not result.failures():
        tail = "\n".join(result.output[-25:])
        err_console.print(tail, markup=False, highlight=False)
        raise DeployError(f"{what} failed (ansible-playbook exited {result.returncode})")
    raise DeployError(f"{what} failed; the hosts of the run went back to their previous release")


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
    inventory: Path,
    vault_password_file: Path | None,
    check: bool,
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
    vault = runner.vault_password_file(inventory, vault_password_file)
    result = run_with_progress(
        console,
        "deploy-trunk.yml",
        inventory,
        check=check,
        limit=limit,
        extra_vars={"siporch_force": force, "siporch_serial": serial, "siporch_keep": keep},
        vault_file=vault,
        verbose=verbose,
    )
    code = print_result(result, "check" if check else "deploy")
    if not check:
        record_deployed(inventory, result, limit)
    return code
