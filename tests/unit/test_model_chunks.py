"""Reading a plain YAML file entry by entry (``siporch.model.chunks``) gives the data of
reading it whole, with the same duplicate keys at the same lines; a file whose shape the
split does not follow is read whole; the loader's quick check for anchors, tags and merge
keys is its regular expression's."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.genmodel import write_inventory
from siporch import cache
from siporch.errors import ModelError
from siporch.model import chunks, loader
from siporch.model.loader import _UNSAFE, _unsafe
from tests.unit.test_model import EXAMPLE
from tests.unit.test_model_ansible import TRICKY_PLAIN


def whole(text: str) -> Any:
    return yaml.load(text, Loader=yaml.CSafeLoader)


def parse(text: str, first: int) -> tuple[Any, list[tuple[int, str]]]:
    return whole(text), []


def chunked(text: str, store: chunks.Store | None = None) -> Any:
    store = store or chunks.Store(lambda: None, lambda data: None)
    read = chunks.read(text, parse, store)
    assert read is not None, "not split"
    return read[0]


def memory_store() -> tuple[chunks.Store, dict[str, bytes]]:
    saved: dict[str, bytes] = {}
    return chunks.Store(lambda: saved.get("x"), lambda data: saved.update(x=data)), saved


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> str:
    inv = write_inventory(tmp_path_factory.mktemp("gen") / "inv", 150)
    return (inv / "group_vars" / "all" / "siporch.yml").read_text()


def test_entries_read_alone_are_the_whole_file(generated: str) -> None:
    cut = chunks.split(generated)
    assert cut is not None
    kinds = {(o, c) for o, c, *_ in cut.entries}
    assert {("siporch", "trunks"), ("siporch", "inbound"), ("siporch", "hosts")} <= kinds
    assert cut.skeleton.count("\n") == generated.count("\n")  # lines do not move
    assert chunked(generated) == whole(generated)


def test_a_changed_entry_is_parsed_the_rest_comes_from_the_store(generated: str) -> None:
    store, saved = memory_store()
    assert chunked(generated, store) == whole(generated)
    store.save()
    first = saved["x"]
    edited = generated.replace("max_channels: 31\n", "max_channels: 32\n", 1)
    edited = edited.replace("start: '+12000000100'", "start: '+12000000150'", 1)
    calls: list[int] = []

    def counted(text: str, line: int) -> tuple[Any, list[tuple[int, str]]]:
        calls.append(line)
        return parse(text, line)

    again, _ = memory_store()
    again = chunks.Store(lambda: first, lambda data: saved.update(x=data))
    read = chunks.read(edited, counted, again)
    assert read is not None and read[0] == whole(edited)
    assert len(calls) == 3  # the skeleton, one trunk, one block of DID ranges
    again.save()
    assert saved["x"] != first


@pytest.mark.parametrize(
    "text",
    [
        TRICKY_PLAIN,
        (EXAMPLE / "group_vars" / "all" / "siporch.yml").read_text(),
        # keys that are not strings, values on the outer lines, comments, lists at four
        "top:\n  c:\n    yes: 1\n    b: 2\n  d: [1, 2]\n# note\nx: 1\n",
        "top:\n  c:\n    a:\n    - 1\n    - 2\n    b:\n      z: 0755\n  d: 1\n",
        "top:\n  l:\n  - a: 1\n    b: on\n  - 2:30\n  - [x, y]\n  m: 2\n",
        "top:\n  c:\n    '0x1': 1\n    a: 2\n",
        "top:\n  c:\n    a: |\n      text\n    b: >\n      more\n",
        "top:\n  c: {\n    a: 1,\n    b: 2 }\n",
        'top:\n  c: "multi\n    a:\n      line"\n',
        "top:\n  c:\n    a:\n      x: 1\n   b: 2\n",
    ],
)
def test_any_shape_reads_as_the_whole_file(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chunks, "MINIMUM", 1)
    try:
        expected = whole(text)
    except yaml.YAMLError:
        expected = "error"
    try:
        read = chunks.read(text, parse, chunks.Store(lambda: None, lambda data: None))
    except yaml.YAMLError:
        read = ("error", [])
    if read is not None:
        assert read[0] == expected


def test_duplicate_keys_keep_their_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the loader: a key twice in an entry and an entry twice, at their lines."""
    monkeypatch.setattr(chunks, "MINIMUM", 1)
    inv = tmp_path / "inv"
    shutil.copytree(EXAMPLE, inv)
    shutil.copy(EXAMPLE.parent / ".vault-pass", tmp_path / ".vault-pass")
    path = inv / "group_vars" / "all" / "siporch.yml"
    lines = path.read_text().split("\n")
    at = lines.index("  trunks:") + 1
    key = lines[at].strip()
    lines.insert(at + 1, "      description: twice")
    lines.insert(at + 1, "      description: once")
    path.write_text("\n".join(lines))
    messages = []
    for store in (None, functools_partial_store(tmp_path)):
        monkeypatch.setattr(loader, "CHUNKS", store)
        with pytest.raises(ModelError) as err:
            loader.load_model(inv)
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    assert list((tmp_path / "chunks").glob("*.pickle"))  # read entry by entry
    assert f"siporch.yml:{at + 3}" in messages[1] and "description" in messages[1]
    assert f"{key}" in lines[at]


