"""Options and helpers shared by the commands."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from siporch.errors import ModelError
from siporch.model import LoadedModel

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_INVENTORY = "inventory/example"

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def _vault_option(func: F) -> F:
    return click.option(
        "--vault-password-file",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        envvar="ANSIBLE_VAULT_PASSWORD_FILE",
        help="Ansible Vault password file (default: <inventory>/../.vault-pass).",
    )(func)


def inventory_sources_options(func: F) -> F:
    """``-i/--inventory`` given once or several times, as for ansible-playbook (the
    function gets a tuple of paths), and ``--vault-password-file``."""
    func = _vault_option(func)
    func = click.option(
        "-i",
        "--inventory",
        type=click.Path(path_type=Path),
        multiple=True,
        default=lambda: [os.environ.get("SIPORCH_INVENTORY", DEFAULT_INVENTORY)],
        show_default=DEFAULT_INVENTORY,
        help="Ansible inventory source: a directory or a file such as hosts.yml or "
        "hosts.ini; repeat to combine several, as for ansible-playbook "
        "(env SIPORCH_INVENTORY).",
    )(func)
    return func


#: Every command that reads the inventory takes ``-i`` once or several times.
inventory_options = inventory_sources_options


def primary(inventory: Path | Sequence[Path]) -> Path:
    """The first inventory source: the controller's state (releases, the last deploy) and
    the default vault password file are found beside it."""
    return inventory if isinstance(inventory, Path) else Path(next(iter(inventory)))


def out_option(func: F) -> F:
    """``--out``: the directory of release bundles (default: beside the inventory)."""
    return click.option(
        "--out",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        show_default="$SIPORCH_STATE/releases, else build/releases beside the inventory directory",
        help="Directory of release bundles on the controller.",
    )(func)


def out_dir(out: Path | None, inventory: Path | Sequence[Path]) -> Path:
    """``--out`` if given, else the releases directory of ``inventory``'s state directory."""
    from siporch.release import default_out

    if out is not None:
        return out
    return default_out(primary(inventory))


def load(inventory: Path | Sequence[Path], vault_password_file: Path | None) -> LoadedModel:
    """Load the model; print its warnings to stderr."""
    from siporch import cache

    loaded: LoadedModel = cache.load_model(inventory, vault_password_file)
    for w in loaded.warnings:
        err_console.print(f"[yellow]{escape(str(w))}[/yellow]", soft_wrap=True)
    return loaded


def print_model_error(exc: ModelError) -> None:
    for p in exc.problems:
        colour = "red" if p.severity == "error" else "yellow"
        where = escape(p.file) + (f": [bold]{escape(p.path)}[/bold]" if p.path else "")
        err_console.print(
            f"[{colour}]{p.severity}[/{colour}]: {where}: {escape(p.message)}", soft_wrap=True
        )
    n = sum(1 for p in exc.problems if p.severity == "error")
    err_console.print(
        f"siporch: the trunk model has {n} error(s); nothing was changed", soft_wrap=True
    )
