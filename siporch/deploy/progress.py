"""Run one of siporch's playbooks and hand its progress to a reporter (the CLI's live
display, a test's list): this layer never prints."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from siporch.deploy import runner


class Reporter(Protocol):
    """What follows a run: each parsed event (play, task, host result, recap) and each raw
    line of ansible-playbook's output."""

    def event(self, event: runner.Event) -> None: ...

    def line(self, line: str) -> None: ...


def run_with_progress(
    playbook: str,
    inventory: Path | Sequence[Path],
    *,
    reporter: Reporter | None = None,
    check: bool = False,
    diff: bool = False,
    limit: str | None = None,
    extra_vars: dict[str, Any] | None = None,
    vault_file: Path | None = None,
) -> runner.RunResult:
    """Run one of siporch's playbooks; ``reporter`` sees its progress as it happens."""
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
    try:
        if reporter is None:
            return runner.run(cmd, report)
        return runner.run(cmd, report, reporter.event, reporter.line)
    finally:
        report.unlink(missing_ok=True)
