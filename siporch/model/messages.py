"""Model problems in the user's words: one line per problem, paths as the YAML reads.

Two jobs, both on the model as read from YAML (before and after pydantic):

* :func:`refused_characters` finds control characters and line breaks in any string of the
  model (keys and values, secrets included). No field needs one, and every rendered config
  (Kamailio, Asterisk, rtpengine) is line-based: a newline in a free-text field would let
  whoever edits the model write arbitrary configuration (an Asterisk section, a route).
* :func:`describe_errors` turns pydantic's errors into plain messages: validator internals
  and union member tags are left out of the path, the errors a union produces (one per
  member) collapse into one message per field, and a ``ValueError`` raised by a validator
  passes through as written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

Loc = tuple[Any, ...]

# C0 controls (tab and newline included), DEL, C1 controls (NEL included), and the Unicode
# line and paragraph separators: everything a parser or an editor may treat as a line break.
_REFUSED = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")

_NAMES = {
    "\n": "a line break (\\n)",
    "\r": "a carriage return (\\r)",
    "\t": "a tab (\\t)",
    "\x00": "a NUL byte (\\0)",
    "\x85": "a line break (U+0085)",
    "\u2028": "a line separator (U+2028)",
    "\u2029": "a paragraph separator (U+2029)",
}


def refused_character(text: str) -> str | None:
    """Why ``text`` cannot go into a config (it holds a control character), or None.

    The message never repeats the text: it may be a secret.
    """
    m = _REFUSED.search(text)
    if m is None:
        return None
    ch = m.group()
    name = _NAMES.get(ch) or f"control character U+{ord(ch):04X}"
    return (
        f"contains {name} at character {m.start() + 1}: control characters and line "
        "breaks are refused in every field (they could inject configuration)"
    )


# In JSON text (``json.dumps(..., ensure_ascii=False)``) a C0 control character appears as
# an escape (\n, \t, \u0001...); the others stay as they are and are not printable.
_JSON_ESCAPE = re.compile(r"\\[nrtbfu]")


def json_may_refuse(text: str) -> bool:
    """False when the JSON dump ``text`` of a value surely holds no refused character (a
    fast check in C; when True, :func:`refused_characters` gives the exact answer)."""
    return not text.isprintable() or _JSON_ESCAPE.search(text) is not None


def refused_characters(value: Any, loc: Loc = ()) -> list[tuple[Loc, str]]:
    """Every string (key or value) under ``value`` holding a refused character."""
    out: list[tuple[Loc, str]] = []
    _walk(value, loc, out)
    return out


def _walk(value: Any, loc: Loc, out: list[tuple[Loc, str]]) -> None:
    if isinstance(value, str):
        why = refused_character(value)
        if why is not None:
            out.append((loc, why))
    elif isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str):
                why = refused_character(k)
                if why is not None:
                    out.append(((*loc, k), "the key " + why))
                    continue
            _walk(v, (*loc, k), out)
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _walk(v, (*loc, i), out)


# ---------------------------------------------------------------------------------------
# pydantic errors


def yaml_loc(loc: Iterable[Any], data: Any) -> tuple[Loc, bool]:
    """Pydantic's ``loc`` as a path through the data the user wrote, and whether a part was
    dropped (a union member or discriminator tag, a validator name, ``[key]``).

    A part is kept when the data has it (a key of the mapping, an index of the list); the
    last part is kept when the data is a mapping (a missing field's name); everything else
    is pydantic's bookkeeping.
    """
    parts = list(loc)
    out: list[Any] = []
    dropped = False
    node = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            out.append(part)
            node = node[part]
        elif isinstance(node, dict) and last and part != "[key]":
            out.append(part)
            node = None
        else:
            dropped = True
    return tuple(out), dropped


_PATTERN_HELP = {
    r"^[a-z0-9][a-z0-9-]{0,62}$": "names are lower-case letters, digits and '-' (at most 63)",
    r"^\+[1-9]\d{1,14}$": "must be an E.164 number with its '+', like +12025550100",
    r"^(5xx|6xx|timeout|unreachable|capacity|[3-6]\d\d)$": (
        "must be 5xx, 6xx, timeout, unreachable, capacity or a response code like 486"
    ),
    r"^[1-9]\d{0,2}$": "must be a country calling code like '1' or '44'",
    r"^[A-Za-z0-9_-]{1,79}$": "must be letters, digits, '_' and '-' (at most 79)",
}

_IP_KINDS = {
    "ip_v4_address": "address",
    "ip_v6_address": "address",
    "ip_any_address": "address",
    "ip_v4_network": "network",
    "ip_v6_network": "network",
    "ip_any_network": "network",
    "ip_v4_interface": "interface",
    "ip_v6_interface": "interface",
    "ip_any_interface": "interface",
}


def _shown(value: Any) -> str:
    """A short rendering of the input for a message (never used for secrets)."""
    if value is None:
        return "empty (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind_of(value: Any) -> str:
    if value is None:
        return "empty (null)"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _items(n: Any) -> str:
    return f"{n} item" if n == 1 else f"{n} items"


def describe(err: dict[str, Any]) -> str:
    """One pydantic error as a plain sentence (no path)."""
    kind = str(err["type"])
    ctx: dict[str, Any] = err.get("ctx") or {}
    value = err.get("input")
    msg = str(err.get("msg", ""))
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field (check the spelling; see docs/model.md)"
    if kind == "literal_error":
        return f"must be {ctx.get('expected', '?')}, not {_shown(value)}"
    if kind in ("int_parsing", "int_from_float", "int_type", "finite_number"):
        return f"must be a whole number, not {_shown(value)}"
    if kind in ("int_parsing_size",):
        return f"the number {_shown(value)} is too large"
    if kind in ("float_parsing", "float_type"):
        return f"must be a number, not {_shown(value)}"
    if kind in ("bool_parsing", "bool_type"):
        return f"must be true or false, not {_shown(value)}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}, not {_shown(value)}"
    if kind == "greater_than":
        return f"must be more than {ctx.get('gt')}, not {_shown(value)}"
    if kind == "less_than_equal":
        return f"must be at most {ctx.get('le')}, not {_shown(value)}"
    if kind == "less_than":
        return f"must be less than {ctx.get('lt')}, not {_shown(value)}"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        return _PATTERN_HELP.get(pattern, f"must match the pattern {pattern}")
    if kind == "string_type":
        if value is None:
            return "must be a string, not empty (null)"
        return f"must be a string (put it in quotes), not {_kind_of(value)}"
    if kind == "string_too_short":
        n = ctx.get("min_length", 1)
        return "must not be empty" if n == 1 else f"must have at least {n} characters"
    if kind == "string_too_long":
        return f"must have at most {ctx.get('max_length')} characters"
    if kind == "too_short":
        n = ctx.get("min_length", 1)
        return "must not be empty" if n == 1 else f"must have at least {_items(n)}"
    if kind == "too_long":
        return f"must have at most {_items(ctx.get('max_length'))}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a mapping (key: value), not {_kind_of(value)}"
    if kind in ("list_type", "tuple_type", "set_type"):
        return f"must be a list, not {_kind_of(value)}"
    if kind in _IP_KINDS:
        what = _IP_KINDS[kind]
        if what == "network":
            return f"{_shown(value)} is not an IP network (like 192.0.2.0/24, host bits zero)"
        return f"{_shown(value)} is not an IP {what}"
    if kind == "union_tag_invalid":
        return f"type {ctx.get('tag')!r} is not one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return f"a {ctx.get('discriminator', 'type')} is required"
    if kind in ("value_error", "assertion_error"):
        error = ctx.get("error")
        text = str(error) if error is not None else msg
        for prefix in ("Value error, ", "Assertion failed, "):
            text = text.removeprefix(prefix)
        return text
    return msg[:1].lower() + msg[1:]


def _collapse(errs: list[dict[str, Any]]) -> list[str]:
    """The messages of the errors a union produced for one field: one message."""
    custom = [e for e in errs if e["type"] in ("value_error", "assertion_error")]
    if custom:
        return [describe(custom[0])]
    ip = [e for e in errs if e["type"] in _IP_KINDS]
    if ip:
        return [describe(ip[0])]
    # Prefer what the value is wrong about over "must be a <type>" from the members
    # whose type it is not.
    specific = [e for e in errs if not str(e["type"]).endswith("_type")]
    return [describe((specific or errs)[0])]


def describe_errors(errors: list[dict[str, Any]], data: Any) -> list[tuple[Loc, str]]:
    """Pydantic's errors for ``data`` as (YAML path, message), one per problem.

    Errors from union members (their location carries a member tag) that land on the same
    field collapse into one message; identical messages for a field are given once.
    """
    order: list[Loc] = []
    plain: dict[Loc, list[dict[str, Any]]] = {}
    union: dict[Loc, list[dict[str, Any]]] = {}
    for err in errors:
        loc, dropped = yaml_loc(err["loc"], data)
        if loc not in plain and loc not in union:
            order.append(loc)
        is_key = bool(err["loc"]) and err["loc"][-1] == "[key]"
        (union if dropped and not is_key else plain).setdefault(loc, []).append(err)
    out: list[tuple[Loc, str]] = []
    for loc in order:
        messages = [describe(err) for err in plain.get(loc, [])]
        if loc in union:
            messages += _collapse(union[loc])
        seen: set[str] = set()
        for text in messages:
            if text not in seen:
                seen.add(text)
                out.append((loc, text))
    return out


def is_printable(text: str) -> bool:
    """True when ``text`` holds no refused character (for the renderer's last check)."""
    return _REFUSED.search(text) is None


__all__ = [
    "describe",
    "describe_errors",
    "is_printable",
    "refused_character",
    "refused_characters",
    "yaml_loc",
]
