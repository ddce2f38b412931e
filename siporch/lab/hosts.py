"""A lab host's file system and processes: overlay root, kernel file systems, keys, sshd.

Layout under ``/var/lib/siporch/lab/hosts/<host>/``: ``upper/`` and ``work/`` (the
overlay's writable layer; the cached root file system is its lower layer) and ``root/``
(the merged view the host runs in). Inside ``root``: ``/proc``, a ``/sys`` of the host's
own namespace, a small ``/dev`` (tmpfs with the usual nodes and a private devpts), and
a tmpfs ``/run``. Commands run in a host with ``ip netns exec sipo-<host> chroot ROOT``.
Hosts that boot systemd (``siporch.lab.systemd``) mount their own ``/proc`` and ``/sys``
in their namespaces, and commands enter them with ``nsenter -t <their PID 1>``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from siporch.errors import LabError
from siporch.lab import systemd
from siporch.lab.spec import DNS_ADDRESS, DNS_HOST, HOSTS, LAB_DOMAIN, LabHost, LabPaths

HOST_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TERM": os.environ.get("TERM", "xterm"),
}
START_MARK = "--- siporch lab: sshd start"
_DEVICES = {  # name: (major, minor)
    "null": (1, 3),
    "zero": (1, 5),
    "full": (1, 7),
    "random": (1, 8),
    "urandom": (1, 9),
    "tty": (5, 0),
}


def _run(cmd: Sequence[str], what: str, **kw: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip().splitlines()
        raise LabError(f"{what} failed: {' '.join(cmd)}: {err[-1] if err else proc.returncode}")
    result: subprocess.CompletedProcess[str] = proc
    return result


# --- mounts -------------------------------------------------------------------------


def _unescape(path: str) -> str:
    return path.encode().decode("unicode_escape") if "\\" in path else path


def mount_points() -> list[str]:
    """Every mount point of this mount namespace, in mount order."""
    points: list[str] = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            points.append(_unescape(line.split()[4]))
    return points


def lab_mounts(paths: LabPaths) -> list[str]:
    base = str(paths.state)
    return [p for p in mount_points() if p == base or p.startswith(base + "/")]


def is_mounted(path: Path) -> bool:
    return str(path) in mount_points()


def _mount(args: Sequence[str], target: Path, what: str) -> None:
    _run(["mount", *args, str(target)], what)


def unmount_all(paths: LabPaths) -> list[str]:
    """Unmount everything under the lab's state directory, deepest first."""
    removed: list[str] = []
    for _ in range(3):
        mounts = lab_mounts(paths)
        if not mounts:
            break
        for point in sorted(set(mounts), key=lambda p: p.count("/"), reverse=True):
            proc = subprocess.run(["umount", point], capture_output=True, check=False)
            if proc.returncode != 0:
                proc = subprocess.run(["umount", "-l", point], capture_output=True, check=False)
            if proc.returncode == 0:
                removed.append(point)
    return removed


