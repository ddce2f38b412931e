"""siporch collection: the Ansible collection siporch.trunks, built from siporch's sources."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from siporch.cli.common import console


@click.group()
def cli() -> None:
    """The Ansible collection siporch.trunks (roles, playbooks, plugins)."""


@cli.command()
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("."),
    show_default=True,
    help="Directory the tarball is written to.",
)
def build(out: Path) -> int:
    """Build siporch-trunks-<version>.tar.gz for `ansible-galaxy collection install`."""
    from siporch.collection import build as build_collection

    tarball = build_collection(out)
    console.print(f"built {escape(str(tarball))}", soft_wrap=True)
    console.print(f"install: ansible-galaxy collection install {escape(str(tarball))}", soft_wrap=True)
    return 0


@cli.command()
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
def tree(directory: Path) -> int:
    """Write the collection's source tree into DIRECTORY (a new directory), unbuilt."""
    from siporch.collection import write_tree

    write_tree(directory)
    console.print(f"wrote {escape(str(directory))}", soft_wrap=True)
    return 0
