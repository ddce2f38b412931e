"""Per-item reading of a plain YAML file: each entry of a large mapping (a trunk, a host, a
site...) parsed on its own and kept by the hash of its text, so that a file in which one
entry changed is read by parsing that entry only.

Only for the shape the model files have, checked line by line before anything is reused:
block style, top-level keys, second-level keys at two spaces whose value is a mapping of
entries at four spaces, each entry's key alone on its line (``    trunk-00001:``) and its
body indented deeper. Anything else (flow collections or quoted scalars opening on the
outer lines, block scalars there, list items at four spaces, keys that YAML 1.1 would not
read as strings, documents, comments in odd places...) reads the whole file as before.

The result is the same data as parsing the whole file: each entry's text is parsed as a
document of its own (the same YAML 1.1 resolution of every scalar: an entry's values
depend only on its own lines in this shape), and the rest of the file (the "skeleton":
every entry's body blanked, so line numbers do not move) is parsed with the entries'
keys in place. An entry that may hold a template is parsed again each time (its strings
carry their line). ``tests/unit/test_model_chunks.py`` compares both ways on the example,
generated models and edited copies.
"""

from __future__ import annotations

import hashlib
import pickle
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# an outer line (indent 0 or 2): a plain key, then nothing, or a value that cannot run
# onto the next lines (not a flow collection, quoted scalar or block scalar opening)
_OUTER = re.compile(r"( {0,2})([A-Za-z_][A-Za-z0-9_.-]*):(?:[ \t]+([^\s\[{\"'|>&*!#%@`][^#]*?))?[ \t]*$")
# an entry's key line: a plain key alone at four spaces
_ENTRY = re.compile(r"    ([A-Za-z0-9_][A-Za-z0-9_.-]*):[ \t]*$")
# YAML 1.1 words a plain key would not read as a string
_NOT_STR = {"y", "yes", "n", "no", "true", "false", "on", "off", "null"}
_MARKS = ("{{", "{%", "{#")


@dataclass
class Split:
    """A file cut into its skeleton and entries."""

    skeleton: str
    # (outer key, collection key, entry key (None: a block of list items), first line
    # (0-based), entry text)
    entries: list[tuple[str, str, str | None, int, str]] = field(default_factory=list)


def _plain_key(key: str) -> bool:
    if key.lower() in _NOT_STR:
        return False
    # a key that YAML 1.1 could read as a number, date or time: not a plain string
    return not re.fullmatch(r"[-+.0-9_:]+[eE]?[-+.0-9_:]*|\d{4}-\d\d?-\d\d?.*", key)


#: fewer entries than this in a file: read it whole (not worth the bookkeeping)
MINIMUM = 64
#: list items per entry in a list of entries (a DID range is a few lines)
BLOCK = 64

_OPEN = {"[": "]", "{": "}", '"': '"', "'": "'"}


def _closed(line: str) -> bool:
    """A line outside the entries does not open a flow collection or a quoted scalar that
    goes on to the next lines (whose text the split would not follow)."""
    body = line.strip()
    if body.startswith("- "):
        body = body[2:].lstrip()
    _key, sep, value = body.partition(": ")
    value = (value if sep else body).strip()
    if value[:1] in _OPEN:
        return value.endswith(_OPEN[value[0]]) and len(value) > 1
    return True


_SHALLOW = re.compile(r"^( {0,4})(\S[^\n]*)", re.MULTILINE)
_LISTED = re.compile(r"^( {0,2})(\S[^\n]*)", re.MULTILINE)
_TAB_INDENT = re.compile(r"^ *\t", re.MULTILINE)


