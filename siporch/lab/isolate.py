"""A private lab instance: run a command (a pytest of lab tests, say) in network, mount and
PID namespaces of its own, where `siporch lab up` builds a complete second lab with the same
host names, namespaces (``sipo-*``) and addresses (198.18.0.0/15) as the machine's lab,
without seeing or touching it.

    python -m siporch.lab.isolate NAME -- COMMAND [ARG...]

Inside, the command finds:

* a network namespace of its own (loopback up, nothing else): the lab's bridge, veths and
  host namespaces are created there, invisible from the machine's;
* a PID namespace of its own, with its own ``/proc``: `lab down` finds and kills only the
  instance's processes, and every process of the instance dies with the command;
* a mount namespace with private propagation, where the copies of the machine's lab mounts
  (host roots, ``/run/netns/*``) are detached first, then private directories are mounted
  on what a lab and its tests write: a tmpfs on ``/run/netns``, and per-instance
  directories of ``<base>/NAME`` on ``/tmp`` (the controller's deploy lock, pytest's
  temporary directories), on the repository's ``inventory/`` (its ``lab/`` and ``build/``
  are the instance's: the generated lab inventory, the controller's release store; the
  other entries, such as ``example/``, are the repository's, bind-mounted) and on
  ``~/.ansible/cp`` (SSH control sockets are named by address, and both labs use the same
  addresses);
* ``SIPORCH_LAB_STATE=<base>/NAME/state`` (the hosts' overlays, keys, state file: a path
  the machine's `lab down` never matches when it looks for lab processes by root) and
  ``SIPORCH_LAB_CGROUP=sipo-lab-NAME`` (the systemd hosts' cgroups).

The instance starts empty each time (its directories are wiped) and ends with the command:
the kernel kills what is left in its PID namespace, its mounts and namespaces go with it,
and its cgroups are removed here afterwards. Needs root.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

BASE_ENV = "SIPORCH_LAB_INSTANCES"
DEFAULT_BASE = "/var/lib/siporch/lab-instances"
INSTANCE_ENV = "SIPORCH_LAB_INSTANCE"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,15}$")
REPO = Path(__file__).resolve().parents[2]
INVENTORY_DIR = REPO / "inventory"
# What a lab writes in INVENTORY_DIR (`lab up` replaces lab/ by renaming .lab.tmp/, so a
# mount on lab/ itself will not do): the instance gets a directory of its own there, with
# everything else of the repository's bind-mounted in.
INVENTORY_OWN = frozenset({"lab", ".lab.tmp", "build"})
MS_BIND = 4096
MS_REC = 16384
# Where the machine's lab keeps its mounts (copies of them appear in a new mount namespace).
MACHINE_LAB_STATE = "/var/lib/siporch/lab"
NETNS_DIR = "/run/netns"
# Overlays mounted there are other labs' or tests' roots, never the machine's own.
OVERLAY_TOPS = ("/tmp", "/var/tmp", "/var/lib/siporch", "/run")
CP_DIR = Path.home() / ".ansible" / "cp"
MNT_DETACH = 2


def base_dir() -> Path:
    return Path(os.environ.get(BASE_ENV, DEFAULT_BASE))


def cgroup_name(name: str) -> str:
    return f"sipo-lab-{name}"


def _binds(name: str) -> list[tuple[Path, Path, int]]:
    """(private directory, mount point, mode) of an instance."""
    inst = base_dir() / name
    return [
        (inst / "tmp", Path("/tmp"), 0o1777),
        (inst / "inventory", INVENTORY_DIR, 0o755),
        (inst / "ansible-cp", CP_DIR, 0o700),
    ]


def _mountinfo() -> list[tuple[str, str, str]]:
    """(mount point, file system type, optional fields) of this mount namespace."""
    out = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            sep = fields.index("-")
            point = fields[4].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
            out.append((point, fields[sep + 1], " ".join(fields[6:sep])))
    return out


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _run(argv: Sequence[str]) -> None:
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"isolate: {' '.join(argv)}: {proc.stderr.strip() or proc.returncode}")


def _detach(point: str) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(point.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (22, 2):  # EINVAL: not a mount point (any more); ENOENT
            raise SystemExit(f"isolate: cannot detach {point}: {os.strerror(err)}")


def _bind(source: str, target: Path) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(source.encode(), str(target).encode(), None, MS_BIND | MS_REC, None) != 0:
        err = ctypes.get_errno()
        raise SystemExit(f"isolate: cannot bind {source} on {target}: {os.strerror(err)}")


def _inside(name: str, argv: list[str]) -> int:
    """PID 1 of the instance: set up the mounts, run ``argv``, reap orphans."""
    mounts = _mountinfo()
    shared = [p for p, _fs, opt in mounts if "shared:" in opt or "master:" in opt]
    if shared:  # never detach anything that could propagate to the machine's namespace
        raise SystemExit("isolate: mounts still propagate: " + ", ".join(shared[:5]))
    # Copies of the machine's lab (and of other namespaces' files): detach them here only.
    copies = [
        p
        for p, fs, _opt in mounts
        if p != "/"
        and (
            fs == "nsfs"
            or (fs == "overlay" and any(_under(p, top) for top in OVERLAY_TOPS))
            or _under(p, NETNS_DIR)
            or _under(p, MACHINE_LAB_STATE)
            or _under(p, str(base_dir()))
        )
    ]
    for point in sorted(set(copies), key=lambda p: p.count("/"), reverse=True):
        _detach(point)
    Path(NETNS_DIR).mkdir(parents=True, exist_ok=True)
    _run(["mount", "-t", "tmpfs", "-o", "mode=755", f"sipo-{name}-netns", NETNS_DIR])
    INVENTORY_DIR.mkdir(exist_ok=True)
    shown = sorted(set(os.listdir(INVENTORY_DIR)) - INVENTORY_OWN)
    hidden = os.open(INVENTORY_DIR, os.O_PATH | os.O_DIRECTORY)
    machine_tmp = os.open("/tmp", os.O_PATH | os.O_DIRECTORY)
    # the repository and the Python running it stay where they are when they live under
    # /tmp (a CI clone in /tmp/ci, say): seen through the machine's /tmp, bind-mounted
    # back into the instance's own /tmp before anything is mounted inside them
    kept = sorted(
        {p.resolve() for p in (REPO, Path(sys.prefix)) if _under(str(p.resolve()), "/tmp")},
        key=lambda p: len(p.parts),
    )
    for source, target, _mode in _binds(name):
        target.mkdir(parents=True, exist_ok=True)
        _bind(str(source), target)
        if target == Path("/tmp"):
            for path in kept:
                rel = path.relative_to("/tmp")
                path.mkdir(parents=True, exist_ok=True)
                _bind(f"/proc/self/fd/{machine_tmp}/{rel}", path)
    os.close(machine_tmp)
    for entry in shown:  # the repository's inventories, seen through the hidden directory
        original = f"/proc/self/fd/{hidden}/{entry}"
        target = INVENTORY_DIR / entry
        if os.path.isdir(original):
            target.mkdir()
        else:
            target.touch()
        _bind(original, target)
    os.close(hidden)
    _run(["ip", "link", "set", "lo", "up"])
    # the working directory again, by its path: through the mounts above (one under /tmp
    # was left behind by the instance's own /tmp)
    with contextlib.suppress(OSError):
        os.chdir(os.getcwd())
    inst = base_dir() / name
    env = dict(os.environ)
    env.update(
        {
            "SIPORCH_LAB_STATE": str(inst / "state"),
            "SIPORCH_LAB_CGROUP": cgroup_name(name),
            INSTANCE_ENV: name,
            "TMPDIR": "/tmp",
        }
    )
    child = subprocess.Popen(argv, env=env)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    while True:  # PID 1 reaps every orphan of the instance
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 1
        except InterruptedError:
            continue
        if pid == child.pid:
            code = os.waitstatus_to_exitcode(status)
            return 128 - code if code < 0 else code  # killed by signal N: 128 + N


def remove_cgroups(name: str, wait_s: float = 10.0) -> list[str]:
    """Remove the instance's cgroups (after its processes are gone), deepest first."""
    from siporch.lab import systemd

    base = systemd.cgroup2_mount()
    if base is None:
        return []
    top = base / cgroup_name(name)
    removed: list[str] = []
    deadline = time.monotonic() + wait_s
    while top.is_dir():
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for d in [*dirs, top]:
            with contextlib.suppress(OSError):
                d.rmdir()
                removed.append(str(d))
        if not top.is_dir() or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return removed


