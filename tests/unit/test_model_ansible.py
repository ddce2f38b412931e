"""The model means what Ansible says it means: ansible-core reads the inventory.

The conformance tests compare what siporch's loader sees with what Ansible's own command
line tools print for the same inventory (``ansible-inventory --host`` for the values as
read, ``ansible -m debug`` for the values templated and decrypted), run as subprocesses from
the same environment.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from siporch.errors import ModelError
from siporch.model import load_model, loader
from siporch.model.loader import inventory_hosts, read_model_data
from tests.unit.test_model import EXAMPLE

BIN = Path(sys.executable).parent
PASSWORD = "siporch-example-only"


def vault_blob(text: str) -> str:
    from ansible.parsing.vault import VaultLib, VaultSecret

    blob = VaultLib([("default", VaultSecret(PASSWORD.encode()))]).encrypt(text).decode()
    return "\n".join("    " + line for line in blob.splitlines())


TRICKY = """\
# YAML 1.1 as Ansible reads it
base: &base {mode: anchor, srtp: off}
siporch:
  flags: [yes, no, on, off, Yes, NO, y, n, true, False, "off"]
  octal: 0755
  octal_quoted: '0755'
  sexagesimal: 1:30
  float_sexagesimal: 1:30.5
  date: 2026-12-05
  exp: 1e3
  tilde: ~
  hex: 0x1F
  merged:
    <<: *base
    extra: 1
  list_of_merged:
    - <<: *base
      srtp: required
  secret: "{{ tricky_secret }}"
  port: "{{ base_port | int + 1 }}"
  edge: "{{ hostvars['edge-central'].ansible_host }}"
  vaulted_ref: "{{ vault_ami_secret }}"
"""


def tricky_inventory(tmp_path: Path) -> Path:
    inv = tmp_path / "inv"
    (inv / "group_vars" / "all").mkdir(parents=True)
    shutil.copy(EXAMPLE / "hosts.yml", inv / "hosts.yml")
    shutil.copy(EXAMPLE / "group_vars/all/vault.yml", inv / "group_vars/all/vault.yml")
    (tmp_path / ".vault-pass").write_text(PASSWORD + "\n")
    (inv / "group_vars" / "all" / "ports.yml").write_text('base_port: "5060"\n')
    (inv / "group_vars" / "all" / "siporch.yml").write_text(TRICKY)
    (inv / "group_vars" / "all" / "secrets.yml").write_text(
        "tricky_secret: !vault |\n" + vault_blob("inline-secret") + "\n"
    )
    return inv


def jsonable(value: Any) -> Any:
    """Our data as JSON would carry it (dates as ISO text, as Ansible prints them)."""
    return json.loads(
        json.dumps(value, default=lambda v: v.isoformat() if hasattr(v, "isoformat") else v)
    )


def ansible_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(tmp_path / "none.cfg"),  # not the repository's ansible.cfg
        ANSIBLE_CALLBACK_RESULT_FORMAT="json",
        ANSIBLE_VAULT_PASSWORD_FILE=str(tmp_path / ".vault-pass"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_DEPRECATION_WARNINGS="0",
    )
    return env


def ansible_inventory_host(tmp_path: Path, inv: Path, host: str) -> dict[str, Any]:
    out = subprocess.run(
        [str(BIN / "ansible-inventory"), "-i", str(inv), "--host", host],
        capture_output=True, text=True, check=True, env=ansible_env(tmp_path), timeout=60,
    ).stdout  # fmt: skip
    result: dict[str, Any] = json.loads(out)
    return result


def ansible_debug(tmp_path: Path, inv: Path, host: str, var: str) -> Any:
    out = subprocess.run(
        [str(BIN / "ansible"), host, "-i", str(inv), "-m", "debug", "-a", f"var={var}"],
        capture_output=True, text=True, check=True, env=ansible_env(tmp_path), timeout=60,
    ).stdout  # fmt: skip
    return json.loads(out.split("=>", 1)[1])[var]


@pytest.fixture(params=["fast", "ansible-core"])
def yaml_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways siporch reads plain YAML files: its fast path and ansible-core's reader."""
    monkeypatch.setattr(loader, "FAST_YAML", request.param == "fast")
    return str(request.param)