def _make_dev(root: Path) -> None:
    dev = root / "dev"
    _mount(["-t", "tmpfs", "-o", "mode=0755,nosuid,size=4m", "tmpfs"], dev, "mount /dev")
    for name, (major, minor) in _DEVICES.items():
        os.mknod(dev / name, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(dev / name, 0o666)
    for name, target in {
        "fd": "/proc/self/fd",
        "stdin": "/proc/self/fd/0",
        "stdout": "/proc/self/fd/1",
        "stderr": "/proc/self/fd/2",
        "ptmx": "pts/ptmx",
    }.items():
        (dev / name).symlink_to(target)
    (dev / "pts").mkdir()
    (dev / "shm").mkdir()
    _mount(
        ["-t", "devpts", "-o", "newinstance,ptmxmode=0666,mode=0620,gid=5", "devpts"],
        dev / "pts",
        "mount /dev/pts",
    )
    _mount(["-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs"], dev / "shm", "mount shm")


def mount_host(host: LabHost, paths: LabPaths, lower: Path, *, systemd: bool = False) -> Path:
    """Overlay root plus /proc, /sys, /dev, /run. Returns the host's root path. A host
    that boots systemd mounts its /proc and /sys itself, in its own namespaces
    (``siporch.lab.systemd``)."""
    hdir = paths.host_dir(host.name)
    root = paths.host_root(host.name)
    for sub in ("upper", "work", "root"):
        (hdir / sub).mkdir(parents=True, exist_ok=True)
    opts = f"lowerdir={lower},upperdir={hdir / 'upper'},workdir={hdir / 'work'}"
    _mount(["-t", "overlay", "-o", opts, "overlay"], root, f"{host.name}: overlay mount")
    if systemd:
        _make_dev(root)
        _mount(["-t", "tmpfs", "-o", "mode=0755,nosuid,nodev,size=64m", "tmpfs"], root / "run", "run")
        return root
    _mount(["-t", "proc", "-o", "nosuid,nodev,noexec", "proc"], root / "proc", "mount /proc")
    # sysfs shows the network devices of the namespace that mounts it.
    _run(
        [
            "nsenter",
            f"--net=/run/netns/{host.netns}",
            "mount",
            "-t",
            "sysfs",
            "-o",
            "ro,nosuid,nodev,noexec",
            "sysfs",
            str(root / "sys"),
        ],
        f"{host.name}: mount /sys",
    )
    _make_dev(root)
    _mount(["-t", "tmpfs", "-o", "mode=0755,nosuid,nodev,size=64m", "tmpfs"], root / "run", "run")
    for sub in ("sshd", "asterisk", "kamailio", "rtpengine", "lock"):
        (root / "run" / sub).mkdir(exist_ok=True)
    return root


# --- keys and certificates ----------------------------------------------------------


def ensure_ssh_key(paths: LabPaths) -> Path:
    """The lab's SSH key pair (kept across `lab down`, so inventories stay valid)."""
    key = paths.ssh_key
    if not key.exists() or not key.with_suffix(".pub").exists():
        key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        for stale in (key, key.with_suffix(".pub")):
            stale.unlink(missing_ok=True)
        _run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "siporch-lab", "-f", str(key)],
            "making the lab SSH key",
        )
    return key


def ensure_host_keys(host: LabHost, paths: LabPaths) -> Path:
    """SSH host keys of ``host``, made once with ``ssh-keygen -A`` and kept."""
    prefix = paths.state / "hostkeys" / host.name
    if not list((prefix / "etc/ssh").glob("ssh_host_*_key")):
        (prefix / "etc/ssh").mkdir(parents=True, exist_ok=True)
        _run(["ssh-keygen", "-A", "-f", str(prefix)], f"{host.name}: ssh-keygen -A")
    return prefix / "etc/ssh"


def ensure_ca(paths: LabPaths) -> tuple[Path, Path]:
    """A lab certificate authority (EC P-256), kept across `lab down`."""
    ca = paths.ca_dir
    crt, key = ca / "ca.crt", ca / "ca.key"
    if crt.exists() and key.exists():
        return crt, key
    ca.mkdir(parents=True, exist_ok=True, mode=0o700)
    _run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "3650",
            "-subj",
            "/O=siporch lab/CN=siporch lab CA",
            "-keyout",
            str(key),
            "-out",
            str(crt),
        ],
        "making the lab CA",
    )
    return crt, key