def functools_partial_store(tmp_path: Path) -> Any:
    import functools

    return functools.partial(cache._chunk_store, tmp_path / "chunks")


def test_cached_loads_after_an_edit_are_uncached_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inv = write_inventory(tmp_path / "inv", 120)
    path = inv / "group_vars" / "all" / "siporch.yml"
    first = cache.load_model(inv)
    stored = inv.parent / "build" / "cache" / "chunks"
    assert list(stored.glob("*.pickle"))
    for p in (stored.parent, stored, *stored.iterdir()):  # decrypted values: private
        assert p.stat().st_mode & 0o077 == 0, p
    path.write_text(path.read_text().replace("max_channels: 31\n", "max_channels: 77\n", 1))
    second = cache.load_model(inv)
    assert second.model_hash != first.model_hash
    monkeypatch.setenv(cache.CACHE_ENV, "0")
    uncached = loader.load_model(inv)
    assert second.model == uncached.model
    assert second.model_hash == uncached.model_hash


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            ["<<", "&a", "*b", "!x", " ", "\n", "\t", "---", "--- x", "...", "%", "a", ",",
             "[", "{", "&", "x*y", "\r", "\x85", "\u2028", "\xa0"]
        ),
        max_size=10,
    )
)
def test_quick_unsafe_check_is_the_regular_expression(parts: list[str]) -> None:
    text = "".join(parts)
    assert _unsafe(text) == bool(_UNSAFE.search(text))


def test_cached_model_is_validated_again_from_its_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache keeps the data a model was validated from; a later process validates it
    again (the same model, checked by its hash), or reads the inventory again when the
    data no longer gives that model."""
    inv = write_inventory(tmp_path / "inv", 20)
    first = cache.load_model(inv)
    assert first.data is None  # not kept once stored
    again = cache.load_model(inv)
    assert isinstance(again, cache._cached_loaded_class()) or again._blob[:1] == b"D"
    assert again.model == first.model
    stale = cache.load_model(inv)
    monkeypatch.setattr(loader, "model_hash", lambda model: "not the hash")
    assert stale.model == first.model  # read again from the inventory


def test_entries_that_may_hold_a_template_are_parsed_each_time() -> None:
    assert chunks.may_template("    a:\n      b: '{{ x }}'\n")
    assert chunks.may_template('    a:\n      b: "\\x7b\\x7b x }}"\n')  # escaped marks
    assert not chunks.may_template("    a:\n      b: '{x}'\n")
