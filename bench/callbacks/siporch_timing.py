"""Per-task, per-host timing of an ansible-playbook run, written as JSON lines.

Enabled by bench/deploy_bench.py --profile (ANSIBLE_CALLBACK_PLUGINS=bench/callbacks,
ANSIBLE_CALLBACKS_ENABLED=siporch_timing, SIPORCH_TIMING_FILE=<path>). Each line is one
task result: play, task, host, status, start and end (seconds since the run started).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: siporch_timing
    type: aggregate
    short_description: per-task per-host timing as JSON lines
    description: Writes one JSON line per task result to SIPORCH_TIMING_FILE.
    requirements: [SIPORCH_TIMING_FILE in the environment]
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "siporch_timing"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._t0 = time.monotonic()
        self._play = ""
        self._task = ""
        self._task_start = 0.0
        self._host_start: dict[str, float] = {}
        path = os.environ.get("SIPORCH_TIMING_FILE", "")
        self._out = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115

    def _now(self) -> float:
        return time.monotonic() - self._t0

    def v2_playbook_on_play_start(self, play: Any) -> None:
        self._play = play.get_name()

    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        self._task = task.get_name()
        self._task_start = self._now()
        self._host_start = {}

    def v2_playbook_on_handler_task_start(self, task: Any) -> None:
        self.v2_playbook_on_task_start(task, False)

    def v2_runner_on_start(self, host: Any, task: Any) -> None:
        self._host_start[host.get_name()] = self._now()

    def _record(self, result: Any, status: str) -> None:
        if self._out is None:
            return
        host = result._host.get_name()
        end = self._now()
        start = self._host_start.get(host, self._task_start)
        line = {
            "play": self._play,
            "task": self._task,
            "host": host,
            "status": status,
            "start": round(start, 3),
            "end": round(end, 3),
        }
        # the one-call deploy's own timings (siporch_release_quick.py: gates, steps)
        stdout = str(result._result.get("stdout", "") or "")
        if stdout.startswith('{"quick"'):
            try:
                quick = json.loads(stdout)
                line["quick"] = {"gates": quick.get("gates", {}), "times": quick.get("times", {})}
            except ValueError:
                pass
        self._out.write(json.dumps(line) + "\n")
        self._out.flush()

    def v2_runner_on_ok(self, result: Any) -> None:
        self._record(result, "ok")

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._record(result, "failed")

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._record(result, "skipped")

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._record(result, "unreachable")

    def v2_playbook_on_stats(self, stats: Any) -> None:
        if self._out is not None:
            self._out.write(json.dumps({"end_of_run": round(self._now(), 3)}) + "\n")
            self._out.close()
            self._out = None
