"""The lab inventory writer: hosts.yml, rewritten group_vars, vault copied, lab.json."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from siporch.errors import LabError
from siporch.lab.inventory import (
    PEERS_GROUP,
    is_vault_file,
    lab_hosts_document,
    read_lab_json,
    write_inventory,
)
from siporch.lab.spec import HOSTS, LabPaths

EXAMPLE = Path(__file__).resolve().parents[2] / "inventory" / "example"


@pytest.fixture
def paths(tmp_path: Path) -> LabPaths:
    return LabPaths(state=tmp_path / "state", cache=tmp_path / "cache")


@pytest.fixture
def example(tmp_path: Path) -> Path:
    dest = tmp_path / "inventory" / "example"
    shutil.copytree(EXAMPLE, dest)
    return dest


def _hosts_by_group(doc: dict) -> dict[str, dict]:  # type: ignore[type-arg]
    return {g: body["hosts"] for g, body in doc["all"]["children"].items()}


def test_hosts_keep_the_example_groups_and_add_the_peers(paths: LabPaths, example: Path) -> None:
    out = write_inventory(example, example.parent / "lab", paths)
    doc = yaml.safe_load((out / "hosts.yml").read_text())
    groups = _hosts_by_group(doc)
    example_groups = _hosts_by_group(yaml.safe_load((example / "hosts.yml").read_text()))
    for group, members in example_groups.items():
        assert set(groups[group]) == set(members)
    placed = {h for members in groups.values() for h in members}
    assert placed == {h.name for h in HOSTS}
    unplaced = placed - {h for m in example_groups.values() for h in m}
    assert set(groups[PEERS_GROUP]) == unplaced - {"dns", "db-central"}
    assert set(groups["lab_infra"]) == {"dns", "db-central"}
    assert {"itsp-c1", "itsp-c2"} <= set(groups[PEERS_GROUP])
    by_name = {h.name: h for h in HOSTS}
    for members in groups.values():
        for name, hvars in members.items():
            assert hvars["ansible_host"] == by_name[name].address
    common = doc["all"]["vars"]
    assert common["ansible_user"] == "root"
    assert common["ansible_ssh_private_key_file"] == str(paths.ssh_key)
    assert "StrictHostKeyChecking=no" in common["ansible_ssh_common_args"]
    assert common["ansible_python_interpreter"] == "/usr/bin/python3"


def test_group_vars_are_rewritten_and_the_vault_is_copied_byte_for_byte(
    paths: LabPaths, example: Path
) -> None:
    vault = example / "group_vars" / "all" / "vault.yml"
    if not vault.exists():
        vault.write_text("$ANSIBLE_VAULT;1.1;AES256\n3132\n")
    out = write_inventory(example, example.parent / "lab", paths)
    lab_vault = out / "group_vars" / "all" / "vault.yml"
    assert lab_vault.read_bytes() == vault.read_bytes()
    assert is_vault_file(lab_vault.read_bytes())
    model = (out / "group_vars" / "all" / "siporch.yml").read_text()
    assert "192.0.2." not in model and "203.0.113." not in model and "198.51.100." not in model
    assert "address: 198.18.0.10" in model
    # Comments and layout survive: only addresses differ, line by line.
    original = (example / "group_vars" / "all" / "siporch.yml").read_text().splitlines()
    assert len(model.splitlines()) == len(original)
    assert model.splitlines()[0] == original[0]


def test_lab_json_lists_every_host_and_is_also_a_valid_inventory_group(
    paths: LabPaths, example: Path
) -> None:
    out = write_inventory(example, example.parent / "lab", paths)
    info = read_lab_json(out / "lab.json")
    assert set(info["hosts"]) == {h.name for h in HOSTS}
    assert info["hosts"]["itsp-a1"]["addresses"] == ["198.18.1.10", "198.18.1.20"]
    assert info["hosts"]["pbx-central"]["netns"] == "sipo-pbx-central"
    assert info["hosts"]["pbx-central"]["root"] == str(paths.host_root("pbx-central"))
    assert info["network"] == "198.18.0.0/15"
    raw = yaml.safe_load((out / "lab.json").read_text())
    assert list(raw) == ["siporch_lab"] and set(raw["siporch_lab"]) == {"vars", "hosts"}


def test_rewriting_replaces_an_earlier_lab_inventory(paths: LabPaths, example: Path) -> None:
    out = write_inventory(example, example.parent / "lab", paths)
    (out / "stale.yml").write_text("x: 1\n")
    write_inventory(example, out, paths)
    assert not (out / "stale.yml").exists()


def test_refuses_to_overwrite_a_directory_it_did_not_write(paths: LabPaths, example: Path) -> None:
    other = example.parent / "production"
    other.mkdir()
    (other / "hosts.yml").write_text("all: {}\n")
    with pytest.raises(LabError, match="not written by the lab"):
        write_inventory(example, other, paths)
    assert (other / "hosts.yml").read_text() == "all: {}\n"


def test_unknown_example_host_is_a_clear_error(paths: LabPaths, example: Path) -> None:
    doc = yaml.safe_load((example / "hosts.yml").read_text())
    doc["all"]["children"]["siporch_pbx"]["hosts"]["pbx-tokyo"] = {"ansible_host": "192.0.2.99"}
    (example / "hosts.yml").write_text(yaml.safe_dump(doc))
    with pytest.raises(LabError, match="pbx-tokyo"):
        lab_hosts_document(example, paths.ssh_key)


def test_missing_example_is_a_clear_error(paths: LabPaths, tmp_path: Path) -> None:
    with pytest.raises(LabError, match="does not exist"):
        write_inventory(tmp_path / "nope", tmp_path / "lab", paths)
