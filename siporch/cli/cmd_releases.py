"""siporch releases"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from siporch.cli.common import console, err_console, host_options, json_option, primary
from siporch.deploy import runner
from siporch.deploy.releases import collect


@click.command()
@host_options
@json_option("the releases of every host")
def cli(
    inventory: tuple[Path, ...], vault_password_file: Path | None, limit: str | None, as_json: bool
) -> int:
    """The releases on each host: id, time, model hash, what it changed, which is current.

    * marks the release a host runs, < the one `siporch rollback` would take it back to.
    """
    vault = runner.vault_password_file(primary(inventory), vault_password_file)
    rows, errors = collect(inventory, vault, limit)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "hosts": {h: [asdict(r) for r in rs] for h, rs in rows.items()},
                    "errors": errors,
                },
                indent=2,
            )
        )
        return 1 if errors else 0
    for host, releases in rows.items():
        table = Table(title=host, title_justify="left")
        table.add_column("")
        table.add_column("id", no_wrap=True)
        table.add_column("time", no_wrap=True)
        table.add_column("model hash", no_wrap=True)
        table.add_column("changed")
        for r in releases:
            table.add_row(
                "[green]*[/green]" if r.current else "[yellow]<[/yellow]" if r.rollback else "",
                r.id,
                r.time,
                r.model_hash,
                escape(", ".join(r.changes)),
            )
        if not releases:
            table.add_row("", "(no release)", "", "", "")
        console.print(table)
    for host, error in errors.items():
        err_console.print(f"[red]{escape(host)}[/red]: {escape(error)}", soft_wrap=True)
    return 1 if errors else 0
