"""Stable numeric ids for things the daemons number (dispatcher sets, ACL groups)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the plan (and the Ansible filters) use this module without pydantic
    from siporch.model.schema import Model


def assign_ids(explicit: Mapping[str, int | None]) -> dict[str, int]:
    """Name -> id, in the order of ``explicit``: a trunk's own ``id`` wins; the others
    count from 1 in name order, skipping the ids taken."""
    used = {i for i in explicit.values() if i is not None}
    out: dict[str, int] = {}
    n = 1
    for name in sorted(explicit):
        given = explicit[name]
        if given is not None:
            out[name] = given
            continue
        while n in used:
            n += 1
        out[name] = n
        used.add(n)
    return {name: out[name] for name in explicit}


def trunk_ids(model: Model) -> dict[str, int]:
    """Trunk name -> id. An explicit ``id`` wins; the rest count from 1 in name order."""
    return assign_ids({name: t.id for name, t in model.trunks.items()})


def renumbered(old: Mapping[str, int], new: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    """The trunks of both that change id: name -> (old id, new id)."""
    return {name: (old[name], new[name]) for name in new if name in old and old[name] != new[name]}
