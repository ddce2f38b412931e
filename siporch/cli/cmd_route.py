"""siporch route"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from siporch import numbers
from siporch.cli.common import console, inventory_options, json_option, load, output_options
from siporch.errors import SiporchError


@click.command()
@click.argument("number")
@inventory_options
@output_options
@click.option("--site", help="Site the call is dialled from (default: the central site).")
@click.option(
    "--trunk", "from_trunk", metavar="TRUNK", help="Inbound: treat NUMBER as received on TRUNK."
)
@click.option("--from", "from_alias", metavar="TRUNK", hidden=True, help="Same as --trunk.")
@json_option("the trace")
def cli(
    number: str,
    inventory: tuple[Path, ...],
    vault_password_file: Path | None,
    site: str | None,
    from_trunk: str | None,
    from_alias: str | None,
    as_json: bool,
) -> int:
    """Show how NUMBER is normalized and routed, computed from the model.

    Outbound (default): site normalization -> route -> trunks in order, with the number
    sent to each. Inbound (--trunk TRUNK): the trunk's translation -> DID -> destination.
    Exit 0 when routed, 1 when no route or DID matches.
    """
    if from_alias and from_trunk and from_alias != from_trunk:
        raise SiporchError("--from is another name for --trunk: give one of them")
    from_trunk = from_trunk or from_alias
    if site and from_trunk:
        raise SiporchError(
            "--site and --trunk cannot be combined: an inbound call's site is its trunk's"
        )
    model = load(inventory, vault_password_file).model
    if from_trunk:
        trace = numbers.inbound(model, number, from_trunk)
    else:
        site = site or next((n for n, s in model.sites.items() if s.kind == "central"), None)
        if site is None:
            site = next(iter(model.sites))
        trace = numbers.outbound(model, number, site)
    routed = bool(trace.attempts) or trace.destination is not None
    if as_json:
        click.echo(json.dumps(trace.to_dict(), indent=2))
        return 0 if routed else 1
    p = console.print
    p(f"[bold]{trace.direction}[/bold] {escape(number)}  (site {trace.site})")
    for s in trace.steps:
        p(f"  normalize  {escape(s.before)} -> {escape(s.after)}  [dim]rule {escape(s.rule)}[/dim]")
    if not trace.steps:
        p(f"  normalize  no rule matched; number stays {escape(trace.number)}")
    if trace.direction == "inbound":
        if trace.destination is None:
            p(f"  [red]no DID matches {escape(trace.number)}[/red]: the edge answers 404")
            return 1
        dest = ", ".join(f"{k} {v}" for k, v in trace.destination.items())
        p(f"  DID        {escape(trace.did or '')} -> {escape(dest)}")
        return 0
    if trace.route is None:
        p(f"  [red]no route matches {escape(trace.number)}[/red]: the edge answers 404")
        return 1
    p(
        f"  route      {escape(trace.route)} ({trace.strategy}; fails over on {', '.join(trace.failover_on)})"
    )
    table = Table(box=None, pad_edge=False)
    for col in ("#", "trunk", "site", "number sent", "peers (by priority)", "via"):
        table.add_column(col)
    for i, a in enumerate(trace.attempts, 1):
        table.add_row(
            str(i) if a.weight is None else f"w{a.weight}",
            a.trunk,
            a.site,
            a.number,
            " ".join(a.peers),
            a.via_edge or "",
        )
    console.print(table)
    return 0
