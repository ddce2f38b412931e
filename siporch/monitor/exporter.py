"""`siporch exporter`: the live status (`siporch.monitor.watch`) and the edges' call records
(`siporch.monitor.record_metrics`) served as Prometheus metrics until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import signal
from collections.abc import Callable
from typing import Any

from siporch.errors import MonitorError
from siporch.hosts import Inventory
from siporch.monitor import record_metrics
from siporch.monitor.topology import Topology


def serve(topology: Topology, **options: Any) -> None:
    """Serve ``/metrics`` on ``addr:port`` (the keyword options of :func:`_serve`);
    ``on_listening`` gets its URL once it listens. The PBX state follows AMI events; every
    scrape reads it without asking the hosts."""
    asyncio.run(_serve(topology, **options))


async def _serve(
    topology: Topology,
    *,
    addr: str,
    port: int,
    inventory: Inventory | None,
    timeout: float,
    edges: bool,
    edge_interval: float,
    releases: bool,
    secret: str | None,
    records: bool,
    records_interval: float,
    duration: float | None = None,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    from prometheus_client import start_http_server
    from prometheus_client.core import REGISTRY

    from siporch.monitor.reporters import ReportCollector
    from siporch.monitor.watch import Watcher

    totals = record_metrics.RecordTotals()
    record_edges = list(topology.edges) if records else []
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    watcher = Watcher(
        topology,
        timeout=timeout,
        edges=edges,
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
    if on_listening is not None:
        on_listening(f"http://{addr}:{port}/metrics")
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
