"""The supported versions' ends with their real daemons, in the lab's root file systems.

* ``kamailio -c`` accepts the rendered example edges with sid's Kamailio (the lab's root)
  and Debian 12's 5.6 (the bookworm root, built by ``siporch lab up --edge-root bookworm``);
* the edge helper's version gate reads each root's ``kamailio -v`` and ``rtpengine
  --version`` and accepts them (and refuses an older version).

Each root is used read-only through ``chroot`` (scratch files in its /tmp, removed after);
a root that is not built skips its tests.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from siporch.model import load_model
from siporch.model.schema import Model
from siporch.render.kamailio import render

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory" / "example"
CACHE = Path(os.environ.get("SIPORCH_LAB_CACHE", "/var/cache/siporch/rootfs"))
# The cache's link to the newest root of each suite (siporch.lab.rootfs.suite_link).
ROOTS = {"sid": CACHE / "current", "bookworm": CACHE / "bookworm"}
# The oldest supported versions are Debian 12's; sid has newer ones.
OLDEST = {"sid": ((6, 0), (11, 0)), "bookworm": ((5, 6), (10, 5))}


def _own_root(suite: str) -> Path:
    """The root of ``suite`` built from this tree's package list (the suite's link may
    point at a root built from another list), else the link."""
    from siporch.lab import rootfs
    from siporch.lab.spec import LabPaths

    try:
        packages = rootfs.suite_spec(suite)[0]
        found = rootfs.cached_root(LabPaths.default(), packages, suite)
    except Exception:  # no such suite here, an unreadable cache: use the link
        found = None
    return found or ROOTS[suite]


def lab_root(suite: str) -> Path:
    root = _own_root(suite)
    if os.geteuid() != 0:
        pytest.skip("chroot needs root")
    if not (root / "usr/sbin/kamailio").exists():
        pytest.skip(f"no {suite} lab root at {root} (siporch lab up --edge-root {suite})")
    return root


def in_root(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["chroot", str(root), *argv], capture_output=True, text=True, timeout=60, check=False
    )


@functools.cache
def example() -> Model:
    return load_model(EXAMPLE).model


@functools.cache
def helper(role: str, name: str) -> Any:
    path = REPO / "roles" / role / "files" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def kam() -> Any:
    return helper("kamailio_edge", "siporch_kamailio")


def rtp() -> Any:
    return helper("rtpengine_media", "siporch_rtpengine")


@pytest.mark.parametrize("suite", sorted(ROOTS))
@pytest.mark.parametrize("host", ["edge-central", "edge-central-2", "edge-branch"])
def test_rendered_edge_passes_kamailio_check(suite: str, host: str) -> None:
    root = lab_root(suite)
    inner = Path(tempfile.mkdtemp(prefix="siporch-vcheck-", dir=root / "tmp"))
    try:
        rel = "/" + str(inner.relative_to(root))
        for name, text in render(example(), host, root=rel).items():
            path = inner / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        (inner / "run").mkdir(exist_ok=True)
        result = in_root(root, "kamailio", "-c", "-f", f"{rel}/kamailio/kamailio.cfg")
        version = in_root(root, "kamailio", "-v").stdout.splitlines()[0]
        assert result.returncode == 0, version + "\n" + result.stdout + result.stderr
        assert "config file ok" in result.stdout + result.stderr
    finally:
        shutil.rmtree(inner, ignore_errors=True)


@pytest.mark.parametrize("suite", sorted(ROOTS))
def test_each_roots_daemons_pass_the_version_gate(suite: str) -> None:
    root = lab_root(suite)
    k = in_root(root, "kamailio", "-v")
    r = in_root(root, "rtpengine", "--version")
    kv = kam().kamailio_version(k.stdout + k.stderr)
    rv = rtp().rtpengine_version(r.stdout + r.stderr)
    assert kv >= OLDEST[suite][0], kv
    assert rv >= OLDEST[suite][1], rv
    kam().require_kamailio(kv)  # each raises the helper's Failure when unsupported
    rtp().require_rtpengine(rv)


def test_version_gate_refuses_older_daemons() -> None:
    assert kam().kamailio_version("version: kamailio 5.6.3 (x86_64/linux) \nflags: x") == (5, 6)
    assert kam().kamailio_version("version: kamailio 6.1.5 (x86_64/Linux)") == (6, 1)
    assert rtp().rtpengine_version("Version: 10.5.3.5-1+deb12u1") == (10, 5)
    assert rtp().rtpengine_version("Version: 26.0.1.26+0~mr26.0.1.26") == (26, 0)
    kam().require_kamailio((5, 6))
    rtp().require_rtpengine((10, 5))
    with pytest.raises(kam().Failure, match=r"Kamailio 5\.5 is not supported.*5\.6"):
        kam().require_kamailio((5, 5))
    with pytest.raises(rtp().Failure, match=r"rtpengine 9\.5 is not supported.*10\.5"):
        rtp().require_rtpengine((9, 5))
    with pytest.raises(kam().Failure, match="cannot read"):
        kam().kamailio_version("no version here")


# ------------------------------------------------------------ the lab's second root


def test_bookworm_root_has_its_own_key_link_and_no_asterisk() -> None:
    from siporch.lab import rootfs

    packages, required = rootfs.suite_spec("bookworm")
    assert "asterisk" not in packages and "usr/sbin/asterisk" not in required
    assert {"kamailio", "rtpengine-daemon", "openssh-server", "systemd", "sip-tester"} <= set(
        packages
    )
    assert rootfs.rootfs_key(packages, "bookworm") != rootfs.rootfs_key()
    assert rootfs.suite_link("sid") == "current" and rootfs.suite_link("bookworm") == "bookworm"
    cmd = rootfs.debootstrap_command(Path("/x"), packages, "bookworm")
    assert cmd[-3:] == ["bookworm", "/x", rootfs.MIRROR]


def test_finalize_points_the_suites_own_link(tmp_path: Path) -> None:
    from siporch.lab import rootfs
    from siporch.lab.spec import LabPaths

    paths = LabPaths(state=tmp_path / "state", cache=tmp_path / "cache")
    paths.cache.mkdir()
    packages, required = rootfs.suite_spec("bookworm")
    tmp = paths.cache / ".build-x"
    for rel in required:
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text("")
    for sub in ("root", "etc"):
        (tmp / sub).mkdir(exist_ok=True)
    final = rootfs.finalize(tmp, paths, packages, suite="bookworm")
    assert (paths.cache / "bookworm").resolve() == final
    assert not (paths.cache / "current").exists()
    assert rootfs.cached_root(paths, packages, "bookworm") == final
    assert '"suite": "bookworm"' in (final / rootfs.MARKER).read_text()


def test_unknown_suite_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from siporch.errors import LabError
    from siporch.lab import lab

    monkeypatch.delenv(lab.EDGE_ROOT_ENV, raising=False)
    assert lab.edge_root_suite() == "sid"
    assert lab.edge_root_suite("bookworm") == "bookworm"
    monkeypatch.setenv(lab.EDGE_ROOT_ENV, "Bookworm")
    assert lab.edge_root_suite() == "bookworm"
    monkeypatch.setenv(lab.EDGE_ROOT_ENV, "buster")
    with pytest.raises(LabError, match=f"{lab.EDGE_ROOT_ENV}: no lab root .*'buster'"):
        lab.edge_root_suite()


def test_only_edges_take_the_edge_root() -> None:
    from siporch.lab import lab
    from siporch.lab.spec import HOSTS

    sid, bookworm = Path("/cache/sid"), Path("/cache/bookworm")
    roots = {h.name: lab.host_lower(h, sid, bookworm) for h in HOSTS}
    assert roots["edge-central"] == roots["edge-branch"] == bookworm
    assert {roots[n] for n in ("pbx-central", "itsp-a1", "dns", "itsp-c1")} == {sid}
    assert {lab.host_lower(h, sid, None) for h in HOSTS} == {sid}


# ------------------------------------------------------------------- ansible-core


def test_one_ansible_core_range_everywhere() -> None:
    """The package, the collection and the README state the same ansible-core range, and
    the ansible-core running the tests is inside it."""
    import re

    from ansible.release import __version__ as ansible_version

    from siporch import collection

    pyproject = (REPO / "pyproject.toml").read_text()
    m = re.search(r'"ansible-core(>=[\d.]+,<[\d.]+)"', pyproject)
    assert m, "pyproject.toml: no ansible-core range"
    assert m.group(1) == collection.REQUIRES_ANSIBLE
    low, high = re.findall(r"[\d.]+", m.group(1))
    assert f"`{m.group(1)}`" in (REPO / "README.md").read_text()

    def key(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", v)[:2])

    assert key(low) <= key(ansible_version) < key(high), ansible_version
