"""siporch rollback"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import click

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
@click.argument("release_id", required=False, metavar="[ID]")
@click.option("--force", is_flag=True, help="Restart rtpengine or Asterisk even under live calls.")
@json_option("each host's outcome (siporch.run/1; progress goes to stderr)")
def cli(
    inventory: tuple[Path, ...],
    vault_password_file: Path | None,
    limit: str | None,
    release_id: str | None,
    force: bool,
    as_json: bool,
) -> int:
    """Roll every host back to the release it ran before its current one, or to release ID.

    Each host's /etc/siporch/current link and its history file (one line per switch) say
    what it ran: a rollback skips releases already rolled back from and releases whose
    deploy failed (`siporch releases` marks the target with <). The target goes through the
    same check, reload and health gate as a deploy.

    With --json: one JSON document on stdout (docs/cli.md); exit 0 done, 1 failed, 2 bad
    input.
    """
    extra: dict[str, object] = {"siporch_force": force}
    if release_id:
        extra["siporch_release"] = release_id
    display = run_reporter(as_json)
    timer = HostTimer(display)
    started = time.time()
    try:
        vault = runner.vault_password_file(primary(inventory), vault_password_file)
        with display if display is not None else contextlib.nullcontext():
            result = run_with_progress(
                "rollback-trunk.yml",
                inventory,
                reporter=timer,
                limit=limit,
                extra_vars=extra,
                vault_file=vault,
            )
    except SiporchError as exc:
        if as_json:
            echo_run_json(error_outcome("rollback", False, str(exc), exc.exit_code))
        raise
    record_deployed(primary(inventory), result, limit)
    if as_json:
        outcome = run_outcome(
            result,
            command="rollback",
            release=release_id,
            started=started,
            host_seconds=timer.seconds(),
        )
        return print_run_json(outcome)
    return print_result(result, "rollback")
