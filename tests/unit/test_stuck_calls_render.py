"""Calls whose far end is gone: the model's `calls` section and per-trunk switches, as the
edge's Kamailio (dialog keepalives) and the PBX's endpoints (RTP timeouts) get them."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from siporch.model import load_model
from siporch.model.schema import Model
from siporch.render import asterisk, kamailio
from siporch.sipp import SCENARIOS, SIPP_DIR_MARK, scenario
from tests.unit.modelkit import example_data

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory" / "example"


@functools.cache
def example() -> Model:
    return load_model(EXAMPLE).model


def changed(edit: Any) -> Model:
    data = example_data("itsp-b-secret")
    edit(data)
    return Model.model_validate(data)


def endpoint(text: str, name: str) -> dict[str, str]:
    """The key = value lines of the endpoint section ``name`` of a pjsip conf."""
    out: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"^\[(.+)\]$", line)
        if m:
            current = m.group(1)
            section: dict[str, str] = {}
            continue
        if current == name and " = " in line:
            key, _, value = line.partition(" = ")
            section[key] = value
            if key == "type" and value == "endpoint":
                out = section
    return out


def pjsip(model: Model) -> str:
    return asterisk.render(model, "pbx-central")["asterisk/pjsip_siporch.conf"]


def trunk_keys(files: dict[str, str]) -> dict[str, str]:
    out = {}
    for line in files["kamailio/db/trunks"].splitlines()[1:]:
        parts = re.split(r"(?<!\\):", line)
        out[parts[1]] = parts[4]
    return out


# ------------------------------------------------------------------------------ model


def test_defaults() -> None:
    model = example()
    assert model.calls.keepalive.enabled
    assert (model.calls.keepalive.interval, model.calls.keepalive.failures) == (30, 2)
    assert (model.calls.rtp_timeout, model.calls.rtp_timeout_hold) == (60, 600)
    assert all(t.keepalive for t in model.trunks.values())
    assert all(t.media.rtp_timeout is None for t in model.trunks.values())


@pytest.mark.parametrize(
    "calls",
    [
        {"keepalive": {"interval": 10}},  # Kamailio refuses less than 30 s
        {"keepalive": {"failures": 0}},
        {"rtp_timeout": -1},
        {"keepalive": {"every": 30}},
    ],
)
def test_bad_values_are_refused(calls: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        changed(lambda d: d.update(calls=calls))


# ---------------------------------------------------------------------------- Asterisk


def test_rtp_timeouts_on_the_pbx_endpoints() -> None:
    text = pjsip(example())
    a = endpoint(text, "itsp-a")
    assert (a["rtp_timeout"], a["rtp_timeout_hold"]) == ("60", "600")
    edge = endpoint(text, "siporch-edge-edge-central")
    assert (edge["rtp_timeout"], edge["rtp_timeout_hold"]) == ("60", "600")
    # bypass: direct media may take the RTP off the PBX, so no timeout there
    gw = endpoint(text, "pstn-gw")
    assert gw["direct_media"] == "yes"
    assert "rtp_timeout" not in gw and "rtp_timeout_hold" not in gw


def test_trunk_override_and_the_edge_endpoint_takes_the_longest() -> None:
    def edit(d: dict[str, Any]) -> None:
        d["trunks"]["itsp-a"]["media"].update(rtp_timeout=20, rtp_timeout_hold=0)
        d["calls"] = {"rtp_timeout": 30, "rtp_timeout_hold": 300}

    text = pjsip(changed(edit))
    a = endpoint(text, "itsp-a")
    assert a["rtp_timeout"] == "20" and "rtp_timeout_hold" not in a
    b = endpoint(text, "itsp-b")
    assert (b["rtp_timeout"], b["rtp_timeout_hold"]) == ("30", "300")
    # outbound calls of every trunk land on the edge endpoint: the longest (0 = none wins)
    edge = endpoint(text, "siporch-edge-edge-central")
    assert edge["rtp_timeout"] == "30" and "rtp_timeout_hold" not in edge


def test_rtp_timeout_off() -> None:
    text = pjsip(changed(lambda d: d.update(calls={"rtp_timeout": 0, "rtp_timeout_hold": 0})))
    assert "rtp_timeout" not in text


# ---------------------------------------------------------------------------- Kamailio


def test_keepalive_defines_and_route() -> None:
    files = kamailio.render(example(), "edge-central")
    host = files["kamailio/host.cfg"]
    assert "#!define WITH_KEEPALIVE" in host
    assert "#!define KA_INTERVAL 30" in host and "#!define KA_FAILURES 2" in host
    cfg = files["kamailio/kamailio.cfg"]
    assert 'modparam("dialog", "ka_interval", KA_INTERVAL)' in cfg
    assert 'modparam("dialog", "ka_failed_limit", KA_FAILURES)' in cfg
    assert 'modparam("dialog", "send_bye", 1)' in cfg
    assert "route[KEEPALIVE]" in cfg
    # set per branch, after the trunk the dialog faces is known
    branch = cfg[cfg.index("branch_route[BRANCH]") :]
    assert branch.index("$dlg_var(st) = $var(st);") < branch.index("route(KEEPALIVE);")


def test_keepalive_off_and_per_trunk() -> None:
    def edit(d: dict[str, Any]) -> None:
        d["calls"] = {"keepalive": {"enabled": False}}

    host = kamailio.render(changed(edit), "edge-central")["kamailio/host.cfg"]
    assert "WITH_KEEPALIVE" not in host and "KA_INTERVAL" not in host

    model = changed(lambda d: d["trunks"]["itsp-a"].update(keepalive=False))
    ids = kamailio.trunk_ids(model)
    keys = trunk_keys(kamailio.render(model, "edge-central"))
    assert keys[f"{ids['itsp-a']}.ka"] == "0"
    assert keys[f"{ids['itsp-b']}.ka"] == "1"
    # a trunk of another site the branch edge relays to carries its switch too
    branch = trunk_keys(kamailio.render(model, "edge-branch"))
    assert branch[f"{ids['itsp-a']}.ka"] == "0"


def test_keepalive_interval_change_is_a_host_change() -> None:
    model = changed(lambda d: d.update(calls={"keepalive": {"interval": 45, "failures": 3}}))
    host = kamailio.render(model, "edge-central")["kamailio/host.cfg"]
    assert "#!define KA_INTERVAL 45" in host and "#!define KA_FAILURES 3" in host


# ------------------------------------------------------------------------------- SIPp


def test_media_scenario_names_its_tone_file() -> None:
    assert SIPP_DIR_MARK in (SCENARIOS / "uac_media.xml").read_text()
    path = scenario("uac_media")
    text = path.read_text()
    assert SIPP_DIR_MARK not in text
    assert f'rtp_stream="{SCENARIOS}/tone_pcmu.raw,-1,0"' in text
    assert (SCENARIOS / "tone_pcmu.raw").stat().st_size == 8000
    assert scenario("uac_media") == path  # written once
    assert scenario("uac_rr") == SCENARIOS / "uac_rr.xml"


@pytest.mark.parametrize(
    "name", ["uac_rr", "uac_rtp", "uac_auth", "uac_media", "uas_peer", "uas_answer", "uas_provider"]
)
def test_call_scenarios_answer_keepalives(name: str) -> None:
    text = (SCENARIOS / f"{name}.xml").read_text()
    assert re.search(r'<recv request="OPTIONS"', text), name
    if name.startswith("uac"):
        # the handler of in-dialog requests that come during the pause
        assert '<label id="_unexp.main"/>' in text
        assert '<pauserestore variable="_unexp.pausedaddr"/>' in text
        # the BYE takes the dialog's To, not the last keepalive's
        bye = text[text.index("BYE [next_url]") :]
        assert "To:[$dlg_to]" in bye[: bye.index("]]>")]
