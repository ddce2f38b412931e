"""`siporch status`: live calls, trunk health and utilisation (exit 0 / 1 / 2)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from siporch.cli.common import console, json_option, monitor_options


def _secret_override(path: Path | None) -> str | None:
    if path is None:
        return None
    return path.read_text().strip()


def _print_problems(report: dict[str, Any]) -> None:
    from siporch.monitor.reporters import problem_lines

    for severity, message in problem_lines(report):
        if severity == "unreachable":
            click.echo(f"siporch: {message}", err=True)


@click.command(name="status")
@monitor_options
@json_option("the report (siporch.status/1)")
@click.option("--watch", is_flag=True, help="Keep updating from AMI events until interrupted.")
@click.option(
    "--duration",
    type=float,
    default=None,
    help="With --watch: stop after this many seconds.",
)
@click.option(
    "--interval",
    type=float,
    default=None,
    help="Follow AMI events for this many seconds, then report once, with the call "
    "attempts and failures of that interval.",
)
@click.option(
    "--edge-interval",
    type=float,
    default=10.0,
    show_default=True,
    help="With --watch: seconds between edge queries (Kamailio and rtpengine have no events).",
)
def cli(
    inventory: tuple[Path, ...],
    vault_password_file: Path | None,
    limit: str | None,
    hosts: tuple[str, ...],
    timeout: float,
    no_edges: bool,
    releases: bool,
    kamailio_rpc: str,
    rtpengine_ng: str,
    ami_secret_file: Path | None,
    as_json: bool,
    watch: bool,
    duration: float | None,
    interval: float | None,
    edge_interval: float,
) -> int:
    """Live calls, trunk health and utilisation of every host, at once.

    Exit codes: 0 healthy; 1 degraded (a trunk down, unregistered or at capacity);
    2 a host unreachable or its credentials refused (or bad input).
    """
    if timeout <= 0:
        raise click.BadParameter("must be > 0", param_hint="--timeout")
    from siporch.monitor.topology import from_inventory

    topology = from_inventory(
        inventory,
        vault_password_file,
        hosts=hosts,
        limit=limit,
        kamailio_rpc=kamailio_rpc,
        rtpengine_ng=rtpengine_ng,
    )
    secret = _secret_override(ami_secret_file)
    if interval is not None and (interval <= 0 or watch):
        raise click.BadParameter("must be > 0, and not with --watch", param_hint="--interval")
    if watch or interval is not None:
        return _watch(
            topology,
            inventory=inventory,
            timeout=timeout,
            edges=not no_edges,
            releases=releases,
            as_json=as_json,
            duration=interval if interval is not None else duration,
            edge_interval=edge_interval,
            secret=secret,
            quiet=interval is not None,
        )
    from siporch.monitor.reporters import render_tables, to_json
    from siporch.monitor.status import build_report, collect

    pbx, edges = asyncio.run(
        collect(
            topology,
            timeout=timeout,
            edges=not no_edges,
            releases=releases,
            inventory=inventory,
            secret_override=secret,
        )
    )
    report = build_report(topology, pbx, edges)
    if as_json:
        click.echo(to_json(report))
        _print_problems(report)
    else:
        from rich.console import Console

        # soft_wrap: each problem stays on one line, however wide (scripts grep them)
        Console(quiet=console.quiet).print(render_tables(report), soft_wrap=True)
    return int(report["exit_code"])


def _watch(
    topology: Any,
    *,
    inventory: tuple[Path, ...],
    timeout: float,
    edges: bool,
    releases: bool,
    as_json: bool,
    duration: float | None,
    edge_interval: float,
    secret: str | None,
    quiet: bool = False,
) -> int:
    """Follow the hosts (`siporch.monitor.watch.follow`) and draw each report; `quiet`:
    print only the final report (for --interval)."""
    from siporch.monitor.reporters import render_tables
    from siporch.monitor.watch import Watcher, follow

    def json_line(report: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(report, separators=(",", ":")) + "\n")
        sys.stdout.flush()

    async def main() -> dict[str, Any]:
        watcher = Watcher(
            topology,
            timeout=timeout,
            edges=edges,
            edge_interval=edge_interval,
            releases=releases,
            inventory=inventory,
            secret_override=secret,
        )
        if quiet:
            return await follow(watcher, duration=duration)
        if as_json:
            return await follow(watcher, duration=duration, on_report=json_line)
        if not sys.stdout.isatty():
            return await follow(watcher, duration=duration)
        from rich.live import Live

        with Live(render_tables(watcher.report()), auto_refresh=False) as live:
            report = await follow(
                watcher,
                duration=duration,
                on_report=lambda r: live.update(render_tables(r), refresh=True),
            )
            live.update(render_tables(report), refresh=True)
        return report

    started = time.monotonic()
    report = asyncio.run(main())
    if as_json and quiet:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    elif as_json:
        json_line(report)
    elif quiet or not sys.stdout.isatty():
        from rich.console import Console

        Console(quiet=console.quiet).print(render_tables(report))
    if os.environ.get("SIPORCH_DEBUG"):
        click.echo(f"watched {time.monotonic() - started:.1f} s", err=True)
    return int(report["exit_code"])
