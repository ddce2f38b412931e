"""`siporch exporter --listen ADDR:PORT`: Prometheus metrics from the live status."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import signal
from pathlib import Path
from typing import Any

import click

from siporch.cli.cmd_status import common_options, load_topology
from siporch.errors import MonitorError


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r}: expected ADDR:PORT, e.g. 127.0.0.1:9810")
    host = host.strip("[]") or "0.0.0.0"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise click.BadParameter(f"{host!r} is not an IP address") from None
    return host, int(port)


@click.command(name="exporter")
@common_options
@click.option(
    "--listen",
    required=True,
    help="ADDR:PORT to serve /metrics on, e.g. 127.0.0.1:9810.",
)
@click.option(
    "--edge-interval",
    type=float,
    default=15.0,
    show_default=True,
    help="Seconds between edge queries (Kamailio and rtpengine).",
)
@click.option("--duration", type=float, default=None, hidden=True, help="Stop after N s.")
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
    listen: str,
    edge_interval: float,
    duration: float | None,
) -> int:
    """Serve Prometheus metrics: calls, attempts and failures per trunk, registration,
    peers up/down, host reachability and the release each host runs.

    The PBX state follows AMI events; every scrape reads it without asking the hosts.
    """
    from prometheus_client import start_http_server
    from prometheus_client.core import REGISTRY

    from siporch.monitor.reporters import ReportCollector
    from siporch.monitor.watch import Watcher

    addr, port = parse_listen(listen)
    topology = load_topology(inventory, vault_password_file, hosts, kamailio_rpc, rtpengine_ng)
    secret = ami_secret_file.read_text().strip() if ami_secret_file else None

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        watcher = Watcher(
            topology,
            timeout=timeout,
            edges=not no_edges,
            edge_interval=edge_interval,
            releases=releases,
            inventory=inventory,
            secret_override=secret,
        )

        async def report() -> Any:
            return watcher.report()

        def get_report() -> Any:
            # scrapes run in the HTTP server's thread; the state lives in the loop's thread
            future = asyncio.run_coroutine_threadsafe(report(), loop)
            try:
                return future.result(timeout=5)
            except concurrent.futures.TimeoutError:
                raise MonitorError("the status loop did not answer within 5 s") from None

        collector = ReportCollector(get_report)
        REGISTRY.register(collector)
        try:
            server, _thread = start_http_server(port, addr=addr)
        except OSError as exc:
            REGISTRY.unregister(collector)
            raise MonitorError(f"cannot listen on {addr}:{port}: {exc.strerror}") from None
        click.echo(f"siporch exporter: http://{addr}:{port}/metrics", err=True)
        if duration is not None:
            loop.call_later(duration, stop.set)
        try:
            await watcher.run(stop)
        finally:
            server.shutdown()
            REGISTRY.unregister(collector)

    asyncio.run(main())
    return 0
