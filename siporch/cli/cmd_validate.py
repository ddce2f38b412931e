"""siporch validate"""

from __future__ import annotations

import json
from pathlib import Path

import click

from siporch.cache import facts
from siporch.cli.common import console, inventory_options, json_option, load, output_options


@click.command()
@inventory_options
@output_options
@json_option("the result")
def cli(inventory: tuple[Path, ...], vault_password_file: Path | None, as_json: bool) -> int:
    """Validate the trunk model: types, references, overlaps, resilience.

    Exit 0 when valid (warnings allowed), 2 with every problem listed otherwise.
    """
    loaded = load(inventory, vault_password_file)
    n = facts(loaded).counts  # a cached model is not read
    summary = {
        "valid": True,
        "source": str(loaded.source),
        "model_hash": loaded.model_hash,
        **n,
        "warnings": [str(w) for w in loaded.warnings],
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        console.print(
            f"ok: {loaded.source}: {n['sites']} sites, {n['hosts']} hosts, "
            f"{n['trunks']} trunks, {n['routes']} routes, {n['dids']} DID entries"
            + (f", {len(loaded.warnings)} warning(s)" if loaded.warnings else ""),
            soft_wrap=True,
        )
    return 0
