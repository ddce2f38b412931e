"""`siporch exporter --listen ADDR:PORT`: Prometheus metrics from the live status."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import click

from siporch.cli.common import monitor_options


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
    from siporch.monitor.exporter import serve

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
    serve(
        topology,
        addr=addr,
        port=port,
        inventory=inventory,
        timeout=timeout,
        edges=not no_edges,
        edge_interval=edge_interval,
        releases=releases,
        secret=secret,
        records=records,
        records_interval=records_interval,
        duration=duration,
        on_listening=lambda url: click.echo(f"siporch exporter: {url}", err=True),
    )
    return 0