def read_via(inv: Path, yaml_path: str) -> Any:
    """The model data, and a check that the file was read the way the test asks."""
    sources = (inv,)
    read = loader._read_model(sources, None, None, fast=loader.FAST_YAML)
    assert read.fast == (yaml_path == "fast")
    return read_model_data(inv)


def test_yaml11_scalars_merge_keys_and_vault_as_ansible_inventory(
    tmp_path: Path, yaml_path: str
) -> None:
    inv = tricky_inventory(tmp_path)
    ours = read_via(inv, yaml_path)
    theirs = ansible_inventory_host(tmp_path, inv, "edge-central")["siporch"]
    templated = {"secret", "port", "edge", "vaulted_ref"}  # --host prints them as written
    assert {k: v for k, v in jsonable(ours).items() if k not in templated} == {
        k: v for k, v in theirs.items() if k not in templated
    }
    # and what those values are, so that the comparison above cannot pass vacuously
    assert ours["flags"] == [True, False, True, False, True, False, "y", "n", True, False, "off"]
    assert ours["octal"] == 0o755 and ours["octal_quoted"] == "0755"
    assert ours["sexagesimal"] == 90 and ours["float_sexagesimal"] == 90.5
    assert ours["date"] == datetime.date(2026, 12, 5)
    assert ours["exp"] == "1e3"  # not a float in YAML 1.1 (no dot)
    assert ours["tilde"] is None and ours["hex"] == 31
    assert ours["merged"] == {"mode": "anchor", "srtp": False, "extra": 1}
    assert ours["list_of_merged"] == [{"mode": "anchor", "srtp": "required"}]
    # plain Python values, no ansible-core tagged types left
    assert type(ours["octal"]) is int and type(ours["merged"]) is dict


def test_templates_filters_hostvars_and_vault_as_ansible_debug(
    tmp_path: Path, yaml_path: str
) -> None:
    inv = tricky_inventory(tmp_path)
    ours = read_via(inv, yaml_path)
    theirs = ansible_debug(tmp_path, inv, "edge-central", "siporch")
    assert jsonable(ours) == theirs
    assert ours["secret"] == "inline-secret"
    assert ours["port"] == 5061  # "{{ base_port | int + 1 }}", base_port in another file
    assert ours["edge"] == "192.0.2.10"  # from hostvars
    assert ours["vaulted_ref"] == "ami-example-secret"  # whole-file vault


# YAML 1.1's tricky scalars with no anchor, alias, tag or merge key: the fast path reads
# this file without PyYAML's generic construction (``plain_data``)
TRICKY_PLAIN = """\
siporch:
  flags: [yes, no, on, off, Yes, NO, ON, Off, y, n, Y, N, true, False, TRUE, "off", 'yes']
  block_flags:
    - yes
    - off
  octal: 0755
  octal_o: 0o17
  octal_quoted: '0755'
  binary: 0b101
  underscored: 1_000
  hex: 0x1F
  signed: [+12, -0, +0.5, -1_000.5]
  sexagesimal: 1:30
  sexagesimal_long: 190:20:30
  float_sexagesimal: 1:30.5
  date: 2026-12-05
  timestamp: 2001-12-14t21:59:43.10-05:00
  timestamp_space: 2001-12-14 21:59:43.10 -5
  exp: 1e3
  float_exp: 1.0e+3
  inf: [.inf, -.Inf, +.INF]
  nulls: [~, null, Null, NULL, '']
  empty:
  tilde_key:
    ~: nothing
    yes: true key
    1: int key
    0x10: hex key
    2026-12-05: date key
  quoted: ["yes", "0755", "1:30", "{not a template}", "a\\tb\\u00e9"]
  folded: >
    one
    two
  literal: |
    line: 1
    - item
  flow: {a: 1, b: [on, 1.5], c: {d: ~}}
  colon_in_value: a:b
  port: "{{ base_port | int + 1 }}"
"""


