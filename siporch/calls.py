"""Test calls with SIPp from a lab host, like an ITSP or a PBX would place them.

SIPp runs in the source host's network namespace, bound to its address, with the Record-Route
aware scenario ``siporch/sipp/uac_media.xml``: RTP for the whole call (so the PBX's RTP
timeout never ends a healthy call) and the edge's dialog keepalives answered. Only lab
addresses are ever targeted.
"""

from __future__ import annotations

import csv
import ipaddress
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from siporch.errors import SiporchError
from siporch.model.schema import Model
from siporch.sipp import scenario

LAB_NETWORK = ipaddress.ip_network("198.18.0.0/15")


@dataclass(frozen=True)
class CallResult:
    source: str
    target: str
    number: str
    attempted: int
    successful: int
    failed: int
    exit_code: int
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.failed == 0 and self.successful == self.attempted

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def lab_hosts(inventory: Path) -> dict[str, dict[str, Any]]:
    path = inventory / "lab.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SiporchError(
            f"{path} not found: test calls run from lab hosts",
            hint="run `siporch lab up` and use -i inventory/lab",
        ) from None
    hosts: dict[str, dict[str, Any]] = data["siporch_lab"]["hosts"]
    return hosts


def default_target(model: Model, hosts: dict[str, dict[str, Any]], source: str) -> str:
    """The edge a source host's calls go to: its trunk's site edge, or its own site's."""
    if source not in hosts:
        raise SiporchError(f"unknown lab host '{source}' (hosts: {', '.join(hosts)})")
    address = ipaddress.ip_address(hosts[source]["lab_address"])
    site = model.hosts[source].site if source in model.hosts else None
    if site is None:
        for trunk in model.trunks.values():
            if any(address in net for net in trunk.sources()):
                site = trunk.site
                break
    if site is None:
        raise SiporchError(f"{source} is no trunk peer and no host of the model: give --to")
    edges = model.hosts_with_role("edge", site)
    if not edges:
        raise SiporchError(f"site {site} has no edge host")
    return f"{model.hosts[edges[0]].address}:5060"


def place_calls(
    hosts: dict[str, dict[str, Any]],
    source: str,
    target: str,
    number: str,
    *,
    calls: int = 1,
    rate: float = 1.0,
    duration_ms: int = 3000,
    timeout_s: int = 30,
    transport: str = "u1",
) -> CallResult:
    """Place ``calls`` calls and wait for them; bounded by ``timeout_s``."""
    if source not in hosts:
        raise SiporchError(f"unknown lab host '{source}' (hosts: {', '.join(hosts)})")
    host, _, port = target.partition(":")
    if ipaddress.ip_address(host) not in LAB_NETWORK:
        raise SiporchError(f"{target} is not a lab address ({LAB_NETWORK}): refusing to call it")
    sipp = shutil.which("sipp")
    if sipp is None:
        raise SiporchError("sipp is not installed", hint="apt-get install sip-tester")
    src = hosts[source]
    with tempfile.TemporaryDirectory(prefix="siporch-call-") as tmp:
        stat = Path(tmp) / "stat.csv"
        argv = [
            "ip", "netns", "exec", src["lab_netns"], sipp,
            "-sf", str(scenario("uac_media")),
            "-s", number,
            "-i", src["lab_address"], "-p", str(_local_port()),
            "-t", transport,
            "-m", str(calls), "-r", str(rate), "-l", str(max(calls, 1)),
            "-d", str(duration_ms),
            "-timeout", f"{timeout_s}s", "-timeout_error",
            "-recv_timeout", "10000",
            "-nostdin", "-trace_stat", "-stf", str(stat), "-fd", "1",
            f"{host}:{port or 5060}",
        ]  # fmt: skip
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s + 15)
        except subprocess.TimeoutExpired:
            raise SiporchError(f"sipp did not finish within {timeout_s + 15} s") from None
        ok, failed = _read_stat(stat)
        detail = ""
        if proc.returncode != 0:
            if ok + failed < calls:
                failed = calls - ok
                detail = f"no final answer within {timeout_s} s"
            else:
                detail = _last_error(proc.stderr) or f"sipp exit code {proc.returncode}"
        return CallResult(source, target, number, calls, ok, failed, proc.returncode, detail)


def _local_port() -> int:
    """A port of our own for SIPp (with -p 0 it would take 5060, a peer's SIP port)."""
    return 26000 + (os.getpid() % 4000)


def _read_stat(path: Path) -> tuple[int, int]:
    try:
        rows = list(csv.reader(path.read_text().splitlines(), delimiter=";"))
    except OSError:
        return 0, 0
    if len(rows) < 2:
        return 0, 0
    head, last = rows[0], rows[-1]
    idx = {name: i for i, name in enumerate(head)}

    def val(name: str) -> int:
        i = idx.get(name)
        try:
            return int(last[i]) if i is not None else 0
        except (ValueError, IndexError):
            return 0

    return val("SuccessfulCall(C)"), val("FailedCall(C)")


def _last_error(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "|" not in ln]
    for ln in reversed(lines):
        if any(w in ln.lower() for w in ("error", "unexpected", "abort", "timeout")):
            return ln[:300]
    return ""
