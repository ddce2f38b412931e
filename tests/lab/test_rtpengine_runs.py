"""The rendered rtpengine.conf with the real daemon: Debian 12's rtpengine 10.5 on this
host, rtpengine 26 in the lab's sid root (private mount namespace). Answers an NG ping
with no error or warning in its log."""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from siporch.model import load_model
from siporch.model.schema import Model
from siporch.render import rtpengine

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory" / "example"


@functools.cache
def example() -> Model:
    return load_model(EXAMPLE).model


ROOTFS = Path(os.environ.get("SIPORCH_ROOTFS", "/var/cache/siporch/rootfs/current"))


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _loopback_conf(ng_port: int) -> str:
    data = example().model_dump()
    # edge-central alone: as one edge of the example's pair its rtpengine needs the pair's
    # Redis (tests/lab/test_edge_pair.py runs that on the lab)
    data["hosts"].pop("edge-central-2", None)
    data["sites"]["central"]["edges"] = None
    data["hosts"]["edge-central"]["address"] = "127.0.0.1"
    data["hosts"]["edge-central"]["rtpengine"]["ng_port"] = ng_port
    return rtpengine.render(Model.model_validate(data), "edge-central")["rtpengine/rtpengine.conf"]


def _ng_ping(port: int, deadline: float) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        while time.monotonic() < deadline:
            s.sendto(b"siporch1 d7:command4:pinge", ("127.0.0.1", port))
            try:
                return s.recv(200)
            except TimeoutError:
                continue
    return b""


@pytest.mark.lab
@pytest.mark.parametrize("where", ["host", "sid-root"])
def test_rtpengine_runs_the_rendered_config(where: str, tmp_path: Path) -> None:
    port = _free_udp_port()
    conf = tmp_path / "rtpengine.conf"
    conf.write_text(_loopback_conf(port))
    if where == "host":
        if shutil.which("rtpengine") is None:
            pytest.skip("rtpengine is not installed on this host")
        argv = ["rtpengine", "--config-file", str(conf), "--foreground", "--log-stderr"]
    else:
        if os.geteuid() != 0 or not (ROOTFS / "usr" / "bin" / "rtpengine").exists():
            pytest.skip(f"needs root and the lab root filesystem at {ROOTFS}")
        # A private mount namespace: the config is bind-mounted into the root only for
        # this process; the cached root itself is not written to.
        root = str(ROOTFS.resolve())
        script = (
            f"mount --bind {tmp_path} {root}/mnt && mount -t proc proc {root}/proc && "
            f"exec chroot {root} rtpengine --config-file /mnt/rtpengine.conf "
            "--foreground --log-stderr"
        )
        argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", script]
    log = tmp_path / "rtpengine.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        reply = _ng_ping(port, time.monotonic() + 8)
        alive = proc.poll() is None
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    text = log.read_text(errors="replace")
    assert alive, text
    assert reply == b"siporch1 d6:result4:ponge", (reply, text)
    assert "Startup complete" in text, text
    assert "ERR" not in text and "WARNING" not in text, text


def _pair_conf(ng_port: int) -> str:
    """edge-central as one edge of the example's pair (sessions in Redis at db-central), its
    media on the loopback instead of the floating address."""
    data = example().model_dump()
    data["hosts"]["edge-central"]["rtpengine"]["ng_port"] = ng_port
    conf = rtpengine.render(Model.model_validate(data), "edge-central")["rtpengine/rtpengine.conf"]
    assert "redis = " in conf, conf
    lines = [
        "interface = 127.0.0.1" if ln.startswith("interface = ") else ln for ln in conf.splitlines()
    ]
    return "\n".join(lines) + "\n"


@pytest.mark.lab
@pytest.mark.parametrize("where", ["host", "sid-root"])
def test_paired_edge_rtpengine_starts_while_redis_is_down(where: str, tmp_path: Path) -> None:
    """An edge that restarts while its Redis does not answer still carries calls: its
    rtpengine starts (and answers NG) instead of refusing to start. Run in a network
    namespace of its own, where the Redis address is unreachable."""
    port = _free_udp_port()
    (tmp_path / "rtpengine.conf").write_text(_pair_conf(port))
    if where == "host":
        if shutil.which("rtpengine") is None:
            pytest.skip("rtpengine is not installed on this host")
        run = f"exec rtpengine --config-file {tmp_path}/rtpengine.conf"
    else:
        if os.geteuid() != 0 or not (ROOTFS / "usr" / "bin" / "rtpengine").exists():
            pytest.skip(f"needs root and the lab root filesystem at {ROOTFS}")
        root = str(ROOTFS.resolve())
        run = (
            f"mount --bind {tmp_path} {root}/mnt && mount -t proc proc {root}/proc && "
            f"exec chroot {root} rtpengine --config-file /mnt/rtpengine.conf"
        )
    if os.geteuid() != 0:
        pytest.skip("needs root for a network namespace")
    # The NG ping is sent from inside the namespace too (the port is the namespace's).
    pinger = (
        "import socket,sys,time\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(0.3)\n"
        "end=time.monotonic()+8\n"
        "while time.monotonic()<end:\n"
        f"    s.sendto(b'siporch1 d7:command4:pinge',('127.0.0.1',{port}))\n"
        "    try: sys.stdout.write(s.recv(200).decode()); break\n"
        "    except TimeoutError: pass\n"
    )
    (tmp_path / "ping.py").write_text(pinger)
    # rtpengine runs in the background of the namespace's shell, which kills that one
    # process by its PID; the PID namespace (-p -f) takes anything left with the shell.
    script = (
        "ip link set lo up && "
        f"{{ ({run} --foreground --log-stderr) > {tmp_path}/rtpengine.log 2>&1 & }} && "
        f"{shutil.which('python3') or 'python3'} {tmp_path}/ping.py; "
        "kill $! 2>/dev/null; wait; true"
    )
    proc = subprocess.run(
        ["unshare", "-n", "-m", "-p", "-f", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    text = (tmp_path / "rtpengine.log").read_text(errors="replace")
    assert proc.stdout == "siporch1 d6:result4:ponge", (proc.stdout, proc.stderr, text)
    assert "Startup complete" in text, text
    assert "Starting with no initial connection to Redis" in text, text
