"""siporch deploy"""

from __future__ import annotations

from pathlib import Path

import click

from siporch.cli.common import (
    PlaybookProgress,
    console,
    host_options,
    primary,
    print_result,
    verbosity,
)
from siporch.deploy import runner
from siporch.deploy.outcome import record_deployed
from siporch.deploy.progress import run_with_progress


@click.command()
@host_options
@click.option(
    "--check", is_flag=True, help="Show what would change (files and reloads); touch nothing."
)
@click.option(
    "--diff",
    is_flag=True,
    help="Ansible's --diff: the file changes per host (always on with --check; -v shows them).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Restart rtpengine or Asterisk even while they carry calls (their media is lost).",
)
@click.option(
    "--renumber-trunks",
    is_flag=True,
    help="Deploy even when a trunk the hosts run changes id without its own `id:` "
    "(its dispatcher set and dialog profile move under its calls; env SIPORCH_RENUMBER_TRUNKS=1).",
)
@click.option(
    "--serial", type=click.IntRange(1), default=1, show_default=True, help="Hosts per batch."
)
@click.option(
    "--keep", type=click.IntRange(1), default=10, show_default=True, help="Releases kept per host."
)
def cli(
    inventory: tuple[Path, ...],
    vault_password_file: Path | None,
    check: bool,
    diff: bool,
    limit: str | None,
    force: bool,
    renumber_trunks: bool,
    serial: int,
    keep: int,
) -> int:
    """Render the trunk model and deploy it to every host, one batch at a time.

    Each host checks the release with its real daemons, switches /etc/siporch/current
    atomically, reloads the least the change needs and passes a health gate; any failure
    puts every host of the run back on its previous release. A trunk the hosts run whose
    id the model would change (without its own `id:`) stops the run before any host is
    touched (exit 2).
    """
    vault = runner.vault_password_file(primary(inventory), vault_password_file)
    with PlaybookProgress(console, verbose=verbosity() > 0, diffs=check) as progress:
        result = run_with_progress(
            "deploy-trunk.yml",
            inventory,
            reporter=progress,
            check=check,
            diff=diff,
            limit=limit,
            extra_vars={
                "siporch_force": force,
                "siporch_serial": serial,
                "siporch_keep": keep,
                **({"siporch_renumber_trunks": True} if renumber_trunks else {}),
            },
            vault_file=vault,
        )
    code = print_result(result, "check" if check else "deploy")
    if not check:
        record_deployed(primary(inventory), result, limit)
    return code
