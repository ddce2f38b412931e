"""The example model as plain data to edit in a test: a dump drops the secrets, so each one
gets a placeholder that validates again."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from siporch.model import load_model
from siporch.model.schema import Model

EXAMPLE = Path(__file__).resolve().parents[2] / "inventory" / "example"


@functools.cache
def example() -> Model:
    return load_model(EXAMPLE).model


def example_data(password: str = "p") -> dict[str, Any]:
    """The example model's data with every secret set (AMI secrets ``s``, passwords
    ``password``)."""
    data = example().model_dump(mode="json")
    for h in data["hosts"].values():
        if h.get("ami"):
            h["ami"]["secret"] = "s"
    for t in data["trunks"].values():
        if t["auth"]["type"] == "register":
            t["auth"]["password"] = password
        if t.get("credentials"):
            t["credentials"]["password"] = password
    return data
