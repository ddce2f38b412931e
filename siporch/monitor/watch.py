"""Long-running status: every PBX followed over AMI events, edges polled at an interval.

Used by `siporch status --watch` and `siporch exporter`. Calls, contacts and registrations
change only when Asterisk sends an event (no polling of the PBX); Kamailio and rtpengine
have no event stream, so the edges are asked again every `edge_interval` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from typing import Any

from siporch.hosts import Inventory, read_current
from siporch.monitor.status import (
    EdgeResult,
    PbxResult,
    build_report,
    new_handler,
    query_edge,
)
from siporch.monitor.topology import Topology
from siporch.monitor.transport import CLOSED, AmiConnection


class Watcher:
    def __init__(
        self,
        topology: Topology,
        *,
        timeout: float = 3.0,
        edges: bool = True,
        edge_interval: float = 10.0,
        releases: bool = False,
        inventory: Inventory | None = None,
        on_change: Callable[[], None] | None = None,
        secret_override: str | None = None,
    ) -> None:
        self.topology = topology
        self.timeout = timeout
        self.edges_enabled = edges
        self.edge_interval = edge_interval
        self.releases = releases
        self.inventory = inventory
        self.on_change = on_change
        self.started = time.time()
        self.connections: list[AmiConnection] = []
        self.results: list[PbxResult] = []
        for target in topology.pbxs:
            handler = new_handler(topology, target)
            handler.on_change = self._handler_changed
            conn = AmiConnection(
                target,
                handler,
                timeout=timeout,
                on_state=self._state_changed,
                secret=secret_override,
            )
            self.connections.append(conn)
            self.results.append(PbxResult(target, handler, state=conn.state))
        self.edge_results: list[EdgeResult] = (
            [EdgeResult(e) for e in topology.edges] if edges else []
        )
        self.history: list[tuple[float, str, str]] = []  # (time, host, state) transitions

    def _handler_changed(self, what: str) -> None:
        if self.on_change is not None:
            self.on_change()

    def _state_changed(self, conn: AmiConnection) -> None:
        if conn.state == CLOSED:  # we closed it: the host's last known state stands
            return
        for r in self.results:
            if r.target is conn.target:
                if r.state != conn.state:
                    self.history.append((time.time(), r.target.name, conn.state))
                r.state = conn.state
                r.error = conn.error
                r.version = conn.version or r.version
        if self.on_change is not None:
            self.on_change()

    def report(self) -> dict[str, Any]:
        return build_report(
            self.topology,
            self.results,
            self.edge_results,
            counters=True,
            counters_since=self.started,
        )

    async def _poll_edges(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            fresh = await asyncio.gather(
                *(
                    query_edge(e.target, timeout=self.timeout, inventory=self.inventory)
                    for e in self.edge_results
                )
            )
            for old, new in zip(self.edge_results, fresh, strict=True):
                new.release = old.release
            self.edge_results[:] = fresh
            if self.on_change is not None:
                self.on_change()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.edge_interval)

    async def _read_releases(self) -> None:
        items: list[Any] = [*self.results, *self.edge_results]
        found = await asyncio.gather(
            *(
                read_current(self.inventory, i.target.name, i.target.address, timeout=self.timeout)
                for i in items
            )
        )
        for item, release in zip(items, found, strict=True):
            item.release = release
        if self.on_change is not None:
            self.on_change()

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [asyncio.ensure_future(c.watch(stop)) for c in self.connections]
        if self.edge_results:
            tasks.append(asyncio.ensure_future(self._poll_edges(stop)))
        if self.releases:
            tasks.append(asyncio.ensure_future(self._read_releases()))
        try:
            await stop.wait()
        finally:
            for c in self.connections:
                c.close()
            await asyncio.gather(*tasks, return_exceptions=True)


async def follow(
    watcher: Watcher,
    *,
    duration: float | None = None,
    on_report: Callable[[dict[str, Any]], None] | None = None,
    coalesce: float = 0.2,
) -> dict[str, Any]:
    """Run ``watcher`` until SIGINT or SIGTERM, or for ``duration`` seconds; after each
    change ``on_report`` gets the report (a burst of events makes at most one report every
    ``coalesce`` seconds). Returns the last report."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    pending: list[asyncio.TimerHandle] = []

    def send() -> None:
        pending.clear()
        if on_report is not None:
            on_report(watcher.report())

    def changed() -> None:
        if on_report is not None and not pending:
            pending.append(loop.call_later(coalesce, send))

    watcher.on_change = changed
    if duration is not None:
        loop.call_later(duration, stop.set)
    try:
        await watcher.run(stop)
    finally:
        for handle in pending:
            handle.cancel()
    return watcher.report()
