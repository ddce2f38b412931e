"""Where ``load_model`` spends its time, phase by phase, on a generated inventory.

    python bench/load_phases.py --trunks 10000 [--no-fast]

Writes the inventory of ``bench/genmodel.py`` into a temporary directory, then loads it once
in this process with each phase of ``siporch.model.loader`` timed (wall clock, seconds).
Also times PyYAML's ``CSafeLoader`` on the same model file with the garbage collector off
(as ``load_model`` runs). ``--no-fast`` turns siporch's fast path for plain YAML off, so
ansible-core's own reader (an origin tag on every value) reads every file.
"""

from __future__ import annotations

import argparse
import functools
import gc
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

T: dict[str, float] = {}


def timed(owner: Any, name: str, label: str) -> None:
    f: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(f)
    def wrapper(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            T[label] = T.get(label, 0.0) + time.perf_counter() - t

    setattr(owner, name, wrapper)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trunks", type=int, default=10000)
    ap.add_argument("--no-fast", action="store_true", help="ansible-core's YAML reader only")
    args = ap.parse_args()

    import ansible.inventory.manager
    import ansible.template
    import ansible.vars.manager  # noqa: F401
    import yaml

    import siporch.model.checks as checks
    import siporch.model.loader as loader
    from bench.genmodel import write_inventory
    from siporch.model.schema import Model

    loader.FAST_YAML = not args.no_fast
    reader = "ansible-core's reader" if args.no_fast else "fast path"
    timed(loader._Session, "group_vars", f"group_vars: YAML read ({reader})")
    timed(loader, "_Session", "InventoryManager + VariableManager (hosts file)")
    timed(loader, "_hosts", "per-host variables (VariableManager.get_vars)")
    timed(checks, "check_model", "cross-checks (checks.py)")
    timed(loader, "check_inventory", "model hosts vs inventory hosts")
    timed(loader, "model_hash", "model hash")
    native = loader._native
    depth = [0]

    def top_native(*a: Any, **k: Any) -> Any:
        depth[0] += 1
        t = time.perf_counter()
        try:
            return native(*a, **k)
        finally:
            depth[0] -= 1
            if depth[0] == 0:
                label = "templating (Templar) + plain data"
                T[label] = T.get(label, 0.0) + time.perf_counter() - t

    loader._native = top_native  # type: ignore[assignment]
    validate = Model.model_validate

    def timed_validate(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return validate(*a, **k)
        finally:
            T["pydantic validation"] = time.perf_counter() - t

    Model.model_validate = timed_validate  # type: ignore[method-assign]

    with tempfile.TemporaryDirectory(prefix="siporch-phases-") as tmp:
        inv = write_inventory(Path(tmp) / "inv", args.trunks)
        t0 = time.perf_counter()
        loader.load_model(inv)
        total = time.perf_counter() - t0
        model_file = inv / "group_vars" / "all" / "siporch.yml"
        gc.disable()
        t0 = time.perf_counter()
        with model_file.open() as f:
            yaml.load(f, Loader=yaml.CSafeLoader)
        plain = time.perf_counter() - t0
        gc.enable()
    print(f"{args.trunks:,} trunks\n\n| phase | s |\n|---|---:|")
    for label, seconds in T.items():
        print(f"| {label} | {seconds:.2f} |")
    print(f"| **load_model total** | **{total:.2f}** |")
    print(f"\nPyYAML CSafeLoader alone on the model file, GC off: {plain:.2f} s")


if __name__ == "__main__":
    main()
