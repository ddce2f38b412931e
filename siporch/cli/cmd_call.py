"""siporch call"""

from __future__ import annotations

import json
from pathlib import Path

import click

from siporch.calls import default_target, lab_hosts, place_calls
from siporch.cli.common import (
    console,
    inventory_options,
    json_option,
    load,
    output_options,
    primary,
)


@click.command()
@click.argument("number")
@inventory_options
@output_options
@click.option("--from", "source", required=True, metavar="HOST", help="Lab host placing the call.")
@click.option(
    "--to", "target", metavar="ADDR[:PORT]", help="Default: the edge of the caller's site."
)
@click.option("--calls", default=1, show_default=True, type=click.IntRange(1, 10000))
@click.option(
    "--rate",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0.1, 5000),
    help="Calls per second.",
)
@click.option(
    "--duration",
    default=3.0,
    show_default=True,
    type=click.FloatRange(0, 3600),
    help="Seconds each call lasts.",
)
@click.option(
    "--timeout",
    default=60,
    show_default=True,
    type=click.IntRange(1, 3600),
    help="Give up after this many seconds.",
)
@json_option("the result")
def cli(
    number: str,
    inventory: tuple[Path, ...],
    vault_password_file: Path | None,
    source: str,
    target: str | None,
    calls: int,
    rate: float,
    duration: float,
    timeout: int,
    as_json: bool,
) -> int:
    """Place test calls to NUMBER from a lab host with SIPp (Record-Route aware).

    Exit 0 when every call was answered and every BYE got its 200 OK, 1 otherwise.
    """
    hosts = lab_hosts(primary(inventory))
    if target is None:
        target = default_target(load(inventory, vault_password_file).model, hosts, source)
    if not as_json:
        console.print(
            f"calling {number} from {source} via {target} ({calls} call(s), {duration:g} s each)"
        )
    result = place_calls(
        hosts, source, target, number, calls=calls, rate=rate,
        duration_ms=int(duration * 1000), timeout_s=timeout,
    )  # fmt: skip
    if as_json:
        click.echo(json.dumps(result.to_dict()))
    else:
        verdict = "[green]ok[/green]" if result.ok else "[red]FAILED[/red]"
        console.print(
            f"{verdict}: {result.successful}/{result.attempted} calls completed, {result.failed} failed"
            + (f" ({result.detail})" if result.detail and not result.ok else "")
        )
    return 0 if result.ok else 1