def ensure_host_cert(host: LabHost, paths: LabPaths) -> tuple[Path, Path]:
    """A certificate for ``host`` (its name and addresses), signed by the lab CA."""
    ca_crt, ca_key = ensure_ca(paths)
    crt = paths.ca_dir / f"{host.name}.crt"
    key = paths.ca_dir / f"{host.name}.key"
    names = [*host.tls_names, host.name]
    san = ",".join([*[f"DNS:{n}" for n in names], *[f"IP:{a}" for a in host.addresses]])
    san_file = paths.ca_dir / f"{host.name}.san"
    if crt.exists() and key.exists():
        recorded = san_file.read_text().strip() if san_file.exists() else None
        # Certificates made before the names were recorded keep serving hosts whose
        # names did not change; a changed name list makes a new certificate.
        if recorded == san or (recorded is None and not host.tls_names):
            return crt, key
    csr = paths.ca_dir / f"{host.name}.csr"
    _run(
        [
            "openssl",
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            f"/O=siporch lab/CN={names[0]}",
            "-keyout",
            str(key),
            "-out",
            str(csr),
        ],
        f"{host.name}: certificate request",
    )
    ext = paths.ca_dir / f"{host.name}.ext"
    ext.write_text(f"subjectAltName={san}\nextendedKeyUsage=serverAuth,clientAuth\n")
    _run(
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca_crt),
            "-CAkey",
            str(ca_key),
            "-set_serial",
            str(secrets.randbits(63)),
            "-days",
            "3650",
            "-extfile",
            str(ext),
            "-out",
            str(crt),
        ],
        f"{host.name}: signing its certificate",
    )
    csr.unlink(missing_ok=True)
    ext.unlink(missing_ok=True)
    san_file.write_text(san + "\n")
    return crt, key


def install_files(host: LabHost, root: Path, paths: LabPaths) -> None:
    """Identity, SSH access and TLS material of ``host`` inside its root."""
    (root / "etc/hostname").write_text(host.name + "\n")
    lines = ["127.0.0.1\tlocalhost", f"127.0.1.1\t{host.name}"]
    lines += [f"{h.address}\t{h.name}" for h in HOSTS]
    (root / "etc/hosts").write_text("\n".join(lines) + "\n")
    # The lab's DNS server answers every host (never the machine's own resolver). The
    # root's resolv.conf may be a symbolic link: replace the link, never write through it.
    resolv = root / "etc/resolv.conf"
    if resolv.is_symlink() or resolv.exists():
        resolv.unlink()
    resolv.write_text(
        f"# siporch lab: the lab's DNS server ({DNS_HOST})\n"
        f"nameserver {DNS_ADDRESS}\nsearch {LAB_DOMAIN}\noptions timeout:1 attempts:2\n"
    )
    ssh = root / "root/.ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    auth = ssh / "authorized_keys"
    auth.write_text(paths.ssh_key.with_suffix(".pub").read_text())
    auth.chmod(0o600)
    for src in ensure_host_keys(host, paths).iterdir():
        shutil.copy2(src, root / "etc/ssh" / src.name)
    tls = root / "etc/siporch/tls"
    tls.mkdir(parents=True, exist_ok=True)
    crt, key = ensure_host_cert(host, paths)
    shutil.copy2(paths.ca_dir / "ca.crt", tls / "ca.crt")
    shutil.copy2(crt, tls / f"{host.name}.crt")
    shutil.copy2(key, tls / f"{host.name}.key")
    (tls / f"{host.name}.key").chmod(0o640)
    # Under systemd Kamailio runs as its packaged user: its group reads the key.
    gid = _group_id(root, "kamailio")
    if gid is not None:
        os.chown(tls / f"{host.name}.key", 0, gid)
    if host.role == "pbx":
        install_site_dialplan(root)
    if host.role in ("edge", "pbx"):
        install_operator(root, paths)


# --- the operator account -------------------------------------------------------------

#: A non-root account on the edges and the PBX, as operators log in to their own hosts:
#: the lab's SSH key, passwordless sudo. Deploys as this user need Ansible's become.
OPERATOR = "siporch-ops"


def _passwd_ids(root: Path, name: str) -> tuple[int, int] | None:
    """uid and gid of user ``name`` in the host's /etc/passwd."""
    try:
        for line in (root / "etc/passwd").read_text().splitlines():
            fields = line.split(":")
            if len(fields) > 3 and fields[0] == name:
                return int(fields[2]), int(fields[3])
    except (OSError, ValueError):
        return None
    return None


