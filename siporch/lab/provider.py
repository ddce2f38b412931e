"""Provider-shaped ITSP C in the lab: itsp-c1 (sip1.itsp-c.example) and itsp-c2
(sip2.itsp-c.example), each a real Kamailio as a real provider's SBC is:

* SIP only from its customers' addresses (the lab edges); anything else gets 403;
* digest authentication: every new INVITE challenged with 407, every REGISTER with 401
  (realm ``itsp-c.example``, user ``siporch-central``, password ``lab-itsp-c-secret``);
* UDP and TCP on 5060, TLS on 5061 with a certificate for its SIP name signed by the lab CA;
* an authenticated INVITE is relayed to a SIPp answering on the host's loopback
  (``siporch/sipp/uas_provider.xml``), in-dialog requests follow Record-Route;
* every request it receives is one JSON line in ``/var/log/siporch-itsp/received.jsonl``
  (``received(host)``, ``clear(host)``).

``lab up`` starts all of it (``ensure_running``); ``lab down`` stops it with every other
lab process. Files in the host: ``/etc/siporch-itsp/`` (config, scenario, recorder),
logs in ``/var/log/siporch-itsp/``, pid files in ``/run/siporch-itsp/``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from siporch.errors import LabError
from siporch.lab import hosts as hostfs
from siporch.lab import itsp_recorder, procs
from siporch.lab.spec import LabHost, LabPaths, host_by_name
from siporch.sipp import scenario

REALM = "itsp-c.example"
USERNAME = "siporch-central"
PASSWORD = "lab-itsp-c-secret"
# The provider's customers: the lab edges (edge-central, edge-central-2, edge-branch) and
# the central pair's floating address (its active edge sends from it).
CUSTOMERS = ("198.18.0.10", "198.18.0.11", "198.18.0.12", "198.18.0.9")
UAS_PORT = 5080
RECORDER_PORT = itsp_recorder.RECORDER_PORT
SIP_NAMES = {"itsp-c1": "sip1.itsp-c.example", "itsp-c2": "sip2.itsp-c.example"}
PROVIDER_HOSTS = tuple(SIP_NAMES)

ETC = "/etc/siporch-itsp"
LOGDIR = "/var/log/siporch-itsp"
RUNDIR = "/run/siporch-itsp"
KAMAILIO_CFG = f"{ETC}/kamailio.cfg"
TLS_CFG = f"{ETC}/tls.cfg"
UAS_XML = f"{ETC}/uas.xml"
RECORDER_PY = f"{ETC}/recorder.py"
RECORD_FILE = f"{LOGDIR}/received.jsonl"
KAMAILIO_PID = "/run/kamailio/kamailio.pid"
UAS_PID = f"{RUNDIR}/uas.pid"
RECORDER_PID = f"{RUNDIR}/recorder.pid"
READY_S = 10.0
TEMPLATES = Path(__file__).resolve().parent / "templates"


@dataclass(frozen=True)
class ProviderFiles:
    kamailio_cfg: str
    tls_cfg: str


def _host(name: str) -> LabHost:
    host = host_by_name(name)
    if host is None or name not in SIP_NAMES:
        raise LabError(
            f"{name!r} is not a lab provider host", hint="providers: " + ", ".join(SIP_NAMES)
        )
    return host


def render(name: str, etc: str = ETC, tls_dir: str = "/etc/siporch/tls") -> ProviderFiles:
    """The provider's Kamailio configuration and TLS configuration for host ``name``."""
    host = _host(name)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    cfg = env.get_template("provider-kamailio.cfg.j2").render(
        host=name,
        sip_name=SIP_NAMES[name],
        domain=REALM,
        address=host.address,
        realm=REALM,
        username=USERNAME,
        password=PASSWORD,
        customers=CUSTOMERS,
        uas_port=UAS_PORT,
        recorder_port=RECORDER_PORT,
        record_file=RECORD_FILE,
        tls_config=f"{etc}/tls.cfg",
    )
    tls = "\n".join(
        [
            f"# siporch lab: TLS of {name} ({SIP_NAMES[name]}), certificate from the lab CA.",
            "[server:default]",
            "method = TLSv1.2+",
            f"certificate = {tls_dir}/{name}.crt",
            f"private_key = {tls_dir}/{name}.key",
            f"ca_list = {tls_dir}/ca.crt",
            "verify_certificate = no",
            "require_certificate = no",
            "",
            "[client:default]",
            "method = TLSv1.2+",
            "verify_certificate = no",
            "require_certificate = no",
            "",
        ]
    )
    return ProviderFiles(cfg, tls)


# --- running it ---------------------------------------------------------------------


def _write_if_changed(path: Path, text: str) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


def install(name: str, paths: LabPaths) -> bool:
    """Write the provider's files into its host; True when the Kamailio config changed."""
    root = paths.host_root(name)
    files = render(name)
    changed = _write_if_changed(root / KAMAILIO_CFG.lstrip("/"), files.kamailio_cfg)
    changed |= _write_if_changed(root / TLS_CFG.lstrip("/"), files.tls_cfg)
    _write_if_changed(root / UAS_XML.lstrip("/"), scenario("uas_provider").read_text())
    _write_if_changed(
        root / RECORDER_PY.lstrip("/"), Path(itsp_recorder.__file__).read_text()
    )
    for sub in (LOGDIR, RUNDIR):
        (root / sub.lstrip("/")).mkdir(parents=True, exist_ok=True)
    return changed


