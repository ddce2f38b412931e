"""siporch diff"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.markup import escape

from siporch.cache import facts
from siporch.cli.common import (
    console,
    err_console,
    host_options,
    json_option,
    load,
    out_dir,
    out_option,
    timeout_option,
)
from siporch.core import NEVER_DEPLOYED, Plan
from siporch.lifecycle import plan_diff, plan_for


@click.command()
@host_options
@click.option(
    "--against",
    metavar="RELEASE",
    help="Compare with this release on the controller instead of what the hosts run.",
)
@out_option
@timeout_option(5.0)
@click.option("--stat", is_flag=True, help="Summary and file list only, no file diff.")
@json_option("the plan")
def cli(
    inventory: tuple[Path, ...],
    vault_password_file: Path | None,
    limit: str | None,
    against: str | None,
    out: Path | None,
    timeout: float,
    stat: bool,
    as_json: bool,
) -> int:
    """What a deploy would change, before anything is touched.

    Compares the model with the release each host runs, read from the host over SSH (its
    /etc/siporch/current and that release's manifest.json), or with --against RELEASE from
    the controller. Files with secrets are shown with each secret as ********.
    A trunk the hosts run that the model numbers with another id is a warning (and a
    deploy refuses it unless the trunk's own `id:` says so).
    Exit 0: nothing would change; 1: something would; 2: error, or a host could not be
    read (its part of the plan is unknown).
    """
    out = out_dir(out, inventory)
    loaded = load(inventory, vault_password_file)
    plan = plan_for(inventory, loaded, out_dir=out, against=against, limit=limit, timeout=timeout)
    code = 2 if plan.unknown else 1 if plan.changed else 0
    if as_json:
        click.echo(json.dumps({"against": against or "hosts", **plan.to_json()}, indent=2))
        for host in plan.unknown:
            click.echo(f"siporch: {host}: {plan.hosts[host].base.describe()}", err=True)
        return code
    _print(plan, against, out, stat, facts(loaded).secrets)
    return code


def _print(plan: Plan, against: str | None, out: Path, stat: bool, secrets: list[str]) -> None:
    p = console.print
    if against:
        p(f"comparing with release {against} (controller copy)")
    else:
        p("comparing with what each host runs:")
        for host, hp in plan.hosts.items():
            p(f"  {host}: {escape(hp.base.describe())}", soft_wrap=True)
    for host in plan.unknown:
        err_console.print(
            f"siporch: {host}: {escape(plan.hosts[host].base.describe())}; "
            "what a deploy changes there is not known",
            soft_wrap=True,
        )
    if plan.summary is None:
        p("model changes: not known (the model of the release the hosts run is not on this "
          "controller, or the hosts run different releases); file changes below are exact",
          soft_wrap=True)
    if not plan.changed:
        if not plan.unknown:
            p("no changes: a deploy would do nothing")
        return
    for line in plan.summary or ():
        p(f"  {escape(line)}", soft_wrap=True)
    for change in plan.id_changes:  # against the ids the hosts' files use
        p(f"  [yellow]{escape(change.warning())}[/yellow]", soft_wrap=True)
    if plan.refusal:
        err_console.print(f"siporch: a deploy would stop: {escape(plan.refusal)}", soft_wrap=True)
    for host, hp in plan.hosts.items():
        if hp.removed:
            p(f"[bold]{host}[/bold]: no longer in the model (its files stay until removed by hand)")
            continue
        if not hp.changes:
            continue
        restart = [r for r in hp.reloads if r.endswith(":restart")]
        new_host = hp.base.state == NEVER_DEPLOYED
        note = "  [yellow](restart)[/yellow]" if restart and not new_host else ""
        p(
            f"[bold]{host}[/bold]: {len(hp.changes)} file(s); "
            f"reloads: {', '.join(hp.reloads) or 'none'}{note}"
        )
        for c in hp.changes:
            p(f"    {c.state:8} {c.path}")
        if not stat and not console.quiet:
            click.echo(plan_diff(plan, host, out, secrets), nl=False)
