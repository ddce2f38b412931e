"""Lab hosts that boot systemd as their PID 1, as real hosts do.

A systemd host is entered in this order: its network namespace (``nsenter --net``, so
the packaged daemons bind the host's addresses, never the machine's), then a cgroup of
its own in the machine's cgroup v2 hierarchy (``<cgroup2>/sipo-lab/<host>``), then new
PID, mount, UTS, IPC and cgroup namespaces (``unshare --fork``). A small script mounts
what systemd needs on top of the overlay root that ``lab up`` mounted in the machine's
mount namespace (overlay, ``/dev``, ``/run`` stay visible from the controller):

* ``/proc`` of the new PID namespace, with ``/proc/sys`` read-only except
  ``/proc/sys/net`` (the host's own network namespace) and ``/proc/sysrq-trigger``
  read-only: nothing in a host changes the machine's kernel settings;
* ``/sys`` (read-only sysfs of the host's network namespace) and a ``cgroup2`` file
  system at ``/sys/fs/cgroup``, whose root is the host's own cgroup;

and execs ``chroot ROOT /usr/lib/systemd/systemd --system`` with ``container=other``,
without the capabilities to load kernel modules or set the clock.

Before the first boot of an overlay the lab writes into it (upper layer only):

* masks (links to /dev/null) for units that must not run in a lab host: consoles and
  gettys, udev, networkd/resolved/timesyncd (no DHCP, no change to the namespace's
  network beyond what the lab set), sysctl and kernel module loading, the tmpfs on
  /tmp, periodic apt/fstrim jobs, ``ssh.socket`` and ``sshd-keygen`` (the lab brings
  its host keys);
* disables the packaged daemons (kamailio, asterisk, rtpengine, redis, keepalived):
  nothing starts them at boot; siporch's deploy enables and starts them (the roles'
  ``systemd_service: enabled: true``), so after a deploy the host behaves as a real one;
* an sshd drop-in (``UseDNS no``, root by key only); the packaged ``ssh.service`` runs
  sshd with the lab's host keys and authorized key (``siporch.lab.hosts.install_files``).

``lab down`` halts each systemd host (SIGRTMIN+3 to its PID 1), waits, then kills what
is left, and removes the hosts' cgroups.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from siporch.errors import LabError

INIT_SYSTEMD = "systemd"
INIT_NONE = "none"
INIT_MODES = (INIT_SYSTEMD, INIT_NONE)
INIT_ENV = "SIPORCH_LAB_INIT"
# Hosts of these inventory groups boot systemd (the hosts siporch deploys to).
SYSTEMD_GROUPS = frozenset({"siporch_edge", "siporch_pbx"})
SYSTEMD = "/usr/lib/systemd/systemd"
PID_FILE = "init.pid"  # in the host's directory (next to upper/, work/, root/)
FIRST_BOOT_MARK = "var/lib/siporch-lab/first-boot"
# The lab's cgroup under the machine's cgroup v2 root. A private lab instance
# (siporch/lab/isolate.py) sets its own, so two labs never share a host's cgroup.
CGROUP_ENV = "SIPORCH_LAB_CGROUP"
CGROUP_PARENT = os.environ.get(CGROUP_ENV, "").strip() or "sipo-lab"
BOOT_WAIT_S = 60.0
HALT_WAIT_S = 15.0

MASKED = (
    # consoles: a lab host has none
    "getty@.service",
    "getty@tty1.service",
    "autovt@.service",
    "console-getty.service",
    "container-getty@.service",
    "serial-getty@.service",
    "getty-static.service",
    "systemd-logind.service",
    # hardware, kernel and machine-wide settings belong to the machine
    "systemd-udevd.service",
    "systemd-udevd-control.socket",
    "systemd-udevd-kernel.socket",
    "systemd-udev-trigger.service",
    "systemd-udev-settle.service",
    "systemd-sysctl.service",
    "systemd-modules-load.service",
    "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount",
    "proc-sys-fs-binfmt_misc.mount",
    "systemd-pstore.service",
    "systemd-random-seed.service",
    "systemd-hwdb-update.service",
    "systemd-remount-fs.service",
    "systemd-firstboot.service",
    "systemd-timesyncd.service",
    "systemd-time-wait-sync.service",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "sys-kernel-config.mount",
    "sys-fs-fuse-connections.mount",
    "dev-hugepages.mount",
    "tmp.mount",
    # the network of the namespace is the lab's: no DHCP, no resolver, no waiting
    "systemd-networkd.service",
    "systemd-networkd.socket",
    "systemd-networkd-wait-online.service",
    "systemd-networkd-varlink.socket",
    "systemd-networkd-varlink-metrics.socket",
    "systemd-networkd-resolve-hook.socket",
    "systemd-networkd-persistent-storage.service",
    "systemd-resolved.service",
    "networking.service",
    "ifupdown-wait-online.service",
    # periodic jobs that would reach the network or the disk
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "fstrim.timer",
    "e2scrub_all.timer",
    # sshd: the service, not socket activation; the lab brings the host keys
    "ssh.socket",
    "sshd-keygen.service",
)
# Packaged daemons: installed, not started at boot; siporch's deploy enables them.
DISABLED = (
    "kamailio.service",
    "asterisk.service",
    "rtpengine-daemon.service",
    "rtpengine.service",
    "redis-server.service",
    "keepalived.service",
)
SSHD_DROPIN = "etc/ssh/sshd_config.d/siporch-lab.conf"


def init_mode(requested: str | None = None) -> str:
    """The lab's init mode: ``requested``, else $SIPORCH_LAB_INIT, else systemd."""
    mode = (requested or os.environ.get(INIT_ENV) or INIT_SYSTEMD).strip().lower()
    if mode not in INIT_MODES:
        source = "--init" if requested else INIT_ENV
        raise LabError(f"{source}: unknown init mode {mode!r}", hint="use systemd or none")
    return mode


