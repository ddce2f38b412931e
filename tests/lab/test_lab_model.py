"""The lab meets the trunk model: configs rendered from inventory/lab run in the real
daemons of the lab hosts. Asterisk on pbx-central loads its rendered tree and lists every
trunk over AMI (panoramisk, from the controller, over the lab bridge); Kamailio and
rtpengine on edge-central start with theirs."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from panoramisk import Manager

from siporch.lab import hosts as hostfs
from siporch.model import load_model
from siporch.render import render_release
from siporch.vault import find_password_file

pytestmark = pytest.mark.lab
F = TypeVar("F", bound=Callable[..., Any])


def restarts_lab(fn: F) -> F:
    """Marks a test that stops daemons of lab hosts: tests/conftest.py runs it last."""
    fn.lab_restarts = True  # type: ignore[attr-defined]
    return fn


RELEASE = "lab-model-test"
AST_CONF = "/etc/asterisk/asterisk.conf"
KAM_CFG = "/etc/siporch/current/kamailio/kamailio.cfg"
RTP_CONF = "/etc/siporch/current/rtpengine/rtpengine.conf"


@pytest.fixture(scope="module")
def release(lab) -> Iterator[dict[str, object]]:  # type: ignore[no-untyped-def]
    """Render inventory/lab and install each host's tree as its current release."""
    if any(_systemd(lab, h) for h in ("edge-central", "pbx-central")):
        pytest.skip(
            "the daemons of systemd lab hosts are their packaged units: the deploy tests "
            "(tests/lab/test_deploy.py, tests/infra) start them from the rendered release; "
            "this module starts them by hand on no-init hosts (siporch lab up --init none)"
        )
    loaded = load_model(lab.inventory, find_password_file(lab.inventory))
    rendered = render_release(loaded.model)
    previous: dict[str, str | None] = {}
    for host, files in rendered.items():
        base = lab.root(host) / "etc" / "siporch"
        rel = base / "releases" / RELEASE
        if rel.exists():
            shutil.rmtree(rel)
        for relpath, data in files.items():
            target = rel / relpath
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        current = base / "current"
        previous[host] = os.readlink(current) if current.is_symlink() else None
        tmp = base / ".current-lab-model-test"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(f"releases/{RELEASE}")
        os.replace(tmp, current)
    yield {"model": loaded.model, "rendered": rendered}
    for host, link in previous.items():
        base = lab.root(host) / "etc" / "siporch"
        current = base / "current"
        current.unlink(missing_ok=True)
        if link is not None:
            current.symlink_to(link)
        shutil.rmtree(base / "releases" / RELEASE, ignore_errors=True)


#: The packaged unit of each daemon on a systemd lab host.
UNITS = {"asterisk": "asterisk.service", "kamailio": "kamailio.service", "rtpengine": "rtpengine-daemon.service"}


def _systemd(lab, host: str) -> bool:  # type: ignore[no-untyped-def]
    return bool(lab.info["hosts"][host].get("init") == "systemd")


def _stop(lab, host: str, comm: str) -> None:  # type: ignore[no-untyped-def]
    """Stop every ``comm`` process of ``host``: its unit on a systemd host (so that systemd
    does not start it again), then whatever this module started by hand."""
    from siporch.lab import lab as lab_mod
    from siporch.lab import procs

    if _systemd(lab, host):
        lab.run(host, ["systemctl", "stop", UNITS[comm]], timeout=60)
    found = lab_mod.lab_processes(lab_mod.LabPaths.default()).get(host, [])
    procs.kill_processes([p.pid for p in found if p.comm == comm], grace=5)


def _restore(lab, host: str, comm: str) -> None:  # type: ignore[no-untyped-def]
    """Give a systemd host its unit back (deploys expect the packaged unit to run it)."""
    if _systemd(lab, host):
        lab.run(host, ["systemctl", "start", UNITS[comm]], timeout=60)


@pytest.fixture(scope="module")
def asterisk(lab, release) -> Iterator[str]:  # type: ignore[no-untyped-def]
    host = "pbx-central"
    _stop(lab, host, "asterisk")
    lab.run(host, ["mkdir", "-p", "/var/run/asterisk"], check=True)
    lab.run(host, ["asterisk", "-C", AST_CONF], check=True)
    # The daemon forks before it opens its control socket: retry until it answers.
    deadline = time.monotonic() + 60
    while True:
        booted = lab.run(
            host, ["asterisk", "-C", AST_CONF, "-rx", "core waitfullybooted"], timeout=60
        )
        if booted.returncode == 0:
            break
        assert time.monotonic() < deadline, booted.stdout + booted.stderr
        time.sleep(0.2)
    yield host
    lab.run(host, ["asterisk", "-C", AST_CONF, "-rx", "core stop now"], timeout=30)
    _stop(lab, host, "asterisk")
    _restore(lab, host, "asterisk")


