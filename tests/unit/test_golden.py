"""Golden files: every renderer's output for every host of the example inventory that it
renders, file for file, against ``tests/golden/<renderer>/<host>/`` (the paths the
renderer gives, without its leading ``<renderer>/``).

``SIPORCH_UPDATE_GOLDEN=1 pytest tests/unit/test_golden.py`` rewrites them.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import os
from pathlib import Path

import pytest

from siporch.model import load_model
from siporch.model.schema import Model
from siporch.render import ROLE_RENDERERS

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory" / "example"
GOLDEN = REPO / "tests" / "golden"
UPDATE = os.environ.get("SIPORCH_UPDATE_GOLDEN") == "1"


@functools.cache
def example() -> Model:
    """The example's model, numbered as a first render numbers it (the controller's own
    releases of the example, which its trunks' ids are kept from, are not read)."""
    import tempfile

    saved = os.environ.get("SIPORCH_STATE")
    with tempfile.TemporaryDirectory() as state:
        os.environ["SIPORCH_STATE"] = state
        try:
            return load_model(EXAMPLE).model
        finally:
            if saved is None:
                os.environ.pop("SIPORCH_STATE", None)
            else:
                os.environ["SIPORCH_STATE"] = saved


def _cases() -> list[tuple[str, str]]:
    hosts = example().hosts
    return [
        (renderer, host) for host in sorted(hosts) for renderer in ROLE_RENDERERS[hosts[host].role]
    ]


@pytest.mark.parametrize(("renderer", "host"), _cases(), ids=lambda v: str(v))
def test_golden(renderer: str, host: str) -> None:
    module = importlib.import_module(f"siporch.render.{renderer}")
    rendered: dict[str, str] = module.render(example(), host)
    prefix = f"{renderer}/"
    assert all(rel.startswith(prefix) for rel in rendered), sorted(rendered)
    files = {rel[len(prefix) :]: text for rel, text in rendered.items()}
    root = GOLDEN / renderer / host
    if UPDATE:
        for old in sorted(root.rglob("*"), reverse=True):
            if old.is_file():
                old.unlink()
        for rel, text in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(text.encode("utf-8"))
    on_disk = {
        str(p.relative_to(root)): p.read_bytes().decode("utf-8")
        for p in root.rglob("*")
        if p.is_file()
    }
    assert sorted(on_disk) == sorted(files), (
        f"{root.relative_to(REPO)}: the rendered file list differs from the golden one "
        "(SIPORCH_UPDATE_GOLDEN=1 rewrites the golden files)"
    )
    diffs = [
        "".join(
            difflib.unified_diff(
                on_disk[rel].splitlines(keepends=True),
                text.splitlines(keepends=True),
                f"golden/{renderer}/{host}/{rel}",
                f"rendered/{renderer}/{host}/{rel}",
            )
        )
        for rel, text in files.items()
        if text != on_disk[rel]
    ]
    assert not diffs, "\n".join(diffs) + "\n(SIPORCH_UPDATE_GOLDEN=1 rewrites the golden files)"
