"""The siporch command line. The only layer that prints or exits.

Each command lives in its own module, ``siporch/cli/cmd_<name>.py``, exposing a click
command (or group) named ``cli``; modules are imported only when their command runs. The
options they share are defined once in `siporch.cli.common`; a command module never
imports another (tests/unit/test_cli_layering.py).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import warnings
from typing import Any

import click

from siporch import __version__
from siporch.errors import ModelError, SiporchError

# ansible-core's SSH agent support imports DSA from cryptography, which newer cryptography
# releases warn about on every import: noise on stderr that says nothing about the run.
warnings.filterwarnings("ignore", message="DSA is deprecated")

COMMANDS: dict[str, str] = {
    "init": "Write a starting inventory: one site, edge, PBX and ITSP trunk.",
    "validate": "Validate the trunk model; every problem with its file and field.",
    "render": "Render a release bundle from the trunk model.",
    "diff": "What a deploy would change (exit 1 when something would).",
    "route": "Show how a dialled number is normalized and routed.",
    "schema": "Print the JSON Schema of the trunk model.",
    "lab": "Build, inspect, impair and tear down the lab.",
    "call": "Place test calls from a lab host with SIPp.",
    "deploy": "Deploy the trunk model with Ansible.",
    "releases": "List the releases on each host.",
    "rollback": "Roll every host back to the previous or a named release.",
    "status": "Live calls, trunk health and utilisation.",
    "calls": "Call records of every edge: filters, CSV/JSON, per-trunk summary.",
    "exporter": "Serve Prometheus metrics.",
    "drift": "Compare what runs with the model and the last deploy.",
    "collection": "Build the Ansible collection siporch.trunks.",
}


#: The commands that need root on the controller (network namespaces of the lab): listed
#: apart in ``siporch --help``.
LAB_COMMANDS = ("lab", "call")


class LazyGroup(click.Group):
    """Loads ``siporch.cli.cmd_<name>`` only when that command is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if _module_exists(name)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS or not _module_exists(cmd_name):
            return None
        module = importlib.import_module(f"siporch.cli.cmd_{cmd_name}")
        command: click.Command = module.cli
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        rows = [(n, COMMANDS[n]) for n in names if n not in LAB_COMMANDS]
        lab = [(n, COMMANDS[n]) for n in names if n in LAB_COMMANDS]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
        if lab:
            with formatter.section("Lab commands (as root, on this machine)"):
                formatter.write_dl(lab)


def _module_exists(name: str) -> bool:
    return importlib.util.find_spec(f"siporch.cli.cmd_{name}") is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="siporch")
def cli() -> None:
    """siporch: SIP trunks on Kamailio, Asterisk and rtpengine.

    Shell completion (bash, zsh, fish): docs/cli.md.
    """


def main(argv: list[str] | None = None) -> Any:
    """Console entry point: maps siporch errors to messages and exit codes."""
    # asyncio's own warnings (e.g. "Unknown child process pid ...", when an ssh that timed
    # out was reaped before its watcher looked) are not the user's business: each command
    # reports what failed in its own words.
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    try:
        rv = cli.main(args=argv, prog_name="siporch", standalone_mode=False)
    except ModelError as exc:
        from siporch.cli.common import print_model_error

        print_model_error(exc)
        sys.exit(exc.exit_code)
    except SiporchError as exc:
        click.echo(f"siporch: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("siporch: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if exc.exit_code in (1, 2) else exc.exit_code)
    except KeyboardInterrupt:
        click.echo("siporch: interrupted", err=True)
        sys.exit(130)
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        click.echo(f"siporch: {exc.strerror or exc}{where}", err=True)
        sys.exit(2)
    except Exception as exc:
        if os.environ.get("SIPORCH_DEBUG"):
            raise
        click.echo(
            f"siporch: internal error: {type(exc).__name__}: {exc} "
            "(set SIPORCH_DEBUG=1 to see where)",
            err=True,
        )
        sys.exit(70)
    sys.exit(rv if isinstance(rv, int) else 0)
