"""The trunk model: every validation rule names the file, the line, the path and the fix."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from siporch.errors import ModelError
from siporch.model import load_model

EXAMPLE = Path(__file__).resolve().parents[2] / "inventory" / "example"


def example_data() -> dict[str, Any]:
    return yaml.safe_load((EXAMPLE / "group_vars/all/siporch.yml").read_text())


def make_inventory(tmp_path: Path, data: dict[str, Any] | str) -> Path:
    inv = tmp_path / "inv"
    gv = inv / "group_vars" / "all"
    gv.mkdir(parents=True)
    shutil.copy(EXAMPLE / "group_vars/all/vault.yml", gv / "vault.yml")
    shutil.copy(EXAMPLE / "hosts.yml", inv / "hosts.yml")
    shutil.copy(EXAMPLE.parent / ".vault-pass", tmp_path / ".vault-pass")
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    (gv / "siporch.yml").write_text(text)
    return inv


def problems_for(tmp_path: Path, mutate: Callable[[dict[str, Any]], None]) -> list[str]:
    data = copy.deepcopy(example_data())
    mutate(data["siporch"])
    inv = make_inventory(tmp_path, data)
    with pytest.raises(ModelError) as exc:
        load_model(inv)
    return [f"{p.path}: {p.message}" for p in exc.value.problems if p.severity == "error"]


def test_example_is_valid() -> None:
    loaded = load_model(EXAMPLE)
    assert set(loaded.model.trunks) == {"itsp-a", "itsp-b", "itsp-branch", "itsp-c", "pstn-gw"}
    assert loaded.warnings == []
    assert loaded.model.hosts["pbx-central"].ami is not None
    assert loaded.model.hosts["pbx-central"].ami.secret.get_secret_value() == "ami-example-secret"


def test_hash_is_stable_and_secret_sensitive(tmp_path: Path) -> None:
    a = load_model(EXAMPLE).model_hash
    assert a == load_model(EXAMPLE).model_hash
    data = example_data()
    data["siporch"]["trunks"]["itsp-b"]["auth"]["password"] = "other"
    assert load_model(make_inventory(tmp_path, data)).model_hash != a


CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    (
        "bad port",
        lambda m: m["trunks"]["itsp-a"]["peers"][1].update(port=70000),
        "trunks.itsp-a.peers[1].port: must be at most 65535, not 70000",
    ),
    (
        "unknown field",
        lambda m: m["trunks"]["itsp-a"].update(max_chanels=3),
        "trunks.itsp-a.max_chanels: unknown field",
    ),
    (
        "missing field",
        lambda m: m["trunks"]["itsp-a"].pop("kind"),
        "trunks.itsp-a.kind: required field is missing",
    ),
    (
        "bad enum",
        lambda m: m["trunks"]["itsp-a"]["media"].update(mode="relay"),
        "trunks.itsp-a.media.mode: must be 'anchor' or 'bypass'",
    ),
    (
        "route to unknown trunk",
        lambda m: m["routes"][2]["trunks"].append("itsp-z"),
        "routes[2].trunks[2]: unknown trunk 'itsp-z' (trunks: itsp-a, itsp-b, itsp-branch, itsp-c, pstn-gw)",
    ),
    (
        "DID to unknown host",
        lambda m: m["inbound"][0].update(destination={"host": "pbx-9", "context": "x"}),
        "inbound[0].destination.host: unknown host 'pbx-9'",
    ),
    (
        "DID to an edge",
        lambda m: m["inbound"][0].update(destination={"host": "edge-central", "context": "x"}),
        "inbound[0].destination.host: host 'edge-central' is an edge, not a pbx",
    ),
    (
        "DID to unknown PBX group",
        lambda m: m["inbound"][0]["destination"].update(group="pbx-9"),
        "inbound[0].destination.group: unknown PBX group 'pbx-9' (pbx_groups: central-pbx)",
    ),
    (
        "DID to a host and a group",
        lambda m: m["inbound"][0]["destination"].update(host="pbx-central"),
        "inbound[0].destination: give exactly one of host or group (with context), or trunk",
    ),
    (
        "DID to a group without context",
        lambda m: m["inbound"][0]["destination"].pop("context"),
        "inbound[0].destination: a host or group destination needs a context",
    ),
    (
        "PBX group with an edge",
        lambda m: m["pbx_groups"]["central-pbx"]["hosts"].append("edge-central"),
        "pbx_groups.central-pbx.hosts[2]: host 'edge-central' is an edge, not a pbx",
    ),
    (
        "PBX group with an unknown host",
        lambda m: m["pbx_groups"]["central-pbx"]["hosts"].insert(0, "pbx-9"),
        "pbx_groups.central-pbx.hosts[0]: unknown host 'pbx-9'",
    ),
    (
        "PBX group with a host twice",
        lambda m: m["pbx_groups"]["central-pbx"]["hosts"].append("pbx-central"),
        "pbx_groups.central-pbx.hosts: a host is listed twice",
    ),
    (
        "PBX group without hosts",
        lambda m: m["pbx_groups"]["central-pbx"].update(hosts=[]),
        "pbx_groups.central-pbx.hosts:",
    ),
    (
        "PBX group strategy",
        lambda m: m["pbx_groups"]["central-pbx"].update(strategy="random"),
        "pbx_groups.central-pbx.strategy: must be 'failover' or 'round-robin'",
    ),
    (
        "DID to unknown trunk",
        lambda m: m["inbound"][1]["destination"].update(trunk="gw-x"),
        "inbound[1].destination.trunk: unknown trunk 'gw-x'",
    ),
    (
        "trunk to unknown site",
        lambda m: m["trunks"]["itsp-a"].update(site="moon"),
        "trunks.itsp-a.site: unknown site 'moon' (sites: branch, central)",
    ),
    (
        "host to unknown site",
        lambda m: m["hosts"]["pbx-central"].update(site="moon"),
        "hosts.pbx-central.site: unknown site 'moon'",
    ),
    (
        "duplicate route name",
        lambda m: m["routes"][3].update(name="emergency"),
        "routes[3].name: duplicate name 'emergency' (also routes[0])",
    ),
    (
        "overlapping DIDs",
        lambda m: m["inbound"][1]["range"].update(start="+12025550199"),
        "inbound[1].range: +12025550199..+12025550209 overlaps inbound[0] 'hq-main'",
    ),
    (
        "regex does not compile",
        lambda m: m["routes"][3].update(pattern="^\\+1[2-9"),
        "routes[3].pattern: regular expression does not compile",
    ),
    (
        "bad backreference",
        lambda m: m["sites"]["central"]["normalization"][1].update(replace="+\\2"),
        "sites.central.normalization[1]: replace refers to group \\2 but match has 1 group(s)",
    ),
    (
        "source claimed twice",
        lambda m: m["trunks"]["itsp-branch"]["peers"][0].update(address="203.0.113.10"),
        "trunks.itsp-branch: source 203.0.113.10/32 is also claimed by trunk 'itsp-a'",
    ),
    (
        "tls without certificates",
        lambda m: m["hosts"]["edge-central"].pop("tls"),
        "hosts.edge-central.tls: a tls transport needs certificate and private_key",
    ),
    (
        "tls peer without tls listener",
        lambda m: m["hosts"]["edge-central"].update(transports=[{"protocol": "udp", "port": 5060}]),
        "trunks.itsp-b.peers[0].transport: tls peer, but edge(s) edge-central have no tls transport",
    ),
    (
        "register without password",
        lambda m: m["trunks"]["itsp-b"]["auth"].pop("password"),
        "trunks.itsp-b.auth.password: required field is missing",
    ),
    (
        "register with empty password",
        lambda m: m["trunks"]["itsp-b"]["auth"].update(password=""),
        "trunks.itsp-b.auth.password: registration needs a password",
    ),
    (
        "unknown auth type",
        lambda m: m["trunks"]["itsp-b"]["auth"].update(type="digest"),
        "trunks.itsp-b.auth: type 'digest' is not one of 'ip', 'register'",
    ),
    (
        "DID range backwards",
        lambda m: m["inbound"][0]["range"].update(end="+12025550001"),
        "inbound[0].range: start is after end",
    ),
    (
        "DID with range and pattern",
        lambda m: m["inbound"][0].update(pattern="^x$"),
        "inbound[0]: give either range or pattern",
    ),
    (
        "bad E.164",
        lambda m: m["inbound"][0]["range"].update(start="2025550100"),
        "inbound[0].range.start: must be an E.164 number",
    ),
    (
        "undefined vault variable",
        lambda m: m["hosts"]["pbx-central"]["ami"].update(secret="{{ vault_nope }}"),
        "hosts.pbx-central.ami.secret: undefined variable 'vault_nope'",
    ),
    (
        "backup site unknown",
        lambda m: m["sites"]["branch"].update(backup_site="hq"),
        "sites.branch.backup_site: unknown site 'hq'",
    ),
    (
        "weights for a trunk not in the route",
        lambda m: m["routes"][5]["weights"].update({"pstn-gw": 5}),
        "routes[5].weights.pstn-gw: 'pstn-gw' is not one of this route's trunks",
    ),
    (
        "bad name",
        lambda m: m["trunks"].update({"Bad Name": m["trunks"]["itsp-a"]}),
        "trunks.Bad Name: names are lower-case letters",
    ),
    (
        "trunk at a site without edge",
        lambda m: m["hosts"].pop("edge-branch"),
        "trunks.itsp-branch.site: site 'branch' has no edge host to carry this trunk",
    ),
    (
        "duplicate peer",
        lambda m: m["trunks"]["itsp-a"]["peers"].append(dict(m["trunks"]["itsp-a"]["peers"][0])),
        "trunks.itsp-a.peers[2]: peer 203.0.113.10:5060 is listed twice",
    ),
    (
        "credentials without password",
        lambda m: m["trunks"]["itsp-a"]["credentials"].pop("password"),
        "trunks.itsp-a.credentials.password: required field is missing",
    ),
    (
        "credentials with empty password",
        lambda m: m["trunks"]["itsp-a"]["credentials"].update(password=""),
        "trunks.itsp-a.credentials.password: password must not be empty",
    ),
    (
        "credentials user with a quote",
        lambda m: m["trunks"]["itsp-a"]["credentials"].update(username='a"b'),
        "trunks.itsp-a.credentials.username: must not be empty or hold control characters",
    ),
    (
        "tech prefix with a letter",
        lambda m: m["trunks"]["itsp-a"].update(tech_prefix="12a"),
        "trunks.itsp-a.tech_prefix: must match the pattern",
    ),
    (
        "fixed caller ID without number",
        lambda m: m["trunks"]["itsp-b"]["caller_id"].pop("number"),
        "trunks.itsp-b.caller_id: policy 'fixed' needs a number",
    ),
    (
        "calling rule with a missing group",
        lambda m: m["trunks"]["itsp-a"]["translation"]["calling"][0].update(replace="1\\2"),
        "trunks.itsp-a.translation.calling[0]: replace refers to group \\2",
    ),
    (
        "anonymous caller ID number not E.164",
        lambda m: m["trunks"]["itsp-a"].update(
            caller_id={"policy": "anonymous", "number": "2025550100"}
        ),
        "trunks.itsp-a.caller_id.number: must be an E.164 number",
    ),
    (
        "failover code",
        lambda m: m["routes"][6]["failover_on"].append("busy"),
        "routes[6].failover_on[4]: must be 5xx, 6xx, timeout",
    ),
]


@pytest.mark.parametrize(("name", "mutate", "expected"), CASES, ids=[c[0] for c in CASES])
def test_rule(
    tmp_path: Path, name: str, mutate: Callable[[dict[str, Any]], None], expected: str
) -> None:
    problems = problems_for(tmp_path, mutate)
    assert any(p.startswith(expected) for p in problems), problems


def test_problems_carry_file_and_line(tmp_path: Path) -> None:
    data = example_data()
    data["siporch"]["trunks"]["itsp-a"]["peers"][1]["port"] = 0
    inv = make_inventory(tmp_path, data)
    with pytest.raises(ModelError) as exc:
        load_model(inv)
    (p,) = exc.value.problems
    text = (inv / "group_vars/all/siporch.yml").read_text().splitlines()
    file, line = p.file.rsplit(":", 1)
    assert file.endswith("group_vars/all/siporch.yml")
    assert "port: 0" in text[int(line) - 1]


def test_every_problem_in_one_run(tmp_path: Path) -> None:
    def many(m: dict[str, Any]) -> None:
        m["trunks"]["itsp-a"]["peers"][0]["port"] = 0
        m["trunks"]["itsp-b"]["codecs"] = ["speex"]
        m["routes"][0]["pattern"] = "("

    problems = problems_for(tmp_path, many)
    assert len(problems) == 3, problems


def test_branch_without_backup_route_warns(tmp_path: Path) -> None:
    data = example_data()
    for r in data["siporch"]["routes"]:
        if "branch" in r.get("sites", []):
            r["trunks"] = ["itsp-branch"]
    loaded = load_model(make_inventory(tmp_path, data))
    assert [w.path for w in loaded.warnings] == ["sites.branch"]
    assert "no backup route" in loaded.warnings[0].message


def test_yaml_syntax_error(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, "siporch:\n  sites: [\n")
    with pytest.raises(ModelError) as exc:
        load_model(inv)
    assert "not valid YAML (line 3" in str(exc.value)


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    text = (EXAMPLE / "group_vars/all/siporch.yml").read_text()
    text = text.replace(
        "  trunks:\n",
        "  trunks:\n    pstn-gw: {site: central, kind: direct, peers: [{address: 192.0.2.51}]}\n",
        1,
    )
    with pytest.raises(ModelError) as exc:
        load_model(make_inventory(tmp_path, text))
    assert "pstn-gw: duplicate key" in str(exc.value)


def test_missing_vault_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANSIBLE_VAULT_PASSWORD_FILE", raising=False)
    inv = make_inventory(tmp_path, example_data())
    (tmp_path / ".vault-pass").unlink()
    with pytest.raises(ModelError) as exc:
        load_model(inv)
    assert "no vault password file is given" in str(exc.value)


def test_wrong_vault_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANSIBLE_VAULT_PASSWORD_FILE", raising=False)  # no other secret
    inv = make_inventory(tmp_path, example_data())
    (tmp_path / ".vault-pass").write_text("wrong\n")
    with pytest.raises(ModelError) as exc:
        load_model(inv)
    assert "cannot decrypt Ansible Vault data" in str(exc.value)


def test_inline_vault_value(tmp_path: Path) -> None:
    from ansible.parsing.vault import VaultLib, VaultSecret

    lib = VaultLib([("default", VaultSecret(b"siporch-example-only"))])
    blob = lib.encrypt("inline-secret").decode()
    data = example_data()
    text = yaml.safe_dump(data, sort_keys=False)
    text = text.replace(
        "'{{ vault_ami_secret }}'",
        "!vault |\n" + "\n".join("          " + ln for ln in blob.splitlines()),
    )
    loaded = load_model(make_inventory(tmp_path, text))
    ami = loaded.model.hosts["pbx-central"].ami
    assert ami is not None and ami.secret.get_secret_value() == "inline-secret"


def test_no_model(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, "other: 1\n")
    with pytest.raises(ModelError) as exc:
        load_model(inv)
    assert "no file defines the trunk model variable" in str(exc.value)


def test_missing_inventory(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as exc:
        load_model(tmp_path / "nope")
    assert "inventory directory does not exist" in str(exc.value)


def test_outbound_credentials_default_to_the_registration() -> None:
    model = load_model(EXAMPLE).model
    a, b = model.trunks["itsp-a"], model.trunks["itsp-b"]
    ca, cb = a.outbound_credentials(), b.outbound_credentials()
    assert ca is not None and ca.username == "examplecorp-a"
    assert ca.password.get_secret_value() == "itsp-a-example-password"
    assert cb is not None and (cb.username, cb.realm) == ("examplecorp", "sip.itsp-b.example.com")
    assert cb.password.get_secret_value() == "itsp-b-example-password"
    assert model.trunks["itsp-branch"].outbound_credentials() is None
