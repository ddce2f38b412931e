"""A loaded model's record (:class:`LoadedModel`), apart from the loader: a model from the
controller's cache (`siporch.cache`) is used without importing pydantic, the schema or
ansible-core, which an unchanged ``diff`` or ``render`` does not need."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from siporch.errors import Problem
    from siporch.model.schema import Model


@dataclass
class LoadedModel:
    """A validated model with where it came from."""

    model: Model
    source: Path
    inventory: Path
    model_hash: str
    warnings: list[Problem] = field(default_factory=list)
    inventories: tuple[Path, ...] = ()
    # the plain data the model was validated from, when KEEP_DATA asked for it (the cache
    # keeps it instead of the model: a tenth of the time to store)
    data: Any = field(default=None, repr=False, compare=False)
    # the trunks whose ``id`` the inventory gives (the others are numbered by siporch,
    # `_keep_trunk_ids`); None: every trunk with an id in ``model``
    own_ids: tuple[str, ...] | None = None


def own_trunk_ids(loaded: Any) -> set[str]:
    """The trunks of a loaded model whose id the inventory gives itself (``id:``)."""
    own = getattr(loaded, "own_ids", None)
    if own is not None:
        return set(own)
    return {name for name, t in loaded.model.trunks.items() if t.id is not None}


def sources(inventory: Path | str | Sequence[Path | str]) -> tuple[Path, ...]:
    """The inventory sources of ``-i`` (one path or several)."""
    if isinstance(inventory, str | os.PathLike):
        return (Path(inventory),)
    return tuple(Path(p) for p in inventory)
