"""`siporch calls`: call records of every edge (docs/calls.md).

Each edge is read over SSH with the inventory's settings (as `siporch status` reads the
releases): a small Python program runs there, filters in SQLite and prints one JSON line
per call, which is read and printed as it arrives (bounded memory, any range). The PBX side
(Asterisk's CDRs) is joined by Call-ID: each PBX answers the Call-IDs of every block of
calls shown, over one SSH session per PBX.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click

from siporch import records
from siporch.cli.common import console, host_options, json_option, timeout_option
from siporch.errors import SiporchError


class CallsError(SiporchError):
    exit_code = 2


def _console(out: IO[str]) -> Any:
    from rich.console import Console

    # piped or captured: wide enough for a whole row, never cut
    return Console(file=out, width=None if out.isatty() else 220)


def _table(calls: Iterator[records.Call], mask: bool, out: IO[str]) -> int:
    from rich.table import Table

    console = _console(out)
    n = 0
    batch: list[records.Call] = []

    def flush(header: bool) -> None:
        t = Table(show_header=header, box=None, pad_edge=False)
        for col in (
            "setup (UTC)",
            "edge",
            "dir",
            "trunk",
            "calling",
            "called",
            "result",
            "code",
            "pdd s",
            "dur s",
            "legs",
            "pbx",
            "pbx channel",
            "pbx disp",
            "bill s",
        ):
            t.add_column(col, no_wrap=True)
        for c in batch:
            d = c.as_dict(mask)
            main = c.pbx_main
            p = main.as_dict(mask) if main is not None else {}
            t.add_row(
                (d["setup"] or "")[:23].replace("T", " "),
                c.edge,
                c.direction[:3],
                c.trunk,
                d["calling"],
                d["called"],
                c.result,
                f"{c.code} {c.reason}".strip(),
                "" if d["pdd"] is None else f"{d['pdd']:.2f}",
                "" if d["duration"] is None else f"{d['duration']:.1f}",
                str(c.legs),
                p.get("host", ""),
                p.get("channel", ""),
                p.get("disposition", ""),
                "" if main is None else str(main.billsec),
            )
        console.print(t)

    for c in calls:
        batch.append(c)
        n += 1
        if len(batch) >= 500:  # printed in blocks: memory stays bounded
            flush(n == len(batch))
            batch.clear()
    if batch or n == 0:
        flush(n == len(batch))
    return n


def _summary_table(rows: list[records.TrunkSummary], out: IO[str]) -> None:
    from rich.table import Table

    t = Table(title="Call records per trunk")
    for col in (
        "trunk",
        "attempts",
        "answered",
        "ASR",
        "ACD s",
        "PDD median s",
        "PDD p95 s",
        "failovers",
        "top failures",
    ):
        t.add_column(col)

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    for s in rows:
        d = s.as_dict()
        t.add_row(
            s.trunk,
            str(s.attempts),
            str(s.answered),
            num(None if d["asr"] is None else d["asr"] * 100, ".1f")
            + ("%" if d["asr"] is not None else ""),
            num(d["acd"], ".1f"),
            num(d["pdd_median"], ".2f"),
            num(d["pdd_p95"], ".2f"),
            str(s.failovers),
            ", ".join(d["top_failures"]),
        )
    _console(out).print(t)


@click.command(name="calls")
@host_options
@click.option("--host", "hosts", multiple=True, metavar="NAME", help="Only this edge (repeatable).")
@click.option(
    "--from-file",
    "files",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Read this records database (a copy of an edge's records.sqlite) instead of the "
    "edges (repeatable).",
)
@click.option(
    "--pbx-file",
    "pbx_files",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Join the calls with this PBX CDR database (a copy of a PBX's cdr.db), with "
    "--from-file (repeatable).",
)
@click.option(
    "--no-pbx", is_flag=True, help="Do not read the PBXs' CDRs (no PBX side in the records)."
)
@click.option(
    "--since", default=None, help="From this time: ISO 8601 (UTC), epoch, or 2h / 7d ago."
)
@click.option("--until", default=None, help="Before this time (same forms).")
@click.option("--trunk", default=None, help="Only calls whose last leg was on this trunk.")
@click.option("--number", default=None, help="Calling or called number contains this.")
@click.option(
    "--result",
    type=click.Choice(records.RESULTS),
    default=None,
    help="Only calls with this result.",
)
@click.option("--summary", is_flag=True, help="Per trunk: attempts, ASR, ACD, PDD, failovers.")
@json_option("one object per call (or per trunk) per line")
@click.option("--csv", "as_csv", is_flag=True, help="CSV with a header line.")
@click.option("--mask", is_flag=True, help="Mask calling and called numbers.")
@timeout_option(120.0, per="edge")
def cli(
    inventory: tuple[Path, ...],
    vault_password_file: Path | None,
    limit: str | None,
    hosts: tuple[str, ...],
    files: tuple[Path, ...],
    pbx_files: tuple[Path, ...],
    no_pbx: bool,
    since: str | None,
    until: str | None,
    trunk: str | None,
    number: str | None,
    result: str | None,
    summary: bool,
    as_json: bool,
    as_csv: bool,
    mask: bool,
    timeout: float,
) -> int:
    """Call records of every edge: one line per call, or a summary per trunk.

    Exit codes: 0 read from every edge; 1 an edge could not be read (the others are
    shown); 2 bad input.
    """
    if as_json and as_csv:
        raise click.BadParameter("choose one of --json and --csv", param_hint="--csv")
    now = time.time()
    try:
        t0 = records.parse_time(since, now) if since else None
        t1 = records.parse_time(until, now) if until else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since/--until") from exc
    flt = records.Filters(since=t0, until=t1, trunk=trunk, number=number, result=result)

    problems: list[str] = []
    pbx_sources: list[records.Source] = []
    server_summary = False
    if pbx_files and not files:
        raise click.BadParameter("goes with --from-file", param_hint="--pbx-file")
    if files:
        sources = records.file_sources(files, flt)
        pbx_sources = records.pbx_file_sources(pbx_files)
    else:
        if shutil.which("ssh") is None:
            raise CallsError("ssh is not installed; the edges are read over SSH")
        from siporch.cli.common import load

        model = load(inventory, vault_password_file).model
        edges = records.edges_of(model, inventory, hosts, limit)
        # PostgreSQL: the server aggregates the summary (--result filters single calls on
        # this side: then the calls are read)
        server_summary = summary and model.records.backend == "postgresql" and not result
        sources = records.edge_sources(
            inventory,
            edges,
            flt,
            timeout,
            problems,
            backend=model.records.backend,
            # one PostgreSQL database holds every edge's records: --host/--limit pick edges
            only=[n for n, _ in edges] if hosts or limit else [],
            summary=server_summary,
        )
        if not (summary or no_pbx):
            pbx_sources = records.pbx_sources(inventory, records.pbxs_of(model), timeout, problems)

    calls: Iterator[records.Call] = records.read_calls(sources, flt, timeout, problems)
    reader = None
    if pbx_sources and not summary and not no_pbx:
        reader = records.PbxReader(pbx_sources, problems)
        calls = records.join_pbx(calls, reader.lookup)
    out: IO[str] = sys.stdout
    if console.quiet and not (as_json or as_csv):
        out = open(os.devnull, "w")  # noqa: SIM115 (closed at exit)
    if summary:
        if server_summary:
            rows = records.summary_from_lines(
                line
                for edge, argv in sources
                for line in records.stream_lines(argv, edge, timeout, problems)
            )
        else:
            rows = records.summarize(calls)
        if as_json:
            import json

            for s in rows:
                out.write(json.dumps(s.as_dict()) + "\n")
        elif as_csv:
            import csv

            w = csv.writer(out)
            w.writerow(
                [
                    "trunk",
                    "attempts",
                    "answered",
                    "asr",
                    "acd",
                    "pdd_median",
                    "pdd_p95",
                    "failovers",
                    "top_failures",
                ]
            )
            for s in rows:
                d = s.as_dict()
                w.writerow(
                    [
                        d["trunk"],
                        d["attempts"],
                        d["answered"],
                        d["asr"],
                        d["acd"],
                        d["pdd_median"],
                        d["pdd_p95"],
                        d["failovers"],
                        "; ".join(d["top_failures"]),
                    ]
                )
        else:
            _summary_table(rows, out)
    elif as_json:
        import json

        for c in calls:
            out.write(json.dumps(c.as_dict(mask)) + "\n")
    elif as_csv:
        out.write(records.csv_header())
        for c in calls:
            out.write(records.csv_row(c, mask))
    else:
        _table(calls, mask, out)
    if reader is not None:
        reader.close()
    for p in problems:
        click.echo(f"siporch: {p}", err=True)
    return 1 if any("not read" in p or "not in the" in p for p in problems) else 0
