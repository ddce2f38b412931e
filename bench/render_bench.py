"""Validate + render time and peak memory for generated models of growing size.

    python bench/render_bench.py [--sizes 100 1000 10000] [--repeat 3]

Each size runs ``--repeat`` times, each in a fresh Python process (so peak RSS is that
size's own): load the inventory (YAML + validation + cross-checks), render every host, and
write the release bundle into a releases directory of its own (so the write step always
writes a new release, never reuses one). Every figure is the median over the repeats. Prints a Markdown table for docs/benchmarks.md, the growth ratios, and whether
kamailio.cfg is byte-identical across sizes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, help="Also write the figures here (for bench/plots.py).")
    args = ap.parse_args()
    rows = {n: run(n, args.repeat) for n in args.sizes}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({str(n): r for n, r in rows.items()}, indent=2) + "\n")
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
    same = len({r["cfg_sha256"] for r in rows.values()}) == 1
    print(
        f"\n\nkamailio.cfg byte-identical across sizes: {'yes' if same else 'NO'} ({next(iter(rows.values()))['cfg_sha256'][:16]})"
    )


if __name__ == "__main__":
    main()
