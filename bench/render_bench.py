"""Validate + render time and peak memory for generated models of growing size.

    python bench/render_bench.py [--sizes 100 1000 10000] [--repeat 3]

Each size runs ``--repeat`` times, each in a fresh Python process (so peak RSS is that
size's own): load the inventory (YAML + validation + cross-checks), render every host, and
write the release bundle into a releases directory of its own (so the write step always
writes a new release, never reuses one). Then the CLI as an operator runs it, each step a
fresh ``python -m siporch`` process timed from outside, in a project of its own (so its
``build/cache`` starts empty): a cold render, validate/render/diff of the unchanged model,
render and diff after a one-trunk change, the size of the first release and the bytes the
next one stores of its own (files hard-linked to the first do not count). Every figure is the median over the repeats. Prints a Markdown table for docs/benchmarks.md, the growth ratios, and whether
kamailio.cfg is byte-identical across sizes.
"""

from __future__ import annotations

import argparse
import itertools
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
from bench.genmodel import trunk_name  # noqa: E402

CHILD = r"""
import hashlib, json, resource, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
t0 = time.perf_counter()
from siporch.model import load_model
from siporch.render import render_release
from siporch.release import build_release
t_import = time.perf_counter() - t0
inv = Path(sys.argv[1])
t0 = time.perf_counter(); loaded = load_model(inv); t_load = time.perf_counter() - t0
t0 = time.perf_counter(); files = render_release(loaded.model); t_render = time.perf_counter() - t0
t0 = time.perf_counter(); rel = build_release(loaded, Path(sys.argv[3]), files=files); t_write = time.perf_counter() - t0
cfg = files["edge-central"]["kamailio/kamailio.cfg"]
print(json.dumps({
    "load": t_load, "render": t_render, "write": t_write, "import": t_import,
    "files": sum(len(h) for h in files.values()),
    "bytes": sum(len(b) for h in files.values() for b in h.values()),
    "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "cfg_sha256": hashlib.sha256(cfg).hexdigest(),
}))
"""


def run(size: int, repeat: int) -> dict[str, float | int | str]:
    sys.path.insert(0, str(ROOT))
    from bench.genmodel import write_inventory

    runs: list[dict[str, float | int | str]] = []
    with tempfile.TemporaryDirectory(prefix=f"siporch-bench-{size}-") as tmp:
        inv = Path(tmp) / "inv"
        write_inventory(inv, size)
        for i in range(repeat):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(inv), str(ROOT), str(Path(tmp) / f"rel-{i}")],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            r = json.loads(out)
            r["total"] = r["load"] + r["render"]
            runs.append(r)
    median: dict[str, float | int | str] = dict(runs[0])
    for key in ("import", "load", "render", "write", "total", "peak_mb"):
        median[key] = statistics.median(float(r[key]) for r in runs)
    median["repeat"] = repeat
    return median


def _cli(args: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "siporch", *args], capture_output=True, text=True, env=env,
        check=False,
    )  # fmt: skip
    if done.returncode not in (0, 1):
        raise RuntimeError(f"siporch {' '.join(args)}: {done.stderr[-2000:]}")
    return time.perf_counter() - started, done


def _bump(inv: Path, trunk: int) -> None:
    """One trunk's max_channels + 1 (a one-trunk change)."""
    path = inv / "group_vars" / "all" / "siporch.yml"
    text = path.read_text()
    at = text.index(f"{trunk_name(trunk)}:")
    at = text.index("max_channels: ", at) + len("max_channels: ")
    end = text.index("\n", at)
    path.write_text(text[:at] + str(int(text[at:end]) + 1) + text[end:])


def _all_bytes(release: Path) -> int:
    return sum(p.stat().st_size for p in release.rglob("*") if p.is_file())


def _own_bytes(release: Path) -> int:
    """Bytes of a release's files stored only there (a hard-linked file counts once, in the
    release that wrote it)."""
    return sum(
        p.stat().st_size for p in release.rglob("*") if p.is_file() and p.stat().st_nlink == 1
    )


STEPS = (
    ("cold render", "render, nothing cached: read + validate + render + write a release"),
    ("unchanged validate", "validate again"),
    ("unchanged render", "render again (reuses the release)"),
    ("unchanged diff", "diff --against the release (full diff output)"),
    ("one-trunk render", "render after one trunk's max_channels changed"),
    ("one-trunk diff", "diff --against the first release after another trunk changed"),
)


