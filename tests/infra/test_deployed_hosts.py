"""pytest-testinfra checks of the lab hosts after a deploy: daemons, sockets, release tree.

Runs a deploy of inventory/lab first (a no-op when it is already deployed), then looks at
every siporch host over Ansible's own connection (testinfra's ansible backend).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from siporch import resources
from siporch.deploy import runner

pytestmark = pytest.mark.lab

testinfra = pytest.importorskip("testinfra")

EDGES = ("edge-central", "edge-central-2", "edge-branch")
PBX = "pbx-central"
SECRET_FILES = {PBX: ("asterisk/pjsip_siporch.conf", "asterisk/manager_siporch.conf")}


@pytest.fixture(scope="module")
def deployed(lab: Any) -> Iterator[str]:
    report = runner.report_path()
    vault = runner.vault_password_file(lab.inventory, None)
    cmd = runner.build_command(
        "deploy-trunk.yml",
        lab.inventory,
        vault_file=vault,
        report_file=report,
        extra_vars={"asterisk_pbx_health_registrations": False},
    )
    try:
        result = runner.run(cmd, report)
    finally:
        report.unlink(missing_ok=True)
    assert result.ok and result.report, "\n".join(result.output[-40:])
    # testinfra's ansible backend reads these from the environment: set them for this
    # module only, so later tests (of the deploy runner, say) see the environment they had
    saved = {k: os.environ.get(k) for k in ("ANSIBLE_VAULT_PASSWORD_FILE", "ANSIBLE_CONFIG")}
    if vault is not None:
        os.environ.setdefault("ANSIBLE_VAULT_PASSWORD_FILE", str(vault))
    os.environ["ANSIBLE_CONFIG"] = str(resources.ansible_cfg())
    try:
        yield str(result.report["release"])
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _host(lab: Any, name: str) -> Any:
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={lab.inventory}")


def _running(host: Any, pidfile: str) -> bool:
    pid = host.file(pidfile).content_string.strip()
    return bool(pid) and host.run(f"kill -0 {pid}").rc == 0


@pytest.mark.parametrize("name", [*EDGES, PBX])
def test_current_points_at_the_release(lab: Any, deployed: str, name: str) -> None:
    host = _host(lab, name)
    current = host.file("/etc/siporch/current")
    assert current.is_symlink
    assert current.linked_to == f"/etc/siporch/releases/{deployed}"
    release = host.file(f"/etc/siporch/releases/{deployed}")
    assert release.is_directory and release.mode == 0o755 and release.user == "root"
    manifest = json.loads(
        host.file(f"/etc/siporch/releases/{deployed}/manifest.json").content_string
    )
    assert manifest["id"] == deployed and manifest["host"] == name
    for rel, meta in manifest["files"].items():
        f = host.file(f"/etc/siporch/current/{rel}")
        assert f.exists, rel
        assert f.mode == int(meta["mode"], 8), rel
        assert f.sha256sum == meta["sha256"], rel
    assert not host.file("/etc/siporch/.current.new").exists


@pytest.mark.parametrize("name", EDGES)
def test_edge_daemons_and_sockets(lab: Any, deployed: str, name: str) -> None:
    host = _host(lab, name)
    address = lab.address(name)
    assert _running(host, "/run/kamailio/kamailio.pid")
    assert _running(host, "/run/rtpengine/rtpengine.pid")
    assert host.socket(f"udp://{address}:5060").is_listening
    assert host.file("/run/kamailio/kamailio_rpc.sock").is_socket
    cmdline = host.file(
        f"/proc/{host.file('/run/kamailio/kamailio.pid').content_string.strip()}/cmdline"
    )
    assert b"/etc/siporch/current/kamailio/kamailio.cfg" in cmdline.content


def test_pbx_daemon_sockets_and_secret_modes(lab: Any, deployed: str) -> None:
    host = _host(lab, PBX)
    assert _running(host, "/var/run/asterisk/asterisk.pid")
    assert host.socket("tcp://5038").is_listening or any(
        s.endswith(":5038") for s in host.socket.get_listening_sockets()
    )
    group = "asterisk" if host.group("asterisk").exists else "root"
    for rel in SECRET_FILES[PBX]:
        f = host.file(f"/etc/siporch/current/{rel}")
        assert f.mode == 0o640 and f.user == "root" and f.group == group, rel
    shown = host.run("asterisk -C /etc/asterisk/asterisk.conf -rx 'dialplan show siporch-inbound'")
    assert "[extensions_siporch.conf:" in shown.stdout, shown.stdout  # Asterisk names the file


def test_helpers_installed(lab: Any, deployed: str) -> None:
    for name, helper in (
        ("edge-central", "siporch_kamailio.py"),
        ("edge-central", "siporch_rtpengine.py"),
        (PBX, "siporch_asterisk.py"),
    ):
        f = _host(lab, name).file(f"/usr/local/lib/siporch/{helper}")
        assert f.is_file and f.mode == 0o755
        lib = _host(lab, name).file("/usr/local/lib/siporch/siporch_hostlib.py")
        assert lib.is_file and lib.mode == 0o644
