"""Filters of the siporch_release role: the reload plan between two host manifests, and
the quick deploy of a host in one call (tasks/quick.yml)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from siporch.core import (
    ADDED,
    REMOVED,
    diff_trees,
    id_refusal,
    model_changes,
    release_drift,
    release_id_changes,
    releases_to_prune,
    rollback_target,
    states,
)
from siporch.plan import reload_actions


def siporch_reload_actions(new: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """Reload actions needed to go from host manifest ``old`` (None/empty: fresh host) to ``new``."""
    return reload_actions(old or None, new)


def siporch_changed_files(new: dict[str, Any], old: dict[str, Any] | None = None) -> dict[str, str]:
    """``{path: added|removed|modified}`` between two host manifests."""
    return states(diff_trees((old or {}).get("files", {}), new.get("files", {})))


def siporch_release_drift(
    manifest: dict[str, Any], found: list[dict[str, Any]], root: str
) -> dict[str, list[str]]:
    """Files of a release on a host (``ansible.builtin.find`` results under ``root``, with
    sha256 checksums) against its manifest (siporch.core.release_drift)."""
    return release_drift(manifest, found, root)


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


def siporch_model_changes(candidate_dir: str, running: list[str]) -> list[str]:
    """The model changes of a deploy, from the releases the hosts run ("" = none) to the
    release rendered in ``candidate_dir`` (`siporch.core.model_changes`)."""
    return model_changes(Path(candidate_dir), running)


def siporch_trunk_id_check(
    candidate_dir: str, running: dict[str, Any], check_mode: bool = False, renumber: bool = False
) -> dict[str, Any]:
    """The trunks whose id the release in ``candidate_dir`` changes from what the hosts
    run (``running``: host -> the manifest of its current release, {} when none):
    ``{"warnings": [line per trunk], "refusal": "" or why the deploy must not go on}``
    (`siporch.core.release_id_changes`, `siporch.core.id_refusal`). In check mode the
    refusal is one more warning; with ``renumber`` (the user accepts it) too, and the
    deploy goes on."""
    changes = release_id_changes(Path(candidate_dir), running or {})
    refusal = id_refusal(changes) or ""
    warnings = [c.warning() for c in changes]
    if refusal and renumber:
        warnings.append(
            "warning: the trunks above are renumbered as asked (siporch_renumber_trunks)"
        )
        refusal = ""
    elif check_mode and refusal:
        warnings.append(f"warning: a deploy would stop here: {refusal}")
    return {"warnings": warnings, "refusal": refusal}


def siporch_rollback_target(history: str, current: str, available: list[str]) -> str:
    """The release a rollback of the host goes to (`siporch.core.rollback_target`)."""
    return rollback_target(history or "", current or "", available or [])


def siporch_releases_to_prune(
    available: list[str], keep: int, current: str, history: str = ""
) -> list[str]:
    """The releases prune removes (`siporch.core.releases_to_prune`): all but the newest
    ``keep``, never the current one nor the one a rollback would go to."""
    return releases_to_prune(available or [], int(keep), current or "", history or "")


def _truncate(text: str, length: int = 600, end: str = "...", leeway: int = 5) -> str:
    """Jinja's ``truncate(length)`` (at a word boundary, with Ansible's leeway of 5)."""
    if len(text) <= length + leeway:
        return text
    return text[: length - len(end)].rsplit(" ", 1)[0] + end


def siporch_failure_reason(result: dict[str, Any] | None) -> str:
    """Why a task failed, in one line for the deploy summary, from ``ansible_failed_result``:
    of a loop, its first failed item; its stderr, else stdout, else msg (at most 600
    characters); ``unreachable: `` in front when the host could not be reached."""
    result = result or {}
    failed = [r for r in result.get("results") or [] if isinstance(r, dict) and r.get("failed")]
    r = failed[0] if failed else result
    text = next(
        (t for t in (str(r.get(k) or "").strip() for k in ("stderr", "stdout", "msg")) if t),
        "failed",
    )
    return ("unreachable: " if result.get("unreachable") else "") + _truncate(text)


def _daemons(manifest: dict[str, Any]) -> set[str]:
    return {p.split("/", 1)[0] for p in manifest.get("files", {}) if "/" in p}


def siporch_quick_plan(
    new: dict[str, Any],
    old: dict[str, Any] | None,
    current_files: list[dict[str, Any]] | None,
    current_dir: str,
    restart_on_change: bool = False,
) -> dict[str, Any]:
    """How a host running release manifest ``old`` takes ``new`` in one call, or why not.

    Only a change that runtime reloads apply (no daemon restarted or started, the same
    daemons) of a running release whose files were hashed on the host when the run started
    (``current_files``, ``ansible.builtin.find``-like entries under ``current_dir``): the
    new tree is the running one with the changed files written and the others removed.
    A file of the running release that differs from its manifest on the host (edited by
    hand, lost) is written too, and a file it should not have is removed, so the new tree
    is the new manifest's whatever the running one became.

    ``{"ok": bool, "why": str, "actions": [...], "changed": {path: state}, "write": [paths],
    "remove": [paths]}``."""
    out: dict[str, Any] = {
        "ok": False,
        "why": "",
        "actions": [],
        "changed": {},
        "write": [],
        "remove": [],
    }
    if not old or not old.get("files"):
        out["why"] = "no running release"
        return out
    if current_files is None:
        out["why"] = "the running release was not hashed"
        return out
    if _daemons(new) != _daemons(old):
        out["why"] = "the daemons change"
        return out
    actions = reload_actions(old, new)
    if any(a.startswith("keepalived:") for a in actions):  # its check and reload: activate.yml
        out["why"] = "keepalived's config changes"
        return out
    if restart_on_change or any(a.endswith(":restart") for a in actions):
        out["why"] = "a daemon restarts"
        return out
    changes = diff_trees(old.get("files", {}), new.get("files", {}))
    prefix = current_dir.rstrip("/") + "/"
    on_host = {
        str(f["path"])[len(prefix) :]: {
            "sha256": str(f.get("checksum", "")),
            "mode": str(f.get("mode", "")) or None,
        }
        for f in current_files
        if str(f.get("path", "")).startswith(prefix)
    }
    on_host.pop("manifest.json", None)
    new_files = new.get("files", {})
    write = {c.path for c in changes if c.state != REMOVED}
    remove = {c.path for c in changes if c.state == REMOVED}
    # what the host has against the new manifest: anything else is written or removed
    for c in diff_trees(new_files, on_host):
        if c.state == ADDED:  # on the host, not in the new release
            remove.add(c.path)
        else:
            write.add(c.path)
    out.update(
        ok=True,
        actions=actions,
        changed=states(changes),
        write=sorted(write),
        remove=sorted(remove - write),
    )
    return out


def siporch_quick_files(
    paths: list[str], source_dir: str, manifest: dict[str, Any], groups: dict[str, str]
) -> list[dict[str, Any]]:
    """The files the quick call writes: ``{path, data (base64), mode, group}`` of each of
    ``paths`` under ``source_dir`` (the host's tree in the rendered bundle); a file with
    secrets belongs to its daemon's group (``groups``, when the host has it), else root."""
    files = manifest.get("files", {})
    out = []
    for path in paths:
        meta = files[path]
        group = groups.get(path.split("/", 1)[0], "root") if meta.get("secret") else "root"
        data = (Path(source_dir) / path).read_bytes()
        out.append(
            {
                "path": path,
                "data": base64.b64encode(data).decode("ascii"),
                "mode": str(meta.get("mode") or "0644"),
                "group": group,
            }
        )
    return out


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "siporch_reload_actions": siporch_reload_actions,
            "siporch_quick_plan": siporch_quick_plan,
            "siporch_quick_files": siporch_quick_files,
            "siporch_changed_files": siporch_changed_files,
            "siporch_model_changes": siporch_model_changes,
            "siporch_trunk_id_check": siporch_trunk_id_check,
            "siporch_daemons": siporch_daemons,
            "siporch_release_drift": siporch_release_drift,
            "siporch_heal_actions": siporch_heal_actions,
            "siporch_heal_changes": siporch_heal_changes,
            "siporch_rollback_target": siporch_rollback_target,
            "siporch_releases_to_prune": siporch_releases_to_prune,
            "siporch_failure_reason": siporch_failure_reason,
        }