def _procs_named(root: Path, comm: str) -> list[int]:
    """Processes named ``comm`` whose root is ``root`` (the host's own, not a tool that
    only entered its network namespace)."""
    out = []
    for pid in procs.all_pids():
        info = procs.process_info(pid)
        if info and info.comm == comm and info.root == str(root) and procs.is_alive(pid):
            out.append(pid)
    return out


def daemons(name: str, paths: LabPaths | None = None) -> dict[str, int | None]:
    """pid (or None) of the provider's kamailio, answering SIPp and recorder."""
    paths = paths or LabPaths.default()
    root = paths.host_root(name)
    uas = hostfs.pid_alive(root, UAS_PID)
    if uas is None:
        found = _procs_named(root, "sipp")
        uas = found[0] if found else None
    return {
        "kamailio": hostfs.pid_alive(root, KAMAILIO_PID),
        "uas": uas,
        "recorder": hostfs.pid_alive(root, RECORDER_PID),
    }


def problems(name: str, paths: LabPaths | None = None) -> list[str]:
    """What of the provider does not run (empty when all does)."""
    return [f"{k} not running" for k, v in daemons(name, paths).items() if v is None]


def _start_recorder(host: LabHost, paths: LabPaths) -> None:
    pid = hostfs.spawn_in_host(
        host,
        paths,
        ["/usr/bin/python3", RECORDER_PY, str(RECORDER_PORT), RECORD_FILE],
        f"{LOGDIR}/recorder.log",
    )
    (paths.host_root(host.name) / RECORDER_PID.lstrip("/")).write_text(f"{pid}\n")


def _start_uas(host: LabHost, paths: LabPaths) -> None:
    root = paths.host_root(host.name)
    cmd = [
        "/usr/bin/sipp", "-sf", UAS_XML, "-i", "127.0.0.1", "-p", str(UAS_PORT), "-t", "u1",
        "-mi", host.address, "-mp", "16000", "-rtp_echo", "-nostdin", "-bg",
        "-max_socket", "100",
    ]  # fmt: skip
    hostfs.spawn_in_host(host, paths, cmd, f"{LOGDIR}/uas.log")
    # -bg: SIPp forks and the parent exits; find the child by its root.
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        found = _procs_named(root, "sipp")
        if found:
            (root / UAS_PID.lstrip("/")).write_text(f"{found[0]}\n")
            return
        time.sleep(0.02)
    raise LabError(f"{host.name}: the answering SIPp did not start ({_tail(root, 'uas.log')})")


def _tail(root: Path, log: str) -> str:
    path = root / LOGDIR.lstrip("/") / log
    try:
        lines = [x for x in path.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "empty log"


def _start_kamailio(host: LabHost, paths: LabPaths) -> None:
    root = paths.host_root(host.name)
    cmd = ["/usr/sbin/kamailio", "-f", KAMAILIO_CFG, "-P", KAMAILIO_PID, "-m", "32", "-M", "8"]
    hostfs.spawn_in_host(host, paths, cmd, f"{LOGDIR}/kamailio.log")
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        if hostfs.pid_alive(root, KAMAILIO_PID) and hostfs.tcp_open(host.address, 5060, 0.2):
            return
        time.sleep(0.05)
    raise LabError(
        f"{host.name}: the provider's Kamailio did not start ({_tail(root, 'kamailio.log')})"
    )


def ensure_running(name: str, paths: LabPaths | None = None) -> list[str]:
    """Install the provider's files and start what does not run (Kamailio again when its
    configuration changed). Returns what was started."""
    paths = paths or LabPaths.default()
    host = _host(name)
    changed = install(name, paths)
    now = daemons(name, paths)
    started = []
    if now["recorder"] is None:
        _start_recorder(host, paths)
        started.append("recorder")
    if now["uas"] is None:
        _start_uas(host, paths)
        started.append("uas")
    if now["kamailio"] is not None and changed:
        procs.kill_processes([now["kamailio"]], grace=3.0)
        now["kamailio"] = None
    if now["kamailio"] is None:
        _start_kamailio(host, paths)
        started.append("kamailio")
    return started


# --- the record ---------------------------------------------------------------------


def record_path(host: str, paths: LabPaths | None = None) -> Path:
    paths = paths or LabPaths.default()
    _host(host)
    return paths.host_root(host) / RECORD_FILE.lstrip("/")


def received(host: str, paths: LabPaths | None = None) -> list[dict[str, Any]]:
    """Every request the provider on ``host`` received since the last ``clear``, oldest
    first, as recorded (see ``siporch.lab.itsp_recorder.record`` for the fields)."""
    path = record_path(host, paths)
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line being written
    return out


def clear(host: str, paths: LabPaths | None = None) -> None:
    """Forget what the provider on ``host`` received so far."""
    path = record_path(host, paths)
    if path.exists():
        with path.open("r+") as fh:
            fh.truncate(0)


def copy_log(host: str, dest: Path, paths: LabPaths | None = None) -> Path:
    """Copy the provider's record file to ``dest`` (for a test's artefacts)."""
    shutil.copy2(record_path(host, paths), dest)
    return dest