def split(text: str, minimum: int | None = None) -> Split | None:
    """The file cut into entries, or None when it does not have the shape (or has fewer
    than ``minimum`` entries, default ``MINIMUM``). Only the lines indented four spaces
    or less are looked at one by one; the skeleton's deeper lines are checked too."""
    if _TAB_INDENT.search(text):
        return None
    out = Split("")
    pieces: list[str] = []  # the skeleton
    outer: str | None = None
    collection: str | None = None  # an indent-2 key whose value is a block of entries
    current: tuple[int, int, str | None] | None = None  # (offset, line, key) of an entry
    listing: str | None = None  # an indent-2 key whose value is a list of entries
    items = 0  # in the current block of list items
    line_no = 0  # of the last shallow line seen
    last = 0  # offset up to which text went to pieces or to an entry
    last_line = 0

    def close(offset: int) -> None:
        nonlocal current, last
        if current is not None:
            assert outer is not None and collection is not None
            start, first, key = current
            body = text[start:offset]
            out.entries.append((outer, collection, key, first, body))
            if key is None:  # a block of list items: one null item in the skeleton
                pieces.append("  - ~" + "\n" * body.count("\n"))
            else:  # the entry's key line, then as many blank lines as its body had
                head = text.index("\n", start) + 1 if "\n" in body else offset
                pieces.append(text[start:head])
                pieces.append("\n" * (body.count("\n") - text.count("\n", start, head)))
            last = offset
            current = None

    at = 0
    while True:
        # in a list of entries only the lines at two spaces or less matter: skip the rest
        m = (_SHALLOW if listing is None else _LISTED).search(text, at)
        if m is None:
            break
        at = m.end()
        pos = m.start()
        line_no += text.count("\n", last_line, pos)
        last_line = pos
        ind, content = len(m.group(1)), m.group(2)
        if listing is not None:
            if ind == 2 and content.startswith("#"):
                continue  # in an item's body
            if ind == 2 and content.startswith("- "):
                if not _closed(m.group(0)):
                    return None
                if current is not None and items < BLOCK:
                    items += 1
                    continue
                close(pos)
                if pos > last:
                    pieces.append(text[last:pos])
                    last = pos
                current, items = (pos, line_no, None), 1
                continue
            listing = None
        if current is None and pos > last:
            # skeleton lines since the last shallow one: deeper lines, checked when they
            # are not inside an entry
            gap = text[last:pos]
            if collection is not None and gap.strip():
                between = gap.split("\n", 1)[1] if "\n" in gap else ""
                if between.strip():
                    return None  # deeper lines outside an entry inside a collection
            for deeper in gap.split("\n")[1:]:
                if deeper.strip() and not deeper.lstrip().startswith("#") and not _closed(deeper):
                    return None
            pieces.append(gap)
            last = pos
        if ind == 4:
            if collection is None:
                if not _closed(content):
                    return None
                continue  # a line of the skeleton under an ordinary key
            if content.startswith("#"):
                continue
            if current is not None and content.startswith("- "):
                continue  # the entry's value: a list at the key's indent
            e = _ENTRY.fullmatch(m.group(0))
            if e is None or not _plain_key(e.group(1)):
                return None
            close(pos)
            if pos > last:
                pieces.append(text[last:pos])
                last = pos
            current = (pos, line_no, e.group(1))
            continue
        close(pos)
        if pos > last:
            pieces.append(text[last:pos])
            last = pos
        if content.startswith("#"):
            if ind:
                return None
            continue
        line = m.group(0)
        if ind == 2 and collection is None and outer is not None and content.startswith("- "):
            if not _closed(line):
                return None
            continue  # a list item of an ordinary key
        o = _OUTER.fullmatch(line)
        if o is None or ind not in (0, 2) or not _plain_key(o.group(2)):
            return None
        key, value = o.group(2), o.group(3)
        if ind == 0:
            outer, collection = key, None
            continue
        if outer is None:
            return None
        collection = None
        if value is None:
            # a collection when its next line is an entry's key line or a list item
            nxt = _SHALLOW.search(text, m.end())
            if nxt is not None and _ENTRY.fullmatch(nxt.group(0)):
                collection = key
            elif nxt is not None and nxt.group(0).startswith("  - "):
                collection = listing = key
            if collection is not None and text[m.end() : nxt.start()].strip():  # type: ignore[union-attr]
                return None
    close(len(text))
    if last < len(text):
        tail = text[last:]
        for deeper in tail.split("\n")[1:]:
            if deeper.strip() and not deeper.lstrip().startswith("#") and not _closed(deeper):
                return None
        pieces.append(tail)
    if len(out.entries) < (MINIMUM if minimum is None else minimum):
        return None
    out.skeleton = "".join(pieces)
    return out


def entry_key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


_ESCAPED = re.compile(r"\\[xuU]")


