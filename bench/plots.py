"""Plots for docs/benchmarks.md from the benchmarks' JSON results.

    python bench/render_bench.py --json bench/results/render.json
    python bench/plots.py bench/results docs/img

Draws what it finds: render scaling (render.json); CPS through the edge vs a minimal relay
(cps.json: {"rows": [{"label", "cps", "failed"}]}); deploy latency (deploy.json:
{"rows": [{"label", "seconds"}]}); status latency (status.json: same shape); soak
(soak.json: {"attempted", "completed", "failed", "dropped", ...}).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _load(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def render_scaling(data: dict[str, Any], out: Path) -> None:
    sizes = sorted(int(k) for k in data)
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("load", "validate"), ("render", "render"), ("total", "validate + render")):
        ax.plot(sizes, [data[str(n)][key] for n in sizes], marker="o", label=label)
    ax.plot(
        sizes, [data[str(sizes[0])]["total"] * n / sizes[0] for n in sizes], "k:", label="linear"
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("trunks (10 DID ranges each)")
    ax.set_ylabel("seconds")
    ax.set_title("siporch validate + render")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "render-scaling.png", dpi=100)
    plt.close(fig)


def bars(data: dict[str, Any], key: str, ylabel: str, title: str, out: Path) -> None:
    rows = data["rows"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar([r["label"] for r in rows], [r[key] for r in rows], color="#4c72b0")
    for i, r in enumerate(rows):
        ax.annotate(f"{r[key]:g}", (i, r[key]), ha="center", va="bottom")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    plt.setp(ax.get_xticklabels(), rotation=15, ha="right")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def soak(data: dict[str, Any], out: Path) -> None:
    keys = ["attempted", "completed", "failed", "dropped"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(keys, [data.get(k, 0) for k in keys], color=["#4c72b0", "#55a868", "#dd8452", "#c44e52"])
    for i, k in enumerate(keys):
        ax.annotate(str(data.get(k, 0)), (i, data.get(k, 0)), ha="center", va="bottom")
    ax.set_title("soak: calls through deploys, rollbacks and faults")
    fig.tight_layout()
    fig.savefig(out / "soak.png", dpi=100)
    plt.close(fig)


def main() -> None:
    src = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results")
    out = Path(sys.argv[2] if len(sys.argv) > 2 else "docs/img")
    out.mkdir(parents=True, exist_ok=True)
    made = []
    if (d := _load(src / "render.json")) is not None:
        render_scaling(d, out)
        made.append("render-scaling.png")
    if (d := _load(src / "cps.json")) is not None:
        bars(d, "cps", "calls per second", "CPS through the edge (0 failed calls)", out / "cps.png")
        made.append("cps.png")
    if (d := _load(src / "deploy.json")) is not None:
        bars(d, "seconds", "seconds", "deploy latency", out / "deploy.png")
        made.append("deploy.png")
    if (d := _load(src / "status.json")) is not None:
        bars(d, "seconds", "seconds", "siporch status --json wall time", out / "status.png")
        made.append("status.png")
    if (d := _load(src / "soak.json")) is not None:
        soak(d, out)
        made.append("soak.png")
    print("wrote " + (", ".join(str(out / m) for m in made) if made else "nothing (no results)"))


if __name__ == "__main__":
    main()
