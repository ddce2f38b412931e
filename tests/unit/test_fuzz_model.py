"""Fuzzing the model: mutated and random models never raise anything but ModelError, and
every problem names a path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siporch.errors import ModelError, SiporchError
from siporch.model.loader import validate_data
from siporch.numbers import inbound, outbound
from siporch.render import render_release

EXAMPLE = Path(__file__).resolve().parents[2] / "inventory" / "example"
BASE = yaml.safe_load((EXAMPLE / "group_vars/all/siporch.yml").read_text())["siporch"]
BASE["hosts"]["pbx-central"]["ami"]["secret"] = "s"
BASE["trunks"]["itsp-b"]["auth"]["password"] = "p"

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(
        [
            "",
            "off",
            "tls",
            "+12025550100",
            "192.0.2.1",
            "::1",
            "10.0.0.0/8",
            "(",
            "^\\+1(\\d+)$",
            "\\9",
            "{{ x }}",
            "itsp-a",
            "central",
            "pbx-central",
        ]
    ),
)
values = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.text(max_size=8), children, max_size=3),
    ),
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


ALL_PATHS = [p for p in _paths(BASE) if p]


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(ALL_PATHS))
        parent: Any = data
        try:
            for part in path[:-1]:
                parent = parent[part]
            action = draw(st.sampled_from(["replace", "delete", "add"]))
            key = path[-1]
            if action == "replace":
                parent[key] = draw(values)
            elif action == "delete":
                del parent[key]
            elif isinstance(parent, dict):
                parent[draw(st.text(max_size=8))] = draw(values)
            elif isinstance(parent, list):
                parent.append(draw(values))
        except (KeyError, IndexError, TypeError):
            continue
    return data


def check(data: Any) -> None:
    try:
        loaded = validate_data(data)
    except ModelError as exc:
        assert exc.problems
        for p in exc.problems:
            assert p.path, f"problem without a path: {p}"
            assert p.message
        return
    # A model that validates renders, or the renderer says clearly why not (no traceback).
    try:
        render_release(loaded.model)
    except SiporchError as exc:
        assert str(exc) and "Traceback" not in str(exc)
    for site in loaded.model.sites:
        outbound(loaded.model, "2025550123", site)
    for trunk in loaded.model.trunks:
        inbound(loaded.model, "2025550150", trunk)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_models(data: dict[str, Any]) -> None:
    check(data)


@settings(max_examples=200, deadline=None)
@given(values)
def test_random_models(data: Any) -> None:
    check(data)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(list(BASE)), values, max_size=6))
def test_random_sections(data: dict[str, Any]) -> None:
    check(data)