def may_template(text: str) -> bool:
    """Whether a string of this text may be a template: a mark of Jinja's, or an escape
    of a double-quoted scalar that could spell one."""
    return ("{" in text and any(m in text for m in _MARKS)) or (
        "\\" in text and _ESCAPED.search(text) is not None
    )


class Store:
    """Parsed entries by the hash of their text, for one file: read once, written back
    with the entries of the file's current text only (pruned by use)."""

    def __init__(self, load: Callable[[], bytes | None], save: Callable[[bytes], None]) -> None:
        self._save = save
        self.known: dict[str, Any] = {}
        try:
            data = load()
            value = pickle.loads(data) if data else {}
            if isinstance(value, dict):
                self.known = value
        except Exception:
            self.known = {}
        self.used: dict[str, Any] = {}
        self.changed = False

    def get(self, key: str) -> tuple[bool, Any]:
        if key in self.known:
            value = self.known[key]
            self.used[key] = value
            return True, value
        return False, None

    def put(self, key: str, value: Any) -> None:
        self.used[key] = value
        self.changed = True

    def save(self) -> None:
        if self.changed or len(self.used) != len(self.known):
            self._save(pickle.dumps(self.used, protocol=pickle.HIGHEST_PROTOCOL))


def read(
    text: str,
    parse: Callable[[str, int], tuple[Any, list[tuple[int, str]]]],
    store: Store,
) -> tuple[Any, list[tuple[int, str]]] | None:
    """The file's data and duplicate keys (line, key), reading unchanged entries from
    ``store``; None when the file is not of the shape (read it whole). ``parse(text,
    first_line)`` parses a document whose first line is ``first_line`` of the file, with
    its duplicate keys at their lines in the file. An entry's cached value is shared, not
    copied: the caller must not change what it returns."""
    cut = split(text)
    if cut is None:
        return None
    data, duplicates = parse(cut.skeleton, 0)
    if not isinstance(data, dict):
        return None
    lists: dict[tuple[str, str], list[Any]] = {}
    for outer, collection, key, first, body in cut.entries:
        try:
            parent = data[outer][collection]
        except (KeyError, TypeError):
            return None
        if key is None:
            if not isinstance(parent, list):
                return None
        elif not isinstance(parent, dict) or key not in parent or parent[key] is not None:
            return None  # the skeleton does not say what the split expects
        if may_template(body):
            value, dups = parse(body, first)
            duplicates.extend(dups)
        else:
            digest = entry_key(body)
            hit, cached = store.get(digest)
            if hit:
                value, relative = cached
            else:
                value, dups = parse(body, first)
                relative = [(line - first, k) for line, k in dups]
                store.put(digest, (value, relative))
            duplicates.extend((first + line, k) for line, k in relative)
        if key is None:
            if not isinstance(value, list):
                return None
            lists.setdefault((outer, collection), []).extend(value)
            continue
        if not isinstance(value, dict) or list(value) != [key]:
            return None
        parent[key] = value[key]
    blocks = Counter((o, c) for o, c, k, _, _ in cut.entries if k is None)
    for (outer, collection), values in lists.items():
        parent = data[outer][collection]
        if len(parent) != blocks[outer, collection] or any(v is not None for v in parent):
            return None
        data[outer][collection] = values
    return data, duplicates


_ANCHORS = re.compile(r"[&*!]\S")
_LINE_STARTS = re.compile(r"^(?:\t|---[ \t]*\S|\.\.\.|%)", re.MULTILINE)


def not_plain(text: str) -> bool:
    """Whether the text has what a walk over its entries cannot follow (merge keys,
    anchors, aliases, tags, documents and directives, tabs in indentation): the loader's
    ``_UNSAFE.search(text)``, found in a fraction of the time on a large file (the
    regular expression tries its alternatives at every character: over a second at
    10,000 trunks): each kind looked for only when its characters occur."""
    if "<<" in text:
        return True
    if ("&" in text or "*" in text or "!" in text) and any(
        m.start() == 0 or text[m.start() - 1].isspace() or text[m.start() - 1] in ",[{"
        for m in _ANCHORS.finditer(text)
    ):
        return True
    return ("\t" in text or "---" in text or "..." in text or "%" in text) and bool(
        _LINE_STARTS.search(text)
    )
