"""What a deploy or rollback run came to: the explanation of a failure, and the one
release every host runs after a full successful run (remembered for `diff` and `drift`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from siporch.deploy.runner import RunResult
from siporch.release import mark_deployed


def failure_summary(report: dict[str, Any], what: str) -> tuple[list[str], str]:
    """The lines that explain a failed run (plain text: host, step, reason, then what
    became of every host of the run) and the one-line error."""
    hosts = report.get("hosts", [])
    failed = [h for h in hosts if "failure" in h]
    lines = [f"{what} FAILED"]
    for h in failed:
        f = h["failure"]
        lines.append(f'  {h["host"]} failed at "{f.get("step", "?")}": {f.get("reason", "?")}')
    lines.append("every host of the run:")
    back, kept, lost = [], [], []
    for h in hosts:
        note = str(h.get("rollback") or f"on {h.get('current') or '(none)'}")
        lines.append(f"  {h['host']}: {note}")
        if note.startswith("rolled back"):
            back.append(h["host"])
        elif note.startswith(("still on", "no earlier release", "not deployed", "on ")):
            kept.append(h["host"])
        else:
            lost.append(h["host"])
    where = ", ".join(
        h["host"] + (" (unreachable)" if unreachable(h) else "") for h in failed
    )
    parts = [f"{len(back)} host(s) rolled back"] if back else []
    if kept:
        parts.append(f"{len(kept)} unchanged")
    if lost:
        parts.append(f"NOT rolled back: {', '.join(lost)}")
    message = f"{what} failed on {where}; " + (", ".join(parts) or "no host was changed")
    return lines, message


def unreachable(host: dict[str, Any]) -> bool:
    """A host of the run report whose failure is that it could not be reached."""
    return str(host.get("failure", {}).get("reason", "")).startswith("unreachable")


def record_deployed(inventory: Path, result: RunResult, limit: str | None) -> None:
    """After a full successful run, remember the one release every host now runs (for
    `siporch diff` and `siporch drift`)."""
    hosts = (result.report or {}).get("hosts", [])
    currents = {h.get("current") for h in hosts}
    if result.ok and not limit and len(currents) == 1 and None not in currents:
        mark_deployed(inventory, str(currents.pop()))