def lifecycle(size: int, repeat: int) -> dict[str, float]:
    """The CLI as an operator runs it, each step a fresh process timed from outside, in a
    project of its own (``build/`` beside the inventory: releases and cache)."""
    sys.path.insert(0, str(ROOT))
    from bench.genmodel import write_inventory

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SIPORCH_STATE", None)
    env.pop("SIPORCH_CACHE", None)
    runs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix=f"siporch-bench-cli-{size}-") as tmp:
        write_inventory(Path(tmp) / "clean", size)
        for i in range(repeat):
            project = Path(tmp) / f"p{i}"
            inv = project / "inv"
            shutil.copytree(Path(tmp) / "clean", inv)
            r: dict[str, float] = {}
            r["cold render"], done = _cli(["render", "-i", str(inv), "--json"], env)
            first = json.loads(done.stdout)
            r["unchanged validate"], _ = _cli(["validate", "-i", str(inv)], env)
            r["unchanged render"], _ = _cli(["render", "-i", str(inv), "--json"], env)
            r["unchanged diff"], _ = _cli(["diff", "-i", str(inv), "--against", first["id"]], env)
            _bump(inv, 1)
            r["one-trunk render"], done = _cli(["render", "-i", str(inv), "--json"], env)
            second = Path(json.loads(done.stdout)["path"])
            _bump(inv, 3)
            r["one-trunk diff"], _ = _cli(["diff", "-i", str(inv), "--against", first["id"]], env)
            r["first release MB"] = _all_bytes(Path(first["path"])) / 1e6
            r["one-trunk release MB"] = _own_bytes(second) / 1e6
            runs.append(r)
            shutil.rmtree(project)
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, help="Also write the figures here (for bench/plots.py).")
    ap.add_argument(
        "--no-cli", action="store_true", help="Skip the CLI steps (cache, diff, one-trunk change)."
    )
    args = ap.parse_args()
    rows = {n: run(n, args.repeat) for n in args.sizes}
    cli = {} if args.no_cli else {n: lifecycle(n, args.repeat) for n in args.sizes}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({str(n): {**r, "cli": cli.get(n, {})} for n, r in rows.items()}, indent=2)
            + "\n"
        )
    repeat = next(iter(rows.values()))["repeat"]
    print(f"Medians of {repeat} fresh processes per size; each writes a new release.\n")
    print(
        "| trunks | DID ranges | validate (s) | render (s) | validate + render (s) | write bundle (s) | files | MB written | peak RSS (MB) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, r in rows.items():
        print(
            f"| {n:,} | {n * 10:,} | {r['load']:.3f} | {r['render']:.3f} | {r['total']:.3f} | "
            f"{r['write']:.3f} | {r['files']} | {int(r['bytes']) / 1e6:.1f} | {float(r['peak_mb']):.0f} |"
        )
    sizes = list(rows)
    for a, b in itertools.pairwise(sizes):
        ratio = float(rows[b]["total"]) / float(rows[a]["total"])
        print(f"\n{b // a}x trunks ({a:,} -> {b:,}): {ratio:.1f}x validate + render time", end="")
    if cli:
        print(f"\n\nThe CLI, wall time of fresh processes (s), medians of {repeat}:\n")
        print(
            "| trunks | "
            + " | ".join(k for k, _ in STEPS)
            + " | first release MB (all) | one-trunk release MB (own) |"
        )
        print("|---:" * (len(STEPS) + 3) + "|")
        for n, c in cli.items():
            cells = " | ".join(f"{c[k]:.2f}" for k, _ in STEPS)
            print(
                f"| {n:,} | {cells} | {c['first release MB']:.1f} | {c['one-trunk release MB']:.1f} |"
            )
        print()
        for k, what in STEPS:
            print(f"- {k}: {what}")
    same = len({r["cfg_sha256"] for r in rows.values()}) == 1
    print(
        f"\n\nkamailio.cfg byte-identical across sizes: {'yes' if same else 'NO'} ({next(iter(rows.values()))['cfg_sha256'][:16]})"
    )


if __name__ == "__main__":
    main()
