"""A real Kamailio edge on loopback for tests: the example model on a loopback network
(``loopback_model``), an edge run from a temporary release tree with rtpengine
(``Edge``, ``_release``, ``_running``), either with the host's Kamailio or chrooted into
the lab root (``ROOTFS``), and SIPp calls through it (``sipp_call``).

Used by tests/unit/test_kamailio_check.py (``kamailio -c``) and the private real-daemon
modules under tests/lab (test_kamailio_edge.py, test_kamailio_records.py, ...).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from siporch.model import load_model
from siporch.model.schema import Model
from siporch.render.kamailio import render

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory" / "example"
SCENARIOS = REPO / "tests" / "data" / "kamailio"
UAC = REPO / "siporch" / "sipp" / "uac_rr.xml"


def _own_root() -> Path:
    """The lab root built from this tree's package list (``current`` may point at a root
    built from another list), else ``current``."""
    from siporch.lab import rootfs
    from siporch.lab.spec import LabPaths

    try:
        found = rootfs.cached_root(LabPaths.default())
    except OSError:
        found = None
    return found or Path("/var/cache/siporch/rootfs/current")


ROOTFS = _own_root()


KAMAILIO = shutil.which("kamailio")
needs_kamailio = pytest.mark.skipif(KAMAILIO is None, reason="kamailio is not installed")


def write_tree(files: dict[str, str], root: Path) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "run").mkdir(exist_ok=True)
    return root / "kamailio" / "kamailio.cfg"


def check(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


@functools.cache
def example() -> Model:
    return load_model(EXAMPLE).model


# ----------------------------------------------------------------- a real edge on loopback

NET = "127.0.88"


def addresses(net: str) -> dict[str, str]:
    """The example's documentation addresses -> loopback addresses in ``net``."""
    return {
        "192.0.2.10": f"{net}.10",
        "198.51.100.10": f"{net}.11",
        "192.0.2.20": f"{net}.20",
        "203.0.113.10": f"{net}.30",
        "203.0.113.11": f"{net}.31",
        "203.0.113.20": f"{net}.32",
        "203.0.113.30": f"{net}.40",
        "203.0.113.50": f"{net}.60",
        "192.0.2.50": f"{net}.50",
        "192.0.2.0/24": f"{net}.0/24",
    }


EDGE, PBX, PEER1, PEER2, STRANGER = (f"{NET}.{n}" for n in (10, 20, 30, 31, 99))
ITSP_B, PSTN_GW = f"{NET}.40", f"{NET}.50"
NG_PORT = 22388


def loopback_model(
    peer_port_shift: int = 0,
    changed: bool = False,
    net: str = NET,
    ng_port: int = NG_PORT,
    branch_pbx: bool = False,
) -> Model:
    """The example with its addresses on ``net``.x, UDP only, no TLS. ``changed``: a
    release later, with one change in each data table. ``branch_pbx``: with a PBX host at
    the branch site (``net``.21) that sends calls to the branch edge."""
    text = (EXAMPLE / "group_vars" / "all" / "siporch.yml").read_text()
    for a, b in addresses(net).items():
        text = text.replace(a, b)
    text = re.sub(r'"\{\{ *vault_\w+ *\}\}"', '"not-a-secret"', text)
    data: dict[str, Any] = yaml.safe_load(text)["siporch"]
    # one central edge at its own address: the example's pair (edge-central-2, the floating
    # address, Redis) is the lab's to test (tests/lab/test_edge_pair.py)
    data["hosts"].pop("edge-central-2", None)
    data["sites"]["central"].pop("edges", None)
    for h in data["hosts"].values():
        h["transports"] = [{"protocol": "udp", "port": 5060}]
        h.pop("tls", None)
        h["rtpengine"] = {"ng_port": ng_port}
        h["kamailio"] = {"shm_mb": 128, "pkg_mb": 8, "children": 2}
    for t in data["trunks"].values():
        for p in t["peers"]:
            p["transport"] = "udp"
            p["port"] = 5060 + peer_port_shift
    data["trunks"]["itsp-a"]["max_channels"] = 1  # so that a second call finds it full
    if changed:
        for p in data["trunks"]["itsp-a"]["peers"]:
            p["port"] = 5062
        data["trunks"]["itsp-a"]["max_channels"] = 7
        data["trunks"]["itsp-a"]["inbound_addresses"].append(f"{net}.33")
        for rule in data["sites"]["central"]["normalization"]:
            if rule["name"] == "local-7-digit":
                rule["replace"] = r"+1303\1"
    if branch_pbx:
        data["hosts"]["pbx-branch"] = {"site": "branch", "role": "pbx", "address": f"{net}.21"}
    return Model.model_validate(data)


