"""siporch render"""

from __future__ import annotations

import json
from pathlib import Path

import click

from siporch.cli.common import (
    console,
    inventory_options,
    json_option,
    load,
    out_dir,
    out_option,
    output_options,
    timeout_option,
)
from siporch.core import Manifest
from siporch.lifecycle import trunk_ids_of_hosts
from siporch.release import build_release
from siporch.release import ids_from_hosts as kept_from_hosts


@click.command()
@inventory_options
@output_options
@out_option
@click.option(
    "--ids-from-hosts",
    is_flag=True,
    help="Number the trunks as the hosts run them (read over SSH): a trunk without its "
    "own `id:` keeps the id the hosts' files give it. For a controller without the "
    "releases deployed (a fresh clone); the release records the ids for later renders.",
)
@timeout_option(5.0)
@json_option("{id, path, reused, changes}")
def cli(
    inventory: tuple[Path, ...],
    vault_password_file: Path | None,
    out: Path | None,
    ids_from_hosts: bool,
    timeout: float,
    as_json: bool,
) -> int:
    """Render every host's configs into a release bundle.

    An unchanged model reuses the release that already holds the same files.
    """
    loaded = load(inventory, vault_password_file)
    if ids_from_hosts:
        ids = trunk_ids_of_hosts(
            inventory, loaded, out_dir=out_dir(out, inventory), timeout=timeout
        )
        with kept_from_hosts(ids):
            loaded = load(inventory, vault_password_file)
            release = build_release(loaded, out)
    else:
        release = build_release(loaded, out)
    manifest = Manifest.from_json(release.manifest)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "id": release.id,
                    "path": str(release.path),
                    "reused": release.reused,
                    "model_hash": loaded.model_hash,
                    "hosts": sorted(manifest.hosts),
                    # against the previous release rendered here (not what hosts run:
                    # `siporch diff` and `deploy --check` say that)
                    "changes": list(manifest.changes),
                    "changes_since": manifest.previous,
                }
            )
        )
        return 0
    verb = "unchanged, reusing" if release.reused else "rendered"
    console.print(f"{verb} release {release.id} at {release.path}", soft_wrap=True)
    for host, hm in sorted(manifest.hosts.items()):
        console.print(f"  {host} ({hm.role}): {len(hm.files)} files")
    return 0