def install_operator(root: Path, paths: LabPaths) -> None:
    """The account ``OPERATOR`` in the host's root: made once (kept with the overlay), its
    authorized key the lab's, sudo for every command without a password."""
    if _passwd_ids(root, OPERATOR) is None:
        # '*': no password login, yet not a locked account (sshd lets keys in)
        cmd = ["chroot", str(root), "useradd", "--create-home", "--user-group"]
        _run([*cmd, "--shell", "/bin/bash", "--password", "*", OPERATOR], f"useradd {OPERATOR}")
    ids = _passwd_ids(root, OPERATOR)
    if ids is None:
        raise LabError(f"useradd {OPERATOR} made no entry in /etc/passwd")
    uid, gid = ids
    ssh = root / "home" / OPERATOR / ".ssh"
    ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
    auth = ssh / "authorized_keys"
    auth.write_text(paths.ssh_key.with_suffix(".pub").read_text())
    auth.chmod(0o600)
    for path in (ssh.parent, ssh, auth):
        os.chown(path, uid, gid)
    sudoers = root / "etc/sudoers.d" / OPERATOR
    sudoers.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    sudoers.write_text(f"# Written by `siporch lab up`.\n{OPERATOR} ALL=(ALL:ALL) NOPASSWD: ALL\n")
    sudoers.chmod(0o440)


def _group_id(root: Path, name: str) -> int | None:
    """The id of group ``name`` in the host's /etc/group."""
    try:
        for line in (root / "etc/group").read_text().splitlines():
            fields = line.split(":")
            if len(fields) > 2 and fields[0] == name:
                return int(fields[2])
    except (OSError, ValueError):
        return None
    return None


#: First line of the lab PBX's own extensions.conf (written once, kept across restarts).
SITE_DIALPLAN_MARK = "; The lab site's own dialplan"
#: The DID destination contexts of the lab inventory (the example's): the lab site answers
#: every number there and echoes the media until the caller hangs up (4 h at most).
SITE_CONTEXTS = ("from-trunk", "from-trunk-branch")


