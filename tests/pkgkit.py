"""Build siporch's wheel and install it into a fresh virtual environment outside the tree.

The environment gets the wheel itself (``pip install --no-deps --no-index``) and borrows the
dependencies from the project's environment through a ``.pth`` line (a plain path: the
project's editable install of siporch is not activated there). Tests then run the installed
``siporch`` from a directory outside the source tree, with no PYTHONPATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def build_wheel(out: Path) -> Path:
    """``python -m build --wheel`` of the source tree (no isolation: the backend, hatchling,
    is in the test extras)."""
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(REPO)],
        check=True, capture_output=True, text=True,
    )
    (wheel,) = out.glob("siporch-*.whl")
    return wheel


def install(wheel: Path, venv: Path) -> Path:
    """A venv at ``venv`` with the wheel installed; returns its bin directory."""
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    )
    (purelib / "_siporch_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
         "--no-deps", "--no-index", "--quiet", str(wheel)],
        check=True, capture_output=True, text=True,
    )
    return venv / "bin"


def env(bin_dir: Path) -> dict[str, str]:
    """The environment to run the installed siporch in: its bin first (ansible-playbook from
    the project's environment after it), no PYTHONPATH, no siporch variables."""
    out = {k: v for k, v in os.environ.items() if not k.startswith(("SIPORCH_", "ANSIBLE_"))}
    out.pop("PYTHONPATH", None)
    ansible = shutil.which("ansible-playbook")
    extra = [str(Path(ansible).parent)] if ansible else []
    out["PATH"] = os.pathsep.join([str(bin_dir), *extra, "/usr/sbin", "/usr/bin", "/sbin", "/bin"])
    return out


def copy_inventory(src: Path, dest: Path) -> Path:
    """A copy of an inventory directory and the .vault-pass beside it (if any)."""
    shutil.copytree(src, dest)
    vault = src.parent / ".vault-pass"
    if vault.is_file():
        shutil.copy(vault, dest.parent / ".vault-pass")
    return dest


_SHARED: dict[str, Path] = {}


def shared_install(factory: Any) -> Path:
    """One wheel built and installed per test session (``factory``: pytest's
    tmp_path_factory), shared by every module that uses the installed siporch."""
    bin_dir = _SHARED.get("bin")
    if bin_dir is None or not (bin_dir / "siporch").exists():
        wheel = build_wheel(factory.mktemp("dist"))
        bin_dir = _SHARED["bin"] = install(wheel, factory.mktemp("venv") / "v")
    return bin_dir


def install_collection(bin_dir: Path, dest: Path) -> Path:
    """Build the collection with the installed ``siporch collection build`` and install it
    with ansible-galaxy into ``dest/collections``; returns that collections path."""
    subprocess.run(
        [str(bin_dir / "siporch"), "collection", "build", "--out", str(dest)],
        cwd=dest, env=env(bin_dir), capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    (built,) = dest.glob("siporch-trunks-*.tar.gz")
    collections = dest / "collections"
    subprocess.run(
        ["ansible-galaxy", "collection", "install", "-p", str(collections), str(built)],
        env=env(bin_dir), capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return collections
