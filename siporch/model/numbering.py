"""Stable numeric ids for things the daemons number (dispatcher sets, ACL groups)."""

from __future__ import annotations

from siporch.model.schema import Model


def trunk_ids(model: Model) -> dict[str, int]:
    """Trunk name -> id. An explicit ``id`` wins; the rest count from 1 in name order."""
    used = {t.id for t in model.trunks.values() if t.id is not None}
    out: dict[str, int] = {}
    n = 1
    for name in sorted(model.trunks):
        explicit = model.trunks[name].id
        if explicit is not None:
            out[name] = explicit
            continue
        while n in used:
            n += 1
        out[name] = n
        used.add(n)
    return {name: out[name] for name in model.trunks}
