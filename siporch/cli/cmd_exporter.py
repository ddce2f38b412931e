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

from siporch.cli.common import monitor_options
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
@monitor_options
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
@click.option(
    "--records/--no-records",
    default=True,
    show_default=True,
    help="Per-trunk counters and histograms from the edges' call records (read over SSH).",
)
@click.option(
    "--records-interval",
    type=float,
    default=15.0,
    show_default=True,
    help="Seconds between reads of the edges' new call records.",
)
@click.option("--duration", type=float, default=None, hidden=True, help="Stop after N s.")
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
    listen: str,
    edge_interval: float,
    records: bool,
    records_interval: float,
    duration: float | None,
) -> int:
    """Serve Prometheus metrics: calls, attempts and failures per trunk, registration,
    peers up/down, host reachability and the release each host runs; per-trunk calls,
    answers, failures by class, PDD and talk time histograms and failover legs from the
    edges' call records (the same totals after a restart).

    The PBX state follows AMI events; every scrape reads it without asking the hosts.
    """
    from prometheus_client import start_http_server
    from prometheus_client.core import REGISTRY

    from siporch.monitor import record_metrics
    from siporch.monitor.reporters import ReportCollector
    from siporch.monitor.watch import Watcher

    addr, port = parse_listen(listen)
    if records_interval <= 0:
        raise click.BadParameter("must be above 0", param_hint="--records-interval")
    from siporch.monitor.topology import from_inventory

    topology = from_inventory(
        inventory,
        vault_password_file,
        hosts=hosts,
        limit=limit,
        kamailio_rpc=kamailio_rpc,
        rtpengine_ng=rtpengine_ng,
    )
    secret = ami_secret_file.read_text().strip() if ami_secret_file else None
    totals = record_metrics.RecordTotals()
    record_edges = list(topology.edges) if records else []

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
        rec_collector = record_metrics.RecordsCollector(totals)
        REGISTRY.register(collector)
        if record_edges:
            REGISTRY.register(rec_collector)

        def unregister() -> None:
            REGISTRY.unregister(collector)
            if record_edges:
                REGISTRY.unregister(rec_collector)

        try:
            server, _thread = start_http_server(port, addr=addr)
        except OSError as exc:
            unregister()
            raise MonitorError(f"cannot listen on {addr}:{port}: {exc.strerror}") from None
        click.echo(f"siporch exporter: http://{addr}:{port}/metrics", err=True)
        if duration is not None:
            loop.call_later(duration, stop.set)
        tasks = []
        if record_edges:
            tasks.append(
                asyncio.ensure_future(
                    record_metrics.poll(
                        totals,
                        inventory,
                        record_edges,
                        stop,
                        interval=records_interval,
                        timeout=max(timeout, 60.0),
                    )
                )
            )
        try:
            await watcher.run(stop)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            server.shutdown()
            unregister()

    asyncio.run(main())
    return 0
