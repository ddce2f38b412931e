"""What each host holds: its releases, what each changed, which one is current."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from siporch.core import rollback_target
from siporch.deploy import runner
from siporch.errors import DeployError
from siporch.hosts import Inventory
from siporch.plan import reload_actions

_ID_TIME = re.compile(r"^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z")


@dataclass(frozen=True)
class HostRelease:
    host: str
    id: str
    time: str
    model_hash: str
    changes: list[str]
    current: bool
    rollback: bool = False  # where `siporch rollback` would take this host


def release_time(release_id: str, fallback: str = "") -> str:
    """The UTC time a release id starts with, as ISO 8601."""
    m = _ID_TIME.match(release_id)
    if not m:
        return fallback
    y, mo, d, h, mi, s = m.groups()
    return f"{y}-{mo}-{d}T{h}:{mi}:{s}Z"


def _as_manifest(entry: dict[str, Any]) -> dict[str, Any]:
    files = entry.get("files", {})
    reloads = entry.get("reloads", {})
    return {
        "files": {
            path: {"sha256": sha, "reload": reloads.get(path, "none")}
            for path, sha in files.items()
        }
    }


def host_releases(host: str, listing: dict[str, Any]) -> list[HostRelease]:
    """Rows for one host from the JSON that playbooks/files/list_releases.py prints."""
    if "error" in listing:
        raise DeployError(f"{host}: {listing['error']}")
    current = listing.get("current", "")
    target = (
        rollback_target(
            str(listing.get("history", "")), current, [e["id"] for e in listing.get("releases", [])]
        )
        if current
        else ""
    )
    rows: list[HostRelease] = []
    previous: dict[str, Any] | None = None
    for entry in sorted(listing.get("releases", []), key=lambda e: e["id"]):
        manifest = _as_manifest(entry)
        if previous is None:
            changes = ["first release on this host"]
        else:
            actions = reload_actions(previous, manifest)
            changes = actions or ["no file changed"]
        rows.append(
            HostRelease(
                host=host,
                id=entry["id"],
                time=release_time(entry["id"], entry.get("installed", "")),
                model_hash=(entry.get("model_hash") or "")[:12],
                changes=changes,
                current=entry["id"] == current,
                rollback=entry["id"] == target,
            )
        )
        previous = manifest
    return rows


def collect(
    inventory: Inventory, vault_file: Path | None = None, limit: str | None = None
) -> tuple[dict[str, list[HostRelease]], dict[str, str]]:
    """Run playbooks/releases.yml on the hosts the Ansible host pattern ``limit`` selects
    (every host: None); rows per host, and errors per unreachable host. The playbook
    reaches the hosts through ansible-playbook, with the same inventory settings as
    `siporch.hosts`."""
    report = runner.report_path()
    try:
        cmd = runner.build_command(
            "releases.yml", inventory, limit=limit, vault_file=vault_file, report_file=report
        )
        result = runner.run(cmd, report)
    finally:
        report.unlink(missing_ok=True)
    data = result.report
    if data is None:
        tail = "\n".join(result.output[-15:])
        raise DeployError(f"could not read the releases of the hosts:\n{tail}")
    rows: dict[str, list[HostRelease]] = {}
    errors: dict[str, str] = {}
    for host, listing in sorted(data.items()):
        if "error" in listing:
            errors[host] = str(listing["error"])
            continue
        rows[host] = host_releases(host, listing)
    return rows, errors
