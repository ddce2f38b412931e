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