def test_fast_path_reads_what_ansible_core_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench.genmodel import write_inventory

    generated = write_inventory(tmp_path / "gen", 100)
    plain = tricky_inventory(tmp_path / "plain")
    (plain / "group_vars" / "all" / "siporch.yml").write_text(TRICKY_PLAIN)
    assert not loader._UNSAFE.search(TRICKY_PLAIN)
    read = loader._read_model((plain,), None, None, fast=True)
    assert "siporch.yml" in {Path(f).name for f in read.fast_files}  # no fallback
    for inv in (tricky_inventory(tmp_path), plain, generated, EXAMPLE):
        monkeypatch.setattr(loader, "FAST_YAML", True)
        fast = read_model_data(inv)
        assert loader._read_model((inv,), None, None, fast=True).fast
        monkeypatch.setattr(loader, "FAST_YAML", False)
        slow = read_model_data(inv)
        assert fast == slow
        assert [type(x) for x in _leaves(fast)] == [type(x) for x in _leaves(slow)]


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [x for k, v in value.items() for x in (k, *_leaves(v))]
    if isinstance(value, list):
        return [x for v in value for x in _leaves(v)]
    return [value]


def test_a_file_with_tags_is_read_by_ansible_core(tmp_path: Path) -> None:
    inv = tricky_inventory(tmp_path)
    read = loader._read_model((inv,), None, None, fast=True)
    fast_files = {Path(f).name for f in read.fast_files}
    assert "siporch.yml" in fast_files
    assert "secrets.yml" not in fast_files  # !vault: ansible-core's reader
    assert read_model_data(inv)["secret"] == "inline-secret"


def example_copy(tmp_path: Path) -> Path:
    inv = tmp_path / "inv"
    shutil.copytree(EXAMPLE, inv)
    shutil.copy(EXAMPLE.parent / ".vault-pass", tmp_path / ".vault-pass")
    return inv


def test_group_vars_all_file_or_directory_give_the_same_model(tmp_path: Path) -> None:
    from ansible.parsing.vault import VaultLib, VaultSecret

    a = example_copy(tmp_path / "a")
    b = example_copy(tmp_path / "b")
    # one file: the model and its secrets as inline !vault values
    lib = VaultLib([("default", VaultSecret(PASSWORD.encode()))])
    secrets = yaml.safe_load(lib.decrypt((b / "group_vars/all/vault.yml").read_bytes()))
    text = (b / "group_vars/all/siporch.yml").read_text()
    for name, value in secrets.items():
        text += f"{name}: !vault |\n" + vault_blob(value).replace("    ", "  ") + "\n"
    shutil.rmtree(b / "group_vars" / "all")
    (b / "group_vars" / "all.yml").write_text(text)
    assert load_model(a).model_hash == load_model(b).model_hash == load_model(EXAMPLE).model_hash
    assert load_model(b).source == b / "group_vars" / "all.yml"
    # both: Ansible reads the directory only, and so does siporch (with a warning)
    c = example_copy(tmp_path / "c")
    (c / "group_vars" / "all.yml").write_text("siporch: {version: 1}\n")
    loaded = load_model(c)
    assert loaded.model_hash == load_model(EXAMPLE).model_hash
    (w,) = loaded.warnings
    assert w.file == str(c / "group_vars" / "all.yml") and "ignored by Ansible" in w.message


def write_ini(inv: Path, edge_branch: str = "198.51.100.10") -> None:
    (inv / "hosts.yml").unlink()
    (inv / "hosts.ini").write_text(
        "[siporch_edge]\n"
        "edge-central ansible_host=192.0.2.10\n"
        "edge-central-2 ansible_host=192.0.2.12\n"
        f"edge-branch ansible_host={edge_branch}\n"
        "[siporch_pbx]\n"
        "pbx-central ansible_host=192.0.2.20\n"
        "pbx-central-2 ansible_host=192.0.2.21\n"
        "[all:vars]\n"
        "ansible_user=siporch\n"
    )


