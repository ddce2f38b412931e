"""The CLI steps of render_bench.py for two source trees at once, alternating between them.

    git archive <commit> | tar -x -C /tmp/before
    python bench/render_paired.py /tmp/before . [--trunks 10000] [--repeat 3]

Two trees measured one after the other on a shared machine see different loads; here
each step runs for one tree then the other (the order swapped every round), each tree in
a project of its own made from the same generated inventory, each step a fresh
``python -m siporch`` timed from outside. Steps: a cold render, validate right after the
first release, then ``--repeat`` rounds of: one trunk's ``max_channels`` changed and
rendered, ``diff --against`` that release three times (nothing changed since: the
unchanged diff), ``diff --against`` the first release, another trunk changed and diffed.
Prints each step's median and runs, and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.genmodel import write_inventory  # noqa: E402
from bench.render_bench import _bump  # noqa: E402


def _cli(tree: Path, args: list[str]) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("SIPORCH_STATE", None)
    env.pop("SIPORCH_CACHE", None)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "siporch", *args], capture_output=True, text=True, env=env,
        check=False, cwd=tree,  # `-m` looks in the working directory first
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise RuntimeError(f"{tree}: siporch {' '.join(args)}: {done.stderr[-2000:]}")
    return elapsed, done.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path, help="source tree measured first in round one")
    ap.add_argument("after", type=Path)
    ap.add_argument("--trunks", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    times: dict[str, dict[str, list[float]]] = {t: {} for t in trees}
    first: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="siporch-paired-") as tmp:
        write_inventory(Path(tmp) / "clean", args.trunks)
        invs = {}
        for name in trees:
            invs[name] = Path(tmp) / name / "inv"
            shutil.copytree(Path(tmp) / "clean", invs[name])

        def step(name: str, label: str, cli_args: list[str]) -> str:
            elapsed, out = _cli(trees[name], cli_args)
            times[name].setdefault(label, []).append(elapsed)
            return out

        for name in trees:
            inv = str(invs[name])
            out = step(name, "cold render", ["render", "-i", inv, "--json"])
            first[name] = json.loads(out)["id"]
            step(name, "validate after the first release", ["validate", "-i", inv])
        trunk = 1
        for i in range(args.repeat):
            for name in list(trees) if i % 2 == 0 else list(trees)[::-1]:
                inv = str(invs[name])
                _bump(invs[name], trunk)
                out = step(name, "one-trunk render", ["render", "-i", inv, "--json"])
                rendered = json.loads(out)["id"]
                for _ in range(3):  # nothing changed since that render
                    step(name, "unchanged diff", ["diff", "-i", inv, "--against", rendered])
                step(name, "diff after that render", ["diff", "-i", inv, "--against", first[name]])
                _bump(invs[name], trunk + 2)
                step(name, "one-trunk diff", ["diff", "-i", inv, "--against", first[name]])
            trunk += 4
    print("| step | " + " | ".join(trees) + " |")
    print("|---|" + "---:|" * len(trees))
    for label in times["before"]:
        cells = []
        for name in trees:
            runs = times[name][label]
            spread = f" ({min(runs):.2f}-{max(runs):.2f})" if len(runs) > 1 else ""
            cells.append(f"{statistics.median(runs):.2f}{spread}")
        print(f"| {label} | " + " | ".join(cells) + " |")
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
