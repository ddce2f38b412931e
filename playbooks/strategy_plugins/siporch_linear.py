"""The linear strategy, with a host that cannot be reached treated as a failed task.

Ansible drops an unreachable host from the play without running its ``rescue``, and a
``serial`` batch whose only host is unreachable ends the whole playbook, so the plays that
roll the other hosts back would never run. With this strategy an unreachable result is
also a failure: the host's ``rescue`` runs (``ansible_failed_result.unreachable`` is true)
and the playbook goes on to its rollback and report plays.
"""

from __future__ import annotations

from typing import Any

from ansible.plugins.strategy.linear import StrategyModule as LinearStrategyModule

DOCUMENTATION = """
    name: siporch_linear
    short_description: linear, with unreachable hosts handled by rescue
    description:
        - Task execution as in the linear strategy; a task whose host cannot be reached
          fails (and keeps C(unreachable=true)), so a block's rescue handles it.
    author: siporch
"""


class StrategyModule(LinearStrategyModule):
    # ansible-core 2.19: results arrive as a _RawTaskResult holding a plain dict.
    def _convert_wire_task_result_to_raw(self, wire_task_result: Any) -> Any:
        result = super()._convert_wire_task_result_to_raw(wire_task_result)
        data = result._return_data
        if isinstance(data, dict) and result.is_unreachable() and not data.get("failed"):
            data["failed"] = True
        return result

    # ansible-core 2.20 and later: a HostTaskResult around a UnifiedTaskResult.
    def _convert_wire_task_result_to_host_task_result(self, wire_task_result: Any) -> Any:
        result = super()._convert_wire_task_result_to_host_task_result(  # type: ignore[misc]
            wire_task_result
        )
        utr = getattr(result, "utr", None) or getattr(wire_task_result, "utr", None)
        if utr is not None and utr.unreachable and not utr.failed:
            utr.failed = True
        return result
