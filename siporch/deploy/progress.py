"""Shared by the deploy and rollback commands: run a playbook with live progress."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from siporch.deploy import runner


def run_with_progress(
    console: Console,
    playbook: str,
    inventory: Path | Sequence[Path],
    *,
    check: bool = False,
    diff: bool = False,
    limit: str | None = None,
    extra_vars: dict[str, Any] | None = None,
    vault_file: Path | None = None,
    verbose: bool = False,
) -> runner.RunResult:
    """Run one of siporch's playbooks, showing the play, the task and each host's result."""
    report = runner.report_path()
    cmd = runner.build_command(
        playbook,
        inventory,
        check=check,
        diff=check or diff,
        limit=limit,
        extra_vars=extra_vars,
        vault_file=vault_file,
        report_file=report,
    )
    state = {"play": "", "task": ""}
    try:
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            bar = progress.add_task("starting ansible-playbook", total=None)

            def on_event(event: runner.Event) -> None:
                if event.kind == "play":
                    state["play"] = event.name
                    console.print(f"[bold]{event.name}[/bold]", soft_wrap=True, highlight=False)
                elif event.kind == "task":
                    state["task"] = event.name
                elif event.kind == "host" and event.status in ("changed", "fatal", "failed"):
                    colour = "yellow" if event.status == "changed" else "red"
                    console.print(
                        f"  [{colour}]{event.status}[/{colour}] {event.host}: {state['task']}",
                        soft_wrap=True,
                        highlight=False,
                    )
                progress.update(bar, description=f"{state['play']} · {state['task']}")

            def on_line(line: str) -> None:
                if verbose or (check and line.startswith(("---", "+++", "-", "+", "@@"))):
                    console.print(line, markup=False, highlight=False, soft_wrap=True)

            result = runner.run(cmd, report, on_event, on_line)
    finally:
        report.unlink(missing_ok=True)
    return result
