"""The trunk model: schema, loader and cross-checks."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from siporch.model.loaded import LoadedModel
    from siporch.model.loader import load_model, model_hash
    from siporch.model.schema import Model

__all__ = ["LoadedModel", "Model", "load_model", "model_hash"]

# imported on first use: the schema and the loader need pydantic and ansible-core, which
# a command answered from the cache does not
_WHERE = {
    "LoadedModel": "siporch.model.loaded",
    "load_model": "siporch.model.loader",
    "model_hash": "siporch.model.loader",
    "Model": "siporch.model.schema",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
