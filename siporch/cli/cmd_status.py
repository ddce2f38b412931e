"""`siporch status`: live calls, trunk health and utilisation (exit 0 / 1 / 2)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

from siporch.errors import MonitorError

INVENTORY_DEFAULT = "inventory/example"


def load_topology(
    inventory: Path | tuple[Path, ...],
    vault_password_file: Path | None,
    hosts: tuple[str, ...],
    kamailio_rpc: str,
    rtpengine_ng: str,
) -> Any:
    from siporch.model import load_model
    from siporch.monitor.topology import from_model

    loaded = load_model(inventory, vault_password_file)
    model = loaded.model
    unknown = [h for h in hosts if h not in model.hosts]
    if unknown:
        raise MonitorError(
            f"unknown host(s): {', '.join(unknown)}",
            hint=f"hosts in the model: {', '.join(model.hosts)}",
        )
    topology = from_model(
        model,
        kamailio_rpc=kamailio_rpc,
        rtpengine_ng=rtpengine_ng,
        hosts_filter=set(hosts) or None,
    )
    if not topology.pbxs and not topology.edges:
        raise MonitorError("the model has no PBX host with `ami` and no edge host to look at")
    return topology


def common_options(f: Any) -> Any:
    options = [
        click.option(
            "-i",
            "--inventory",
            type=click.Path(path_type=Path),
            multiple=True,
            default=lambda: [os.environ.get("SIPORCH_INVENTORY", INVENTORY_DEFAULT)],
            show_default=INVENTORY_DEFAULT,
            help="Ansible inventory source: a directory or a file such as hosts.yml or "
            "hosts.ini; repeat to combine several, as for ansible-playbook "
            "(env SIPORCH_INVENTORY). Hosts are reached over SSH with its settings and "
            "the ansible.cfg ansible-playbook would read.",
        ),
        click.option(
            "--vault-password-file",
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            help="Ansible Vault password file (default: ANSIBLE_VAULT_PASSWORD_FILE).",
        ),
        click.option("--host", "hosts", multiple=True, help="Only this host (repeatable)."),
        click.option(
            "--timeout", type=float, default=3.0, show_default=True, help="Per-host timeout, s."
        ),
        click.option("--no-edges", is_flag=True, help="Do not query Kamailio and rtpengine."),
        click.option(
            "--releases/--no-releases",
            default=True,
            show_default=True,
            help="Read the release each host runs (/etc/siporch/current) over SSH.",
        ),
        click.option(
            "--kamailio-rpc",
            default="http://{address}:5071/RPC",
            envvar="SIPORCH_KAMAILIO_RPC",
            show_default=True,
            help="Kamailio JSON-RPC of an edge: an http(s) URL or unix:PATH; {address} "
            "and {name} are replaced.",
        ),
        click.option(
            "--rtpengine-ng",
            default="ssh",
            envvar="SIPORCH_RTPENGINE_NG",
            show_default=True,
            help="How to reach an edge's rtpengine: 'ssh' (its 127.0.0.1:ng_port through "
            "SSH with the inventory's settings) or HOST:PORT ({address}, {ng_port} replaced).",
        ),
        click.option(
            "--ami-secret-file",
            type=click.Path(path_type=Path, dir_okay=False, exists=True),
            default=None,
            hidden=True,
            help="Read the AMI secret from this file instead of the model (for checks).",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


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
@common_options
@click.option(
    "--json", "as_json", is_flag=True, help="Print the report as JSON (siporch.status/1)."
)
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
    topology = load_topology(inventory, vault_password_file, hosts, kamailio_rpc, rtpengine_ng)
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
        Console().print(render_tables(report), soft_wrap=True)
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
    """Follow the hosts; `quiet`: print only the final report (for --interval)."""
    from siporch.monitor.reporters import render_tables
    from siporch.monitor.watch import Watcher

    async def main() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        pending: list[asyncio.TimerHandle] = []
        live: list[Any] = []

        def draw() -> None:
            pending.clear()
            report = watcher.report()
            if as_json:
                sys.stdout.write(json.dumps(report, separators=(",", ":")) + "\n")
                sys.stdout.flush()
            elif live:
                live[0].update(render_tables(report), refresh=True)

        def changed() -> None:
            # coalesce bursts of events into at most one redraw every 0.2 s
            if not pending and not quiet:
                pending.append(loop.call_later(0.2, draw))

        watcher = Watcher(
            topology,
            timeout=timeout,
            edges=edges,
            edge_interval=edge_interval,
            releases=releases,
            inventory=inventory,
            on_change=changed,
            secret_override=secret,
        )
        if duration is not None:
            loop.call_later(duration, stop.set)
        if not as_json and not quiet and sys.stdout.isatty():
            from rich.live import Live

            with Live(render_tables(watcher.report()), auto_refresh=False) as lv:
                live.append(lv)
                await watcher.run(stop)
        else:
            await watcher.run(stop)
        for handle in pending:
            handle.cancel()
        report = watcher.report()
        if as_json and quiet:
            sys.stdout.write(json.dumps(report, indent=2) + "\n")
        elif as_json:
            sys.stdout.write(json.dumps(report, separators=(",", ":")) + "\n")
        elif not live:
            from rich.console import Console

            Console().print(render_tables(report))
        return int(report["exit_code"])

    started = time.monotonic()
    code = asyncio.run(main())
    if os.environ.get("SIPORCH_DEBUG"):
        click.echo(f"watched {time.monotonic() - started:.1f} s", err=True)
    return code