def uses_systemd(groups: Sequence[str], mode: str) -> bool:
    """Whether a host of ``groups`` boots systemd in the lab's ``mode``."""
    return mode == INIT_SYSTEMD and bool(SYSTEMD_GROUPS.intersection(groups))


# --- the overlay ---------------------------------------------------------------------


def prepare_root(root: Path) -> None:
    """Masks, disabled daemons and the sshd drop-in, once per overlay (first boot)."""
    mark = root / FIRST_BOOT_MARK
    units = root / "etc/systemd/system"
    if not mark.exists():
        for unit in DISABLED:
            for wants in units.glob("*.wants"):
                link = wants / unit
                if link.is_symlink():
                    link.unlink()
        mark.parent.mkdir(parents=True, exist_ok=True)
        mark.write_text("the lab disabled the packaged daemons at the first boot\n")
    for unit in MASKED:
        link = units / unit
        if link.is_symlink() and os.readlink(link) == "/dev/null":
            continue
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to("/dev/null")
    dropin = root / SSHD_DROPIN
    dropin.parent.mkdir(parents=True, exist_ok=True)
    dropin.write_text(
        "# Written by `siporch lab up`.\nUseDNS no\nPermitRootLogin prohibit-password\n"
    )
    # The packaged ssh.service starts at boot (multi-user.target wants it).
    wants = units / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    ssh = wants / "ssh.service"
    if not ssh.is_symlink():
        ssh.symlink_to("/usr/lib/systemd/system/ssh.service")


# --- cgroups -------------------------------------------------------------------------


def cgroup2_mount() -> Path | None:
    """Where the machine's cgroup v2 hierarchy is mounted (``/sys/fs/cgroup`` on a
    unified machine, ``/sys/fs/cgroup/unified`` on a hybrid one), or None."""
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            if right.split()[:1] == ["cgroup2"]:
                return Path(left.split()[4])
    return None


def host_cgroup(name: str) -> Path:
    base = cgroup2_mount()
    if base is None:
        raise LabError(
            "systemd lab hosts need a cgroup v2 hierarchy and this machine has none",
            hint="mount one (mount -t cgroup2 none /sys/fs/cgroup/unified) or use --init none",
        )
    return base / CGROUP_PARENT / name


def remove_cgroups(names: Sequence[str] | None = None) -> list[str]:
    """Remove the lab's cgroups (all, or those of ``names``), deepest first. Only empty
    cgroups can go: call after the hosts' processes are gone."""
    base = cgroup2_mount()
    if base is None or not (base / CGROUP_PARENT).is_dir():
        return []
    tops = [base / CGROUP_PARENT / n for n in names] if names else [base / CGROUP_PARENT]
    removed: list[str] = []
    for top in tops:
        if not top.is_dir():
            continue
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for d in [*dirs, top]:
            with contextlib.suppress(OSError):
                d.rmdir()
                removed.append(str(d))
    if names is None or not any(p.is_dir() for p in (base / CGROUP_PARENT).iterdir()):
        with contextlib.suppress(OSError):
            (base / CGROUP_PARENT).rmdir()
    return removed


# --- boot, enter, halt -----------------------------------------------------------------

# Runs in the new namespaces with the machine's tools, then becomes the host's systemd.
_BOOT_SCRIPT = r"""
set -e
R=$1 H=$2
hostname "$H"
mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
mount --bind "$R/proc/sys/net" "$R/proc/sys/net"
mount --rbind "$R/proc/sys" "$R/proc/sys"
mount -o remount,bind,ro "$R/proc/sys"
if [ -e "$R/proc/sysrq-trigger" ]; then
  mount --bind "$R/proc/sysrq-trigger" "$R/proc/sysrq-trigger"
  mount -o remount,bind,ro "$R/proc/sysrq-trigger"
fi
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$R/sys/fs/cgroup"
exec setpriv --bounding-set -sys_module,-sys_time \
  env -i container=other PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
  chroot "$R" /usr/lib/systemd/systemd --system --log-target=journal-or-kmsg
"""


