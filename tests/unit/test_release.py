"""Release bundles: deterministic, reusable, manifest without secrets."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from siporch.model import load_model
from siporch.release import build_release, list_releases, read_release_files
from siporch.render import render_release

EXAMPLE = Path(__file__).resolve().parents[2] / "inventory" / "example"
SECRETS = ["ami-example-secret", "itsp-b-example-password"]


def test_render_twice_is_byte_identical() -> None:
    a = render_release(load_model(EXAMPLE).model)
    b = render_release(load_model(EXAMPLE).model)
    assert a == b
    assert set(a) == {"edge-central", "edge-central-2", "edge-branch", "pbx-central", "pbx-central-2"}


def test_every_host_gets_its_daemons() -> None:
    files = render_release(load_model(EXAMPLE).model)
    assert "kamailio/kamailio.cfg" in files["edge-central"]
    assert "rtpengine/rtpengine.conf" in files["edge-central"]
    assert "asterisk/pjsip_siporch.conf" in files["pbx-central"]
    assert not any(p.startswith("asterisk/") for p in files["edge-central"])


def test_bundle_manifest_and_reuse(tmp_path: Path) -> None:
    loaded = load_model(EXAMPLE)
    out = tmp_path / "releases"
    rel = build_release(loaded, out)
    assert not rel.reused
    manifest = json.loads((rel.path / "manifest.json").read_text())
    assert manifest["id"] == rel.id and manifest["model_hash"] == loaded.model_hash
    assert manifest["changes"]  # first release: everything is added
    for host, hm in manifest["hosts"].items():
        for path, meta in hm["files"].items():
            data = (rel.path / host / path).read_bytes()
            assert hashlib.sha256(data).hexdigest() == meta["sha256"]
            if path != "kamailio/db/version":  # read at start only
                assert meta["reload"] != "none", f"{host}:{path} has no reload action"
    text = "".join(p.read_text() for p in rel.path.rglob("*.json"))
    for secret in SECRETS:
        assert secret not in text
    # An unchanged model reuses the release.
    again = build_release(load_model(EXAMPLE), out)
    assert again.reused and again.id == rel.id
    assert read_release_files(rel.id, out) == render_release(loaded.model)


def test_secret_files_are_private_and_listed(tmp_path: Path) -> None:
    rel = build_release(load_model(EXAMPLE), tmp_path / "r")
    hm = rel.manifest["hosts"]["pbx-central"]["files"]
    secret = [p for p, m in hm.items() if m["secret"]]
    assert secret, "the PBX has files with secrets (AMI, registration auth)"
    for p in secret:
        assert hm[p]["mode"] == "0640"
        assert (rel.path / "pbx-central" / p).stat().st_mode & 0o077 == 0
    everything = {p: (rel.path / "pbx-central" / p).read_text() for p in hm}
    for secret_value in SECRETS:
        holders = [p for p, t in everything.items() if secret_value in t]
        assert all(hm[p]["secret"] for p in holders), holders


def test_changed_model_makes_a_new_release_with_changes(tmp_path: Path) -> None:
    inv = tmp_path / "inv"
    shutil.copytree(EXAMPLE, inv)
    shutil.copy(EXAMPLE.parent / ".vault-pass", tmp_path / ".vault-pass")
    out = tmp_path / "releases"
    first = build_release(load_model(inv), out)
    path = inv / "group_vars/all/siporch.yml"
    data = yaml.safe_load(path.read_text())
    data["siporch"]["trunks"]["itsp-a"]["peers"].append({"address": "203.0.113.7"})
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    second = build_release(load_model(inv), out, release_id="20990101T000000Z-test")
    assert second.manifest["previous"] == first.id
    assert second.manifest["changes"] == ["trunk itsp-a: peer 203.0.113.7 added"]
    assert [m["id"] for m in list_releases(out)] == [first.id, second.id]


def test_release_id_clash_is_an_error(tmp_path: Path) -> None:
    from siporch.errors import SiporchError

    build_release(load_model(EXAMPLE), tmp_path, release_id="x")
    with pytest.raises(SiporchError, match="already exists"):
        build_release(load_model(EXAMPLE), tmp_path, release_id="x")


def _sanitized_by_walk(model: Any) -> Any:
    """model.json's data as first written: every field walked in Python."""
    from pydantic import SecretStr

    def walk(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return "sha256:" + hashlib.sha256(value.get_secret_value().encode()).hexdigest()
        if isinstance(value, dict):
            return {str(k): walk(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v) for v in value]
        if value is None or isinstance(value, bool | int | float | str):
            return value
        return str(value)

    return walk(model.model_dump(mode="python"))


def test_sanitized_model_is_the_walk_of_every_field() -> None:
    """The sanitized model (pydantic's JSON mode, then the schema's secrets) is what the
    walk of every field gives: a new field whose JSON form is not its text, or a new
    secret field, fails here."""
    from bench.genmodel import generate
    from siporch.model.schema import Model
    from siporch.release import sanitized_model

    data = generate(30, dids_per_trunk=2)
    for i, name in enumerate(list(data["trunks"])[:4]):
        trunk = data["trunks"][name]
        if i % 2:
            trunk["auth"] = {"type": "register", "username": f"u{i}", "password": f"p{i}",
                             "registrar": "sip:reg.example.net"}  # fmt: skip
        trunk["credentials"] = {"username": f"c{i}", "password": f"s{i}"}
    for model in (load_model(EXAMPLE).model, Model.model_validate(data)):
        sanitized = sanitized_model(model)
        assert sanitized == _sanitized_by_walk(model)
        text = json.dumps(sanitized)
        assert not any(s in text for s in SECRETS) and "**" not in text


def test_model_json_entries_are_the_json_encoders() -> None:
    """model.json's entries through the C encoder called directly are what
    ``json.JSONEncoder(sort_keys=True, separators=(", ", ": ")).encode`` writes."""
    from siporch.release import _entry_encoder

    slow = json.JSONEncoder(sort_keys=True, ensure_ascii=True, separators=(", ", ": ")).encode
    fast = _entry_encoder()
    values = [
        {"b": 1.5, "a": [True, False, None, {"z": 1e100, "y": -0.0}], "c": "é\u2028\"\\"},
        {"inf": float("inf"), "nan": float("nan"), "big": 2**70, "e": {}, "l": []},
        "plain", 7, 2.5, None, [], {},
    ]  # fmt: skip
    for value in values:
        assert fast(value) == slow(value)
    with pytest.raises(TypeError):
        fast({"x": object()})
