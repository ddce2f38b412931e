"""The vars plugin of ansible.cfg (playbooks/vars_plugins/siporch_group_vars.py): a large
plain-data vars file read with libyaml gives Ansible the same variables as host_group_vars,
templates still templated; anything else goes through Ansible's own loader."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from bench.genmodel import generate

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "playbooks" / "vars_plugins" / "siporch_group_vars.py"
EXAMPLE = REPO / "inventory" / "example"

TRICKY = """\
flags: [yes, no, on, off, y, n, true, False, ~, null]
numbers: [0755, 0o17, 0x1f, 1_000, 190:20:30, 1.5e3, .inf, -.nan, 12e03]
dates: [2001-12-14, 2001-12-14t21:59:43.10-05:00]
strings: ['yes', "0755", 1.2.3, 'a: b', "{{ not_a_var }}x"]
base: &base {a: 1, b: 2}
merged:
  <<: *base
  b: 3
template: "{{ inventory_hostname }}"
nested: {list: [{"{{ key }}": "{% if true %}v{% endif %}"}]}
"""


def _plugin() -> ModuleType:
    spec = importlib.util.spec_from_file_location("siporch_group_vars_test", PLUGIN)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _ansible(path: Path) -> object:
    from ansible.parsing.dataloader import DataLoader

    return DataLoader().load_from_file(
        str(path), cache="none", unsafe=True, trusted_as_template=True
    )


def _plain(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=str)


@pytest.fixture(autouse=True)
def _small_files_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIPORCH_FAST_VARS_MIN", "0")


def test_same_data_as_ansible_and_templates_stay_trusted(tmp_path: Path) -> None:
    from ansible._internal._datatag._tags import TrustedAsTemplate

    path = tmp_path / "vars.yml"
    path.write_text(TRICKY)
    done, data = _plugin().fast_load(str(path))
    assert done
    assert data == _ansible(path)
    assert _plain(data) == _plain(_ansible(path))
    assert data["merged"] == {"a": 1, "b": 3}
    assert data["flags"][:4] == [True, False, True, False]
    assert data["numbers"][:2] == [493, "0o17"]  # YAML 1.1: 0755 is octal, 0o17 a string
    assert TrustedAsTemplate.is_tagged_on(data["template"])
    assert TrustedAsTemplate.is_tagged_on(data["strings"][4])
    inner = data["nested"]["list"][0]
    assert all(TrustedAsTemplate.is_tagged_on(s) for s in [*inner, *inner.values()])
    assert not TrustedAsTemplate.is_tagged_on(data["strings"][0])


def test_a_generated_model_reads_the_same(tmp_path: Path) -> None:
    path = tmp_path / "siporch.yml"
    path.write_text(yaml.safe_dump({"siporch": generate(120)}, sort_keys=False))
    done, data = _plugin().fast_load(str(path))
    assert done and data == _ansible(path)


def test_a_model_is_read_entry_by_entry_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model in an inventory's group_vars is kept entry by entry in siporch's cache
    (siporch.model.chunks): read again, or with one trunk changed, it gives the same data
    as a whole read, parsing the changed trunk only; a template in a trunk stays trusted."""
    monkeypatch.delenv("SIPORCH_STATE", raising=False)
    monkeypatch.delenv("SIPORCH_CACHE", raising=False)
    path = tmp_path / "inv" / "group_vars" / "all" / "siporch.yml"
    path.parent.mkdir(parents=True)
    model = generate(120)
    path.write_text(yaml.safe_dump({"siporch": model}, sort_keys=False))
    plugin = _plugin()
    done, data = plugin.fast_load(str(path))
    assert done and data == _ansible(path)
    store = tmp_path / "build" / "cache" / "chunks"
    assert [f.name.startswith("vars-") for f in store.iterdir()] == [True]
    assert store.stat().st_mode & 0o777 == 0o700
    parsed: list[str] = []
    real = plugin.yaml.load

    def counting(text: str, Loader: object) -> object:
        parsed.append(text)
        return real(text, Loader=Loader)

    monkeypatch.setattr(plugin.yaml, "load", counting)
    first = next(iter(model["trunks"]))
    model["trunks"][first]["peers"].append({"address": "198.19.255.250", "port": 5060})
    model["trunks"][first]["description"] = "{{ inventory_hostname }}"
    path.write_text(yaml.safe_dump({"siporch": model}, sort_keys=False))
    done, data = plugin.fast_load(str(path))
    # the skeleton and the changed trunk only
    assert len(parsed) == 2 and parsed[1].lstrip().startswith(f"{first}:"), parsed[1][:80]
    assert done and data == _ansible(path)
    from ansible._internal._datatag._tags import TrustedAsTemplate

    assert TrustedAsTemplate.is_tagged_on(data["siporch"]["trunks"][first]["description"])
    monkeypatch.setenv("SIPORCH_CACHE", "0")  # off: read whole, as before
    parsed.clear()
    path.write_text(path.read_text() + "\n")
    again = plugin.fast_load(str(path))[1]
    assert len(parsed) == 1 and again == data


@pytest.mark.parametrize(
    "text",
    [
        "secret: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  6162\n",
        "x: !unsafe '{{ a }}'\n",
        "$ANSIBLE_VAULT;1.1;AES256\n6162\n",
        "x: [unclosed\n",
    ],
)
def test_vault_unsafe_and_broken_files_are_left_to_ansible(tmp_path: Path, text: str) -> None:
    path = tmp_path / "v.yml"
    path.write_text(text)
    assert _plugin().fast_load(str(path)) == (False, None)


def test_small_files_are_left_to_ansible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIPORCH_FAST_VARS_MIN", "1000000")
    path = tmp_path / "v.yml"
    path.write_text("a: 1\n")
    assert _plugin().fast_load(str(path)) == (False, None)


def _untagged(value: object) -> object:
    """ansible-inventory's listing without its marks of trust: a string that holds no
    template is data either way (the plugin, as siporch's model loader, trusts only the
    strings with template markers; Ansible lists the others as ``__ansible_unsafe``)."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: _untagged(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_untagged(v) for v in value]
    return value


@pytest.mark.skipif(shutil.which("ansible-inventory") is None, reason="no ansible-inventory")
def test_the_inventory_ansible_sees_is_the_same(tmp_path: Path) -> None:
    """ansible-inventory with siporch's ansible.cfg (the plugin, every file read fast when it
    can be) and with host_group_vars: the same hosts and variables, vault values included."""
    inv = tmp_path / "inventory"
    shutil.copytree(EXAMPLE, inv)
    model = inv / "group_vars" / "all" / "siporch.yml"
    doc = yaml.safe_load(model.read_text())
    doc["siporch"]["trunks"].update(generate(40)["trunks"])
    model.write_text(yaml.safe_dump(doc, sort_keys=False))

    def listing(**env: str) -> object:
        proc = subprocess.run(
            ["ansible-inventory", "-i", str(inv), "--list",
             "--vault-password-file", str(EXAMPLE.parent / ".vault-pass")],
            cwd=REPO, capture_output=True, text=True, timeout=120, check=True,
            env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), **env},
        )  # fmt: skip
        return json.loads(proc.stdout)

    fast = listing()
    assert _untagged(fast) == _untagged(listing(ANSIBLE_VARS_ENABLED="host_group_vars"))
    assert len(fast["_meta"]["hostvars"]["edge-central"]["siporch"]["trunks"]) > 40
