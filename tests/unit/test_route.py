"""`siporch route` on a table of numbers, computed from the example model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from siporch import numbers
from siporch.cli import cli
from siporch.model import load_model

EXAMPLE = Path(__file__).resolve().parents[2] / "inventory" / "example"


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    return load_model(EXAMPLE).model


# dialled, site, E.164 after normalization, route, [(trunk, number sent, via edge)]
OUTBOUND = [
    (
        "2025550123",
        "central",
        "+12025550123",
        "local-via-gateway",
        [("pstn-gw", "+12025550123", None), ("itsp-a", "12025550123", None)],
    ),
    (
        "4155550123",
        "central",
        "+14155550123",
        "national",
        [("itsp-a", "14155550123", None), ("itsp-b", "+14155550123", None)],
    ),
    (
        "14155550123",
        "central",
        "+14155550123",
        "national",
        [("itsp-a", "14155550123", None), ("itsp-b", "+14155550123", None)],
    ),
    (
        "5550199",
        "central",
        "+12025550199",
        "local-via-gateway",
        [("pstn-gw", "+12025550199", None), ("itsp-a", "12025550199", None)],
    ),
    (
        "011442079460000",
        "central",
        "+442079460000",
        "international",
        [("itsp-a", "442079460000", None), ("itsp-b", "+442079460000", None)],
    ),
    ("911", "central", "911", "emergency", [("itsp-a", "911", None), ("itsp-b", "911", None)]),
    (
        "112",
        "branch",
        "911",
        "branch-emergency",
        [("itsp-branch", "911", None), ("itsp-a", "911", "edge-central")],
    ),
    (
        "5550123",
        "branch",
        "+12065550123",
        "branch-national",
        [("itsp-branch", "+12065550123", None), ("itsp-a", "12065550123", "edge-central")],
    ),
    (
        "+14155550123",
        "branch",
        "+14155550123",
        "branch-national",
        [("itsp-branch", "+14155550123", None), ("itsp-a", "14155550123", "edge-central")],
    ),
    ("19005551234", "central", "+19005551234", None, []),  # exception of `national`
    ("19765551234", "central", "+19765551234", None, []),
    ("19005551234", "branch", "+19005551234", None, []),
    ("011442079460000", "branch", "+442079460000", None, []),  # no international at the branch
    ("12", "central", "12", None, []),
]


@pytest.mark.parametrize(("dialled", "site", "e164", "route", "attempts"), OUTBOUND)
def test_outbound(model, dialled, site, e164, route, attempts) -> None:  # type: ignore[no-untyped-def]
    t = numbers.outbound(model, dialled, site)
    assert t.number == e164
    assert t.route == route
    assert [(a.trunk, a.number, a.via_edge) for a in t.attempts] == attempts


INBOUND = [
    (
        "itsp-a",
        "2025550150",
        "+12025550150",
        "hq-main",
        {
            "group": "central-pbx",
            "context": "from-trunk",
            "hosts": "pbx-central,pbx-central-2",
            "strategy": "failover",
        },
    ),
    (
        "itsp-a",
        "12025550100",
        "+12025550100",
        "hq-main",
        {
            "group": "central-pbx",
            "context": "from-trunk",
            "hosts": "pbx-central,pbx-central-2",
            "strategy": "failover",
        },
    ),
    ("itsp-a", "2025550205", "+12025550205", "hq-fax", {"trunk": "pstn-gw"}),
    (
        "itsp-b",
        "+12065550149",
        "+12065550149",
        "branch-office",
        {
            "group": "central-pbx",
            "context": "from-trunk-branch",
            "hosts": "pbx-central,pbx-central-2",
            "strategy": "failover",
        },
    ),
    ("itsp-b", "+12065550150", "+12065550150", None, None),
    ("itsp-a", "2025550099", "+12025550099", None, None),
]


@pytest.mark.parametrize(("trunk", "received", "e164", "did", "dest"), INBOUND)
def test_inbound(model, trunk, received, e164, did, dest) -> None:  # type: ignore[no-untyped-def]
    t = numbers.inbound(model, received, trunk)
    assert (t.number, t.did, t.destination) == (e164, did, dest)


def test_weighted_route_shows_weights(model) -> None:  # type: ignore[no-untyped-def]
    t = numbers.outbound(model, "011331234567", "central")
    assert t.strategy == "weighted"
    assert [a.weight for a in t.attempts] == [70, 30]


def test_cli_route_json_and_exit_codes() -> None:
    r = CliRunner().invoke(
        cli, ["route", "4155550123", "-i", str(EXAMPLE), "--json"], standalone_mode=False
    )
    assert r.exception is None, r.output
    assert r.return_value == 0
    data = json.loads(r.output)
    assert data["route"] == "national" and data["attempts"][0]["peers"] == [
        "udp:203.0.113.10:5060",
        "udp:203.0.113.11:5060",
    ]
    r = CliRunner().invoke(cli, ["route", "19005551234", "-i", str(EXAMPLE)], standalone_mode=False)
    assert r.return_value == 1 and "no route matches" in r.output


def test_unknown_site_is_an_error(model) -> None:  # type: ignore[no-untyped-def]
    from siporch.errors import SiporchError

    with pytest.raises(SiporchError, match="unknown site 'moon'"):
        numbers.outbound(model, "911", "moon")
