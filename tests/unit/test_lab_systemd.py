"""systemd lab hosts without the lab: init mode, which hosts boot systemd, the overlay
prepared for the first boot, and the process manager the lab inventory gives the roles."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from siporch.errors import LabError
from siporch.lab import systemd
from siporch.lab.inventory import lab_hosts_document, read_lab_json, write_inventory
from siporch.lab.spec import HOSTS, LabPaths

EXAMPLE = Path(__file__).resolve().parents[2] / "inventory" / "example"


def test_init_mode_defaults_to_systemd_and_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(systemd.INIT_ENV, raising=False)
    assert systemd.init_mode() == "systemd"
    monkeypatch.setenv(systemd.INIT_ENV, "none")
    assert systemd.init_mode() == "none"
    assert systemd.init_mode("systemd") == "systemd"  # the option wins
    monkeypatch.setenv(systemd.INIT_ENV, "upstart")
    with pytest.raises(LabError, match="SIPORCH_LAB_INIT: unknown init mode 'upstart'"):
        systemd.init_mode()


def test_edges_and_pbx_boot_systemd_peers_do_not() -> None:
    booting = {h.name for h in HOSTS if systemd.uses_systemd(h.groups, "systemd")}
    assert {"edge-central", "edge-branch", "pbx-central"} <= booting
    assert not {"pstn-gw", "itsp-a1", "itsp-a2", "itsp-b", "itsp-branch"} & booting
    assert not [h for h in HOSTS if systemd.uses_systemd(h.groups, "none")]


def _fake_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    for unit in ("kamailio.service", "asterisk.service", "rtpengine-daemon.service"):
        (wants / unit).symlink_to(f"/usr/lib/systemd/system/{unit}")
    getty = root / "etc/systemd/system/getty.target.wants"
    getty.mkdir()
    (getty / "getty@tty1.service").symlink_to("/usr/lib/systemd/system/getty@.service")
    (root / "etc/systemd/system/getty@tty1.service").symlink_to("/lib/x")  # replaced by a mask
    return root


def test_first_boot_disables_the_daemons_masks_the_rest_and_keeps_later_enables(
    tmp_path: Path,
) -> None:
    root = _fake_root(tmp_path)
    systemd.prepare_root(root)
    units = root / "etc/systemd/system"
    wants = units / "multi-user.target.wants"
    assert sorted(p.name for p in wants.iterdir()) == ["ssh.service"]
    for unit in ("systemd-networkd.service", "getty@tty1.service", "ssh.socket", "tmp.mount"):
        assert (units / unit).readlink() == Path("/dev/null"), unit
    assert "UseDNS no" in (root / systemd.SSHD_DROPIN).read_text()
    # A deploy enables kamailio; the next boot of the same overlay keeps it enabled.
    (wants / "kamailio.service").symlink_to("/usr/lib/systemd/system/kamailio.service")
    systemd.prepare_root(root)
    assert (wants / "kamailio.service").is_symlink()


def test_lab_inventory_sets_the_process_manager_of_deployed_hosts(tmp_path: Path) -> None:
    example = tmp_path / "inventory" / "example"
    shutil.copytree(EXAMPLE, example)
    paths = LabPaths(state=tmp_path / "state", cache=tmp_path / "cache")
    for mode, expected in (("systemd", "systemd"), ("none", "direct")):
        doc = lab_hosts_document(example, paths.ssh_key, mode)
        children = doc["all"]["children"]
        for group in ("siporch_edge", "siporch_pbx"):
            for name, hvars in children[group]["hosts"].items():
                assert hvars["siporch_process_manager"] == expected, (mode, name)
        for hvars in children["lab_peers"]["hosts"].values():
            assert "siporch_process_manager" not in hvars
    out = write_inventory(example, example.parent / "lab", paths, "systemd")
    hosts = yaml.safe_load((out / "hosts.yml").read_text())["all"]["children"]
    assert hosts["siporch_pbx"]["hosts"]["pbx-central"]["siporch_process_manager"] == "systemd"
    info = read_lab_json(out / "lab.json")
    assert info["init"] == "systemd"
    assert info["hosts"]["edge-central"]["init"] == "systemd"
    assert info["hosts"]["itsp-b"]["init"] == "none"


def test_cgroup2_mount_is_found_or_none() -> None:
    found = systemd.cgroup2_mount()
    assert found is None or found.is_dir()
