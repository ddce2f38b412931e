"""bench/records_bench.py's ``cps`` edits the rendered kamailio.cfg for its variants: each
variant's text must still be in what the template renders, or the variant measures
nothing (the bench stops with an error, but only once it runs as root with its daemons).
And ``--at-once`` compares records off with one other edge only."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import cps_bench, records_bench


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_every_variant_edits_the_rendered_edge(tmp_path: Path, backend: str) -> None:
    model = records_bench.PG_MODEL if backend == "postgresql" else None
    cfg = cps_bench.write_edge(tmp_path, 4, records=True, records_model=model)
    text = cfg.read_text()
    for name, edits in records_bench.VARIANTS.items():
        if backend == "postgresql" and name in {
            "no-insert",
            "worker-inserts",
            "worker-checkpoints",
        }:
            continue  # SQLite only (their docstrings)
        for old, _new in edits:
            assert old in text, f"variant {name}: {old!r} is not in the rendered kamailio.cfg"


def test_at_once_takes_one_other_edge(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["cps", "--at-once", "--variant", "no-state", "--variant", "no-leg"]
    if records_bench.os.geteuid() != 0:
        pytest.skip("the bench checks for root first")
    assert records_bench.main(argv) == 2
    assert "one other edge" in capsys.readouterr().err


def test_summary_puts_each_edge_against_records_off_round_by_round() -> None:
    def run(cps: float, busy: float) -> dict[str, float]:
        return {"cps": cps, "cpu_ms_per_call": busy, "busy_cpu_ms_per_call": busy, "failed": 0}

    runs = {
        "records on": [run(800, 1.25), run(900, 1.0)],
        "records off": [run(1000, 1.0), run(1000, 0.9)],
    }
    s = records_bench._summary(runs, "records on")
    assert s["ratio_busy_cpu_per_round"] == [0.8, 0.9]
    assert s["ratio_busy_cpu_pooled"] == round(1.9 / 2.25, 3)
    assert s["ratio_paired_median"] == 0.85
    assert s["ratio_on_off"] == 0.85  # medians 850 / 1000
    off = next(r for r in s["rows"] if r["label"] == "records off")
    assert (off["ratio_cps"], off["ratio_busy_cpu"]) == (1.0, 1.0)