def boot(name: str, netns: str, root: Path, pid_file: Path) -> int:
    """Boot systemd as PID 1 of host ``name`` (network namespace ``netns``, root
    ``root`` already mounted). Writes its pid (as the machine sees it) to ``pid_file``
    and returns it."""
    if not (root / SYSTEMD.lstrip("/")).exists():
        raise LabError(f"{name}: {SYSTEMD} is not in the lab root", hint="use --init none")
    prepare_root(root)
    cgroup = host_cgroup(name)
    cgroup.mkdir(parents=True, exist_ok=True)
    log = pid_file.with_name("boot.log")
    # The first process joins the host's cgroup, then unshare makes it the cgroup
    # namespace's root: the host's systemd sees its own cgroup as /sys/fs/cgroup.
    launcher = 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"'
    argv = [
        "sh",
        "-c",
        launcher,
        "sh",
        str(cgroup),
        "nsenter",
        f"--net=/run/netns/{netns}",
        "unshare",
        "--pid",
        "--fork",
        "--mount",
        "--uts",
        "--ipc",
        "--cgroup",
        "--propagation",
        "private",
        "sh",
        "-c",
        _BOOT_SCRIPT,
        "sh",
        str(root),
        name,
    ]
    with log.open("w") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
        )
    # unshare forks: the host's PID 1 is its child. Wait until that child is systemd.
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        for child in _children(proc.pid):
            if _exe(child).endswith("/systemd") or _comm(child) == "systemd":
                pid_file.write_text(f"{child}\n")
                return child
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()
            raise LabError(f"{name}: systemd did not boot: {tail[-1] if tail else proc.returncode}")
        time.sleep(0.02)
    raise LabError(f"{name}: systemd did not start in 10 s (see {log})")


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def init_pid(pid_file: Path) -> int | None:
    """The host's systemd (its pid as the machine sees it) while it runs."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return None
    if state == "Z" or _comm(pid) != "systemd":
        return None
    return pid


def enter_argv(pid: int, cmd: Sequence[str]) -> list[str]:
    """argv that runs ``cmd`` in the namespaces and root of the host whose PID 1 is
    ``pid`` (network, PID, mount, UTS, IPC, cgroup; root and working directory)."""
    return ["nsenter", "-t", str(pid), "-n", "-p", "-m", "-u", "-i", "-C", "-r", "-w", *cmd]


def outer_pid(init: int, inner: int) -> int | None:
    """The machine's pid of the process ``inner`` of the host whose PID 1 is ``init``."""
    try:
        ns = os.stat(f"/proc/{init}/ns/pid").st_ino
    except OSError:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(entry / "ns/pid").st_ino != ns:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("NSpid:"):
                    if int(line.split()[-1]) == inner:
                        return int(entry.name)
                    break
        except (OSError, ValueError):
            continue
    return None


def system_state(pid: int, env: dict[str, str]) -> tuple[str, str]:
    """``systemctl is-system-running`` in the host, and the failed units (if any)."""

    def run(args: Sequence[str]) -> str:
        try:
            proc = subprocess.run(
                enter_argv(pid, args), capture_output=True, text=True, timeout=10,
                env=env, check=False, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return "timeout"
        return (proc.stdout.strip() or proc.stderr.strip() or "unknown").splitlines()[-1]

    state = run(["systemctl", "is-system-running"])
    if state in ("degraded", "maintenance"):
        failed = run(["systemctl", "list-units", "--failed", "--plain", "--no-legend"])
        return state, f"failed units: {failed}"
    return state, ""


def wait_running(pid: int, deadline: float, env: dict[str, str]) -> tuple[str, str]:
    """Wait until the host's systemd has finished booting (running or degraded)."""
    state, reason = "unknown", ""
    while True:
        state, reason = system_state(pid, env)
        booting = state in ("initializing", "starting", "unknown", "offline", "timeout")
        if not booting and not state.startswith("Failed"):
            return state, reason
        if time.monotonic() >= deadline or init_pid_alive(pid) is False:
            return state, reason
        time.sleep(0.1)


def init_pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def halt(pids: Sequence[int], timeout: float = HALT_WAIT_S) -> list[int]:
    """Halt hosts' systemd (SIGRTMIN+3: systemd's halt), wait up to ``timeout`` s for
    them to exit. Returns the pids still alive (the caller kills them)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGRTMIN + 3)
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if init_pid_alive(p)]
        if alive:
            time.sleep(0.05)
    return alive


def unit_log_tail(pid: int, unit: str, env: dict[str, str], lines: int = 2) -> str:
    """The last lines ``unit`` logged in the host whose PID 1 is ``pid`` (why it failed,
    usually)."""
    argv = enter_argv(pid, ["journalctl", "-u", unit, "-n", str(lines), "--no-pager", "-o", "cat"])
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=10, env=env, check=False,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return ""
    return " | ".join(line for line in proc.stdout.splitlines() if line.strip())
