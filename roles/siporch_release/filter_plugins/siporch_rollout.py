"""Filter of deploy-trunk.yml: the order and the batches of the rollout ("Order the rollout").

Standard library only (the collection carries this file as it is)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _chunks(hosts: list[str], size: int) -> list[list[str]]:
    return [hosts[i : i + size] for i in range(0, len(hosts), size)]


def _pair(model: Mapping[str, Any], host: str) -> list[str]:
    """The edges of the pair ``host`` belongs to (its site's ``edges.hosts``), else []."""
    site = ((model.get("hosts") or {}).get(host) or {}).get("site") or ""
    edges = ((model.get("sites") or {}).get(site) or {}).get("edges") or {}
    return [str(h) for h in edges.get("hosts") or []]


def siporch_rollout_order(
    hosts: Sequence[str],
    hostvars: Mapping[str, Any],
    edges: Sequence[str] = (),
    model: Mapping[str, Any] | None = None,
    serial: Any = 1,
) -> dict[str, Any]:
    """The rollout of a deploy: ``hosts`` (every edge, then every PBX), read by the play
    before (their facts in ``hostvars``: ``siporch_release_before`` once read,
    ``siporch_release_current``, ``siporch_release_unchanged``, ``siporch_deploy_failure``),
    ``edges`` (the siporch_edge group), ``model`` (the trunk model ``siporch``: its sites'
    pairs) and ``serial`` (``siporch_serial``: changed hosts per batch, at least 1).

    Returns ``{"hosts": [...], "serial": [batch sizes], "pair_later": [...],
    "fresh": [...], "batches": [[...], ...]}``: the host-by-host play's hosts in order, its
    ``serial`` (Ansible repeats the last size), the edges left to the pair's own play (one
    at a time), the hosts that run no release and the batches the play makes.

    * unchanged hosts (nothing to check or reload) and fresh edges (no release, so no call
      to protect; both edges of a fresh pair included) go in the first batch, all at once;
    * then the changed hosts that run a release, ``serial`` at a time, edges first; the
      first batch takes the first of them when there is no fresh edge (as without fresh
      hosts at all);
    * the fresh PBXs all at once, after every edge of the play (their registrations go
      through the edges, which know them once deployed), before the changed PBXs;
    * of a pair, the edges after the first that run a release the deploy changes are left
      to the pair's own play (``pair_later``): a pair always keeps an edge that runs;
    * the pair's later edges keep their place among the changed hosts (the play skips
      them); the hosts not read (outside ``--limit``: the play leaves them out) come last,
      so that they shift no batch.
    """
    try:
        size = max(int(serial), 1)
    except (TypeError, ValueError):
        size = 1
    model = model or {}
    edge_set = {str(h) for h in edges}
    order = list(dict.fromkeys(str(h) for h in hosts if h in hostvars))

    def facts(host: str) -> Mapping[str, Any]:
        found: Mapping[str, Any] = hostvars[host]
        return found

    def failed(host: str) -> bool:
        return "siporch_deploy_failure" in facts(host)

    def read(host: str) -> bool:  # by the read play of this run (not outside --limit)
        return "siporch_release_before" in facts(host) or failed(host)

    unchanged = [
        h for h in order if not failed(h) and bool(facts(h).get("siporch_release_unchanged"))
    ]
    fresh = [
        h
        for h in order
        if h not in unchanged
        and read(h)
        and not failed(h)
        and not str(facts(h).get("siporch_release_current") or "")
    ]
    # the changed hosts that run a release, in order, the pair's later edges in their place
    # (the play skips them); the hosts outside --limit last (the play leaves them out: in
    # their place they would shift the batches)
    running = [h for h in order if h not in unchanged and h not in fresh and read(h)]
    later = [h for h in running if h in _pair(model, h)[1:]]
    tail = [h for h in order if not read(h)]
    fresh_edges = [h for h in fresh if h in edge_set]
    fresh_pbxs = [h for h in fresh if h not in edge_set]

    first = unchanged + fresh_edges
    if fresh_pbxs:  # every edge of the play before them
        head = _chunks([h for h in running if h in edge_set], size)
        rest = [fresh_pbxs, *_chunks([h for h in running if h not in edge_set], size)]
    else:
        head, rest = _chunks(running, size), []
    # no fresh edge: the first changed batch goes with the unchanged hosts
    head = [first + head[0], *head[1:]] if head and not fresh_edges else [first, *head]
    batches = [b for b in head + rest if b]
    return {
        "hosts": [h for b in batches for h in b] + tail,
        "serial": [len(b) for b in batches] + [size],
        "pair_later": later,
        "fresh": fresh,
        "batches": batches,
    }


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"siporch_rollout_order": siporch_rollout_order}
