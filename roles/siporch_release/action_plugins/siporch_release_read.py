"""Action siporch_release_read: what a deploy reads of a host's releases, in one call.

Runs files/siporch_release_state.py (after the text of files/siporch_hostlib.py) on the
host as ``python3 -`` with the script on its standard input: one shell command over the
connection, as ``ansible.builtin.raw`` would run it (become included), without a module
and its wrapper to start on the host. The JSON it prints becomes the discover facts, in
Python on the controller instead of Jinja over the manifests:

``siporch_release_current``, ``siporch_release_current_manifest``,
``siporch_release_available``, ``siporch_release_history``, ``siporch_release_pm``,
``siporch_release_probe`` and, when ``probe_id`` and ``probe_manifest`` are given,
``siporch_release_unchanged`` (see tasks/discover.yml for what "unchanged" means); with
``stored``, ``siporch_release_stored`` ({id: {manifest, checksum}} of every release on the
host) and the running release hashed (``siporch_release_probe.current_files``).

Options: ``root`` (siporch_release_root), ``process_manager`` (``auto``, ``systemd`` or
``direct``), ``probe_id`` (the release about to be deployed, or empty),
``probe_manifest`` (the controller's copy of that release's manifest.json for this host),
``installed`` ({host path: expected sha256} of the daemons' helpers), ``stored`` (a
rollback: the manifests of the releases on the host, one of which it goes to).
"""

from __future__ import annotations

import hashlib
import json
import shlex
from typing import Any

from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase

from siporch.core import release_drift


def unchanged(
    state: dict[str, Any],
    probe_id: str,
    manifest_text: str,
    root: str,
    installed: dict[str, str],
) -> bool:
    """Whether the release ``probe_id`` (its manifest ``manifest_text``) changes nothing
    on a host whose state script printed ``state``: the host runs it already with the same
    manifest and every file as it says, or runs another release with the same files, every
    one as its own manifest says; and the helpers are those expected (``installed``)."""
    current = str(state.get("current") or "")
    current_manifest = state.get("manifest") or {}
    target = state.get("target") or {}
    current_files = state.get("current_files")
    manifest = json.loads(manifest_text)
    same_id = (
        current == probe_id
        and target.get("files") is not None
        and bool(target.get("exists"))
        and target.get("checksum") == hashlib.sha256(manifest_text.encode("utf-8")).hexdigest()
    )
    same_files = (
        len(current) > 0
        and current != probe_id
        and current_files is not None
        and current_manifest.get("files") == manifest.get("files", {})
    )
    base = root + "/releases/"
    if same_id:
        drift = release_drift(manifest, target["files"], base + probe_id)
    elif same_files:
        drift = release_drift(current_manifest, current_files, base + current)
    else:
        return False
    if drift["modified"] or drift["missing"] or drift["extra"]:
        return False
    return (state.get("installed") or {}) == installed


def facts(
    state: dict[str, Any],
    root: str,
    process_manager: str,
    probe_id: str,
    manifest_text: str | None,
    installed: dict[str, str],
) -> dict[str, Any]:
    """The discover facts of a host from what its state script printed."""
    target = state.get("target") or {}
    out: dict[str, Any] = {
        "siporch_release_current": state.get("current") or "",
        "siporch_release_current_manifest": state.get("manifest") or {},
        "siporch_release_available": state.get("releases") or [],
        "siporch_release_history": state.get("history") or "",
        "siporch_release_pm": (
            ("systemd" if state.get("systemd") else "direct")
            if process_manager == "auto"
            else process_manager
        ),
        "siporch_release_probe": {
            "id": probe_id,
            "exists": bool(target.get("exists")),
            "checksum": target.get("checksum", ""),
            "files": target.get("files"),
            "current_files": state.get("current_files"),
            "installed": state.get("installed") or {},
        },
    }
    if "stored" in state:
        out["siporch_release_stored"] = state.get("stored") or {}
    if probe_id and manifest_text is not None:
        out["siporch_release_unchanged"] = unchanged(
            state, probe_id, manifest_text, root, installed
        )
    return out


class ActionModule(ActionBase):  # type: ignore[misc]
    TRANSFERS_FILES = False
    _supports_check_mode = True
    _VALID_ARGS = frozenset(
        ("root", "process_manager", "probe_id", "probe_manifest", "installed", "stored")
    )

    def run(self, tmp: Any = None, task_vars: Any = None) -> dict[str, Any]:
        result: dict[str, Any] = super().run(tmp, task_vars)
        args = self._task.args
        root = str(args.get("root") or "/etc/siporch")
        process_manager = str(args.get("process_manager") or "auto")
        probe_id = str(args.get("probe_id") or "")
        probe_manifest = str(args.get("probe_manifest") or "").strip()
        installed = {str(k): str(v) for k, v in dict(args.get("installed") or {}).items()}
        manifest_text: str | None = None
        if probe_id and probe_manifest:
            try:
                with open(probe_manifest, encoding="utf-8") as fh:
                    manifest_text = fh.read()
            except OSError as exc:
                result.update(
                    failed=True, msg=f"cannot read {probe_manifest}: {exc.strerror or exc}"
                )
                return result
        script = ""
        for name in ("siporch_hostlib.py", "siporch_release_state.py"):
            with open(self._find_needle("files", name), encoding="utf-8") as fh:
                script += fh.read()
        stored = ["--stored"] if boolean(args.get("stored", False), strict=False) else []
        argv = ["python3", "-", *stored, root, probe_id, *installed]
        cmd = " ".join(shlex.quote(a) for a in argv)
        res = self._low_level_execute_command(cmd, sudoable=True, in_data=script.encode("utf-8"))
        if res.get("rc") != 0:
            result.update(
                failed=True,
                rc=res.get("rc"),
                stderr=res.get("stderr", ""),
                msg=(res.get("stderr") or res.get("stdout") or "").strip()
                or f"reading the releases failed (exit {res.get('rc')})",
            )
            return result
        try:
            state = json.loads(res.get("stdout") or "")
        except ValueError:
            result.update(
                failed=True, msg=f"not the state script's JSON: {res.get('stdout', '')[:300]!r}"
            )
            return result
        try:
            result["ansible_facts"] = facts(
                state, root, process_manager, probe_id, manifest_text, installed
            )
        except ValueError as exc:  # the controller's manifest is no JSON
            result.update(failed=True, msg=f"cannot read {probe_manifest}: {exc}")
            return result
        result["changed"] = False
        return result
