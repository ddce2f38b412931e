"""Stable numeric ids for things the daemons number (dispatcher sets, ACL groups)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from siporch.core import assign_ids

if TYPE_CHECKING:
    from siporch.model.schema import Model


def trunk_ids(model: Model) -> dict[str, int]:
    """Trunk name -> id. An explicit ``id`` wins; the rest count from 1 in name order."""
    return assign_ids({name: t.id for name, t in model.trunks.items()})
