"""siporch deploy"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import click

from siporch import cache
from siporch.cli.common import (
    echo_run_json,
    host_options,
    json_option,
    primary,
    print_result,
    print_run_json,
    run_reporter,
)
from siporch.deploy import runner
from siporch.deploy.outcome import HostTimer, error_outcome, record_deployed, run_outcome
from siporch.deploy.progress import run_with_progress
from siporch.errors import SiporchError


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
@json_option("the plan and each host's outcome (siporch.run/1; progress goes to stderr)")
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
    as_json: bool,
) -> int:
    """Render the trunk model and deploy it to every host, one batch at a time.

    Each host checks the release with its real daemons, switches /etc/siporch/current
    atomically, reloads the least the change needs and passes a health gate; any failure
    puts every host of the run back on its previous release. A trunk the hosts run whose
    id the model would change (without its own `id:`) stops the run before any host is
    touched (exit 2).

    With --json: one JSON document on stdout (docs/cli.md); exit 0 done, 1 failed, 2
    refused or bad input.
    """
    display = run_reporter(as_json, diffs=check)
    timer = HostTimer(display)
    started = time.time()
    try:
        vault = runner.vault_password_file(primary(inventory), vault_password_file)
        # A bad model stops here with every problem named by file and field (exit 2), before
        # Ansible starts; the read is cached, so the render that follows does not repeat it.
        cache.load_model(inventory, vault)
        with display if display is not None else contextlib.nullcontext():
            result = run_with_progress(
                "deploy-trunk.yml",
                inventory,
                reporter=timer,
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
    except SiporchError as exc:
        if as_json:
            echo_run_json(error_outcome("deploy", check, str(exc), exc.exit_code))
        raise
    if not check:
        record_deployed(primary(inventory), result, limit)
    if as_json:
        outcome = run_outcome(
            result, command="deploy", check=check, started=started, host_seconds=timer.seconds()
        )
        return print_run_json(outcome)
    return print_result(result, "check" if check else "deploy")