@dataclass
class Edge:
    base: Path  # the edge's directory as the test sees it
    inner: Path  # the same directory as Kamailio sees it (inside the chroot for 6.x)
    ctl: str

    def rpc(self, *args: str) -> str:
        out = check(["kamcmd", "-s", self.ctl, *args])
        return out.stdout + out.stderr


def _wait(predicate: Any, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def _rtpengine_up(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        s.sendto(b"c1 d7:command4:pinge", ("127.0.0.1", port))
        try:
            return b"pong" in s.recv(1000)
        except OSError:
            return False


def _release(edge: Edge, name: str, model: Model, host: str = "edge-central") -> None:
    """Write release ``name`` (again) and point ``current`` at it. The data files get a new
    mtime either way: db_text re-reads a table only when its file is newer."""
    files = render(
        model,
        host,
        root=str(edge.inner / "current"),
        run_dir=str(edge.inner / "run"),
        records_dir=str(edge.inner / "records"),
    )
    write_tree(files, edge.base / "releases" / name)
    # what a deploy ships with the tree, and the call-record database (kept across releases)
    (edge.base / "releases" / name / "manifest.json").write_text(
        json.dumps({"id": f"release-{name}", "host": host}, indent=2) + "\n"
    )
    if "kamailio/records.sql" in files:
        init_records(edge.base / "records" / "records.sqlite", files["kamailio/records.sql"])
    now = time.time()
    for path in (edge.base / "releases" / name / "kamailio" / "db").iterdir():
        os.utime(path, (now, now))
    link = edge.base / "current.new"
    link.unlink(missing_ok=True)
    link.symlink_to(Path("releases") / name)
    link.replace(edge.base / "current")


def init_records(db: Path, schema: str) -> None:
    """What the kamailio_edge role's helper does before Kamailio starts (records-init)."""
    import sqlite3

    db.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(db)
    try:
        con.executescript(schema)
    finally:
        con.close()


def _need_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    for tool in ("kamailio", "kamcmd", "rtpengine", "sipp"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")


@contextlib.contextmanager
def _running(edges: list[Edge], prefix: list[str], ng_port: int, logs: Path) -> Iterator[None]:
    """rtpengine on 127.0.0.1:``ng_port`` and one Kamailio per edge (its ``current``
    release), stopped afterwards with every process they started."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        rtp_log = open(logs / "rtpengine.log", "wb")  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                [
                    "rtpengine",
                    "--config-file=none",  # not /etc/rtpengine/rtpengine.conf
                    "--table=-1",
                    "--interface=127.0.0.1",
                    f"--listen-ng=127.0.0.1:{ng_port}",
                    "-f",
                    "-E",
                    f"--port-min={40000 + (ng_port % 10) * 400}",
                    f"--port-max={40399 + (ng_port % 10) * 400}",
                    f"--listen-cli=127.0.0.1:{ng_port + 1}",
                ],
                stdout=rtp_log,
                stderr=subprocess.STDOUT,
            )
        )
        if not _wait(lambda: _rtpengine_up(ng_port), 10):
            pytest.fail("rtpengine did not start:\n" + (logs / "rtpengine.log").read_text())
        for e in edges:
            env = dict(
                line.split("=", 1)
                for line in (e.base / "current/kamailio/kamailio.env").read_text().split()
            )
            kam_log = open(e.base / "kamailio.log", "wb")  # noqa: SIM115
            procs.append(
                subprocess.Popen(
                    [
                        *prefix,
                        "kamailio",
                        "-DD",
                        "-E",
                        "-f",
                        str(e.inner / "current/kamailio/kamailio.cfg"),
                        "-m",
                        env["SHM_MB"],
                        "-M",
                        env["PKG_MB"],
                        "-x",
                        env.get("MEMORY_MANAGER", "qm"),
                    ],
                    stdout=kam_log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        for e in edges:
            if not _wait(lambda e=e: re.search(r"kamailio \d", e.rpc("core.version")), 15):
                log = (e.base / "kamailio.log").read_text()[-3000:]
                pytest.fail("kamailio did not start:\n" + log)
        yield
    finally:
        # Kamailio runs in its own session, so its workers go with it even if it dies early
        for p in reversed(procs):
            _signal(p, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _signal(p, signal.SIGKILL)
                p.wait(timeout=5)
        for p in procs[1:]:
            _signal(p, signal.SIGKILL)  # a worker left behind, if any


def _signal(p: subprocess.Popen[bytes], sig: int) -> None:
    try:
        if "kamailio" in list(p.args):  # type: ignore[arg-type]
            os.killpg(p.pid, sig)
        else:
            p.send_signal(sig)
    except ProcessLookupError:
        pass


@dataclass
class Call:
    rc: int
    uac: str
    uas: dict[str, str]


def received(log: str) -> list[str]:
    """The messages a SIPp instance received, from its -trace_msg log."""
    parts = re.split(r"^-{20,}.*$", log, flags=re.M)
    return [p.split("\n", 2)[2].lstrip() for p in parts if "message received" in p]


def sipp_call(
    edge: Edge,
    src: str,
    number: str,
    uas: dict[str, Path],
    user_agent: str | None = None,
    timeout: int = 12,
    target: str = EDGE,
    uac_scenario: Path = UAC,
    uac_keys: dict[str, str] | None = None,
    uac_args: tuple[str, ...] = (),
) -> Call:
    work = Path(tempfile.mkdtemp(dir=edge.base))
    servers = {}
    for ip, scenario in uas.items():
        servers[ip] = subprocess.Popen(
            [
                "sipp",
                "-sf",
                str(scenario),
                "-i",
                ip,
                "-p",
                "5060",
                "-m",
                "20",  # OPTIONS probes from the edge count as calls too
                "-trace_msg",
                "-message_file",
                str(work / f"uas-{ip}.log"),
                "-nostdin",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=work,
        )
    _wait(lambda: _bound(list(uas)), 10)  # a loaded machine starts SIPp slowly
    uac = uac_scenario
    if user_agent is not None:
        uac = work / "uac.xml"
        uac.write_text(
            UAC.read_text().replace("User-Agent: siporch-test", f"User-Agent: {user_agent}")
        )
    try:
        rc = subprocess.run(
            [
                "sipp",
                "-sf",
                str(uac),
                "-i",
                src,
                "-p",
                "5060",
                f"{target}:5060",
                "-s",
                number,
                "-m",
                "1",
                "-d",
                "300",
                "-timeout",
                str(timeout),
                "-timeout_error",
                *[a for k, v in (uac_keys or {}).items() for a in ("-key", k, v)],
                *uac_args,
                "-trace_msg",
                "-message_file",
                str(work / "uac.log"),
                "-nostdin",
                "-aa",
            ],
            capture_output=True,
            timeout=timeout + 10,
            cwd=work,
            check=False,
        ).returncode
    finally:
        time.sleep(0.3)
        for p in servers.values():
            p.terminate()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
    read = lambda p: p.read_text(errors="replace") if p.exists() else ""  # noqa: E731
    return Call(rc, read(work / "uac.log"), {ip: read(work / f"uas-{ip}.log") for ip in uas})


def _bound(addresses: list[str], port: int = 5060) -> bool:
    """Every address has a UDP socket bound on ``port`` (the UAS is up)."""
    out = check(["ss", "-lun"]).stdout
    return all(f"{a}:{port} " in out for a in addresses)


def reject_scenario(edge: Edge, code: int) -> Path:
    path = edge.base / f"uas_{code}.xml"
    text = (SCENARIOS / "uas_reject.xml").read_text()
    path.write_text(text.replace("SIP/2.0 503 Rejected", f"SIP/2.0 {code} Rejected"))
    return path


def first_line(messages: list[str], start: str) -> str:
    return next((m for m in messages if m.startswith(start)), "")
