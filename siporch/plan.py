"""What a change does, as data: a semantic summary, the file changes and the reloads.

Pure functions over sanitized models (``siporch.release.sanitized_model``) and manifests.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from siporch.core import (
    assign_ids,
    diff_trees,
    renumber_warning,
    renumbered,
    states,
    unified_diff,
)

#: Order in which reloads run; a restart of a daemon makes its runtime reloads redundant.
ACTION_ORDER = [
    "kamailio:restart",
    "kamailio:tls.reload",
    "kamailio:permissions.addressReload",
    "kamailio:htable.reload",
    "kamailio:dialplan.reload",
    "kamailio:dispatcher.reload",
    "rtpengine:restart",
    "asterisk:restart",
    "asterisk:manager reload",
    "asterisk:pjsip reload",
    "asterisk:dialplan reload",
    "asterisk:cdr reload",
]

_COLLECTIONS = {"sites": "site", "hosts": "host", "trunks": "trunk"}
_NAMED_LISTS = {"inbound": "DID", "routes": "route"}


def _fmt(value: Any) -> str:
    if isinstance(value, str) and value.startswith("sha256:"):
        return "(secret)"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if value is None:
        return "unset"
    return str(value)


def _peer_key(p: dict[str, Any]) -> str:
    port = p.get("port") or (5061 if p.get("transport") == "tls" else 5060)
    return f"{p.get('address')}:{port}/{p.get('transport', 'udp')}"


def _leaf_diff(label: str, path: str, old: Any, new: Any, out: list[str]) -> None:
    if old == new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            sub = f"{path}.{key}" if path else key
            if key not in new:
                out.append(f"{label}: {sub} removed")
            elif key not in old:
                out.append(f"{label}: {sub} set to {_fmt(new[key])}")
            else:
                _leaf_diff(label, sub, old[key], new[key], out)
        return
    if path.endswith("peers") and isinstance(old, list) and isinstance(new, list):
        o = {_peer_key(p): p for p in old}
        n = {_peer_key(p): p for p in new}
        for k in n:
            if k not in o:
                out.append(f"{label}: peer {n[k]['address']} added")
        for k in o:
            if k not in n:
                out.append(f"{label}: peer {o[k]['address']} removed")
        for k in n:
            if k in o and o[k] != n[k]:
                _leaf_diff(label, f"peer {n[k]['address']}", o[k], n[k], out)
        return
    if isinstance(old, str) and old.startswith("sha256:"):
        out.append(f"{label}: {path} changed (secret)")
        return
    out.append(f"{label}: {path} {_fmt(old)} -> {_fmt(new)}")


def _named_diff(noun: str, o: dict[str, Any], n: dict[str, Any], out: list[str]) -> None:
    """Items keyed by name: added, removed, then what changed inside each."""
    out.extend(f"{noun} {name} added" for name in n if name not in o)
    out.extend(f"{noun} {name} removed" for name in o if name not in n)
    for name in n:
        if name in o:
            _leaf_diff(f"{noun} {name}", "", o[name], n[name], out)


def semantic_diff(
    old: dict[str, Any] | None,
    new: dict[str, Any],
    ids: tuple[Mapping[str, int], Mapping[str, int]] | None = None,
) -> list[str]:
    """Human lines such as ``trunk acme: peer 203.0.113.7 added``. Empty when equal.
    ``ids``: every trunk's id in ``old`` and in ``new`` (as `siporch.core.assign_ids`
    numbers them) when the models given hold only some trunks (:func:`semantic_diff_text`)."""
    old = old or {}
    out: list[str] = []
    for key, noun in _COLLECTIONS.items():
        o, n = old.get(key, {}) or {}, new.get(key, {}) or {}
        if key == "trunks":  # a trunk's id: its effective id changes, below (_renumbering)
            o, n = _without_id(o), _without_id(n)
        _named_diff(noun, o, n, out)
    for key, noun in _NAMED_LISTS.items():
        o = {i["name"]: i for i in old.get(key, []) or []}
        n = {i["name"]: i for i in new.get(key, []) or []}
        _named_diff(noun, o, n, out)
        common_old = [x for x in o if x in n]
        common_new = [x for x in n if x in o]
        if common_old != common_new:
            out.append(f"{key} reordered: {', '.join(common_old)} -> {', '.join(common_new)}")
    for key in sorted(set(old) | set(new)):
        if key in _COLLECTIONS or key in _NAMED_LISTS:
            continue
        if old and key in old and key not in new:
            out.append(f"{key} removed")
        elif old:
            _leaf_diff("model", key, old.get(key), new.get(key), out)
    if old and _topoh(old) != _topoh(new):
        out.append(TOPOH_WARNING)
    if old and ids is not None:  # in name order, as a model.json's trunks are
        moves = renumbered(dict(sorted(ids[0].items())), dict(sorted(ids[1].items())))
        out.extend(renumber_warning(name, a, b) for name, (a, b) in moves.items())
    elif old:
        out.extend(_renumbering(old, new))
    return out


def semantic_diff_text(
    old: str | None,
    new: str,
    ids: tuple[Mapping[str, int], Mapping[str, int]] | None = None,
) -> list[str]:
    """:func:`semantic_diff` of two ``model.json`` texts (`siporch.release.model_json`: one
    line per entry), the same lines, decoding only what differs: a site, host or trunk
    whose line is the same on both sides says nothing, nor does a list of DIDs or routes
    whose lines are all the same. The sections that are not collections are small and read
    whole. ``ids``: every trunk's id on each side (the releases' manifests record them);
    without, the trunks are read whole for their ids. A text of another layout is read
    whole."""
    if old is None:
        return semantic_diff(None, json.loads(new))
    o, n = _sections(old), _sections(new)
    if o is None or n is None:
        return semantic_diff(json.loads(old), json.loads(new))
    reduced: tuple[dict[str, Any], dict[str, Any]] = ({}, {})
    for side, mine, theirs in ((reduced[0], o, n), (reduced[1], n, o)):
        for key, (kind, body) in mine.items():
            twin = theirs.get(key)
            if kind == "dict" and key in _COLLECTIONS and (key != "trunks" or ids is not None):
                other = twin[1] if twin is not None and twin[0] == "dict" else {}
                assert isinstance(body, dict) and isinstance(other, dict)
                side[key] = {k: json.loads(v) for k, v in body.items() if other.get(k) != v}
            elif kind == "list" and key in _NAMED_LISTS and twin == (kind, body):
                continue  # the same list on both sides: nothing to say
            elif kind == "dict":
                assert isinstance(body, dict)
                side[key] = {k: json.loads(v) for k, v in body.items()}
            elif kind == "list":
                side[key] = [json.loads(v) for v in body]
            else:
                assert isinstance(body, str)
                side[key] = json.loads(body)
    if o and not reduced[0]:  # every section skipped: "no previous model" is not meant
        return semantic_diff(json.loads(old), json.loads(new))
    return semantic_diff(reduced[0], reduced[1], ids)


_Section = tuple[str, "dict[str, str] | list[str] | str"]


def _sections(text: str) -> dict[str, _Section] | None:
    """A ``model.json`` text cut into its top-level keys, each ``("dict", {name: entry's
    JSON})``, ``("list", [entry's JSON])`` or ``("value", JSON)``; None when the text is not
    in that layout."""
    lines = text.split("\n")
    if len(lines) < 3 or lines[0] != "{" or lines[-2:] != ["}", ""]:
        return None
    decode = json.JSONDecoder().raw_decode
    out: dict[str, _Section] = {}
    end = len(lines) - 2
    i = 1
    try:
        while i < end:
            line = lines[i]
            if not line.startswith('  "'):
                return None
            key, at = decode(line, 2)
            if not isinstance(key, str) or line[at : at + 2] != ": " or key in out:
                return None
            rest = line[at + 2 :]
            if rest in ("{", "["):
                close = "  }" if rest == "{" else "  ]"
                entries: dict[str, str] = {}
                items: list[str] = []
                i += 1
                while i < end and lines[i].startswith("    "):
                    entry = lines[i]
                    if rest == "{":
                        name, at = decode(entry, 4)
                        if (
                            not isinstance(name, str)
                            or entry[at : at + 2] != ": "
                            or name in entries
                        ):
                            return None
                        value = entry[at + 2 :]
                        entries[name] = value[:-1] if value.endswith(",") else value
                    else:
                        value = entry[4:]
                        items.append(value[:-1] if value.endswith(",") else value)
                    i += 1
                if i >= end or lines[i] not in (close, close + ","):
                    return None
                out[key] = ("dict", entries) if rest == "{" else ("list", items)
            else:
                out[key] = ("value", rest[:-1] if rest.endswith(",") else rest)
            i += 1
    except ValueError:
        return None
    return out


def _without_id(trunks: dict[str, Any]) -> dict[str, Any]:
    return {
        name: {k: v for k, v in t.items() if k != "id"} if isinstance(t, dict) else t
        for name, t in trunks.items()
    }


def _trunk_ids(model: dict[str, Any]) -> dict[str, int]:
    trunks = model.get("trunks") or {}
    return assign_ids({name: (t or {}).get("id") for name, t in trunks.items()})


def _renumbering(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """A warning per trunk whose id changes: its own ``id`` changed, or, when the release
    compared with was not the base of the render (a trunk without ``id`` keeps the id the
    controller's releases gave it, `siporch.core.stable_ids`; without them, it is numbered
    in name order), adding or removing a trunk renumbers the ones after it."""
    moves = renumbered(_trunk_ids(old), _trunk_ids(new))
    return [renumber_warning(name, a, b) for name, (a, b) in moves.items()]


#: Topology hiding encodes the edge's Record-Route and Contact of every call with a key
#: derived from the domain; an edge restarted with another key (or with hiding turned on
#: or off) cannot decode what calls set up before it send.
TOPOH_WARNING = (
    "warning: topology hiding changes (domain or security.topology_hiding): calls up "
    "during the Kamailio restart lose their in-dialog requests (BYE, re-INVITE); deploy "
    "when they have drained"
)


def _topoh(model: dict[str, Any]) -> tuple[Any, Any]:
    security = model.get("security") or {}
    return model.get("domain"), security.get("topology_hiding", True)


def changed_files(old_files: dict[str, Any] | None, new_files: dict[str, Any]) -> dict[str, str]:
    """``{path: added|removed|modified}`` from two manifests' ``files`` maps
    (`siporch.core.diff_trees`)."""
    return states(diff_trees(old_files, new_files))


def reload_actions(
    old_host_manifest: dict[str, Any] | None, new_host_manifest: dict[str, Any]
) -> list[str]:
    """The least set of reloads to go from one host release to another, in run order."""
    old_files = (old_host_manifest or {}).get("files", {})
    new_files = new_host_manifest["files"]
    actions: set[str] = set()
    fresh = old_host_manifest is None
    for path in changed_files(old_files, new_files):
        meta = new_files.get(path) or old_files.get(path)
        action = meta.get("reload", "none")
        if action and action != "none":
            actions.add(action)
    if fresh:
        # A host with no release yet: start each daemon once.
        daemons = {a.split(":", 1)[0] for a in actions}
        actions = {f"{d}:restart" for d in daemons}
    for daemon in ("kamailio", "asterisk", "rtpengine"):
        if f"{daemon}:restart" in actions:
            actions = {
                a for a in actions if not a.startswith(f"{daemon}:") or a.endswith(":restart")
            }

    def order(a: str) -> tuple[int, str]:
        base = a if a in ACTION_ORDER else a.rsplit(":", 1)[0]
        return (ACTION_ORDER.index(base) if base in ACTION_ORDER else len(ACTION_ORDER), a)

    return sorted(actions, key=order)


def file_diff(
    old: dict[str, bytes], new: dict[str, bytes], secret: set[str], label_old: str, label_new: str
) -> str:
    """A unified diff of two file trees; in files with secrets every secret value is
    shown as ``********`` (`siporch.core.unified_diff`)."""
    chunks: list[str] = []
    for path in sorted(set(old) | set(new)):
        a, b = old.get(path), new.get(path)
        if a == b:
            continue
        chunks.append(
            unified_diff(
                path, a, b, secret=path in secret, label_old=label_old, label_new=label_new
            )
        )
    return "".join(chunks)
