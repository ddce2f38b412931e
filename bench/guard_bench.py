"""The cost of the two character guards, A/B in one process (CPU time, median of rounds).

    python bench/guard_bench.py [--sizes 100 1000 10000] [--rounds 5]

* render: the Jinja environment with its finalize hook (refuses control characters in
  every ``{{ }}`` output) against the same environment without one;
* validate: ``load_model`` with the control-character check against the same with the check
  answering "nothing found" without looking.

CPU time of this process, so other load on the machine disturbs it less than wall time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(size: int, rounds: int) -> dict[str, float]:
    sys.path.insert(0, str(ROOT))
    import siporch.model.loader as loader
    import siporch.render.env as env
    from bench.genmodel import write_inventory
    from siporch.model import load_model
    from siporch.render import render_release

    real_may_refuse = loader.json_may_refuse

    def finalize(on: bool) -> None:
        env.environment.cache_clear()
        env.environment().finalize = env._finalize if on else None  # before any compile

    def check(on: bool) -> None:
        loader.json_may_refuse = real_may_refuse if on else (lambda text: False)

    def cpu(fn: Callable[[], object]) -> float:
        t = time.process_time()
        fn()
        return time.process_time() - t

    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix=f"siporch-guard-{size}-") as tmp:
        inv = Path(tmp) / "inv"
        write_inventory(inv, size)
        model = load_model(inv).model
        for _ in range(rounds):
            for on in (True, False):
                finalize(on)
                render_release(model)  # compile the templates first
                times.setdefault(f"render {'on' if on else 'off'}", []).append(
                    cpu(lambda: render_release(model))
                )
                check(on)
                times.setdefault(f"validate {'on' if on else 'off'}", []).append(
                    cpu(lambda: load_model(inv))
                )
        finalize(True)
        check(True)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print("| trunks | render, guard on (s) | off (s) | validate, check on (s) | off (s) |")
    print("|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        r = measure(size, args.rounds)
        print(
            f"| {size:,} | {r['render on']:.3f} | {r['render off']:.3f} "
            f"| {r['validate on']:.3f} | {r['validate off']:.3f} |"
        )


if __name__ == "__main__":
    main()