def test_ini_inventory_as_directory_file_or_several_files(tmp_path: Path) -> None:
    inv = example_copy(tmp_path)
    write_ini(inv)
    expected = load_model(EXAMPLE).model_hash
    assert load_model(inv).model_hash == expected
    loaded = load_model(inv / "hosts.ini")
    assert loaded.model_hash == expected and loaded.inventory == inv
    # several sources, as several -i: the edges in one file, the PBX in another
    text = (inv / "hosts.ini").read_text()
    (inv / "hosts.ini").unlink()
    (inv / "edges.ini").write_text(text.split("[siporch_pbx]")[0])
    (inv / "pbx.yml").write_text(
        yaml.safe_dump(
            {
                "siporch_pbx": {
                    "hosts": {
                        "pbx-central": {"ansible_host": "192.0.2.20"},
                        "pbx-central-2": {"ansible_host": "192.0.2.21"},
                    }
                }
            }
        )
    )
    both = load_model([inv / "edges.ini", inv / "pbx.yml"])
    assert both.model_hash == expected and both.inventories == (inv / "edges.ini", inv / "pbx.yml")
    with pytest.raises(ModelError) as exc:
        load_model(inv / "edges.ini")
    p, p2 = exc.value.problems
    assert p2.path == "hosts.pbx-central-2"
    assert p.path == "hosts.pbx-central"
    assert "host 'pbx-central' is not in the inventory" in p.message
    assert str(inv / "edges.ini") in p.message  # names the inventory...
    file, line = p.file.rsplit(":", 1)  # ...and the model's file and line
    assert file == str(inv / "group_vars/all/siporch.yml")
    assert (inv / "group_vars/all/siporch.yml").read_text().splitlines()[int(line) - 1] == (
        "    pbx-central:"
    )


def test_ansible_host_must_be_the_model_address(tmp_path: Path) -> None:
    inv = example_copy(tmp_path)
    write_ini(inv, edge_branch="198.51.100.99")
    with pytest.raises(ModelError) as exc:
        load_model(inv)
    (p,) = exc.value.problems
    assert p.path == "hosts.edge-branch.address"
    assert p.message.startswith(
        f"ansible_host 198.51.100.99 of inventory host 'edge-branch' ({inv}/hosts.ini:4) is "
        "not this host's address 198.51.100.10"
    )
    # a host_vars file (here a directory) wins over the inventory, as in Ansible
    (inv / "host_vars" / "edge-branch").mkdir(parents=True)
    (inv / "host_vars" / "edge-branch" / "net.yml").write_text("ansible_host: 198.51.100.10\n")
    load_model(inv)
    # a separate management address is declared, not guessed
    (inv / "host_vars" / "edge-branch" / "net.yml").write_text(
        "ansible_host: 10.9.9.9\nsiporch_management_address: 10.9.9.9\n"
    )
    load_model(inv)
    assert inventory_hosts(inv)["edge-branch"]["ansible_host"] == "10.9.9.9"
    assert inventory_hosts(inv)["edge-branch"]["ansible_user"] == "siporch"


def test_model_overridden_in_host_vars_is_an_error(tmp_path: Path) -> None:
    inv = example_copy(tmp_path)
    (inv / "host_vars").mkdir()
    (inv / "host_vars" / "pbx-central.yml").write_text("# other\nsiporch: {version: 1}\n")
    with pytest.raises(ModelError) as exc:
        load_model(inv)
    (p,) = exc.value.problems
    assert p.file == f"{inv}/host_vars/pbx-central.yml:2"
    assert "the model is set again for host 'pbx-central'" in p.message


def test_group_host_not_in_model_and_configurable_groups(tmp_path: Path) -> None:
    inv = example_copy(tmp_path)
    hosts = yaml.safe_load((inv / "hosts.yml").read_text())
    groups = hosts["all"]["children"]
    groups["siporch_pbx"]["hosts"]["pbx-spare"] = {"ansible_host": "192.0.2.22"}
    (inv / "hosts.yml").write_text(yaml.safe_dump(hosts))
    with pytest.raises(ModelError) as exc:
        load_model(inv)
    assert [p.message.split(" (")[0] for p in exc.value.problems] == [
        "inventory host 'pbx-spare' of group 'siporch_pbx'"
    ]
    # other group names, set in the inventory
    groups["sip_edges"] = groups.pop("siporch_edge")
    pbxs = groups.pop("siporch_pbx")["hosts"]
    groups["pbxs"] = {"hosts": {h: pbxs[h] for h in ("pbx-central", "pbx-central-2")}}
    (inv / "hosts.yml").write_text(yaml.safe_dump(hosts))
    with pytest.raises(ModelError) as exc:
        load_model(inv)
    assert "is not in the inventory group 'siporch_edge'" in str(exc.value)
    (inv / "group_vars" / "all" / "groups.yml").write_text(
        "siporch_host_groups: {edge: sip_edges, pbx: pbxs}\n"
    )
    load_model(inv)
    load_model(inv, groups={"edge": "sip_edges", "pbx": "pbxs"})


