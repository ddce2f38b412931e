"""The lab's root filesystems: built once with debootstrap, then cached.

The lab's own root is Debian sid (every host runs on it). A second root, Debian 12
"bookworm" (Kamailio 5.6, rtpengine 10.5, no Asterisk), is built only when asked for
(``siporch lab up --edge-root bookworm``), for edges that run the oldest supported versions.

The cache key is a hash of the suite, variant and package list, so a root is rebuilt
only when that list changes. A build goes into a temporary directory next to the cache
and is renamed into place when complete; ``current`` is a symlink to the newest sid
build, and a symlink named after any other suite (``bookworm``) to its newest build.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from siporch.errors import LabError
from siporch.lab.hosts import mount_points
from siporch.lab.spec import LabPaths

SUITE = "sid"
VARIANT = "minbase"
MIRROR = os.environ.get("SIPORCH_LAB_MIRROR", "http://deb.debian.org/debian")
PACKAGES: tuple[str, ...] = (
    "asterisk",
    "asterisk-modules",
    "ca-certificates",
    "dbus",
    "dnsmasq-base",
    "iproute2",
    "iputils-ping",
    "kamailio",
    "kamailio-extra-modules",
    "kamailio-sqlite-modules",
    "kamailio-tls-modules",
    "kamailio-utils-modules",
    "keepalived",
    "openssh-server",
    "openssl",
    # call records at scale (docs/calls.md): the lab's db-central runs the server, the
    # edges write to it with Kamailio's db_postgres
    "kamailio-postgres-modules",
    "postgresql",
    "procps",
    "python3",
    "redis-server",
    "rtpengine-daemon",
    "sip-tester",
    # the lab's operator account (siporch.lab.hosts.OPERATOR) deploys with sudo
    "sudo",
    "systemd",
)
MARKER = "etc/siporch-lab-rootfs.json"
# Executables a usable root must hold; checked after a build and before every use.
REQUIRED = (
    "usr/sbin/sshd",
    "usr/sbin/kamailio",
    "usr/sbin/asterisk",
    "usr/bin/rtpengine",
    "usr/bin/sipp",
    "usr/bin/python3",
    "usr/bin/ssh-keygen",
    "usr/bin/sudo",
)

# --- other suites (begin) ---------------------------------------------------------------
# Debian 12 for edges: what an edge needs (Kamailio, rtpengine, sshd, systemd, SIPp), no
# Asterisk (Debian 12 has none). Keyed by suite; the lab's own root is SUITE above.
EDGE_PACKAGES: tuple[str, ...] = tuple(
    p for p in PACKAGES if p not in ("asterisk", "asterisk-modules", "postgresql")
)
SUITES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # suite: (packages, required executables)
    SUITE: (PACKAGES, REQUIRED),
    "bookworm": (EDGE_PACKAGES, tuple(r for r in REQUIRED if r != "usr/sbin/asterisk")),
}


def suite_spec(suite: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(packages, required executables) of a root of ``suite``; a LabError for others."""
    if suite not in SUITES:
        raise LabError(
            f"no lab root is defined for the Debian suite {suite!r}",
            hint="known suites: " + ", ".join(sorted(SUITES)),
        )
    return SUITES[suite]


def suite_link(suite: str) -> str:
    """The name of the cache's symlink to the newest root of ``suite``."""
    return "current" if suite == SUITE else suite


# --- other suites (end) -----------------------------------------------------------------

Progress = Callable[[str], None]


def rootfs_key(packages: tuple[str, ...] = PACKAGES, suite: str = SUITE) -> str:
    """Cache key of a root built from ``packages``: stable under reordering."""
    spec = {"suite": suite, "variant": VARIANT, "packages": sorted(set(packages))}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def debootstrap_command(
    target: Path, packages: tuple[str, ...] = PACKAGES, suite: str = SUITE
) -> list[str]:
    return [
        "debootstrap",
        f"--variant={VARIANT}",
        "--include=" + ",".join(sorted(set(packages))),
        suite,
        str(target),
        MIRROR,
    ]


def cached_root(
    paths: LabPaths, packages: tuple[str, ...] = PACKAGES, suite: str = SUITE
) -> Path | None:
    """The cached root for ``packages`` of ``suite`` if it is complete, else None."""
    root = paths.cache / rootfs_key(packages, suite)
    required = SUITES[suite][1] if suite in SUITES else REQUIRED
    if (root / MARKER).is_file() and all((root / r).exists() for r in required):
        return root
    return None


