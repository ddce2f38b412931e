"""Wheel build step: the top-level templates/, playbooks/, roles/ and ansible.cfg (the only
copy) go into the wheel as siporch/_data/, where siporch.resources finds them. Editable
installs get nothing: siporch finds these files beside the package in the source tree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

DATA = ("templates", "playbooks", "roles", "ansible.cfg")


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        root = Path(self.root)
        for name in DATA:
            build_data["force_include"][str(root / name)] = f"siporch/_data/{name}"
