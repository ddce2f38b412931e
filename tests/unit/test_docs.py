"""docs/model.md and `siporch schema` come from the model itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from siporch.model.docs import render

ROOT = Path(__file__).resolve().parents[2]


def test_model_reference_is_current() -> None:
    assert (ROOT / "docs/model.md").read_text() == render(), (
        "docs/model.md is stale: run `python -m siporch.model.docs > docs/model.md`"
    )


def test_schema_command_prints_json_schema() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "siporch", "schema"], capture_output=True, text=True, check=True
    ).stdout
    schema = json.loads(out)
    assert schema["$schema"].endswith("2020-12/schema")
    assert {"Trunk", "Route", "Did", "Host", "Site"} <= set(schema["$defs"])
    assert schema["additionalProperties"] is False
    assert schema["$defs"]["Transport"]["properties"]["port"]["maximum"] == 65535