def prepare(name: str) -> None:
    """Empty directories for a new run of instance ``name``."""
    inst = base_dir() / name
    if inst.exists():
        shutil.rmtree(inst)
    (inst / "state").mkdir(parents=True)
    for source, _target, mode in _binds(name):
        source.mkdir(parents=True, exist_ok=True)
        source.chmod(mode)


def run(name: str, argv: list[str]) -> int:
    """Run ``argv`` in a new private instance ``name``; returns its exit code."""
    if os.geteuid() != 0:
        raise SystemExit("isolate: a private lab instance needs root")
    if not NAME_RE.match(name):
        raise SystemExit(f"isolate: instance name {name!r}: use [a-z0-9-], at most 16")
    if not argv:
        raise SystemExit("isolate: no command given")
    remove_cgroups(name, wait_s=0)
    prepare(name)
    outer = [
        "unshare",
        "--mount",
        "--net",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
        "--propagation",
        "private",
        "--",
        sys.executable,
        "-m",
        "siporch.lab.isolate",
        "--inside",
        name,
        "--",
        *argv,
    ]
    proc = subprocess.Popen(outer)

    def forward(signum: int, _frame: object) -> None:
        # unshare itself ignores SIGINT and SIGTERM while it waits: the signal goes to the
        # instance's PID 1 (which passes it on to the command); without one, unshare is
        # killed and --kill-child takes the instance down.
        try:
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        except OSError:
            children = []
        with contextlib.suppress(ProcessLookupError):
            if children:
                os.kill(int(children[0]), signum)
            else:
                proc.kill()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    code = proc.wait()
    remove_cgroups(name)
    return code


def main(args: list[str]) -> int:
    inside = bool(args) and args[0] == "--inside"
    if inside:
        args = args[1:]
    if len(args) < 2 or args[1] != "--":
        print("usage: python -m siporch.lab.isolate NAME -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    name, argv = args[0], args[2:]
    return _inside(name, argv) if inside else run(name, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
