"""Filters of the siporch_release role: the reload plan between two host manifests."""

from __future__ import annotations

from typing import Any

from siporch.plan import changed_files, reload_actions


def siporch_reload_actions(new: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """Reload actions needed to go from host manifest ``old`` (None/empty: fresh host) to ``new``."""
    return reload_actions(old or None, new)


def siporch_changed_files(new: dict[str, Any], old: dict[str, Any] | None = None) -> dict[str, str]:
    """``{path: added|removed|modified}`` between two host manifests."""
    return changed_files((old or {}).get("files", {}), new.get("files", {}))


def siporch_daemons(manifest: dict[str, Any]) -> list[str]:
    """The daemons a host manifest configures (top directories of its files)."""
    return sorted({path.split("/", 1)[0] for path in manifest.get("files", {}) if "/" in path})


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "siporch_reload_actions": siporch_reload_actions,
            "siporch_changed_files": siporch_changed_files,
            "siporch_daemons": siporch_daemons,
        }
