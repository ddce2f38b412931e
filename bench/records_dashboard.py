"""A dashboard picture of the call-record metrics, from a real exporter (docs/calls.md).

    sudo flock /run/siporch-lab.flock python bench/records_dashboard.py -i inventory/lab \
        --place-calls --png docs/img/calls-dashboard.png --json bench/results/records_dashboard.json

Starts `siporch exporter` on the inventory (records only: ``--no-releases``), waits until it
has read every edge's call records (``siporch_edge_records_up`` 1 for each), scrapes
/metrics once and stops it; or, with ``--url``, scrapes a running exporter. Draws the panels
of monitoring/grafana/siporch-trunks.json that come from the records: calls per trunk by
result, ASR per trunk, post-dial delay and talk-time distributions (from the histograms'
buckets). ``--json`` keeps the samples drawn. Needs matplotlib (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

Sample = tuple[str, dict[str, str], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(url: str) -> list[Sample]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    return [
        (s.name, dict(s.labels), float(s.value))
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name.startswith(("siporch_trunk_", "siporch_edge_records_"))
    ]


def from_exporter(inventory: Path, hosts: list[str], wait: float) -> list[Sample]:
    port = free_port()
    cmd = [sys.executable, "-m", "siporch", "exporter", "-i", str(inventory), "--no-releases",
           "--records-interval", "2", "--listen", f"127.0.0.1:{port}",
           "--duration", str(wait + 30)]  # fmt: skip
    for h in hosts:
        cmd += ["--host", h]
    proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/metrics"
    deadline = time.monotonic() + wait
    samples: list[Sample] = []
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(
                    f"the exporter stopped: {proc.stderr.read() if proc.stderr else ''}"
                )
            try:
                samples = scrape(url)
            except OSError:
                samples = []
            up = [v for n, lv, v in samples if n == "siporch_edge_records_up"]
            if up and all(v == 1 for v in up):
                return samples
            time.sleep(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    raise SystemExit(f"the exporter read no call records in {wait:g} s")


# --place-calls: a small real mix through the lab's edges before the exporter reads them
# (siporch call: SIPp from the ITSP hosts): answered calls of two lengths on itsp-a (the
# PBX answers +12025550100 with Echo), a number that is no DID (404 from the edge), and
# the branch trunk's DID.
LAB_CALLS = (
    ("itsp-a1", "2025550100", 12, 2.0),
    ("itsp-a1", "2025550100", 8, 6.0),
    ("itsp-a1", "2025550999", 5, 1.0),
    ("itsp-branch", "+12065550100", 6, 4.0),
)


def place_calls(inventory: Path) -> None:
    for source, number, n, seconds in LAB_CALLS:
        cmd = [sys.executable, "-m", "siporch", "call", number, "-i", str(inventory),
               "--from", source, "--calls", str(n), "--rate", "4", "--duration", str(seconds),
               "--timeout", "120", "--json"]  # fmt: skip
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=180)
        print(f"{source} -> {number} x{n}: {proc.stdout.strip() or proc.stderr.strip()[-200:]}")


def _by_trunk(samples: list[Sample], name: str, **match: str) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for n, lv, v in samples:
        if n == name and all(lv.get(k) == x for k, x in match.items()):
            out[lv.get("trunk", "")] += v
    return out


def _histogram(samples: list[Sample], name: str) -> tuple[list[float], dict[str, list[float]]]:
    """Bucket bounds and, per trunk, the count in each bucket (not cumulative)."""
    cum: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for n, lv, v in samples:
        if n == f"{name}_bucket":
            le = float("inf") if lv["le"] == "+Inf" else float(lv["le"])
            cum[lv.get("trunk", "")][le] += v
    bounds = sorted({b for d in cum.values() for b in d})
    per: dict[str, list[float]] = {}
    for trunk, d in cum.items():
        c = [d.get(b, 0.0) for b in bounds]
        per[trunk] = [c[0]] + [c[i] - c[i - 1] for i in range(1, len(c))]
    return bounds, per


def draw(samples: list[Sample], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    calls = _by_trunk(samples, "siporch_trunk_calls_total")
    answered = _by_trunk(samples, "siporch_trunk_answered_calls_total")
    classes = ("3xx", "4xx", "5xx", "6xx", "timeout")
    failed = {
        c: _by_trunk(samples, "siporch_trunk_failed_calls_total", **{"class": c}) for c in classes
    }
    trunks = sorted(t for t in calls if calls[t] > 0)
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    ax = axes[0][0]
    bottom = [0.0] * len(trunks)
    for label, series in (("answered", answered), *((f"failed {c}", failed[c]) for c in classes)):
        vals = [series.get(t, 0.0) for t in trunks]
        if not any(vals):
            continue
        ax.bar(trunks, vals, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_title("Calls per trunk by result (siporch_trunk_*calls_total)")
    ax.set_ylabel("calls")
    ax.legend(fontsize=8)
    ax = axes[0][1]
    asr = [100.0 * answered.get(t, 0.0) / calls[t] for t in trunks]
    bars = ax.bar(trunks, asr, color="tab:green")
    for b, v, t in zip(bars, asr, trunks, strict=True):
        ax.annotate(f"{v:.0f}% of {calls[t]:.0f}", (b.get_x() + b.get_width() / 2, v),
                    ha="center", va="bottom", fontsize=8)  # fmt: skip
    ax.set_ylim(0, 110)
    ax.set_title("ASR per trunk (answered / calls)")
    ax.set_ylabel("%")
    for ax, name, label in (
        (axes[1][0], "siporch_trunk_pdd_seconds", "post-dial delay, s (upper bound of bucket)"),
        (axes[1][1], "siporch_trunk_call_duration_seconds", "talk time, s (upper bound of bucket)"),
    ):
        bounds, per = _histogram(samples, name)
        labels = ["+Inf" if b == float("inf") else f"{b:g}" for b in bounds]
        x = list(range(len(bounds)))
        width = 0.8 / max(1, len(per))
        for i, (trunk, counts) in enumerate(sorted(per.items())):
            if not any(counts):
                continue
            ax.bar([p + i * width for p in x], counts, width=width, label=trunk)
        ax.set_xticks([p + 0.4 - width / 2 for p in x], labels, fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel("calls")
        ax.set_title(name.replace("siporch_trunk_", "") + " (histogram buckets)")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-i", "--inventory", type=Path, default=REPO / "inventory" / "lab")
    p.add_argument("--host", action="append", default=[], help="only this edge (repeatable)")
    p.add_argument("--url", help="scrape this exporter's /metrics instead of starting one")
    p.add_argument("--wait", type=float, default=120.0)
    p.add_argument("--png", type=Path, default=REPO / "docs" / "img" / "calls-dashboard.png")
    p.add_argument("--json", type=Path)
    p.add_argument(
        "--place-calls", action="store_true", help="place a small mix of lab calls first"
    )
    args = p.parse_args(argv)
    if args.place_calls:
        place_calls(args.inventory)
    samples = scrape(args.url) if args.url else from_exporter(args.inventory, args.host, args.wait)
    if not any(n == "siporch_trunk_calls_total" for n, _, _ in samples):
        print("no call-record metrics to draw", file=sys.stderr)
        return 1
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    n = sum(v for n, _, v in samples if n == "siporch_trunk_calls_total")
    draw(
        samples,
        args.png,
        f"siporch call records, {n:.0f} calls ({args.url or args.inventory}, {when})",
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([list(s) for s in samples], indent=1) + "\n")
    print(f"{args.png}: {n:.0f} calls")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
