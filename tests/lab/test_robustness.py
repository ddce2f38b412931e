"""The edge under torture: every RFC 4475-style message over UDP from an ITSP peer and from
an unknown source, a dozen over TCP, each batch interleaved with real calls.

Asserts: Kamailio on edge-central keeps its pid; every real call completes; no torture
message reaches the PBX (captured on pbx-central's interface and looked for in Asterisk's
channels); the edge never answers a torture INVITE with a 2xx.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import callkit as ck
import pytest
from callkit import KAMAILIO_LOG_CMD

from siporch.torture import MARKER, TCP_CASES, load_cases
from siporch.torture.lab import EDGE, batches, kamailio_pid, send_from

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
PBX = "pbx-central"
DID = "+12025550100"
ASTERISK = "asterisk -C /etc/asterisk/asterisk.conf -rx"


def _calls(lab: Any, count: int = 5) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "siporch",
            "call",
            DID,
            "--from",
            "itsp-a1",
            "-i",
            str(lab.inventory),
            "--calls",
            str(count),
            "--rate",
            "2",
            "--duration",
            "2",
            "--timeout",
            "60",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=lab.ansible_env,
    )


def _capture(lab: Any, path: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            lab.netns(PBX),
            "tshark",
            "-q",
            "-i",
            "eth0",
            "-f",
            "port 5060",
            "-a",
            "duration:600",
            "-w",
            str(path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    # tshark writes the file's header once it captures
    if not ck.wait_for(lambda: path.exists() and path.stat().st_size > 0, 30):
        proc.kill()
        raise AssertionError(f"tshark did not start capturing: {proc.communicate()[1]!r}")
    return proc


def _invites(path: Path) -> list[bytes]:
    """Every SIP INVITE in the capture, as raw text (request line and headers)."""
    out = subprocess.run(
        [
            "tshark",
            "-r",
            str(path),
            "-Y",
            'sip.Method == "INVITE"',
            "-T",
            "fields",
            "-e",
            "sip.msg_hdr",
            "-e",
            "sip.Request-Line",
            "-e",
            "sip.Call-ID",
        ],
        capture_output=True,
        timeout=120,
        check=True,
    ).stdout
    return [line for line in out.splitlines() if line.strip()]


#: What Kamailio's main process logs when a child dies of a signal (a crash).
CRASH = ("exited by a signal", "core dumped", "segmentation fault")
#: What each Kamailio process logs when it is stopped (a restart by a deploy).
STOPPED = "signal 15 received"


def _log(lab: Any) -> str:
    """Kamailio's log on the edge: its journal on a systemd host, else its log file."""
    return str(lab.run(EDGE, KAMAILIO_LOG_CMD, timeout=60).stdout)


def _log_size(lab: Any) -> int:
    return len(_log(lab))


def _log_since(lab: Any, offset: int) -> str:
    text = _log(lab)
    return text[offset if offset <= len(text) else 0 :]


def _wait_pid(info: dict[str, Any], seconds: float = 60) -> int | None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pid = kamailio_pid(info)
        if pid is not None:
            return pid
        time.sleep(1)
    return None


def test_edge_survives_torture_and_keeps_routing(lab: Any, tmp_path: Path) -> None:
    """The lab model deployed and calls answered first (the starting point is known), then
    the torture batches, with the controller's deploy lock held throughout: no deploy from
    elsewhere changes or restarts the edge under them. A batch during which Kamailio's pid
    changed anyway is run again if the log shows it was stopped (signal 15) and nothing
    died of a signal; a pid change without a stop, or any crash, fails the test."""
    with ck.deploy_lock(wait=2400):
        _torture(lab, tmp_path)


def _torture(lab: Any, tmp_path: Path) -> None:
    info = lab.info
    kit = ck.Lab(lab)
    # Whatever ran before (another model, a daemon stopped, a release rolled back) is
    # undone: the hosts run the lab model, and calls from the ITSP are answered before any
    # torture message is sent.
    ck.ensure_deployed(kit, lab.inventory, ("edge-central", "edge-branch", PBX))
    baseline = _calls(lab)
    out, err = baseline.communicate(timeout=120)
    assert baseline.returncode == 0, f"calls fail before any torture message: {out} {err}"
    assert json.loads(out)["successful"] == 5, out
    names = [c.name for c in load_cases()]
    pcap = tmp_path / "pbx.pcap"
    capture = _capture(lab, pcap)
    results: list[dict[str, Any]] = []
    restarts = 0
    try:
        for batch in batches(names):
            todo = names if batch.names is None else batch.names
            for _attempt in range(3):
                pid = _wait_pid(info)
                assert pid is not None, "Kamailio does not run on edge-central"
                offset = _log_size(lab)
                calls = _calls(lab)
                outcomes = send_from(info, batch.host, EDGE, batch.transport, todo)
                out, err = calls.communicate(timeout=120)
                log = _log_since(lab, offset)
                crashed = [ln for ln in log.splitlines() if any(c in ln.lower() for c in CRASH)]
                assert crashed == [], f"{batch.label}: {crashed}"
                if kamailio_pid(info) != pid:
                    assert STOPPED in log, f"{batch.label}: Kamailio's pid changed, no stop logged"
                    restarts += 1  # restarted by a concurrent deploy: run the batch again
                    continue
                assert calls.returncode == 0, f"{batch.label}: calls failed: {out} {err}"
                result = json.loads(out)
                assert result["successful"] == result["attempted"] == 5, result
                for o in outcomes:
                    o["batch"] = batch.label
                results += outcomes
                break
            else:
                pytest.fail(f"{batch.label}: Kamailio was restarted by deploys {restarts} times")
    finally:
        capture.send_signal(signal.SIGINT)
        capture.wait(30)

    # every message was sent, from both sources and (some) over TCP
    assert len(results) == 2 * len(names) + len([n for n in names if n in TCP_CASES])
    assert not [o for o in results if o["error"]], [o for o in results if o["error"]]

    # the edge never accepted a torture INVITE
    answered = [
        (o["batch"], o["case"], o["replies"])
        for o in results
        if o["method"] == "INVITE" and any(r[:1] == "2" for r in o["replies"])
    ]
    assert answered == []

    # from an unknown source, nothing but a refusal (or silence) for every request
    unknown = [
        (o["case"], o["verdict"])
        for o in results
        if "unknown" in o["batch"] and o["method"] and o["final"] and o["final"][:1] != "4"
    ]
    assert unknown == []

    # nothing of it reached the PBX; the real calls did (the capture works)
    invites = _invites(pcap)
    assert len(invites) >= 15, invites
    leaked = [i for i in invites if MARKER.encode() in i.lower()]
    assert leaked == []
    channels = lab.run(PBX, f"{ASTERISK} 'core show channels verbose'", timeout=15)
    assert channels.returncode == 0
    assert MARKER not in channels.stdout.lower()
