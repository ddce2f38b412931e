"""The exporter's per-trunk counters come from the edges' call records: real calls through
edge-central are counted, and a restarted exporter reports the same totals.

`siporch exporter -i inventory/lab --host edge-central` runs on the controller and reads
edge-central's records over SSH (as `siporch calls`); two calls answered by the PBX and one
the ITSP rejects (486 from both SBCs) are placed; the counters of itsp-a grow by exactly
those calls (attempts, answers, 4xx, PDD and talk-time observations); then the exporter is
stopped and started again, and every call-record sample is the same as before the restart.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import callkit as ck
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.lab

EDGE = "198.18.0.10:5060"
HQ_DID = "2025550100"  # itsp-a's national format; +12025550100 -> the PBX (hq-main)
BUSY_NUMBER = "3125550199"  # route national: itsp-a
TALK_S = 2
REPO = Path(__file__).resolve().parents[2]
RECORD_METRICS = (
    "siporch_trunk_calls_total",
    "siporch_trunk_answered_calls_total",
    "siporch_trunk_failed_calls_total",
    "siporch_trunk_pdd_seconds",
    "siporch_trunk_call_duration_seconds",
    "siporch_trunk_failover_legs_total",
    "siporch_edge_records_last_id",
    "siporch_edge_records_up",
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def kit(lab: Any) -> Iterator[ck.Lab]:
    k = ck.Lab(lab)
    with ck.deploy_lock(wait=2400) as token:
        import os

        os.environ["SIPORCH_DEPLOY_LOCK"] = token
        try:
            ck.ensure_deployed(k, lab.inventory, ("edge-central", "edge-branch", "pbx-central", "pbx-central-2"))
            subprocess.run(["siporch", "lab", "impair", "--clear"], capture_output=True, timeout=60)
            yield k
        finally:
            os.environ.pop("SIPORCH_DEPLOY_LOCK", None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Exporter:
    def __init__(self, inventory: Path) -> None:
        self.inventory = inventory
        self.port = free_port()
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "siporch", "exporter", "-i", str(self.inventory),
               "--host", "edge-central", "--no-releases", "--records-interval", "1",
               "--listen", f"127.0.0.1:{self.port}", "--duration", "600"]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        rc, err = self.proc.returncode, self.proc.stderr.read() if self.proc.stderr else ""
        self.proc = None
        assert rc == 0, err

    def scrape(self) -> Samples:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
                text = r.read().decode()
        except OSError:
            return {}
        out: Samples = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name.startswith(RECORD_METRICS):
                    out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def read_once(self, seconds: float = 90) -> Samples:
        """The samples once the records of edge-central have been read (the up gauge)."""
        got: Samples = {}

        def ready() -> bool:
            assert self.proc is not None and self.proc.poll() is None, (
                self.proc.stderr.read() if self.proc and self.proc.stderr else ""
            )
            got.clear()
            got.update(self.scrape())
            return total(got, "siporch_edge_records_up", edge="edge-central") == 1

        assert ck.wait_for(ready, seconds, step=0.5), "the exporter read no call records"
        return got


def total(samples: Samples, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lv), v in samples.items() if n == name and want <= set(lv))


def test_counters_follow_the_records_and_survive_a_restart(lab: Any, kit: ck.Lab) -> None:
    exp = Exporter(lab.inventory)
    exp.start()
    try:
        before = exp.read_once()
        a = {"trunk": "itsp-a", "edge": "edge-central"}
        # two inbound calls answered by the PBX (Echo), one outbound the ITSP rejects
        for _ in range(2):
            res = ck.uac(kit, "itsp-a1", EDGE, HQ_DID, duration_ms=TALK_S * 1000)
            assert (res.successful, res.failed) == (1, 0), res.stderr
        with ck.uas(kit, "itsp-a1", "uas_peer_busy"), ck.uas(kit, "itsp-a2", "uas_peer_busy"):
            ck.originate(kit, BUSY_NUMBER, seconds=TALK_S)

            def counted() -> bool:
                now = exp.scrape()
                return total(now, "siporch_trunk_calls_total", **a) >= total(
                    before, "siporch_trunk_calls_total", **a
                ) + 3

            assert ck.wait_for(counted, 60, step=0.5), exp.scrape()
        after = exp.scrape()

        def grew(name: str, **labels: str) -> float:
            return total(after, name, **a, **labels) - total(before, name, **a, **labels)

        assert grew("siporch_trunk_calls_total") == 3, after
        assert grew("siporch_trunk_answered_calls_total") == 2
        assert grew("siporch_trunk_calls_total", direction="inbound") == 2
        assert grew("siporch_trunk_failed_calls_total", **{"class": "4xx"}) == 1
        assert grew("siporch_trunk_pdd_seconds_count") >= 2
        assert grew("siporch_trunk_call_duration_seconds_count") == 2
        talk = grew("siporch_trunk_call_duration_seconds_sum")
        assert talk == pytest.approx(2 * TALK_S, abs=3.0)

        # a restarted exporter reads the records again: the same totals
        exp.stop()
        exp.start()
        last_id = total(after, "siporch_edge_records_last_id", edge="edge-central")

        def caught_up() -> bool:
            return total(exp.read_once(), "siporch_edge_records_last_id") >= last_id

        assert ck.wait_for(caught_up, 90, step=0.5)
        again = exp.read_once()
        assert set(again) == set(after)
        for key, v in after.items():
            # sums of seconds are added in another order: equal up to rounding
            assert again[key] == pytest.approx(v, rel=1e-9, abs=1e-6), key
    finally:
        exp.stop()
