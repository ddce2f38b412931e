"""Action siporch_release_quick: the quick deploy's one call on the host.

Runs files/siporch_release_quick.py (after the text of files/siporch_hostlib.py, with the
call's spec between them as ``SPEC_JSON``) on the host as ``python3 -`` with the program
on its standard input: one shell command over the connection, as ``ansible.builtin.raw``
would run it (become included), without Ansible's command module and its wrapper to
start on the host first (the pattern of siporch_release_read).

Option: ``spec``, the call's spec (see files/siporch_release_quick.py). The result is the
command module's: ``rc``, ``stdout`` (the script's JSON), ``stderr``, ``failed`` when
``rc`` is not 0 (tasks/quick.yml reads them with ``failed_when: false``); a host out of
reach is unreachable, as with the command module.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from ansible.plugins.action import ActionBase


def program(hostlib: str, script: str, spec: Any) -> str:
    """The text run by ``python3 -``: the scaffold, the spec, the quick script."""
    text = json.dumps(spec, separators=(",", ":"))
    return hostlib.rstrip("\n") + "\n\nSPEC_JSON = " + repr(text) + "\n\n" + script


class ActionModule(ActionBase):  # type: ignore[misc]
    TRANSFERS_FILES = False
    _supports_check_mode = False
    _VALID_ARGS = frozenset(("spec",))

    def run(self, tmp: Any = None, task_vars: Any = None) -> dict[str, Any]:
        result: dict[str, Any] = super().run(tmp, task_vars)
        spec = self._task.args.get("spec")
        if not isinstance(spec, dict):
            result.update(failed=True, msg="spec: a mapping is expected")
            return result
        texts = []
        for name in ("siporch_hostlib.py", "siporch_release_quick.py"):
            with open(self._find_needle("files", name), encoding="utf-8") as fh:
                texts.append(fh.read())
        data = program(texts[0], texts[1], spec).encode("utf-8")
        cmd = " ".join(shlex.quote(a) for a in ["python3", "-"])
        res = self._low_level_execute_command(cmd, sudoable=True, in_data=data)
        rc = res.get("rc")
        stdout = str(res.get("stdout") or "")
        stderr = str(res.get("stderr") or "")
        result.update(
            rc=rc,
            stdout=stdout,
            stderr=stderr,
            stdout_lines=stdout.splitlines(),
            stderr_lines=stderr.splitlines(),
            changed=True,
        )
        if rc != 0:
            result.update(failed=True, msg=stderr.strip() or f"the quick call failed (exit {rc})")
        return result
