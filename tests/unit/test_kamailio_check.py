"""``kamailio -c`` accepts the rendered tree for both example edges and a generated
1,000-trunk model (Debian 12's Kamailio 5.6 on the controller), and refuses a broken one.
Kamailio 6 in the lab root and the edge running for real: tests/lab/test_kamailio_edge.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.genmodel import generate
from siporch.model.schema import Model
from siporch.render.kamailio import render
from tests.lab.edgekit import (
    KAMAILIO,
    check,
    example,
    needs_kamailio,
    write_tree,
)


@needs_kamailio
@pytest.mark.parametrize("host", ["edge-central", "edge-central-2", "edge-branch"])
def test_example_passes_kamailio_check(host: str, tmp_path: Path) -> None:
    cfg = write_tree(render(example(), host, root=str(tmp_path)), tmp_path)
    result = check([str(KAMAILIO), "-c", "-f", str(cfg)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "config file ok" in result.stdout + result.stderr


@needs_kamailio
def test_generated_1000_trunks_pass_kamailio_check(tmp_path: Path) -> None:
    model = Model.model_validate(generate(1000))
    files = render(model, "edge-central", root=str(tmp_path))
    assert files["kamailio/db/dispatcher"].count("\n") > 1800
    cfg = write_tree(files, tmp_path)
    result = check([str(KAMAILIO), "-c", "-f", str(cfg)])
    assert result.returncode == 0, result.stdout + result.stderr


@needs_kamailio
def test_broken_cfg_is_refused(tmp_path: Path) -> None:
    """The check above can fail: a config with an unknown function is rejected."""
    cfg = write_tree(render(example(), "edge-central", root=str(tmp_path)), tmp_path)
    cfg.write_text(cfg.read_text().replace("route(REQINIT);", "no_such_function();", 1))
    result = check([str(KAMAILIO), "-c", "-f", str(cfg)])
    assert result.returncode != 0
