"""Outbound credentials of trunks stay secret: only in the edge's credentials table (a
secret file, 0640), never in manifests, the release's model, other files, the plan or
`siporch diff` output."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from siporch.model import load_model
from siporch.release import build_release

EXAMPLE = Path(__file__).resolve().parents[2] / "inventory" / "example"
OLD = "itsp-a-example-password"  # the example vault's itsp-a credentials password
NEW = "a-new-itsp-a-password"


def _inventory(tmp_path: Path) -> Path:
    inv = tmp_path / "inv"
    shutil.copytree(EXAMPLE, inv)
    shutil.copy(EXAMPLE.parent / ".vault-pass", tmp_path / ".vault-pass")
    return inv


def _public_text(release: Path) -> str:
    """Every file of the release that is not a secret file, manifests included."""
    import json

    manifest = json.loads((release / "manifest.json").read_text())
    secret = {
        f"{host}/{path}"
        for host, hm in manifest["hosts"].items()
        for path, meta in hm["files"].items()
        if meta["secret"]
    }
    return "".join(
        p.read_text(errors="replace")
        for p in release.rglob("*")
        if p.is_file() and str(p.relative_to(release)) not in secret
    )


def test_credentials_only_in_the_secret_file(tmp_path: Path) -> None:
    loaded = load_model(_inventory(tmp_path))
    assert loaded.model.trunks["itsp-a"].credentials is not None
    rel = build_release(loaded, tmp_path / "releases")
    meta = rel.manifest["hosts"]["edge-central"]["files"]["kamailio/db/credentials"]
    assert meta["secret"] and meta["mode"] == "0640"
    assert meta["reload"] == "kamailio:htable.reload:creds"
    on_disk = rel.path / "edge-central" / "kamailio/db/credentials"
    assert on_disk.stat().st_mode & 0o077 == 0
    assert OLD in on_disk.read_text()
    public = _public_text(rel.path)
    for secret in (OLD, "itsp-b-example-password", "lab-itsp-c-secret"):
        assert secret not in public


def test_password_change_shows_in_no_plan_or_diff(tmp_path: Path) -> None:
    inv = _inventory(tmp_path)
    out = tmp_path / "releases"
    first = build_release(load_model(inv), out)
    path = inv / "group_vars/all/siporch.yml"
    data = yaml.safe_load(path.read_text())
    data["siporch"]["trunks"]["itsp-a"]["credentials"]["password"] = NEW
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    outputs = []
    for extra in ([], ["--json"]):
        proc = subprocess.run(
            [sys.executable, "-m", "siporch", "diff", "-i", str(inv), "--out", str(out),
             "--against", first.id, *extra],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 1, proc.stdout + proc.stderr
        outputs.append(proc.stdout + proc.stderr)
    assert "kamailio/db/credentials" in outputs[0]
    assert "********" in outputs[0]  # the changed credentials file's diff, masked
    second = build_release(load_model(inv), out)
    text = "\n".join(outputs) + _public_text(second.path)
    for secret in (OLD, NEW):
        assert secret not in text
