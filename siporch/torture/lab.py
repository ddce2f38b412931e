"""Run the torture messages against the lab's edge and tabulate what it did.

Each batch runs ``python -m siporch.torture send`` inside a lab host's network namespace
(``ip netns exec``), so the messages leave from that host's address exactly as its SIP
traffic would. Nothing here starts or stops a daemon.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from siporch.torture import CATALOG, TCP_CASES, TortureError, load_cases

EDGE = "edge-central"
ITSP = "itsp-a1"  # a trunk peer of edge-central
UNKNOWN = "itsp-branch"  # a lab host edge-central does not know (the branch site's ITSP)
KAMAILIO_PID = "run/kamailio/kamailio.pid"


@dataclass
class Batch:
    label: str
    host: str
    transport: str
    names: list[str] | None = None  # None: every case
    outcomes: list[dict[str, Any]] = field(default_factory=list)


def lab_info(inventory: Path) -> dict[str, Any]:
    from siporch.lab.inventory import read_lab_json

    path = inventory / "lab.json"
    if not path.is_file():
        raise TortureError(f"{path} not found: run `siporch lab up` first")
    info: dict[str, Any] = read_lab_json(path)
    return info


def send_from(
    info: dict[str, Any],
    host: str,
    edge: str,
    transport: str,
    names: list[str],
    *,
    timeout: float = 1.0,
) -> list[dict[str, Any]]:
    """Send ``names`` from inside ``host``'s namespace; the outcomes as dicts."""
    h = info["hosts"][host]
    edge_address = info["hosts"][edge]["address"]
    cmd = [
        "ip",
        "netns",
        "exec",
        h["netns"],
        sys.executable,
        "-m",
        "siporch.torture",
        "send",
        "--edge",
        edge_address,
        "--src",
        h["address"],
        "--transport",
        transport,
        "--timeout",
        str(timeout),
        *names,
    ]
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    bound = len(names) * (timeout + 0.5) + 30
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=bound, env=env)
    except subprocess.TimeoutExpired:
        raise TortureError(f"sending from {host} took longer than {bound:g} s") from None
    if proc.returncode != 0:
        raise TortureError(f"sending from {host} failed: {proc.stderr.strip()[-500:]}")
    data: list[dict[str, Any]] = json.loads(proc.stdout)
    return data


def kamailio_pid(info: dict[str, Any], edge: str = EDGE) -> int | None:
    """The edge's Kamailio main process, if it runs (the pid file in the host's root)."""
    path = Path(info["hosts"][edge]["root"]) / KAMAILIO_PID
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    from siporch.lab import hosts as hostfs
    from siporch.lab import systemd
    from siporch.lab.spec import LabPaths, host_by_name

    host = host_by_name(edge)
    init = hostfs.init_pid(host, LabPaths.default()) if host is not None else None
    if init is not None:  # a systemd host: the pid file holds the pid in its own namespace
        outer = systemd.outer_pid(init, pid)
        if outer is None:
            return None
        pid = outer
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
    return pid if comm.startswith("kamailio") else None


def batches(names: list[str]) -> list[Batch]:
    tcp = [n for n in names if n in TCP_CASES]
    return [
        Batch("UDP from the ITSP (itsp-a1)", ITSP, "udp"),
        Batch("UDP from an unknown source (itsp-branch)", UNKNOWN, "udp"),
        Batch("TCP from the ITSP (itsp-a1)", ITSP, "tcp", tcp),
    ]


def campaign(
    inventory: Path, names: list[str] | None = None, *, timeout: float = 1.0
) -> list[Batch]:
    """Every case over UDP from the ITSP and from an unknown source, TCP_CASES over TCP."""
    info = lab_info(inventory)
    cases = [c.name for c in load_cases(names=names)]
    out = []
    for batch in batches(cases):
        todo = cases if batch.names is None else batch.names
        batch.outcomes = send_from(info, batch.host, EDGE, batch.transport, todo, timeout=timeout)
        out.append(batch)
    return out


def markdown(runs: list[Batch]) -> str:
    """The table of docs/robustness.md: one row per case, one column per batch."""
    by: list[dict[str, str]] = [{o["case"]: o["verdict"] for o in b.outcomes} for b in runs]
    names = sorted({n for col in by for n in col}, key=lambda n: (_order(n), n))
    head = "| case | RFC 4475 | what it tests | " + " | ".join(b.label for b in runs) + " |"
    sep = "|" + "---|" * (3 + len(runs))
    rows = [head, sep]
    for n in names:
        info = CATALOG.get(n)
        section = info.section if info and info.section else "-"
        title = info.title if info else ""
        cells = [col.get(n, "-") for col in by]
        rows.append(
            f"| `{n}.sip` | {section} | {_md(title)} | " + " | ".join(_md(c) for c in cells) + " |"
        )
    return "\n".join(rows) + "\n"


def _order(name: str) -> tuple[int, ...]:
    info = CATALOG.get(name)
    if not info or not info.section:
        return (99,)
    return tuple(int(p) for p in info.section.split("."))


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