def check_prerequisites(suite: str = SUITE) -> None:
    """Raise a LabError with the fix when debootstrap or the mirror is missing."""
    if shutil.which("debootstrap") is None:
        raise LabError(
            "debootstrap is not installed; the lab builds its root filesystem with it",
            hint="apt-get install -y debootstrap",
        )
    url = f"{MIRROR}/dists/{suite}/Release"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10):
            pass
    except (urllib.error.URLError, OSError) as exc:
        raise LabError(
            f"the Debian mirror {MIRROR} does not answer ({url}: {exc})",
            hint="check the network or set SIPORCH_LAB_MIRROR to a reachable Debian mirror "
            f"that carries {suite}, e.g. SIPORCH_LAB_MIRROR=http://deb.debian.org/debian",
        ) from exc


def remove_tree(path: Path) -> None:
    """Delete a root file system tree, but never through a mount point: a build that was
    interrupted can leave /proc, /sys or even a bind of /dev mounted inside it. Those are
    unmounted first; if one stays, nothing is deleted."""
    base = str(path)
    inside = [m for m in mount_points() if m == base or m.startswith(base + "/")]
    for point in sorted(inside, key=lambda p: p.count("/"), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    left = [m for m in mount_points() if m == base or m.startswith(base + "/")]
    if left:
        raise LabError(
            f"{path} still has file systems mounted inside: {', '.join(left)}",
            hint=f"unmount them (umount -R {path}) and try again",
        )
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def finalize(
    tmp: Path,
    paths: LabPaths,
    packages: tuple[str, ...] = PACKAGES,
    build_seconds: float | None = None,
    suite: str = SUITE,
) -> Path:
    """Prepare a finished debootstrap tree and move it into the cache atomically."""
    required = SUITES[suite][1] if suite in SUITES else REQUIRED
    missing = [r for r in required if not (tmp / r).exists()]
    if missing:
        raise LabError(
            f"the root filesystem in {tmp} lacks {', '.join(missing)}",
            hint="remove it and run `siporch lab up --rebuild`",
        )
    subprocess.run(["chroot", str(tmp), "apt-get", "clean"], check=False, capture_output=True)
    # No init system in lab hosts: host keys are made per host at start, not baked in.
    for key in (tmp / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (tmp / "root/.ssh").mkdir(mode=0o700, exist_ok=True)
    (tmp / "var/run/asterisk").mkdir(parents=True, exist_ok=True)
    marker = {
        "suite": suite,
        "variant": VARIANT,
        "mirror": MIRROR,
        "packages": sorted(set(packages)),
        "key": rootfs_key(packages, suite),
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": round(build_seconds, 1) if build_seconds is not None else None,
    }
    (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    final = paths.cache / rootfs_key(packages, suite)
    if final.exists():
        # A rebuild replaces the old tree: move it aside first, so `final` is never
        # half there, then delete it (the lab was taken down before a rebuild).
        old = paths.cache / f".old-{final.name}-{os.getpid()}"
        os.rename(final, old)
        os.rename(tmp, final)
        remove_tree(old)
    else:
        os.rename(tmp, final)
    _point_current(paths, final, suite)
    return final


def _point_current(paths: LabPaths, final: Path, suite: str = SUITE) -> None:
    link = paths.cache / suite_link(suite)
    tmp_link = paths.cache / f".current-{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        tmp_link.unlink()
    tmp_link.symlink_to(final.name)
    os.replace(tmp_link, link)


def ensure_rootfs(
    paths: LabPaths,
    *,
    rebuild: bool = False,
    packages: tuple[str, ...] | None = None,
    suite: str = SUITE,
    progress: Progress = lambda _msg: None,
) -> Path:
    """The cached root of ``suite`` (its packages unless ``packages`` are given), built
    first when missing (or when ``rebuild``)."""
    if packages is None:
        packages = suite_spec(suite)[0]
    with _locked(paths.cache / ".lock"):
        root = None if rebuild else cached_root(paths, packages, suite)
        if root is not None:
            if os.path.realpath(paths.cache / suite_link(suite)) != str(root):
                _point_current(paths, root, suite)
            return root
        check_prerequisites(suite)
        key = rootfs_key(packages, suite)
        tmp = paths.cache / f".build-{key}-{os.getpid()}"
        if tmp.exists():
            remove_tree(tmp)
        tmp.mkdir(parents=True)
        for stale in [*paths.cache.glob(f".build-{key}-*"), *paths.cache.glob(".old-*")]:
            if stale != tmp:
                remove_tree(stale)
        cmd = debootstrap_command(tmp, packages, suite)
        progress(f"building the {suite} root filesystem (a few minutes): {' '.join(cmd)}")
        log = paths.cache / f"build-{key}.log"
        started = time.monotonic()
        with log.open("w") as fh:
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False)
        if proc.returncode != 0:
            remove_tree(tmp)
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise LabError(
                f"debootstrap failed with exit code {proc.returncode}; last lines of {log}:\n"
                + "\n".join(f"    {line}" for line in tail),
                hint=f"fix the cause and run `siporch lab up --rebuild`; full log in {log}",
            )
        return finalize(
            tmp, paths, packages, build_seconds=time.monotonic() - started, suite=suite
        )
