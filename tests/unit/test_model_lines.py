"""A model with problems is read once: the fast reader's problems are placed at the line
ansible-core's own reader gives (siporch.model.loader._TextLines), or, when the text walk
is not sure, the model is read again the slow way. Either way the messages are the slow
reader's, byte for byte."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.genmodel import write_inventory
from siporch.errors import ModelError
from siporch.model import load_model, loader

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory" / "example"

MODEL = Path("group_vars") / "all" / "siporch.yml"


def messages(inv: Path) -> list[str]:
    try:
        loaded = load_model(inv)
    except ModelError as exc:
        return [str(p) for p in exc.problems]
    return [str(w) for w in loaded.warnings]


def read_both(
    inv: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[str], list[str], list[bool]]:
    """Messages with the fast reader (and which readings were fast), then the slow reader's."""
    calls: list[bool] = []
    real = loader._read_model

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(bool(kwargs.get("fast", False)))
        return real(*args, **kwargs)

    monkeypatch.setattr(loader, "_read_model", counting)
    fast = messages(inv)
    monkeypatch.setattr(loader, "FAST_YAML", False)
    slow = messages(inv)
    monkeypatch.setattr(loader, "FAST_YAML", True)
    return fast, slow, calls[: len(calls) - 1]


def edit(inv: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Change the generated model (block style, as yaml.safe_dump writes it)."""
    path = inv / MODEL
    data = yaml.safe_load(path.read_text())
    change(data["siporch"])
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _peer_port(m: dict[str, Any]) -> None:
    m["trunks"]["trunk-00003"]["peers"][1]["port"] = 0


def _bypass(m: dict[str, Any]) -> None:
    m["trunks"]["trunk-00005"]["media"].pop("allow_internal_addresses")


def _missing_site(m: dict[str, Any]) -> None:
    del m["trunks"]["trunk-00002"]["site"]


def _unknown_key(m: dict[str, Any]) -> None:
    m["trunks"]["trunk-00004"]["colour"] = "red"


def _warning(m: dict[str, Any]) -> None:
    m["trunks"]["trunk-00004"]["media"]["allow_internal_addresses"] = True  # an anchor trunk


def _missing_top(m: dict[str, Any]) -> None:
    del m["domain"]


def _translation(m: dict[str, Any]) -> None:
    m["trunks"]["trunk-00006"]["translation"]["outbound"][0]["match"] = "(["


def _several(m: dict[str, Any]) -> None:
    _peer_port(m)
    _bypass(m)
    _unknown_key(m)


@pytest.mark.parametrize(
    "change",
    [_peer_port, _bypass, _missing_site, _unknown_key, _warning, _missing_top, _translation, _several],
)
def test_generated_model_problems_read_once(
    change: Callable[[dict[str, Any]], None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inv = tmp_path / "inv"
    write_inventory(inv, 12)
    edit(inv, change)
    fast, slow, calls = read_both(inv, monkeypatch)
    assert fast and fast == slow
    assert all(":" in m.split(" ", 2)[1] for m in fast if "siporch.yml" in m), fast
    assert calls == [True], "read again the slow way"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("max_channels: 30", "max_channels: 0"),  # a key
        ("media: {mode: anchor, srtp: off, symmetric_rtp: true}", "media: {mode: nope}"),  # flow
        ("kind: itsp\n", "kind: itsp\n      colour: red\n"),  # an unknown key
        ("domain: example.com\n", ""),  # a missing top-level key
        ("address: 203.0.113.10, port: 5060", "address: 203.0.113.10, port: 0"),  # a flow list
    ],
)
def test_example_problems_match_the_slow_reader(
    old: str, new: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inv = tmp_path / "inv"
    shutil.copytree(EXAMPLE, inv)
    shutil.copy(EXAMPLE.parent / ".vault-pass", tmp_path / ".vault-pass")
    path = inv / MODEL
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    fast, slow, _ = read_both(inv, monkeypatch)
    assert fast and fast == slow
