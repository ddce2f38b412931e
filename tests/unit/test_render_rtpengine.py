"""The rtpengine renderer: option values from the model (golden files: test_golden.py)."""

from __future__ import annotations

import configparser
import functools
from pathlib import Path

import pytest

from siporch.model import load_model
from siporch.model.schema import Model
from siporch.render import reload_action, rtpengine
from siporch.render.rtpengine import RtpengineRenderError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory" / "example"
GOLDEN = REPO / "tests" / "golden" / "rtpengine"
EDGES = ["edge-central", "edge-branch"]


@functools.cache
def example() -> Model:
    return load_model(EXAMPLE).model


def parsed(model: Model, host: str) -> configparser.SectionProxy:
    text = rtpengine.render(model, host)["rtpengine/rtpengine.conf"]
    cp = configparser.ConfigParser(interpolation=None)
    cp.read_string(text)
    assert cp.sections() == ["rtpengine"]
    return cp["rtpengine"]


def test_options_from_the_model() -> None:
    conf = parsed(example(), "edge-branch")
    assert conf["interface"] == "198.51.100.10"
    assert conf["listen-ng"] == "127.0.0.1:2223"
    assert conf["port-min"] == "30000"
    assert conf["port-max"] == "39999"
    assert conf["table"] == "-1"
    assert not [k for k in conf if k.startswith("recording")]


def test_public_address_is_advertised() -> None:
    data = example().model_dump()
    data["hosts"]["edge-branch"]["public_address"] = "203.0.113.99"
    data["hosts"]["edge-branch"]["rtpengine"] = {
        "ng_port": 22222,
        "port_min": 40000,
        "port_max": 40100,
    }
    conf = parsed(Model.model_validate(data), "edge-branch")
    assert conf["interface"] == "198.51.100.10!203.0.113.99"
    assert conf["listen-ng"] == "127.0.0.1:22222"
    assert (conf["port-min"], conf["port-max"]) == ("40000", "40100")


def test_not_an_edge() -> None:
    with pytest.raises(RtpengineRenderError, match="not an edge host"):
        rtpengine.render(example(), "pbx-central")


def test_reload_and_no_secrets() -> None:
    assert reload_action("edge", "rtpengine/rtpengine.conf") == "rtpengine:restart"
    assert rtpengine.SECRET_FILES == []


def test_deterministic() -> None:
    for host in EDGES:
        assert rtpengine.render(example(), host) == rtpengine.render(
            load_model(EXAMPLE).model, host
        )
