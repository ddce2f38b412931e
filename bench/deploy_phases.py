"""Where the time of profiled deploys went, phase by phase: the median of several runs.

    python bench/deploy_phases.py DIR/*-noop.jsonl

Reads the JSON lines that `bench/deploy_bench.py --profile DIR` writes for each deploy
(bench/callbacks/siporch_timing.py) and prints one Markdown row per phase (each play of
deploy-trunk.yml, from its first task's start to its last task's end, and the time
before the first task: Ansible's start, with the inventory's variables read), with the
median and every run, then the task results per host of the last run.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

PHASES = {
    "Validate the model and render the release": "render, deploy lock",
    "Read the release each host runs": "read the hosts (one call each, all at once)",
    "Show what the deploy changes in the model, against what the hosts run": "model changes",
    # since the third round the hosts the release leaves unchanged go with its first batch
    "Deploy the release host by host": "host by host (the hosts the release changes)",
    "Deploy the other edges of each pair, one at a time": "the pairs' other edges",
    # until the third round: a play after the last batch
    "Deploy the hosts the release leaves unchanged, all at once": "unchanged hosts, all at once",
    "Roll back every host of the run after a failure": "rollback play (nothing to do)",
    "Report the run": "report, lock released",
}


def phases(path: Path) -> tuple[dict[str, float], dict[str, int]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    tasks = [r for r in rows if "task" in r]
    out: dict[str, float] = {
        "in all (Ansible)": next((r["end_of_run"] for r in rows if "end_of_run" in r), 0.0),
        "before the first task": min((r["start"] for r in tasks), default=0.0),
    }
    spans: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    for r in tasks:
        span = spans.setdefault(r["play"], [r["start"], r["end"]])
        span[0], span[1] = min(span[0], r["start"]), max(span[1], r["end"])
        if r["status"] != "skipped":
            counts[r["host"]] = counts.get(r["host"], 0) + 1
    for play, (a, b) in spans.items():
        out[PHASES.get(play, play)] = b - a
    return out, counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path)
    args = ap.parse_args()
    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        raise SystemExit(f"deploy_phases: no such profile: {', '.join(missing)}")
    try:
        runs = [phases(f) for f in args.files]
    except (ValueError, KeyError) as exc:
        raise SystemExit(f"deploy_phases: not a profile of bench/deploy_bench.py: {exc}") from exc
    names: list[str] = []
    for found, _ in runs:
        names += [n for n in found if n not in names]
    print(f"| phase | median of {len(runs)} | runs |\n|---|---:|---|")
    for name in names:
        vals = [found.get(name, 0.0) for found, _ in runs]
        each = ", ".join(f"{v:.1f}" for v in vals)
        print(f"| {name} | {statistics.median(vals):.1f} s | {each} |")
    counts: dict[str, Any] = runs[-1][1]
    print("\ntask results per host (last run): " + ", ".join(f"{h} {n}" for h, n in counts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
