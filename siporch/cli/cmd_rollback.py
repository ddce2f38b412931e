"""siporch rollback"""

from __future__ import annotations

from pathlib import Path

import click

from siporch.cli.cmd_deploy import print_result, record_deployed
from siporch.cli.common import console, inventory_options, primary
from siporch.deploy import runner
from siporch.deploy.progress import run_with_progress


@click.command()
@inventory_options
@click.argument("release_id", required=False, metavar="[ID]")
@click.option("--limit", metavar="HOSTS", help="Only these hosts (Ansible host pattern).")
@click.option("--force", is_flag=True, help="Restart rtpengine or Asterisk even under live calls.")
@click.option("-v", "--verbose", is_flag=True, help="Show ansible-playbook's own output.")
def cli(
    inventory: tuple[Path, ...],
    vault_password_file: Path | None,
    release_id: str | None,
    limit: str | None,
    force: bool,
    verbose: bool,
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
    result = run_with_progress(
        console,
        "rollback-trunk.yml",
        inventory,
        limit=limit,
        extra_vars=extra,
        vault_file=vault,
        verbose=verbose,
    )
    code = print_result(result, "rollback")
    record_deployed(primary(inventory), result, limit)
    return code