async def _ami_endpoints(address: str, port: int, user: str, secret: str) -> list[str]:
    manager = Manager(
        loop=asyncio.get_running_loop(),
        host=address,
        port=port,
        username=user,
        secret=secret,
        ping_delay=60,
        reconnect_timeout=1,
    )
    await asyncio.wait_for(manager.connect(), timeout=10)
    try:
        deadline = time.monotonic() + 10
        while getattr(manager, "authenticated_future", True) is not None:
            assert time.monotonic() < deadline, "no answer to the AMI login"
            await asyncio.sleep(0.05)
        assert manager.authenticated, "AMI login refused"
        messages = await asyncio.wait_for(
            manager.send_action({"Action": "PJSIPShowEndpoints"}), timeout=10
        )
    finally:
        manager.close()
    if not isinstance(messages, list):
        messages = [messages]
    return [m.ObjectName for m in messages if m.get("Event") == "EndpointList"]


@restarts_lab
def test_asterisk_loads_the_rendered_config_and_ami_lists_every_trunk(
    lab, release, asterisk
) -> None:  # type: ignore[no-untyped-def]
    model = release["model"]
    ami = model.hosts["pbx-central"].ami
    # The AMI answers on the PBX's lab address, reached from the controller over the bridge.
    endpoints = asyncio.run(
        _ami_endpoints(
            lab.address("pbx-central"), ami.port, ami.user, ami.secret.get_secret_value()
        )
    )
    for trunk in model.trunks:
        assert trunk in endpoints, (trunk, endpoints)
    # The running Asterisk reads the site's config directory, which includes siporch's
    # files from the rendered release.
    shown = lab.run("pbx-central", ["asterisk", "-C", AST_CONF, "-rx", "core show settings"])
    assert "/etc/asterisk" in shown.stdout
    shown = lab.run("pbx-central", ["asterisk", "-C", AST_CONF, "-rx", "dialplan show siporch-inbound"])
    assert "[extensions_siporch.conf:" in shown.stdout, shown.stdout  # Asterisk names the file


@restarts_lab
def test_kamailio_and_rtpengine_start_on_the_edge_with_the_rendered_config(lab, release) -> None:  # type: ignore[no-untyped-def]
    host = "edge-central"
    _stop(lab, host, "kamailio")
    _stop(lab, host, "rtpengine")
    check = lab.run(host, ["kamailio", "-c", "-f", KAM_CFG], timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    try:
        rtp = lab.run(
            host,
            ["rtpengine", "--config-file", RTP_CONF, "--pidfile", "/run/rtpengine/rtpengine.pid"],
        )
        assert rtp.returncode == 0, rtp.stdout + rtp.stderr
        env = (
            "SHM_MB=64; PKG_MB=8; MEMORY_MANAGER=qm; "
            ". /etc/siporch/current/kamailio/kamailio.env; "
        )
        start = lab.run(
            host,
            env + f'kamailio -P /run/kamailio/kamailio.pid -f {KAM_CFG} -m "$SHM_MB" -M "$PKG_MB"'
            ' -x "$MEMORY_MANAGER"'
            " -E > /var/log/kamailio-lab-test.log 2>&1",
            timeout=60,
        )
        assert start.returncode == 0, (lab.root(host) / "var/log/kamailio-lab-test.log").read_text()
        address = lab.address(host)
        deadline = time.monotonic() + 15
        while True:
            sockets = lab.run(host, ["ss", "-H", "-lntu"]).stdout
            listening = [f"{address}:5060", f"{address}:5061", "127.0.0.1:2223"]
            if all(s in sockets for s in listening):
                break
            assert time.monotonic() < deadline, sockets
            time.sleep(0.2)
        assert hostfs.tcp_open(address, 5060), "Kamailio does not accept TCP on 5060"
        time.sleep(1)
        from siporch.lab import lab as lab_mod

        st = {h.name: h for h in lab_mod.status().hosts}[host]
        assert st.daemons.get("kamailio") and st.daemons.get("rtpengine"), st.daemons
    finally:
        _stop(lab, host, "kamailio")
        _stop(lab, host, "rtpengine")
        _restore(lab, host, "rtpengine")
        _restore(lab, host, "kamailio")
