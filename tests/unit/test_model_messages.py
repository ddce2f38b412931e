"""Model problems in the user's words, and characters no config may receive.

Each pydantic error type the model can produce gives exactly one line, with the path as the
YAML reads and no validator internals. Control characters and line breaks are refused in
every string at validate time (and, as a last check, by the renderer).
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Callable
from typing import Annotated, Any

import pytest
import yaml
from pydantic import AfterValidator, BaseModel, ValidationError

from siporch.errors import ModelError, SiporchError
from siporch.model import load_model
from siporch.model.messages import describe_errors, refused_character
from siporch.model.schema import Model
from siporch.render import render_release
from siporch.render.env import UnsafeValueError, environment
from tests.unit.test_model import example_data, make_inventory


def _problems(tmp_path: Any, mutate: Callable[[dict[str, Any]], None]) -> list[str]:
    data = copy.deepcopy(example_data())
    mutate(data["siporch"])
    with pytest.raises(ModelError) as exc:
        load_model(make_inventory(tmp_path, data))
    return [f"{p.path}: {p.message}" for p in exc.value.problems if p.severity == "error"]


def _trunk(m: dict[str, Any], **values: Any) -> None:
    m["trunks"]["itsp-a"].update(values)


CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    (
        "missing",
        lambda m: m["trunks"]["itsp-a"].pop("kind"),
        "trunks.itsp-a.kind: required field is missing",
    ),
    (
        "missing in a union member",
        lambda m: m["trunks"]["itsp-b"]["auth"].pop("username"),
        "trunks.itsp-b.auth.username: required field is missing",
    ),
    (
        "extra_forbidden",
        lambda m: _trunk(m, max_chanels=3),
        "trunks.itsp-a.max_chanels: unknown field (check the spelling; see docs/model.md)",
    ),
    (
        "literal_error",
        lambda m: m["trunks"]["itsp-a"]["media"].update(mode="relay"),
        "trunks.itsp-a.media.mode: must be 'anchor' or 'bypass', not 'relay'",
    ),
    (
        "literal_error in a list",
        lambda m: _trunk(m, codecs=["pcmu", "speex"]),
        "trunks.itsp-a.codecs[1]: must be 'pcmu', 'pcma', 'g722', 'g729', 'opus' or 'gsm', "
        "not 'speex'",
    ),
    (
        "int_parsing",
        lambda m: _trunk(m, max_channels="lots"),
        "trunks.itsp-a.max_channels: must be a whole number, not 'lots'",
    ),
    (
        "int_from_float",
        lambda m: _trunk(m, max_early_dialogs=2.5),
        "trunks.itsp-a.max_early_dialogs: must be a whole number, not 2.5",
    ),
    (
        "finite_number",
        lambda m: _trunk(m, max_channels=float("nan")),
        "trunks.itsp-a.max_channels: must be a whole number, not nan",
    ),
    (
        "int_type",
        lambda m: _trunk(m, max_channels=[1]),
        "trunks.itsp-a.max_channels: must be a whole number, not a list",
    ),
    (
        "bool_parsing",
        lambda m: _trunk(m, t38="maybe"),
        "trunks.itsp-a.t38: must be true or false, not 'maybe'",
    ),
    (
        "greater_than_equal",
        lambda m: m["trunks"]["itsp-a"]["probe"].update(interval=1),
        "trunks.itsp-a.probe.interval: must be at least 5, not 1",
    ),
    (
        "less_than_equal",
        lambda m: m["trunks"]["itsp-a"]["peers"][1].update(port=70000),
        "trunks.itsp-a.peers[1].port: must be at most 65535, not 70000",
    ),
    (
        "string_pattern_mismatch",
        lambda m: m["inbound"][0]["destination"].update(context="from trunk"),
        "inbound[0].destination.context: must be letters, digits, '_' and '-' (at most 79)",
    ),
    (
        "string_pattern_mismatch on a name key",
        lambda m: m["trunks"].update({"ITSP A": m["trunks"]["itsp-a"]}),
        "trunks.ITSP A: names are lower-case letters, digits and '-' (at most 63)",
    ),
    (
        "string_type",
        lambda m: m["sites"]["central"].update(country_code=1),
        "sites.central.country_code: must be a string (put it in quotes), not a number",
    ),
    (
        "string_type null",
        lambda m: _trunk(m, site=None),
        "trunks.itsp-a.site: must be a string, not empty (null)",
    ),
    (
        "string_too_short",
        lambda m: m["trunks"]["itsp-b"]["auth"].update(username=""),
        "trunks.itsp-b.auth.username: must not be empty",
    ),
    (
        "too_short",
        lambda m: _trunk(m, peers=[]),
        "trunks.itsp-a.peers: must not be empty",
    ),
    (
        "ip address (union of IPv4 and IPv6)",
        lambda m: m["trunks"]["itsp-a"]["peers"][0].update(address="x y"),
        "trunks.itsp-a.peers[0].address: 'x y' is neither an IP address nor a host name",
    ),
    (
        "optional ip address",
        lambda m: m["hosts"]["pbx-central"].update(public_address="pbx"),
        "hosts.pbx-central.public_address: 'pbx' is not an IP address",
    ),
    (
        "ip network",
        lambda m: m["hosts"]["pbx-central"]["ami"].update(permit=["192.0.2.1/24"]),
        "hosts.pbx-central.ami.permit[0]: '192.0.2.1/24' is not an IP network "
        "(like 192.0.2.0/24, host bits zero)",
    ),
    (
        "value_error",
        lambda m: _trunk(m, caller_id={"policy": "fixed"}),
        "trunks.itsp-a.caller_id: policy 'fixed' needs a number",
    ),
    (
        "value_error in a field validator",
        lambda m: m["routes"][0].update(pattern="^(911$"),
        "routes[0].pattern: regular expression does not compile: "
        "missing ), unterminated subpattern at position 1",
    ),
    (
        "dict_type",
        lambda m: m.update(trunks=["itsp-a"]),
        "trunks: must be a mapping (key: value), not a list",
    ),
    (
        "list_type",
        lambda m: _trunk(m, peers={"address": "203.0.113.10"}),
        "trunks.itsp-a.peers: must be a list, not a mapping",
    ),
    (
        "model_type",
        lambda m: _trunk(m, media="anchor"),
        "trunks.itsp-a.media: must be a mapping (key: value), not a string",
    ),
    (
        "model_attributes_type (discriminated union)",
        lambda m: _trunk(m, auth="ip"),
        "trunks.itsp-a.auth: must be a mapping (key: value), not a string",
    ),
    (
        "union_tag_invalid",
        lambda m: m["trunks"]["itsp-b"]["auth"].update(type="digest"),
        "trunks.itsp-b.auth: type 'digest' is not one of 'ip', 'register'",
    ),
    (
        "union_tag_not_found",
        lambda m: _trunk(m, auth={}),
        "trunks.itsp-a.auth: a 'type' is required",
    ),
]


@pytest.mark.parametrize(("name", "mutate", "expected"), CASES, ids=[c[0] for c in CASES])
def test_one_plain_line_per_problem(
    tmp_path: Any, name: str, mutate: Callable[[dict[str, Any]], None], expected: str
) -> None:
    assert _problems(tmp_path, mutate) == [expected]


def test_problem_line_names_file_line_and_path(tmp_path: Any) -> None:
    data = example_data()
    data["siporch"]["trunks"]["itsp-a"]["peers"][0]["address"] = "x y"
    inv = make_inventory(tmp_path, data)
    with pytest.raises(ModelError) as exc:
        load_model(inv)
    (p,) = exc.value.problems
    text = (inv / "group_vars/all/siporch.yml").read_text().splitlines()
    line = int(p.file.rsplit(":", 1)[1])
    assert "address: x y" in text[line - 1]
    assert str(p) == f"error: {p.file}: trunks.itsp-a.peers[0].address: 'x y' is neither an IP address nor a host name"


# -- unions in general (fields other branches may turn into unions) --------------------


def _must_be_host_name(value: str) -> str:
    raise ValueError(f"{value!r} is neither an IP address nor a host name")


class _Peer(BaseModel):
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | Annotated[
        str, AfterValidator(_must_be_host_name)
    ]
    ratio: float = 1.0


def _messages(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as exc:
        _Peer.model_validate(data)
    return [f"{'.'.join(map(str, loc))}: {m}" for loc, m in describe_errors(exc.value.errors(), data)]


def test_custom_message_of_a_union_member_passes_through() -> None:
    assert _messages({"address": "x y"}) == [
        "address: 'x y' is neither an IP address nor a host name"
    ]


def test_float_parsing() -> None:
    assert _messages({"address": "192.0.2.1", "ratio": "half"}) == [
        "ratio: must be a number, not 'half'"
    ]


# -- refused characters -----------------------------------------------------------------

REFUSED = {
    "\n": "a line break (\\n)",
    "\r": "a carriage return (\\r)",
    "\t": "a tab (\\t)",
    "\x00": "a NUL byte (\\0)",
    "\x1b": "control character U+001B",
    "\x7f": "control character U+007F",
    "\x85": "a line break (U+0085)",
    "\x9b": "control character U+009B",
    "\u2028": "a line separator (U+2028)",
    "\u2029": "a paragraph separator (U+2029)",
}
TAIL = ": control characters and line breaks are refused in every field (they could inject configuration)"


@pytest.mark.parametrize("char", list(REFUSED), ids=[f"U+{ord(c):04X}" for c in REFUSED])
def test_refused_character(char: str) -> None:
    assert refused_character(f"ab{char}c") == f"contains {REFUSED[char]} at character 3{TAIL}"


@pytest.mark.parametrize("text", ["Example Corp", "Zürich, Büro \u00a0 ok", "^\\+1(\\d{3})$", "a\\nb", " "])
def test_printable_text_is_accepted(text: str) -> None:
    assert refused_character(text) is None


def test_newline_in_description_is_refused_with_file_and_line(tmp_path: Any) -> None:
    """The reported toll-fraud path: a description that writes an Asterisk section."""
    text = (
        (make_inventory(tmp_path / "a", example_data()) / "group_vars/all/siporch.yml")
        .read_text()
        .replace(
            "description: ITSP A, IP-authenticated, two SBCs",
            'description: "ITSP A\\n[evil]\\ntype = endpoint"',
        )
    )
    inv = make_inventory(tmp_path / "b", text)
    with pytest.raises(ModelError) as exc:
        load_model(inv)
    (p,) = exc.value.problems
    line = int(p.file.rsplit(":", 1)[1])
    assert "[evil]" in text.splitlines()[line - 1]
    assert f"{p.path}: {p.message}" == (
        f"trunks.itsp-a.description: contains a line break (\\n) at character 7{TAIL}"
    )


def test_refused_in_keys_lists_and_secrets_without_showing_them(tmp_path: Any) -> None:
    data = example_data()
    m = data["siporch"]
    m["hosts"]["pbx-central"]["ami"]["secret"] = "{{ my_secret }}"
    m["routes"][3]["exceptions"].append("^\\+1900\t$")
    agents = m["security"]["blocked_user_agents"]
    agents.append("bad\u2028agent")
    m["routes"][5]["weights"]["itsp\rb"] = 2
    inv = make_inventory(tmp_path, data)
    (inv / "group_vars/all/extra.yml").write_text('my_secret: "s3cret\\npart"\n')
    with pytest.raises(ModelError) as exc:
        load_model(inv)
    lines = [f"{p.path}: {p.message}" for p in exc.value.problems]
    assert sorted(lines) == sorted([
        f"routes[3].exceptions[2]: contains a tab (\\t) at character 8{TAIL}",
        f"routes[5].weights.itsp\\rb: the key contains a carriage return (\\r) at character 5{TAIL}",
        f"security.blocked_user_agents[{len(agents) - 1}]: contains a line separator (U+2028) at character 4{TAIL}",
        f"hosts.pbx-central.ami.secret: contains a line break (\\n) at character 7{TAIL}",
    ])
    assert "s3cret" not in str(exc.value)


def test_renderer_refuses_control_characters_as_a_last_check() -> None:
    env = environment()
    assert env.from_string("a={{ v }};{{ n }}").render(v="x y;z", n=5) == "a=x y;z;5"
    with pytest.raises(UnsafeValueError):
        env.from_string("a={{ v }}").render(v="x\n[evil]")
    # A model that never went through validation (built in code) cannot reach a config.
    data = yaml.safe_load(yaml.safe_dump(example_data()))["siporch"]
    data["hosts"]["pbx-central"]["ami"]["secret"] = "s"
    data["trunks"]["itsp-b"]["auth"]["password"] = "p"
    data["trunks"]["itsp-a"]["description"] = "x\n[evil]\ntype = endpoint"
    with pytest.raises(SiporchError):
        render_release(Model.model_validate(data))
