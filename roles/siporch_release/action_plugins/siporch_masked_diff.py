"""Action siporch_masked_diff: what a file with secrets would change, secrets masked.

Check mode (``--check --diff``) cannot show the diff of a file with secrets with
``copy`` (it would print the secrets), and hiding the task hides the change. This action
reads the file the host runs (``dest``, with ``slurp``), and the release's file on the
controller (``src``), replaces every secret value in both by ``********``
(`siporch.core.mask_secrets`, the same masking `siporch diff` uses), and reports
``changed`` when the real contents differ, with the masked diff. It changes nothing, and
neither its arguments nor its result carry a secret.

Options: ``src`` (controller path of the new file), ``dest`` (path on the host),
``path`` (the name shown in the diff headers).
"""

from __future__ import annotations

import base64
from typing import Any

from ansible.plugins.action import ActionBase

from siporch.core import MASK, mask_secrets


class ActionModule(ActionBase):  # type: ignore[misc]
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("src", "dest", "path"))

    def run(self, tmp: Any = None, task_vars: Any = None) -> dict[str, Any]:
        result: dict[str, Any] = super().run(tmp, task_vars)
        args = self._task.args
        src, dest = str(args.get("src", "")), str(args.get("dest", ""))
        label = str(args.get("path") or dest)
        try:
            with open(src, "rb") as fh:
                new = fh.read()
        except OSError as exc:
            result.update(failed=True, msg=f"cannot read {src}: {exc.strerror or exc}")
            return result
        found = self._execute_module(
            module_name="ansible.builtin.slurp",
            module_args={"src": dest},
            task_vars=task_vars,
        )
        old: bytes | None = None
        if not found.get("failed") and "content" in found:
            old = base64.b64decode(found["content"])
        result["changed"] = old != new
        if result["changed"]:
            before = mask_secrets((old or b"").decode("utf-8", "replace"))
            after = mask_secrets(new.decode("utf-8", "replace"))
            if before == after:
                after += f"; secret values changed ({MASK})\n"
            result["diff"] = {
                "before": before,
                "after": after,
                "before_header": f"{dest} (secrets masked)" if old is not None else "/dev/null",
                "after_header": f"{label} (secrets masked)",
            }
        result["msg"] = "would change" if result["changed"] else "unchanged"
        return result
