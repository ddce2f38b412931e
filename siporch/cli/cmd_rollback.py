"""siporch rollback"""

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
@click.argument("release_id", required=False, metavar="[ID]")
@click.option("--force", is_flag=True, help="Restart rtpengine or Asterisk even under live calls.")
def cli(
    inventory: tuple[Path, ...],
    vault_password_file: Path | None,
    limit: str | None,
    release_id: str | None,
    force: bool,
) -> int:
    """Roll every host back to the release it ran before its current one, or to release ID.

    Each host's /etc/siporch/current link and its history file (one line per switch) say
    what it ran: a rollback skips releases already rolled back from and releases whose
    deploy failed (`siporch releases` marks the target with <). The target goes through the
    same check, reload and health gate as a deploy.
    """
    extra: dict[str, object] = {"siporch_force": force}
    if release_id:
        extra["siporch_release"] = release_id
    vault = runner.vault_password_file(primary(inventory), vault_password_file)
    with PlaybookProgress(console, verbose=verbosity() > 0) as progress:
        result = run_with_progress(
            "rollback-trunk.yml",
            inventory,
            reporter=progress,
            limit=limit,
            extra_vars=extra,
            vault_file=vault,
        )
    code = print_result(result, "rollback")
    record_deployed(primary(inventory), result, limit)
    return code