def test_template_errors_carry_file_line_and_path(tmp_path: Path) -> None:
    inv = example_copy(tmp_path)
    model = inv / "group_vars/all/siporch.yml"
    text = model.read_text().replace("organisation: Example Corp", "organisation: '{{ 1 | nope }}'")
    text = text.replace("domain: example.com", "domain: '{{ missing_var }}'")
    model.write_text(text)
    with pytest.raises(ModelError) as exc:
        load_model(inv)
    got = {(p.file.rsplit(":", 1)[1], p.path): p.message for p in exc.value.problems}
    lines = text.splitlines()
    org = str(next(i for i, ln in enumerate(lines, 1) if "nope" in ln))
    dom = str(next(i for i, ln in enumerate(lines, 1) if "missing_var" in ln))
    assert got[(dom, "domain")].startswith("undefined variable 'missing_var'")
    assert got[(org, "organisation")].startswith("template error:")
    assert len(got) == 2


def test_merge_keys_in_the_model_and_yaml11_off(tmp_path: Path) -> None:
    inv = example_copy(tmp_path)
    model = inv / "group_vars/all/siporch.yml"
    text = model.read_text()
    assert "media: {mode: anchor, srtp: off, symmetric_rtp: true}" in text
    text = text.replace(
        "media: {mode: anchor, srtp: off, symmetric_rtp: true}",
        "media: &media {mode: anchor, srtp: off, symmetric_rtp: true}",
        1,
    ).replace(
        "media: {mode: anchor, srtp: required, symmetric_rtp: true}",
        "media: {<<: *media, srtp: required}",
        1,
    )
    model.write_text(text)
    assert load_model(inv).model_hash == load_model(EXAMPLE).model_hash


def test_cli_takes_files_and_several_inventories(tmp_path: Path) -> None:
    from tests.unit.test_vault_and_bytes_cli import validate

    inv = example_copy(tmp_path)
    write_ini(inv)
    text = (inv / "hosts.ini").read_text()
    (inv / "hosts.ini").unlink()
    (inv / "edges.ini").write_text(text.split("[siporch_pbx]")[0])
    (inv / "pbx.ini").write_text(
        "[siporch_pbx]\npbx-central ansible_host=192.0.2.20\npbx-central-2 ansible_host=192.0.2.21\n"
    )
    code, err = validate(inv / "edges.ini", "-i", str(inv / "pbx.ini"))
    assert code == 0, err
    code, err = validate(inv / "edges.ini")
    assert code == 2
    model = (inv / "group_vars/all/siporch.yml").read_text().splitlines()
    line = model.index("    pbx-central:") + 1
    assert err.splitlines()[0].startswith(
        f"error: {inv}/group_vars/all/siporch.yml:{line}: hosts.pbx-central: host 'pbx-central' "
        f"is not in the inventory ({inv}/edges.ini)"
    )


def test_the_lab_inventory_passes_the_host_cross_check(tmp_path: Path) -> None:
    from siporch.lab.inventory import write_inventory
    from siporch.lab.spec import LabPaths

    example = tmp_path / "inventory" / "example"
    shutil.copytree(EXAMPLE, example)
    shutil.copy(EXAMPLE.parent / ".vault-pass", tmp_path / "inventory" / ".vault-pass")
    paths = LabPaths(state=tmp_path / "state", cache=tmp_path / "cache")
    lab = write_inventory(example, tmp_path / "inventory" / "lab", paths)
    loaded = load_model(lab)  # hosts.yml, lab.json (a JSON inventory), lab_peers
    assert set(loaded.model.hosts) == {
        "edge-central",
        "edge-central-2",
        "edge-branch",
        "pbx-central",
        "pbx-central-2",
    }
    hosts = inventory_hosts(lab)
    for name, host in loaded.model.hosts.items():
        assert hosts[name]["ansible_host"] == str(host.address)
        assert hosts[name]["ansible_user"] == "root"
