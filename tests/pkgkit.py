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
