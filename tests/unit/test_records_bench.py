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
