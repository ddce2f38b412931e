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


def siporch_release_drift(
    manifest: dict[str, Any], found: list[dict[str, Any]], root: str
) -> dict[str, list[str]]:
    """Files of a release on a host (``ansible.builtin.find`` results under ``root``, with
    sha256 checksums) against its manifest: ``{"modified": [...], "missing": [...],
    "extra": [...]}`` (a changed mode counts as modified)."""
    prefix = root.rstrip("/") + "/"
    on_host = {
        str(f["path"])[len(prefix) :]: f for f in found if str(f.get("path", "")).startswith(prefix)
    }
    on_host.pop("manifest.json", None)
    want = manifest.get("files", {})
    modified, missing = [], []
    for path, spec in sorted(want.items()):
        have = on_host.get(path)
        if have is None:
            missing.append(path)
        elif have.get("checksum") != spec.get("sha256") or (
            spec.get("mode") and int(str(have.get("mode", "0")), 8) != int(str(spec["mode"]), 8)
        ):
            modified.append(path)
    extra = sorted(p for p in on_host if p not in want)
    return {"modified": modified, "missing": missing, "extra": extra}


def siporch_heal_actions(manifest: dict[str, Any], paths: list[str]) -> list[str]:
    """Reload actions that restoring ``paths`` of a running release needs: the actions of
    those files changing, as in a deploy."""
    files = manifest.get("files", {})
    before = {
        "files": {k: {**v, "sha256": "restored"} if k in paths else v for k, v in files.items()}
    }
    return reload_actions(before, manifest)


def siporch_heal_changes(healed: dict[str, Any]) -> dict[str, str]:
    """``{path: restored|removed ...}`` of the files put back to their release."""
    out = {path: "restored" for path in healed.get("files", [])}
    out.update({path: "removed (not in the release)" for path in healed.get("extra", [])})
    return out


def siporch_daemons(manifest: dict[str, Any]) -> list[str]:
    """The daemons a host manifest configures (top directories of its files)."""
    return sorted({path.split("/", 1)[0] for path in manifest.get("files", {}) if "/" in path})


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "siporch_reload_actions": siporch_reload_actions,
            "siporch_changed_files": siporch_changed_files,
            "siporch_daemons": siporch_daemons,
            "siporch_release_drift": siporch_release_drift,
            "siporch_heal_actions": siporch_heal_actions,
            "siporch_heal_changes": siporch_heal_changes,
        }
