"""siporch.core: manifests as types, the one tree comparison, what hosts run as the base
of a plan, and secrets masked in every diff."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siporch import core, lifecycle
from siporch.core import (
    MASK,
    NEVER_DEPLOYED,
    NO_MANIFEST,
    RUNS,
    UNREACHABLE,
    FileChange,
    FileEntry,
    HostManifest,
    HostRead,
    Manifest,
    diff_trees,
)
from siporch.errors import MonitorError
from siporch.model import load_model
from siporch.release import build_release

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory" / "example"
ITSP_B_PASSWORD = "itsp-b-example-password"  # the example vault's value (golden pjsip.conf)
AMI_SECRET = "ami-example-secret"


@pytest.fixture(scope="module")
def loaded():  # type: ignore[no-untyped-def]
    return load_model(EXAMPLE)


@pytest.fixture(scope="module")
def release_dir(loaded, tmp_path_factory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("releases")
    rel = build_release(loaded, out)
    return out, rel


# ----------------------------------------------------------------------------- manifests


def test_manifests_round_trip_byte_for_byte(release_dir) -> None:  # type: ignore[no-untyped-def]
    _, rel = release_dir
    raw = (rel.path / "manifest.json").read_text()
    # the layout releases have always been written in (hosts on older releases read it)
    assert raw == json.dumps(json.loads(raw), indent=2, sort_keys=True) + "\n"
    m = Manifest.loads(raw)
    assert m.dumps() == raw
    assert set(m.hosts) == {
        "edge-central",
        "edge-central-2",
        "edge-branch",
        "pbx-central",
        "pbx-central-2",
    }
    for host in m.hosts:
        host_raw = (rel.path / host / "manifest.json").read_text()
        hm = HostManifest.loads(host_raw)
        assert hm.dumps() == host_raw
        assert hm == m.hosts[host]
    pbx = m.hosts["pbx-central"]
    assert pbx.files["asterisk/pjsip_siporch.conf"].secret
    assert pbx.files["asterisk/pjsip_siporch.conf"].mode == "0640"
    assert pbx.secret_paths == {"asterisk/pjsip_siporch.conf", "asterisk/manager_siporch.conf"}


OLD_HOST_MANIFEST = """{
  "files": {
    "asterisk/pjsip_siporch.conf": {
      "mode": "0640",
      "reload": "asterisk:pjsip reload",
      "secret": true,
      "sha256": "aa"
    }
  },
  "host": "pbx-central",
  "id": "20261128T110235Z-73172bc5",
  "model_hash": "73172bc5",
  "role": "pbx",
  "siporch_version": "0.1.0",
  "site": "central"
}
"""


def test_a_manifest_written_by_an_earlier_version_reads_and_writes_the_same() -> None:
    hm = HostManifest.loads(OLD_HOST_MANIFEST)
    assert hm.files["asterisk/pjsip_siporch.conf"] == FileEntry("aa", "0640", "asterisk:pjsip reload", True)
    assert hm.dumps() == OLD_HOST_MANIFEST


def test_manifest_of_another_version_keeps_its_keys() -> None:
    old = {"id": "r0", "host": "h", "role": "edge", "files": {"a": {"sha256": "1"}}}
    hm = HostManifest.from_json(old)
    assert hm.files["a"] == FileEntry("1")
    newer = {**old, "format": 2, "signature": "x"}
    assert HostManifest.from_json(newer).to_json()["signature"] == "x"
    with pytest.raises(ValueError):
        HostManifest.from_json({"files": []})
    assert core.read_manifest(Path("/nonexistent"), "r0") is None


# ---------------------------------------------------------------------------- diff_trees


def test_diff_trees_added_removed_modified_unchanged() -> None:
    old = {"same": {"sha256": "1"}, "gone": {"sha256": "2"}, "edit": {"sha256": "3"}}
    new = {"same": {"sha256": "1"}, "edit": {"sha256": "4"}, "new": {"sha256": "5"}}
    changes = diff_trees(old, new)
    assert [(c.path, c.state) for c in changes] == [
        ("edit", "modified"),
        ("gone", "removed"),
        ("new", "added"),
    ]
    assert changes[1].old == FileEntry("2") and changes[1].new is None
    assert diff_trees(new, new) == []
    assert [c.state for c in diff_trees(None, {"a": "1"})] == ["added"]


def test_diff_trees_modes_count_when_both_sides_know_them() -> None:
    a = {"f": {"sha256": "1", "mode": "0644"}}
    changes = diff_trees(a, {"f": FileEntry("1", "0640")})
    assert len(changes) == 1 and changes[0].mode_only and changes[0].state == "modified"
    assert diff_trees(a, {"f": FileEntry("1", "644")}) == []  # the same mode, spelt apart
    assert diff_trees(a, {"f": "1"}) == []  # a bare hash has no mode: content only


def test_diff_trees_ignores_the_manifest_and_reads_three_shapes() -> None:
    on_host = {"manifest.json": "x", "a": "1"}
    assert diff_trees({"a": FileEntry("1")}, on_host) == []
    c = diff_trees({"a": {"sha256": "1", "secret": True, "reload": "asterisk:pjsip reload"}}, {})
    assert c == [FileChange("a", "removed", FileEntry("1", None, "asterisk:pjsip reload", True), None)]
    assert c[0].secret and c[0].reload == "asterisk:pjsip reload"


# -------------------------------------------------------------------------- base_release


def _hm(rid: str, host: str, files: dict[str, str]) -> dict[str, object]:
    return {
        "id": rid,
        "host": host,
        "role": "edge",
        "files": {p: {"sha256": h, "mode": "0644", "reload": "none", "secret": False}
                  for p, h in files.items()},
    }  # fmt: skip


def _cache(out: Path, rid: str, hosts: dict[str, dict[str, object]]) -> None:
    (out / rid).mkdir(parents=True)
    (out / rid / "manifest.json").write_text(json.dumps({"id": rid, "hosts": hosts}))


def test_base_release_host_runs_never_deployed_unreachable(tmp_path: Path) -> None:
    reads: dict[str, HostRead | Exception] = {
        "a": HostRead("r2", {"x": "1"}, _hm("r2", "a", {"x": "1"})),
        "b": HostRead(None, {}),
        "c": MonitorError("c: no answer over SSH within 10 s"),
    }
    seen: list[tuple[str, str]] = []

    async def reader(host: str, address: str) -> HostRead:
        seen.append((host, address))
        r = reads[host]
        if isinstance(r, Exception):
            raise r
        return r

    bases = lifecycle.base_release(
        tmp_path, {"a": "10.0.0.1", "b": "10.0.0.2", "c": "10.0.0.3"},
        out_dir=tmp_path, reader=reader,
    )  # fmt: skip
    assert sorted(seen) == [("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")]
    assert bases["a"].state == RUNS and bases["a"].release == "r2"
    assert bases["a"].manifest_source == "host" and bases["a"].files["x"].sha256 == "1"
    assert bases["b"].state == NEVER_DEPLOYED and bases["b"].files == {} and bases["b"].known
    assert bases["c"].state == UNREACHABLE and not bases["c"].known
    assert "no answer over SSH" in bases["c"].describe()


def test_host_wins_over_the_controller_cache(tmp_path: Path) -> None:
    # the controller believes r1 was deployed, and holds a different r2 than the host
    _cache(tmp_path, "r1", {"a": _hm("r1", "a", {"x": "old"})})
    _cache(tmp_path, "r2", {"a": _hm("r2", "a", {"x": "cached"})})
    read = HostRead("r2", {"x": "host"}, _hm("r2", "a", {"x": "host"}))
    base = core.resolve_base("a", read, lambda rid: core.read_manifest(tmp_path, rid))
    assert base.release == "r2" and base.files["x"].sha256 == "host"
    assert base.manifest_source == "host"


def test_controller_cache_fills_a_manifest_the_host_lacks(tmp_path: Path) -> None:
    _cache(tmp_path, "r2", {"a": _hm("r2", "a", {"x": "1"})})
    cache = lambda rid: core.read_manifest(tmp_path, rid)  # noqa: E731
    base = core.resolve_base("a", HostRead("r2", {"x": "1"}, None), cache)
    assert base.state == RUNS and base.manifest_source == "controller"
    none = core.resolve_base("a", HostRead("r9", {"x": "1"}, None), cache)
    assert none.state == NO_MANIFEST and not none.known and "r9" in none.describe()


# ---------------------------------------------------------------------------------- plan


def test_plan_never_deployed_adds_every_file_unreachable_is_unknown(loaded, tmp_path) -> None:  # type: ignore[no-untyped-def]
    bases = {
        "edge-central": core.HostBase("edge-central", NEVER_DEPLOYED),
        "edge-branch": core.HostBase("edge-branch", UNREACHABLE, error="edge-branch: timeout"),
    }
    plan = lifecycle.build_plan(loaded, bases, out_dir=tmp_path)
    ec = plan.hosts["edge-central"]
    assert ec.changes and all(c.state == "added" for c in ec.changes)
    assert set(ec.to_json()["files"]) == set(plan.candidate["edge-central"])
    assert "kamailio:restart" in ec.reloads
    assert plan.unknown == ["edge-branch"]
    assert plan.hosts["edge-branch"].changes == () and not plan.hosts["edge-branch"].base.known
    assert plan.summary is None  # the hosts do not run one release this controller knows
    assert plan.changed


def _edited_inventory(tmp_path: Path) -> Path:
    """A copy of the example inventory whose itsp-b trunk has another auth username."""
    inv = tmp_path / "inv"
    shutil.copytree(EXAMPLE, inv)
    shutil.copy(EXAMPLE.parent / ".vault-pass", tmp_path / ".vault-pass")
    path = inv / "group_vars" / "all" / "siporch.yml"
    path.write_text(path.read_text().replace("username: examplecorp\n", "username: renamed\n"))
    return inv


def test_plan_against_what_hosts_run(loaded, release_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out, rel = release_dir
    m = Manifest.loads((rel.path / "manifest.json").read_text())
    bases = core.release_bases(m)
    plan = lifecycle.build_plan(loaded, bases, out_dir=out)
    assert not plan.changed and plan.summary == () and plan.summary_base == rel.id
    # the model changes a trunk: only the files it renders into change
    edited = load_model(_edited_inventory(tmp_path))
    model = edited.model
    plan = lifecycle.build_plan(edited, bases, out_dir=out)
    changed = {h: core.states(p.changes) for h, p in plan.hosts.items() if p.changes}
    # itsp-b registers from the PBX; the edge answers its challenges with the same credentials
    assert changed == {
        "pbx-central": {"asterisk/pjsip_siporch.conf": "modified"},
        "edge-central": {"kamailio/db/credentials": "modified"},
        "edge-central-2": {"kamailio/db/credentials": "modified"},
    }
    assert plan.hosts["pbx-central"].reloads == ("asterisk:pjsip reload",)
    text = lifecycle.plan_diff(plan, "pbx-central", out, core.model_secrets(model))
    assert "+username = renamed" in text
    assert ITSP_B_PASSWORD not in text and AMI_SECRET not in text


# ------------------------------------------------------------------------------- masking


def test_mask_secrets_in_rendered_files(release_dir) -> None:  # type: ignore[no-untyped-def]
    _, rel = release_dir
    pjsip = (rel.path / "pbx-central" / "asterisk" / "pjsip_siporch.conf").read_text()
    manager = (rel.path / "pbx-central" / "asterisk" / "manager_siporch.conf").read_text()
    assert ITSP_B_PASSWORD in pjsip and AMI_SECRET in manager
    for text in (pjsip, manager):
        masked = core.mask_secrets(text)
        assert ITSP_B_PASSWORD not in masked and AMI_SECRET not in masked
        assert MASK in masked
        assert len(masked.splitlines()) == len(text.splitlines())
    assert "password = ********\n" in core.mask_secrets(pjsip)
    # a known value is masked wherever it appears, not only after a key
    assert core.mask_secrets("x=abc;pw=s3cr3t\n", ["s3cr3t"]) == "x=abc;pw=********\n"
    assert core.mask_secrets("; password notes stay\n") == "; password notes stay\n"


def _mask_line_by_line(text: str, values: list[str]) -> str:
    """mask_secrets as it was written first: every line through both patterns."""
    known = sorted({v for v in values if v}, key=len, reverse=True)
    out = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        end = line[len(body) :]
        if not body.lstrip().startswith((";", "#")):
            m = core._SECRET_KEY.match(body) or core._SECRET_HTABLE_ROW.match(body)
            if m:
                body = m.group("key") + MASK + m.group("tail")
        for v in known:
            body = body.replace(v, MASK)
        out.append(body + end)
    return "".join(out)


_MASK_PIECES = [
    "password", "PassWord", "passwd", "passphrase", "Secret", "md5_cred", "token",
    "private_key", "AUTH_KEY", ".p:", "1:42.p:0:2:", ":0", ":", "=", "=>", " = ", "\t",
    " ", ";", "#", "abc", "s3cr3t", "x", "7", "\n", "\n", "\n", "\r\n", "\r", "\x0b",
    "\x0c", "\x1c", "\x85", "\u2028", "\xa0", "é", "İ", "\u017f",
]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.sampled_from(_MASK_PIECES), max_size=40).map("".join),
    st.lists(st.sampled_from(["s3cr3t", "abc", "x", "7", "a\nb", "c\u2028", ""]), max_size=3),
)
def test_mask_secrets_is_the_line_by_line_mask(text: str, values: list[str]) -> None:
    """The fast path (ASCII, ``\n`` only: the lines that name a secret found by
    ``str.find``) masks what the loop over every line masks, on any text and values."""
    assert core.mask_secrets(text, values) == _mask_line_by_line(text, values)


def test_mask_secrets_of_rendered_files_is_the_line_by_line_mask(release_dir) -> None:  # type: ignore[no-untyped-def]
    _, rel = release_dir
    for f in sorted(rel.path.rglob("*")):
        if f.is_file() and f.name != "manifest.json":
            text = f.read_text()
            for values in ([], [ITSP_B_PASSWORD, AMI_SECRET, "a"]):
                assert core.mask_secrets(text, values) == _mask_line_by_line(text, values), f


def test_masked_diff_of_a_rotated_secret_shows_a_change_never_the_value() -> None:
    old = b"[itsp]\nusername = u\npassword = first-secret\n"
    new = b"[itsp]\nusername = v\npassword = second-secret\n"
    text = core.unified_diff("pjsip.conf", old, new, secret=True)
    assert "-username = u\n+username = v\n" in text
    assert "first-secret" not in text and "second-secret" not in text
    leaked = core.unified_diff("x.cfg", b"a\n", b"a s3cr3t\n", secret_values=["s3cr3t"])
    assert "+a ********\n" in leaked and "s3cr3t" not in leaked
    only = core.unified_diff("pjsip.conf", old, old.replace(b"first", b"third"), secret=True)
    assert MASK in only and "third" not in only and "first" not in only


def test_diff_cli_against_a_release_masks_secrets(release_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out, rel = release_dir
    inv = _edited_inventory(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(
        [sys.executable, "-m", "siporch", "diff", "-i", str(inv), "--out", str(out),
         "--against", rel.id],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    assert "modified asterisk/pjsip_siporch.conf" in r.stdout
    assert "+username = renamed" in r.stdout
    assert ITSP_B_PASSWORD not in r.stdout + r.stderr and AMI_SECRET not in r.stdout
    j = subprocess.run(
        [sys.executable, "-m", "siporch", "diff", "-i", str(inv), "--out", str(out),
         "--against", rel.id, "--json"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    data = json.loads(j.stdout)
    assert data["hosts"]["pbx-central"]["files"] == {"asterisk/pjsip_siporch.conf": "modified"}
    assert data["hosts"]["edge-central"]["files"] == {"kamailio/db/credentials": "modified"}
    assert data["hosts"]["edge-central-2"]["files"] == {"kamailio/db/credentials": "modified"}
    assert data["hosts"]["edge-branch"]["files"] == {} and data["unknown"] == []


def test_check_mode_action_shows_a_masked_diff_and_reports_changed(tmp_path: Path) -> None:
    """The role's action, run by ansible-playbook in check mode on this machine."""
    running = tmp_path / "running.conf"
    running.write_text("[itsp]\nusername = u\npassword = first-secret\n")
    new = tmp_path / "new.conf"
    new.write_text("[itsp]\nusername = v\npassword = second-secret\n")
    play = tmp_path / "play.yml"
    play.write_text(
        f"""- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: masked
      siporch_masked_diff: {{src: "{new}", dest: "{running}", path: asterisk/pjsip_siporch.conf}}
    - name: same
      siporch_masked_diff: {{src: "{running}", dest: "{running}", path: same.conf}}
"""
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "ANSIBLE_ACTION_PLUGINS": str(REPO / "roles/siporch_release/action_plugins"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
    }
    ansible = Path(sys.executable).parent / "ansible-playbook"
    r = subprocess.run(
        [str(ansible), "-i", "localhost,", "--check", "--diff", "-v", str(play)],
        capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "-username = u" in r.stdout and "+username = v" in r.stdout
    assert f"password = {MASK}" in r.stdout
    assert "first-secret" not in r.stdout + r.stderr
    assert "second-secret" not in r.stdout + r.stderr
    assert "changed=1" in r.stdout
    assert running.read_text().endswith("first-secret\n")  # nothing was written


def test_model_changes_of_a_deploy_against_what_hosts_run(loaded, release_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out, rel = release_dir
    edited = build_release(load_model(_edited_inventory(tmp_path)), out)
    # the hosts run the first release, whose model this controller holds
    lines = core.model_changes(edited.path, [rel.id, rel.id, rel.id])
    assert lines[0] == f"model changes against release {rel.id}, which the hosts run: 1"
    assert lines[1:] == ["trunk itsp-b: auth.username examplecorp -> renamed"]
    # a fresh controller (the hosts' release not here): not known, never "everything added"
    lines = core.model_changes(edited.path, ["20200101T000000Z-deadbeef"] * 3)
    assert len(lines) == 1 and "not known" in lines[0] and "not on this controller" in lines[0]
    assert "not known" in core.model_changes(edited.path, [rel.id, "20200101T000000Z-x"])[0]
    # hosts never deployed: every site, host and trunk is new
    fresh = core.model_changes(edited.path, ["", ""])
    assert "trunk itsp-b added" in fresh


# -- Release history and the rollback target ------------------------------------------------

R0, R1, R2, R3 = (f"2026010{i}T000000Z-0000000{i}" for i in range(4))


def _history(*entries: tuple[str, str]) -> str:
    return "".join(core.history_line(kind, rid, "2026-01-01T00:00:00Z") for kind, rid in entries)


def test_rollback_skips_a_release_that_was_rolled_back_from() -> None:
    # R1 went live, was rolled back from; R2 went live: a rollback goes to R0, not R1
    history = _history(("deploy", R0), ("deploy", R1), ("back", R0), ("deploy", R2))
    assert core.release_stack(history) == [R0, R2]
    assert core.rollback_target(history, R2, [R0, R1, R2]) == R0


def test_rollback_skips_a_release_whose_deploy_was_reverted() -> None:
    history = _history(("deploy", R0), ("deploy", R1), ("back", R0), ("deploy", R2))
    history += _history(("deploy", R3), ("back", R2))  # R3 failed its health gate
    assert core.rollback_target(history, R2, [R0, R1, R2, R3]) == R0


def test_repeated_rollbacks_go_further_back() -> None:
    history = _history(("deploy", R0), ("deploy", R1), ("deploy", R2), ("back", R1))
    assert core.rollback_target(history, R1, [R0, R1, R2]) == R0


def test_named_rollback_forward_is_pushed() -> None:
    history = _history(("deploy", R0), ("deploy", R1), ("back", R0), ("back", R1))
    assert core.release_stack(history) == [R0, R1]
    assert core.rollback_target(history, R1, [R0, R1]) == R0


def test_pruned_releases_are_skipped() -> None:
    history = _history(("deploy", R0), ("deploy", R1), ("deploy", R2))
    assert core.rollback_target(history, R2, [R0, R2]) == R0
    assert core.rollback_target(history, R2, [R2]) == ""


def test_without_history_the_release_before_by_id() -> None:
    assert core.rollback_target("", R2, [R0, R1, R2, R3]) == R1
    assert core.rollback_target("", R0, [R0, R1]) == ""


def test_history_that_disagrees_with_the_link_is_not_trusted() -> None:
    history = _history(("deploy", R0), ("deploy", R1))
    assert core.rollback_target(history, R2, [R0, R1, R2]) == R1  # link switched by hand


def test_releases_from_before_the_history_are_reached_by_id() -> None:
    # R0 and R1 predate the history (an older siporch); R2 is its first line
    history = _history(("deploy", R2))
    assert core.rollback_target(history, R2, [R0, R1, R2]) == R1
    # but a release the history shows as rolled back from is never a target
    history = _history(("deploy", R1), ("back", R0), ("deploy", R2))
    assert core.release_stack(history) == [R0, R2]
    assert core.rollback_target(history, R2, [R0, R1, R2]) == R0


def test_history_ignores_foreign_lines_and_rejects_unknown_kinds() -> None:
    history = "garbage\n\n" + _history(("deploy", R0), ("deploy", R1)) + "x y z w\n"
    assert core.release_stack(history) == [R0, R1]
    with pytest.raises(ValueError):
        core.history_line("sideways", R0, "t")


# -- Pruning the releases on a host ---------------------------------------------------------

IDS = [f"202601{d:02d}T000000Z-{d:08x}" for d in range(1, 16)]


def test_prune_keeps_the_newest_by_id() -> None:
    history = "".join(core.history_line("deploy", r, "t") for r in IDS)
    assert core.releases_to_prune(IDS, 10, IDS[-1], history) == IDS[:5]
    assert core.releases_to_prune(IDS[:10], 10, IDS[9], history) == []
    assert core.releases_to_prune(IDS, 0, IDS[-1], history) == []


def test_prune_never_removes_the_rollback_target() -> None:
    # IDS[1] went live, then IDS[2..14] were each rolled back from: a rollback of
    # IDS[14]... goes to IDS[1], the oldest; it must survive the prune
    lines = [core.history_line("deploy", IDS[0], "t"), core.history_line("deploy", IDS[1], "t")]
    for r in IDS[2:-1]:
        lines += [core.history_line("deploy", r, "t"), core.history_line("back", IDS[1], "t")]
    lines.append(core.history_line("deploy", IDS[-1], "t"))
    history = "".join(lines)
    assert core.rollback_target(history, IDS[-1], IDS) == IDS[1]
    pruned = core.releases_to_prune(IDS, 10, IDS[-1], history)
    assert IDS[1] not in pruned and IDS[-1] not in pruned
    assert pruned == [IDS[0], *IDS[2:5]]


def test_prune_never_removes_the_current_release() -> None:
    # the host was rolled back by hand to an old release: it stays, and so does its
    # rollback target by id (no history agrees with the link)
    pruned = core.releases_to_prune(IDS, 10, IDS[2], "")
    assert IDS[2] not in pruned and IDS[1] not in pruned
    assert pruned == [IDS[0], IDS[3], IDS[4]]


def test_prune_filter_is_the_core_function() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "siporch_release_filters",
        REPO / "roles" / "siporch_release" / "filter_plugins" / "siporch_release.py",
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    prune = mod.FilterModule().filters()["siporch_releases_to_prune"]
    history = "".join(core.history_line("deploy", r, "t") for r in IDS)
    assert prune(IDS, "10", IDS[-1], history) == IDS[:5]
    assert prune(IDS, 10, IDS[-1], None) == IDS[:5]


def test_prune_reads_a_history_from_before_the_switch() -> None:
    # discover read the history before this run went live with IDS[-1]: the host ran
    # IDS[1] (IDS[2..13] rolled back from), which a rollback of IDS[-1] goes to
    lines = [core.history_line("deploy", IDS[0], "t"), core.history_line("deploy", IDS[1], "t")]
    for r in IDS[2:-1]:
        lines += [core.history_line("deploy", r, "t"), core.history_line("back", IDS[1], "t")]
    before_switch = "".join(lines)
    pruned = core.releases_to_prune(IDS, 10, IDS[-1], before_switch)
    assert IDS[1] not in pruned and IDS[-1] not in pruned