def install_site_dialplan(root: Path) -> None:
    """The lab PBX's own ``/etc/asterisk/extensions.conf``: the site's, not siporch's.

    A real PBX has its own dialplan with the contexts the model's DIDs name; the lab's
    answers and echoes. The deploy adds siporch's include line to this file; it is written
    only when it is not the lab's yet, so that line (and any test's own context) stays.
    """
    path = root / "etc/asterisk/extensions.conf"
    try:
        if path.read_text(errors="replace").startswith(SITE_DIALPLAN_MARK):
            return
    except OSError:
        pass
    lines = [
        f"{SITE_DIALPLAN_MARK}, written by `siporch lab up` (siporch/lab/hosts.py).",
        "; siporch includes its own contexts (siporch-*) at the end of this file.",
        "",
        "[general]",
        "static = yes",
        "writeprotect = yes",
        "",
        "[globals]",
    ]
    for context in SITE_CONTEXTS:
        lines += [
            "",
            f"[{context}]",
            "exten => _+.,1,Answer()",
            " same => n,Set(TIMEOUT(absolute)=14400)",
            " same => n,Echo()",
            " same => n,Hangup()",
        ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


# --- processes ------------------------------------------------------------------------


def init_pid(host: LabHost, paths: LabPaths) -> int | None:
    """The pid of the host's systemd (as this machine sees it), when it boots one."""
    return systemd.init_pid(paths.host_dir(host.name) / systemd.PID_FILE)


def host_argv(host: LabHost, paths: LabPaths, cmd: Sequence[str]) -> list[str]:
    """argv that runs ``cmd`` inside ``host``: its namespace, its root and, while its
    sshd runs, its host name (the UTS namespace sshd was started in). In a host that
    boots systemd: every namespace of its PID 1 (``nsenter -t PID``)."""
    init = init_pid(host, paths)
    if init is not None:
        return systemd.enter_argv(init, cmd)
    argv = ["ip", "netns", "exec", host.netns]
    pid = sshd_pid(host, paths)
    if pid is not None:
        argv += ["nsenter", f"--uts=/proc/{pid}/ns/uts"]
    return [*argv, "chroot", str(paths.host_root(host.name)), *cmd]


def run_in_host(
    host: LabHost, paths: LabPaths, cmd: Sequence[str], timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in ``host`` and capture its output."""
    try:
        return subprocess.run(
            host_argv(host, paths, cmd),
            capture_output=True,
            text=True,
            env=HOST_ENV,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{host.name}: {' '.join(cmd)} did not finish in {timeout:g} s") from exc


def spawn_in_host(host: LabHost, paths: LabPaths, cmd: Sequence[str], log: str) -> int:
    """Start ``cmd`` inside ``host`` detached from us (own session, stdin from /dev/null,
    output appended to ``log``, a path inside the host). Returns its pid."""
    log_path = paths.host_root(host.name) / log.lstrip("/")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            host_argv(host, paths, cmd),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=HOST_ENV,
            start_new_session=True,
        )
    return proc.pid


def pid_alive(root: Path, pidfile: str) -> int | None:
    """The pid in ``pidfile`` (a path inside the host root) when that process lives."""
    try:
        pid = int((root / pidfile.lstrip("/")).read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        stat_text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    if stat_text.rsplit(")", 1)[-1].split()[0] == "Z":
        return None
    try:
        if os.readlink(f"/proc/{pid}/root") != str(root):
            return None
    except OSError:
        return None
    return pid


def start_sshd(host: LabHost, paths: LabPaths) -> None:
    """Start the host's sshd (it daemonises; its pid file is /run/sshd.pid in the host)."""
    cmd = [
        "/usr/sbin/sshd",
        "-o",
        "PidFile=/run/sshd.pid",
        "-o",
        "UseDNS=no",
        "-o",
        "PermitRootLogin=prohibit-password",
        "-E",
        "/var/log/sshd.log",
    ]
    log = paths.host_root(host.name) / "var/log/sshd.log"
    with log.open("a") as fh:
        fh.write(f"{START_MARK} {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")
    # In its own UTS namespace, so the host (and everything started over SSH) has its name.
    script = 'hostname "$1" && shift && exec chroot "$@"'
    argv = ["ip", "netns", "exec", host.netns, "unshare", "--uts", "sh", "-c", script, "sh"]
    argv += [host.name, str(paths.host_root(host.name)), *cmd]
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=HOST_ENV,
            timeout=20,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{host.name}: sshd did not start in 20 s") from exc
    if proc.returncode != 0:
        since = _since_last_start(log)
        detail = (proc.stderr.strip() or since) or f"exit code {proc.returncode}"
        raise LabError(f"{host.name}: sshd did not start: {detail}")


def _since_last_start(path: Path, lines: int = 3) -> str:
    """The last ``lines`` lines the host's sshd logged since its last start."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    recent = text.rsplit(START_MARK, 1)[-1].splitlines()[1:]
    return " | ".join(line for line in recent[-lines:] if line.strip())


def sshd_pid(host: LabHost, paths: LabPaths) -> int | None:
    """The host's listening sshd (its pid as this machine sees it), or None."""
    try:
        pid = int((paths.host_root(host.name) / "run/sshd.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    init = init_pid(host, paths)
    if init is not None:  # the pid file holds the pid in the host's own PID namespace
        return systemd.outer_pid(init, pid)
    return pid if Path(f"/proc/{pid}").exists() else None


def tcp_open(address: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_tcp(address: str, port: int, deadline: float) -> bool:
    while True:
        if tcp_open(address, port, timeout=0.3):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def sshd_log_tail(host: LabHost, paths: LabPaths) -> str:
    """Last line the host's sshd logged since its last start (why it stopped, usually)."""
    return _since_last_start(paths.host_root(host.name) / "var/log/sshd.log", lines=1)


def remove_host_dirs(paths: LabPaths) -> list[str]:
    """Delete the per-host overlay layers (only once nothing is mounted there)."""
    removed: list[str] = []
    if not paths.hosts_dir.is_dir():
        return removed
    mounted = set(lab_mounts(paths))
    for hdir in sorted(paths.hosts_dir.iterdir()):
        if any(m.startswith(str(hdir) + "/") or m == str(hdir) for m in mounted):
            continue
        with contextlib.suppress(OSError):
            shutil.rmtree(hdir)
            removed.append(str(hdir))
    return removed
