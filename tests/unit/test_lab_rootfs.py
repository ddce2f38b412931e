"""Root file system cache keys, the debootstrap command and missing prerequisites."""

from __future__ import annotations

from pathlib import Path

import pytest

from siporch.errors import LabError
from siporch.lab import rootfs
from siporch.lab.spec import LabPaths


def test_cache_key_ignores_order_and_duplicates_but_not_content() -> None:
    key = rootfs.rootfs_key(rootfs.PACKAGES)
    assert rootfs.rootfs_key(tuple(reversed(rootfs.PACKAGES))) == key
    assert rootfs.rootfs_key((*rootfs.PACKAGES, "python3")) == key
    assert rootfs.rootfs_key((*rootfs.PACKAGES, "tcpdump")) != key
    assert rootfs.rootfs_key(rootfs.PACKAGES, suite="trixie") != key
    assert len(key) == 16


def test_packages_hold_what_the_lab_runs() -> None:
    for pkg in (
        "kamailio",
        "kamailio-extra-modules",
        "kamailio-utils-modules",
        "rtpengine-daemon",
        "asterisk",
        "asterisk-modules",
        "openssh-server",
        "python3",
        "sip-tester",
        "iproute2",
    ):
        assert pkg in rootfs.PACKAGES


def test_debootstrap_command() -> None:
    cmd = rootfs.debootstrap_command(Path("/x"))
    assert cmd[:2] == ["debootstrap", "--variant=minbase"]
    assert cmd[2].startswith("--include=") and "asterisk" in cmd[2]
    assert cmd[3:5] == ["sid", "/x"]


def test_missing_debootstrap_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rootfs.shutil, "which", lambda _name: None)
    with pytest.raises(LabError) as exc:
        rootfs.check_prerequisites()
    assert "apt-get install -y debootstrap" in str(exc.value)


def test_unreachable_mirror_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rootfs.shutil, "which", lambda _name: "/usr/sbin/debootstrap")
    monkeypatch.setattr(rootfs, "MIRROR", "http://127.0.0.1:9/debian")
    with pytest.raises(LabError) as exc:
        rootfs.check_prerequisites()
    assert "does not answer" in str(exc.value) and "SIPORCH_LAB_MIRROR" in str(exc.value)


def test_cached_root_requires_the_marker_and_the_binaries(tmp_path: Path) -> None:
    paths = LabPaths(state=tmp_path / "s", cache=tmp_path / "c")
    root = paths.cache / rootfs.rootfs_key()
    assert rootfs.cached_root(paths) is None
    for rel in rootfs.REQUIRED:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).touch()
    assert rootfs.cached_root(paths) is None  # no marker: a half-finished build
    (root / rootfs.MARKER).parent.mkdir(parents=True, exist_ok=True)
    (root / rootfs.MARKER).write_text("{}")
    assert rootfs.cached_root(paths) == root


def test_finalize_moves_the_build_into_place_and_points_current(tmp_path: Path) -> None:
    paths = LabPaths(state=tmp_path / "s", cache=tmp_path / "c")
    tmp = paths.cache / ".build-x"
    for rel in rootfs.REQUIRED:
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).touch()
    (tmp / "etc/ssh").mkdir(parents=True, exist_ok=True)
    (tmp / "etc/ssh/ssh_host_ed25519_key").write_text("secret")
    (tmp / "root").mkdir()
    final = rootfs.finalize(tmp, paths)
    assert not tmp.exists()
    assert final == paths.cache / rootfs.rootfs_key()
    assert (paths.cache / "current").resolve() == final.resolve()
    assert not (final / "etc/ssh/ssh_host_ed25519_key").exists()
    assert rootfs.cached_root(paths) == final


def test_remove_tree_never_deletes_through_a_mount(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = tmp_path / ".build-x"
    (tree / "dev").mkdir(parents=True)
    (tree / "dev" / "null").write_text("pretend device")
    monkeypatch.setattr(rootfs, "mount_points", lambda: ["/", str(tree / "dev")])
    monkeypatch.setattr(rootfs.subprocess, "run", lambda *a, **k: None)  # umount "fails"
    with pytest.raises(LabError, match="still has file systems mounted"):
        rootfs.remove_tree(tree)
    assert (tree / "dev" / "null").exists()
    monkeypatch.setattr(rootfs, "mount_points", lambda: ["/"])
    rootfs.remove_tree(tree)
    assert not tree.exists()


def test_finalize_replaces_an_earlier_build_of_the_same_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rootfs, "mount_points", lambda: ["/"])
    paths = LabPaths(state=tmp_path / "s", cache=tmp_path / "c")
    for generation in ("first", "second"):
        tmp = paths.cache / f".build-{generation}"
        for rel in rootfs.REQUIRED:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).touch()
        (tmp / "root").mkdir()
        (tmp / "etc").mkdir(exist_ok=True)
        (tmp / "generation").write_text(generation)
        final = rootfs.finalize(tmp, paths)
    assert (final / "generation").read_text() == "second"
    assert sorted(p.name for p in paths.cache.iterdir()) == sorted([final.name, "current"])
