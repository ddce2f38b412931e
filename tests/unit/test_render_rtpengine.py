"""The rtpengine renderer: option values from the model (golden files: test_golden.py)."""

from __future__ import annotations

import configparser
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
from siporch.render import reload_action, rtpengine
from siporch.render.rtpengine import RtpengineRenderError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory" / "example"
GOLDEN = REPO / "tests" / "golden" / "rtpengine"
EDGES = ["edge-central", "edge-branch"]


@functools.cache
def example() -> Model:
    return load_model(EXAMPLE).model


def parsed(model: Model, host: str) -> configparser.SectionProxy:
    text = rtpengine.render(model, host)["rtpengine/rtpengine.conf"]
    cp = configparser.ConfigParser(interpolation=None)
    cp.read_string(text)
    assert cp.sections() == ["rtpengine"]
    return cp["rtpengine"]


def test_options_from_the_model() -> None:
    conf = parsed(example(), "edge-branch")
    assert conf["interface"] == "198.51.100.10"
    assert conf["listen-ng"] == "127.0.0.1:2223"
    assert conf["port-min"] == "30000"
    assert conf["port-max"] == "39999"
    assert conf["table"] == "-1"
    assert not [k for k in conf if k.startswith("recording")]


def test_public_address_is_advertised() -> None:
    data = example().model_dump()
    data["hosts"]["edge-central"]["public_address"] = "203.0.113.99"
    data["hosts"]["edge-central"]["rtpengine"] = {
        "ng_port": 22222,
        "port_min": 40000,
        "port_max": 40100,
    }
    conf = parsed(Model.model_validate(data), "edge-central")
    assert conf["interface"] == "192.0.2.10!203.0.113.99"
    assert conf["listen-ng"] == "127.0.0.1:22222"
    assert (conf["port-min"], conf["port-max"]) == ("40000", "40100")


def test_not_an_edge() -> None:
    with pytest.raises(RtpengineRenderError, match="not an edge host"):
        rtpengine.render(example(), "pbx-central")


def test_reload_and_no_secrets() -> None:
    assert reload_action("edge", "rtpengine/rtpengine.conf") == "rtpengine:restart"
    assert rtpengine.SECRET_FILES == []


def test_deterministic() -> None:
    for host in EDGES:
        assert rtpengine.render(example(), host) == rtpengine.render(
            load_model(EXAMPLE).model, host
        )


# --------------------------------------------------------------------------------------
# The real daemon: Debian 12's rtpengine 10.5 on this host, rtpengine 26 in the lab's sid root
# --------------------------------------------------------------------------------------

ROOTFS = Path(os.environ.get("SIPORCH_ROOTFS", "/var/cache/siporch/rootfs/current"))


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _loopback_conf(ng_port: int) -> str:
    data = example().model_dump()
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
