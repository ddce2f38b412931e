"""`siporch drift`: what runs against the model and the last deploy (exit 0 / 1 / 2)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.markup import escape

from siporch.cli.common import (
    console,
    err_console,
    host_options,
    json_option,
    kamailio_rpc_option,
    out_dir,
    out_option,
    timeout_option,
)


@click.command(name="drift")
@host_options
@out_option
@kamailio_rpc_option
@timeout_option(5.0)
@click.option(
    "--files-only", is_flag=True, help="Compare release files only (no Kamailio, no AMI)."
)
@json_option("the report (siporch.drift/1)")
def cli(
    inventory: tuple[Path, ...],
    vault_password_file: Path | None,
    limit: str | None,
    out: Path | None,
    kamailio_rpc: str,
    timeout: float,
    files_only: bool,
    as_json: bool,
) -> int:
    """Compare what runs with the model and the last deploy.

    Per host: the release /etc/siporch/current points to and the sha256 of each of its
    files against the release manifest; the model against the release deployed
    (undeployed changes); the edges' dispatcher destinations (Kamailio RPC) and the PBXs'
    PJSIP endpoints and registrations (AMI) against the model.

    Exit 0: no drift; 1: drift (one line per difference); 2: a host could not be reached
    or bad input.
    """
    from siporch.deploy.drift import check

    for source in inventory:
        if not source.exists():
            err_console.print(f"siporch: inventory {escape(str(source))} not found")
            return 2
    report = check(
        inventory,
        vault_password_file,
        out_dir=out_dir(out, inventory),
        kamailio_rpc=kamailio_rpc,
        timeout=timeout,
        runtime=not files_only,
        limit=limit,
    )
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        for e in report.errors:
            click.echo(f"siporch: {e}", err=True)
        return report.exit_code
    ref = (
        f"last deploy {report.reference}"
        if report.reference
        else "no deploy recorded: each host against the release it runs"
    )
    console.print(f"reference: {escape(ref)}", soft_wrap=True)
    for d in report.drift:
        console.print(escape(str(d)), soft_wrap=True)
    for e in report.errors:
        err_console.print(f"siporch: {escape(e)}", soft_wrap=True)
    if report.exit_code == 0:
        console.print(f"no drift ({len(report.hosts)} hosts)")
    elif report.drift:
        console.print(f"{len(report.drift)} difference(s)")
    return report.exit_code
