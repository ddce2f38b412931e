"""Call records in PostgreSQL (records.backend postgresql): the model, what the edges get,
and Kamailio's own check of the rendered edge with db_postgres (the lab's sid root)."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from siporch import records
from siporch.model import load_model
from siporch.model.schema import Model
from siporch.render.kamailio import render

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory" / "example"
PG = {"host": "198.18.0.30", "password": "lab-records-2026"}


@functools.cache
def pg_model() -> Model:
    model = load_model(EXAMPLE).model
    data = model.model_dump(mode="python")
    data["records"] = {"backend": "postgresql", "postgresql": PG, "retention_days": 30}
    # secrets come back as SecretStr from model_dump: re-validate from the dump
    return Model.model_validate(data)


def test_postgresql_backend_needs_its_server() -> None:
    from pydantic import ValidationError

    from siporch.model.schema import Records

    with pytest.raises(ValidationError, match="needs the `postgresql` section"):
        Records(backend="postgresql")
    with pytest.raises(ValidationError, match="password must be"):
        Records(backend="postgresql", postgresql={"host": "db", "password": "a@b"})
    r = Records(backend="postgresql", postgresql=PG)
    assert r.postgresql is not None and (r.postgresql.port, r.postgresql.database) == (
        5432,
        "siporch",
    )


def test_edges_get_the_server_url_and_the_postgresql_schema() -> None:
    files = render(pg_model(), "edge-central")
    host_cfg = files["kamailio/host.cfg"]
    assert "#!define ACC_PG" in host_cfg
    url = "postgres://siporch:lab-records-2026@198.18.0.30:5432/siporch"
    assert f'#!define ACC_DB_URL "{url}"' in host_cfg
    assert '#!define ACC_EDGE_SHV "edge=s:edge-central"' in host_cfg
    assert "sqlite" not in host_cfg
    assert files["kamailio/records-pg.sql"] == records.SCHEMA_PG
    assert "kamailio/records.sql" not in files
    # no acc and no async workers: the rows are queued and written in batches by one
    # process (route RECORDS_WRITE), as with SQLite
    assert "async_workers" not in host_cfg
    assert 'loadmodule "acc.so"' not in files["kamailio/kamailio.cfg"]
    # the default stays SQLite on each edge
    sqlite = render(load_model(EXAMPLE).model, "edge-central")
    assert "kamailio/records.sql" in sqlite and "kamailio/records-pg.sql" not in sqlite
    assert "async_workers" not in sqlite["kamailio/host.cfg"]


def test_the_summary_is_asked_of_the_server_with_the_filters(tmp_path: Path) -> None:
    """summary mode: the aggregation SQL (records.SUMMARY_SQL_PG) with the same filters."""
    cfg = tmp_path / "host.cfg"
    cfg.write_text(render(pg_model(), "edge-central")["kamailio/host.cfg"])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "psql"
    fake.write_text("#!/bin/sh\ncat\n")
    fake.chmod(0o755)
    flt = records.Filters(since=100.0, trunk="itsp-a")
    argv = records.remote_command_pg(str(cfg), flt, ["edge-central"], summary=True)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    out = subprocess.run(
        [shutil.which("python3") or "python3", *argv[1:]],
        capture_output=True, text=True, env=env, timeout=30, check=True,
    ).stdout  # fmt: skip
    assert "percentile_cont(ARRAY[0.5, 0.95])" in out and "@WHERE@" not in out
    assert (
        "FROM calls AS c WHERE c.setup >= 100.0 AND c.trunk = 'itsp-a' "
        "AND c.edge IN ('edge-central');" in out
    )
    rows = records.summary_from_lines(
        [
            '{"k": "t", "trunk": "itsp-a", "attempts": 4, "answered": 3, "talk": 30.0, '
            '"pdd": [1.5, 2.5]}',
            '{"k": "f", "trunk": "itsp-b", "n": 2}',
            '{"k": "c", "trunk": "itsp-a", "code": "486 Busy Here", "n": 1}',
        ]
    )
    assert [r.as_dict() for r in rows] == [
        {"trunk": "itsp-a", "attempts": 4, "answered": 3, "asr": 0.75, "acd": 10.0,
         "pdd_median": 1.5, "pdd_p95": 2.5, "failovers": 0, "top_failures": ["486 Busy Here x1"]},
        {"trunk": "itsp-b", "attempts": 0, "answered": 0, "asr": None, "acd": None,
         "pdd_median": None, "pdd_p95": None, "failovers": 2, "top_failures": []},
    ]  # fmt: skip


def test_the_reader_finds_the_url_and_builds_a_streamed_query(tmp_path: Path) -> None:
    """The edge program, with a psql that prints its arguments, environment and SQL."""
    cfg = tmp_path / "host.cfg"
    cfg.write_text(render(pg_model(), "edge-central")["kamailio/host.cfg"])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "psql"
    fake.write_text('#!/bin/sh\necho "ARGS $*"\necho "PW $PGPASSWORD"\ncat\n')
    fake.chmod(0o755)
    flt = records.Filters(since=100.0, trunk="it's-a", number="312")
    argv = records.remote_command_pg(str(cfg), flt, ["edge-central"])
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    out = subprocess.run(
        [shutil.which("python3") or "python3", *argv[1:]],
        capture_output=True, text=True, env=env, timeout=30, check=True,
    ).stdout  # fmt: skip
    assert "-h 198.18.0.30 -p 5432 -U siporch -d siporch" in out
    assert "FETCH_COUNT=2000" in out
    assert "PW lab-records-2026" in out and "lab-records-2026" not in out.split("PW")[0]
    assert "c.setup >= 100.0" in out and "c.trunk = 'it''s-a'" in out
    assert "c.edge IN ('edge-central')" in out


def test_the_reader_says_when_an_edge_has_no_postgresql_records(tmp_path: Path) -> None:
    cfg = tmp_path / "host.cfg"
    cfg.write_text(render(load_model(EXAMPLE).model, "edge-central")["kamailio/host.cfg"])
    argv = records.remote_command_pg(str(cfg), records.Filters())
    out = subprocess.run(
        ["python3", *argv[1:]], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    assert out.startswith("# no-records")


def test_rows_from_postgresql_parse_like_sqlites() -> None:
    line = (
        '{"id": 3, "callid": "c1", "edge": "edge-central", "direction": "outbound", '
        '"trunk": "itsp-a", "peer": "198.18.1.11", "calling": "1", "called": "13125550100", '
        '"code": 200, "reason": "OK", "setup": 1000.0, "ring": 1000.5, "answer": 1001.0, '
        '"duration": 4.0, "legs": 2, "release": "r1", "failed_legs": '
        '"[[1000.1, \\"itsp-a\\", \\"198.18.1.10\\", \\"13125550100\\", \\"503\\", '
        '\\"Service Unavailable\\"]]"}'
    )
    (call,) = records.parse_lines([line], edge="edge-branch")
    assert call.edge == "edge-central" and call.result == "answered"
    assert call.failed_legs[0]["code"] == "503" and call.legs == 2


def test_rendered_postgresql_edge_passes_kamailio_check() -> None:
    """kamailio -c of the lab's sid root with db_postgres (no server needed for the check)."""
    from siporch.lab import rootfs
    from siporch.lab.spec import LabPaths

    if os.geteuid() != 0:
        pytest.skip("chroot needs root")
    root = rootfs.cached_root(LabPaths.default())
    if root is None or not list(root.glob("usr/lib/*/kamailio/modules/db_postgres.so")):
        pytest.skip("no lab root with db_postgres built (siporch lab up builds it)")
    inner = Path(tempfile.mkdtemp(prefix="siporch-pgcheck-", dir=root / "tmp"))
    try:
        rel = "/" + str(inner.relative_to(root))
        for name, text in render(pg_model(), "edge-central", root=rel).items():
            path = inner / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        (inner / "run").mkdir(exist_ok=True)
        result = subprocess.run(
            ["chroot", str(root), "kamailio", "-c", "-f", f"{rel}/kamailio/kamailio.cfg"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert "config file ok" in result.stdout + result.stderr
    finally:
        shutil.rmtree(inner, ignore_errors=True)


def test_the_exporters_edge_program_reads_postgresql(tmp_path: Path) -> None:
    """The exporter's edge program with a psql that answers as the server would: the
    edge's rows in the shared database, folded like SQLite's."""
    from siporch.monitor import record_metrics as rm

    cfg = tmp_path / "host.cfg"
    cfg.write_text(render(pg_model(), "edge-central")["kamailio/host.cfg"])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sql = tmp_path / "sql"
    n = 9 + 2 + len(rm.PDD_BUCKETS) + len(rm.DURATION_BUCKETS)
    row = ["3", "2", "0", "1", "0", "0", "0", "3", "1.5"] + ["3"] * len(rm.PDD_BUCKETS)
    row += ["2", "6.0"] + ["2"] * len(rm.DURATION_BUCKETS)
    assert len(row) == n
    answer = tmp_path / "answer"
    answer.write_text(
        "T\t7\t0\t7\n" + "\t".join(["R", "itsp-a", "inbound", *row]) + "\nF\titsp-a\t1\n"
    )
    (bin_dir / "psql").write_text(f"#!/bin/sh\ncat > {sql}\ncat {answer}\n")
    (bin_dir / "psql").chmod(0o755)
    argv = rm.remote_command(str(tmp_path / "none.sqlite"), 0, edge="edge-central")
    argv[-2] = str(cfg)  # the edge's live host.cfg
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    out = subprocess.run(
        ["python3", *argv[1:]], capture_output=True, text=True, env=env, timeout=30, check=True
    ).stdout
    data = json.loads(out.strip().splitlines()[-1])
    assert (data["top"], data["newest"], data["restarted"]) == (7, 7, False)
    assert data["failover_legs"] == [["itsp-a", 1]]
    totals = rm.RecordTotals()
    totals.add("edge-central", "central", data)
    ((_, t),) = totals.snapshot()[1]
    assert (t.attempts, t.answered, t.failures["4xx"], t.pdd.count) == (3, 2, 1, 3)
    assert "WHERE edge = 'edge-central'" in sql.read_text()
