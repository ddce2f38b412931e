"""The shipped Prometheus alert rules (checked and unit-tested with promtool) and the
Grafana dashboard (every query names a metric the exporter exposes)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from siporch.monitor.record_metrics import RecordsCollector, RecordTotals
from siporch.monitor.reporters import ReportCollector

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "monitoring" / "prometheus" / "siporch-alerts.yml"
RULES_TEST = REPO / "monitoring" / "prometheus" / "tests" / "siporch-alerts_test.yml"
DASHBOARD = REPO / "monitoring" / "grafana" / "siporch-trunks.json"

promtool = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(promtool is None, reason="promtool (scripts/setup installs it)")


def exported_metrics() -> set[str]:
    """Names the exporter exposes, read from a report with one of everything and call
    record totals with one trunk."""
    trunk = {
        "name": "t", "site": "s", "active_calls": 1, "max_channels": 2, "attempts": 3,
        "failures": 1, "registration": "registered", "health": "ok",
        "peers": [{"address": "198.18.1.10", "port": 5060, "edge": "up", "pjsip": "reachable"}],
    }  # fmt: skip
    report: dict[str, Any] = {
        "trunks": [trunk],
        "hosts": [{"name": "h", "role": "edge", "site": "s", "state": "up", "release": "r"}],
        "edges": [{"name": "h", "rtpengine": {"sessions": 0}, "kamailio": {"dialogs": {"all": 0}}}],
        "exit_code": 0,
    }
    registry = CollectorRegistry()
    registry.register(ReportCollector(lambda: report))  # type: ignore[arg-type]
    totals = RecordTotals()
    row = ["t", "inbound", 2, 1, 0, 1, 0, 0, 0]  # calls, answered, failures by class
    row += [1, 0.5, *[1] * 11, 1, 30.0, *[0, 0, 1, 1, 1, 1, 1, 1, 1]]  # PDD, talk time
    totals.add("h", "s", {"top": 2, "rows": [row], "failover_legs": [["t", 1]]})
    registry.register(RecordsCollector(totals))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    names = {ln.split("{")[0].split(" ")[0] for ln in text.splitlines() if ln and ln[0] != "#"}
    return names | {"up"}


def expressions_of_rules() -> list[str]:
    doc = yaml.safe_load(RULES.read_text())
    return [r["expr"] for g in doc["groups"] for r in g["rules"]]


def expressions_of_dashboard() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in doc["panels"] for t in p["targets"]]


def metric_names(expr: str) -> set[str]:
    return {m for m in re.findall(r"\b(siporch_[a-z_]+|up)\b", expr)}


@needs_promtool
def test_rules_are_valid() -> None:
    proc = subprocess.run(
        [str(promtool), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_rules_fire_on_recorded_series() -> None:
    proc = subprocess.run(
        [str(promtool), "test", "rules", RULES_TEST.name],
        capture_output=True, text=True, timeout=60, cwd=RULES_TEST.parent,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_rules_test_can_fail(tmp_path: Path) -> None:
    """The rules test is not vacuous: a rule with a threshold that never trips fails it."""
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if rule["alert"] == "SiporchTrunkNearCapacity":
                rule["expr"] = rule["expr"].replace("> 0.8", "> 0.99")
    (tmp_path / "siporch-alerts.yml").write_text(yaml.safe_dump(doc))
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / RULES_TEST.name).write_text(RULES_TEST.read_text())
    proc = subprocess.run(
        [str(promtool), "test", "rules", RULES_TEST.name],
        capture_output=True, text=True, timeout=60, cwd=tests,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "SiporchTrunkNearCapacity" in proc.stdout + proc.stderr


def test_every_alert_has_severity_and_summary() -> None:
    doc = yaml.safe_load(RULES.read_text())
    alerts = [r for g in doc["groups"] for r in g["rules"]]
    assert {a["alert"] for a in alerts} >= {
        "SiporchTrunkDown", "SiporchTrunkAllPeersDown", "SiporchRegistrationLost",
        "SiporchTrunkLowASR", "SiporchTrunkNearCapacity", "SiporchHostUnreachable",
    }  # fmt: skip
    for a in alerts:
        assert a["labels"]["severity"] in ("critical", "warning"), a["alert"]
        assert a["annotations"]["summary"] and a["annotations"]["description"], a["alert"]


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_queries_use_exported_metrics(source: str) -> None:
    exprs = expressions_of_rules() if source == "rules" else expressions_of_dashboard()
    exported = exported_metrics()
    used = set().union(*(metric_names(e) for e in exprs))
    assert used, exprs
    assert used <= exported, sorted(used - exported)


def test_dashboard_is_well_formed() -> None:
    doc = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    assert doc["uid"] and doc["schemaVersion"] >= 36
    variables = {v["name"] for v in doc["templating"]["list"]}
    assert {"datasource", "site", "trunk"} <= variables
    for p in doc["panels"]:
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], p["title"]
        grid = p["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, p["title"]
        for t in p["targets"]:
            used = set(re.findall(r"\$(\w+)", t["expr"]))
            assert used <= variables, (p["title"], used - variables)
