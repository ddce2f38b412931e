"""Bring the lab up, take it down, say how it is. Library code: returns data, raises
``LabError``; the CLI prints."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from siporch.errors import LabError
from siporch.lab import (
    dns,
    impair,
    procs,
    provider,
    records_db,
    redis_db,
    rootfs,
    systemd,
    topology,
)
from siporch.lab import hosts as hostfs
from siporch.lab.inventory import lab_hosts_document, write_inventory
from siporch.lab.spec import DNS_HOST, HOSTS, LabHost, LabPaths, host_by_name

Progress = Callable[[str], None]
DAEMONS = ("sshd", "kamailio", "asterisk", "rtpengine", "sipp", "dnsmasq", "postgres")
SSH_WAIT_S = 10.0
# The Debian suite of the edges' root (`lab up --edge-root`); the other hosts run sid.
EDGE_ROOT_ENV = "SIPORCH_LAB_EDGE_ROOT"
EDGE_ROLE = "edge"


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError(
            "the lab needs root (network namespaces, mounts, chroot)",
            hint="run it as root, e.g. `sudo siporch lab up`",
        )


@contextlib.contextmanager
def _lock(paths: LabPaths) -> Iterator[None]:
    paths.state.mkdir(parents=True, exist_ok=True)
    with paths.lock_file.open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def get_host(name: str) -> LabHost:
    host = host_by_name(name)
    if host is None:
        raise LabError(
            f"no lab host named {name!r}", hint="lab hosts: " + ", ".join(h.name for h in HOSTS)
        )
    return host


# --- state ----------------------------------------------------------------------------


def read_state(paths: LabPaths) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(paths.state_file.read_text())
    except (OSError, ValueError):
        return {}
    return data


def _write_state(paths: LabPaths, state: dict[str, Any]) -> None:
    tmp = paths.state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, paths.state_file)


# --- status ---------------------------------------------------------------------------


@dataclass
class HostStatus:
    name: str
    address: str
    netns: bool
    veth: bool
    mounted: bool
    sshd_running: bool
    ssh_port: bool
    daemons: dict[str, list[int]] = field(default_factory=dict)
    error: str | None = None
    # The lab's own services of the host that do not run (dnsmasq on dns, the
    # provider's daemons on itsp-c1/c2); `lab up` starts them.
    services: list[str] = field(default_factory=list)
    # "systemd" when the host boots systemd as its PID 1, "none" otherwise.
    init: str = systemd.INIT_NONE
    init_pid: int | None = None
    # `systemctl is-system-running` of a systemd host (running, degraded, ...).
    system: str | None = None

    @property
    def init_ok(self) -> bool:
        return self.init != systemd.INIT_SYSTEMD or self.init_pid is not None

    @property
    def host_ok(self) -> bool:
        return (
            self.netns
            and self.veth
            and self.mounted
            and self.init_ok
            and self.sshd_running
            and self.ssh_port
        )

    @property
    def ok(self) -> bool:
        return self.host_ok and not self.services

    def problem(self) -> str | None:
        """Why the host is not usable, or None."""
        if self.ok:
            return None
        why = []
        if not self.netns:
            why.append("namespace missing")
        if not self.veth:
            why.append("veth missing")
        if not self.mounted:
            why.append("root not mounted")
        if not self.init_ok:
            why.append("systemd not running")
        elif not self.sshd_running:
            why.append("sshd not running")
        elif not self.ssh_port:
            why.append("sshd not answering on port 22")
        why += self.services
        text = ", ".join(why)
        return f"{text} ({self.error})" if self.error else text


@dataclass
class LabStatus:
    hosts: list[HostStatus]
    bridge: bool
    rootfs: str | None
    inventory: str | None
    impairments: list[str]
    leftovers: dict[str, list[str]]
    edge_root: str = rootfs.SUITE

    @property
    def up(self) -> bool:
        return self.bridge and all(h.ok for h in self.hosts)

    @property
    def down(self) -> bool:
        return not any(self.leftovers.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "up": self.up,
            "bridge": self.bridge,
            "rootfs": self.rootfs,
            "edge_root": self.edge_root,
            "inventory": self.inventory,
            "impairments": self.impairments,
            "leftovers": self.leftovers,
            "hosts": {
                h.name: {**asdict(h), "ok": h.ok, "problem": h.problem()} for h in self.hosts
            },
        }


def _roots(paths: LabPaths) -> dict[str, Path]:
    names = {h.name for h in HOSTS}
    if paths.hosts_dir.is_dir():
        names |= {p.name for p in paths.hosts_dir.iterdir()}
    return {n: paths.host_root(n) for n in names}


def _netns_inodes() -> dict[str, int]:
    out: dict[str, int] = {}
    for ns in topology.lab_namespaces():
        inode = topology.netns_inode(ns)
        if inode is not None:
            out[ns[len("sipo-") :]] = inode
    return out


def lab_processes(paths: LabPaths) -> dict[str, list[procs.LabProcess]]:
    return procs.find_lab_processes(_roots(paths), _netns_inodes())


def leftovers(paths: LabPaths) -> dict[str, list[str]]:
    """What of the lab exists now: namespaces, links, mounts, processes."""
    found = lab_processes(paths)
    return {
        "namespaces": topology.lab_namespaces(),
        "links": topology.lab_links(),
        "mounts": hostfs.lab_mounts(paths),
        "processes": sorted(f"{p.pid} {p.comm} ({h})" for h, ps in found.items() for p in ps),
    }


def edge_root_suite(requested: str | None = None) -> str:
    """The suite of the edges' root: ``requested``, else $SIPORCH_LAB_EDGE_ROOT, else the
    lab's own (sid)."""
    suite = (requested or os.environ.get(EDGE_ROOT_ENV) or rootfs.SUITE).strip().lower()
    if suite not in rootfs.SUITES:
        source = "--edge-root" if requested else EDGE_ROOT_ENV
        raise LabError(
            f"{source}: no lab root for the Debian suite {suite!r}",
            hint="use one of " + ", ".join(sorted(rootfs.SUITES)),
        )
    return suite


def lab_edge_root(paths: LabPaths) -> str:
    """The suite of the running lab's edges (sid for a lab started before edge roots)."""
    suite = read_state(paths).get("edge_root")
    return suite if isinstance(suite, str) and suite in rootfs.SUITES else rootfs.SUITE


def host_lower(host: LabHost, lower: Path, edge_lower: Path | None) -> Path:
    """The root file system ``host`` runs on: the edges' own when one is given."""
    return edge_lower if edge_lower is not None and host.role == EDGE_ROLE else lower


def lab_init(paths: LabPaths) -> str:
    """The init mode the running lab was started with ("none" for a lab started before
    systemd hosts existed)."""
    mode = read_state(paths).get("init")
    return mode if mode in systemd.INIT_MODES else systemd.INIT_NONE


def boots_systemd(host: LabHost, mode: str) -> bool:
    return systemd.uses_systemd(host.groups, mode)


def status(paths: LabPaths | None = None, *, system: bool = True) -> LabStatus:
    """The lab as it is. ``system``: ask each systemd host for
    `systemctl is-system-running` (one more command per host)."""
    paths = paths or LabPaths.default()
    state = read_state(paths)
    mode = lab_init(paths)
    errors: dict[str, str] = {
        n: e for n, e in (state.get("errors") or {}).items() if isinstance(e, str)
    }
    mounts = set(hostfs.mount_points())
    links = set(topology.lab_links())
    running = lab_processes(paths)

    def one(host: LabHost) -> HostStatus:
        daemons: dict[str, list[int]] = {}
        for p in running.get(host.name, []):
            if p.comm in DAEMONS:  # exact: an "sshd-session" is not the listener
                daemons.setdefault(p.comm, []).append(p.pid)
        pid = hostfs.sshd_pid(host, paths)
        init = hostfs.init_pid(host, paths)
        st = HostStatus(
            name=host.name,
            address=host.address,
            netns=Path(f"/run/netns/{host.netns}").exists(),
            veth=host.veth in links,
            mounted=str(paths.host_root(host.name)) in mounts,
            sshd_running=pid is not None or bool(daemons.get("sshd")),
            ssh_port=False,
            daemons={k: sorted(v) for k, v in daemons.items()},
            error=errors.get(host.name),
            init=systemd.INIT_SYSTEMD if boots_systemd(host, mode) else systemd.INIT_NONE,
            init_pid=init,
        )
        if init is not None and system:
            st.system, _ = systemd.system_state(init, hostfs.HOST_ENV)
        if st.netns and st.veth:
            st.ssh_port = hostfs.tcp_open(host.address, 22, timeout=0.5)
        if st.mounted:
            st.services = service_problems(host, paths)
        if not st.ok and st.error is None and st.mounted and not st.sshd_running:
            if init is not None:
                st.error = systemd.unit_log_tail(init, "ssh.service", hostfs.HOST_ENV) or None
            else:
                st.error = hostfs.sshd_log_tail(host, paths) or None
        return st

    with ThreadPoolExecutor(max_workers=len(HOSTS)) as pool:
        host_status = list(pool.map(one, HOSTS))
    current = paths.cache / "current"
    return LabStatus(
        hosts=host_status,
        bridge=topology.BRIDGE in links,
        rootfs=os.path.realpath(current) if current.exists() else None,
        inventory=state.get("inventory"),
        impairments=[i.describe() for i in impair.load(paths)],
        leftovers=leftovers(paths),
        edge_root=lab_edge_root(paths),
    )


# --- down -----------------------------------------------------------------------------


@dataclass
class DownResult:
    processes: list[str]
    mounts: list[str]
    network: list[str]
    directories: list[str]
    survivors: list[str]

    @property
    def removed_anything(self) -> bool:
        return bool(self.processes or self.mounts or self.network or self.directories)


def _init_pids(paths: LabPaths) -> list[int]:
    """PIDs 1 (systemd) of the lab's hosts, as this machine sees them."""
    if not paths.hosts_dir.is_dir():
        return []
    found = [systemd.init_pid(d / systemd.PID_FILE) for d in sorted(paths.hosts_dir.iterdir())]
    return [pid for pid in found if pid is not None]


def _down(paths: LabPaths, keep_state: bool) -> DownResult:
    # systemd hosts first: halt them (SIGRTMIN+3) so their units stop cleanly; what is
    # still alive after the wait is killed below with everything else.
    systemd.halt(_init_pids(paths))
    found = lab_processes(paths)
    listed = [(p.pid, f"{p.pid} {p.comm} ({h})") for h, ps in found.items() for p in ps]
    survivors = procs.kill_processes([pid for pid, _ in listed])
    # A process can fork while we kill; a second pass catches its children.
    again = lab_processes(paths)
    survivors += procs.kill_processes([p.pid for ps in again.values() for p in ps])
    mounts = hostfs.unmount_all(paths)
    systemd.remove_cgroups()
    network = topology.teardown_network()
    impair.forget(paths)
    directories = [] if keep_state else hostfs.remove_host_dirs(paths)
    with contextlib.suppress(OSError):
        paths.state_file.unlink()
    left = [f"{p.pid} {p.comm} ({h})" for h, ps in lab_processes(paths).items() for p in ps]
    return DownResult(
        processes=[label for _, label in listed],
        mounts=mounts,
        network=network,
        directories=directories,
        survivors=left,
    )


def down(paths: LabPaths | None = None, *, keep_state: bool = False) -> DownResult:
    """Stop every lab process, unmount, remove namespaces, veths and bridge. Idempotent;
    works on a half-built lab. With ``keep_state`` the hosts' overlay layers survive."""
    require_root()
    paths = paths or LabPaths.default()
    with _lock(paths):
        result = _down(paths, keep_state)
    if result.survivors:
        raise LabError(
            "lab processes survived SIGKILL: " + ", ".join(result.survivors),
            hint="look at them with `ps -o pid,stat,cmd -p PID`",
        )
    return result


# --- up -------------------------------------------------------------------------------


@dataclass
class UpResult:
    hosts: list[HostStatus]
    cleaned: DownResult | None
    already_up: bool
    rootfs: Path
    inventory: Path
    seconds: float
    timings: dict[str, float]
    repaired: list[str] = field(default_factory=list)
    init: str = systemd.INIT_NONE
    notes: list[str] = field(default_factory=list)
    edge_root: str = rootfs.SUITE

    @property
    def ok(self) -> bool:
        return all(h.ok for h in self.hosts)


def service_problems(host: LabHost, paths: LabPaths) -> list[str]:
    """The lab services of ``host`` that do not run."""
    if host.name == DNS_HOST:
        return [] if dns.pid(paths) is not None else ["dnsmasq not running"]
    if host.name in provider.PROVIDER_HOSTS:
        return provider.problems(host.name, paths)
    if host.name == records_db.RECORDS_DB_HOST:
        return records_db.problems(paths) + redis_db.problems(paths)
    return []


def _ensure_services(paths: LabPaths, skip: set[str]) -> dict[str, str]:
    """Start the lab's services that do not run (DNS first: the providers' hosts resolve
    through it). Returns host -> error for those that failed."""
    errors: dict[str, str] = {}
    if DNS_HOST not in skip:
        try:
            dns.ensure_running(paths)
        except (LabError, OSError) as exc:
            errors[DNS_HOST] = str(exc)

    def one(name: str) -> tuple[str, str | None]:
        try:
            provider.ensure_running(name, paths)
        except (LabError, OSError) as exc:
            return name, str(exc)
        return name, None

    if records_db.RECORDS_DB_HOST not in skip:
        try:
            records_db.ensure_running(paths)
        except (LabError, OSError) as exc:
            errors[records_db.RECORDS_DB_HOST] = str(exc)
        try:
            redis_db.ensure_running(paths)
        except (LabError, OSError) as exc:
            errors[records_db.RECORDS_DB_HOST] = str(exc)
    names = [n for n in provider.PROVIDER_HOSTS if n not in skip]
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        for name, err in pool.map(one, names):
            if err:
                errors[name] = err
    return errors


def _repair(paths: LabPaths, before: LabStatus) -> dict[str, str | None]:
    """Restart sshd on hosts whose namespace and root are fine but whose sshd is not.
    Returns host -> error (None when the restart worked)."""
    out: dict[str, str | None] = {}
    for hs in before.hosts:
        if hs.host_ok:
            continue
        host = get_host(hs.name)
        if hs.init_pid is not None:  # a systemd host: its ssh.service
            proc = hostfs.run_in_host(host, paths, ["systemctl", "restart", "ssh.service"])
            if proc.returncode != 0:
                out[hs.name] = "ssh.service did not start: " + (
                    systemd.unit_log_tail(hs.init_pid, "ssh.service", hostfs.HOST_ENV)
                    or proc.stderr.strip()
                )
                continue
            deadline = time.monotonic() + SSH_WAIT_S
            out[hs.name] = (
                None if hostfs.wait_tcp(host.address, 22, deadline) else "sshd did not answer"
            )
            continue
        pid = hostfs.sshd_pid(host, paths)
        if pid is not None:
            procs.kill_processes([pid], grace=1.0)
        try:
            hostfs.start_sshd(host, paths)
        except LabError as exc:
            out[hs.name] = str(exc)
            continue
        deadline = time.monotonic() + SSH_WAIT_S
        out[hs.name] = (
            None if hostfs.wait_tcp(host.address, 22, deadline) else "sshd did not answer"
        )
    return out


def _start_host(host: LabHost, paths: LabPaths, lower: Path, mode: str) -> None:
    """Start ``host`` on the root ``lower`` (see ``host_lower``)."""
    if boots_systemd(host, mode):
        root = hostfs.mount_host(host, paths, lower, systemd=True)
        hostfs.install_files(host, root, paths)
        pid_file = paths.host_dir(host.name) / systemd.PID_FILE
        systemd.boot(host.name, host.netns, root, pid_file)
        return
    root = hostfs.mount_host(host, paths, lower)
    hostfs.install_files(host, root, paths)
    hostfs.start_sshd(host, paths)


def _wait_host(host: LabHost, paths: LabPaths, mode: str, t0: float) -> tuple[str | None, str]:
    """Wait for a started host: its systemd finished booting (systemd hosts), its sshd
    answers. Returns (error or None, note)."""
    note = ""
    if boots_systemd(host, mode):
        init = hostfs.init_pid(host, paths)
        if init is None:
            return "systemd exited during boot", note
        state, reason = systemd.wait_running(
            init, t0 + systemd.BOOT_WAIT_S, hostfs.HOST_ENV
        )
        if state == "degraded":
            note = f"{host.name}: systemd is degraded: {reason}"
        elif state != "running":
            return f"systemd is {state} after {systemd.BOOT_WAIT_S:g} s {reason}".strip(), note
        if not hostfs.wait_tcp(host.address, 22, time.monotonic() + SSH_WAIT_S):
            tail = systemd.unit_log_tail(init, "ssh.service", hostfs.HOST_ENV)
            return f"sshd did not answer on port 22: {tail or 'no log'}", note
        return None, note
    if not hostfs.wait_tcp(host.address, 22, t0 + SSH_WAIT_S):
        tail = hostfs.sshd_log_tail(host, paths)
        return f"sshd did not answer on port 22 in {SSH_WAIT_S:g} s" + (
            f": {tail}" if tail else ""
        ), note
    return None, note


def up(
    example: Path,
    out: Path,
    paths: LabPaths | None = None,
    *,
    rebuild: bool = False,
    recreate: bool = False,
    init: str | None = None,
    edge_root: str | None = None,
    progress: Progress = lambda _msg: None,
) -> UpResult:
    """Build (or reuse) the root file system, start every host, write the inventory.
    ``init``: "systemd" (the default, or $SIPORCH_LAB_INIT) boots systemd in the edges
    and the PBX; "none" starts only sshd in every host. ``edge_root``: the Debian suite
    the edges run (default sid, or $SIPORCH_LAB_EDGE_ROOT); "bookworm" builds (once) and
    uses a Debian 12 root for them, and the other hosts stay on sid."""
    require_root()
    paths = paths or LabPaths.default()
    mode = systemd.init_mode(init)
    edge_suite = edge_root_suite(edge_root)
    if mode == systemd.INIT_SYSTEMD:
        systemd.host_cgroup("check")  # no cgroup v2: a clear error before anything starts
    lab_hosts_document(example, paths.ssh_key, mode)  # a bad example fails first
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    if rebuild:
        # The running hosts use the old tree as their lower layer: stop them first.
        down(paths)
    lower = rootfs.ensure_rootfs(paths, rebuild=rebuild, progress=progress)
    edge_lower = (
        None
        if edge_suite == rootfs.SUITE
        else rootfs.ensure_rootfs(paths, rebuild=rebuild, suite=edge_suite, progress=progress)
    )
    timings["rootfs"] = time.monotonic() - t0
    state: dict[str, Any]
    with _lock(paths):
        before = status(paths)
        # Hosts running on another root (the package list changed) are started again.
        old = read_state(paths)
        same_root = old.get("rootfs") == str(lower) and old.get("edge_rootfs") == (
            str(edge_lower) if edge_lower is not None else None
        )
        if lab_edge_root(paths) != edge_suite and not before.down:
            progress(
                f"the lab's edges run {lab_edge_root(paths)}, not {edge_suite}: "
                "starting the hosts again"
            )
            recreate = True
        elif not same_root and not before.down:
            progress(f"the root file system changed to {lower}: starting the hosts again")
            recreate = True
        elif lab_init(paths) != mode and not before.down:
            progress(f"the lab runs with init {lab_init(paths)}, not {mode}: starting it again")
            recreate = True
        if before.up and not recreate and not rebuild:
            for host in HOSTS:
                topology.add_missing_addresses(host)
            # Running services whose configuration changed (a newer siporch) restart.
            service_errors = _ensure_services(paths, skip=set())
            if service_errors:
                progress("; ".join(f"{n}: {e}" for n, e in service_errors.items()))
            inv = write_inventory(example, out, paths, mode)
            state = read_state(paths)
            state["inventory"] = str(inv.resolve())
            _write_state(paths, state)
            return UpResult(
                before.hosts,
                None,
                True,
                lower,
                inv,
                time.monotonic() - t0,
                timings,
                init=mode,
                edge_root=edge_suite,
            )
        structural_ok = before.bridge and all(
            h.netns and h.veth and h.mounted and h.init_ok for h in before.hosts
        )
        if structural_ok and not recreate and not rebuild:
            for host in HOSTS:
                topology.add_missing_addresses(host)
            repaired = _repair(paths, before)
            services = _ensure_services(paths, skip={n for n, e in repaired.items() if e})
            inv = write_inventory(example, out, paths, mode)
            state = read_state(paths)
            state["inventory"] = str(inv.resolve())
            state["errors"] = {n: e for n, e in repaired.items() if e} | services
            _write_state(paths, state)
            after = status(paths)
            timings["total"] = time.monotonic() - t0
            return UpResult(
                after.hosts,
                None,
                False,
                lower,
                inv,
                timings["total"],
                timings,
                sorted(repaired),
                init=mode,
                edge_root=edge_suite,
            )
        cleaned = None
        if not before.down:
            progress("removing what is left of an earlier lab")
            cleaned = _down(paths, keep_state=False)
            if cleaned.survivors:
                raise LabError("lab processes survived SIGKILL: " + ", ".join(cleaned.survivors))
        t1 = time.monotonic()
        paths.hosts_dir.mkdir(parents=True, exist_ok=True)
        hostfs.ensure_ssh_key(paths)
        hostfs.ensure_ca(paths)
        with ThreadPoolExecutor(max_workers=len(HOSTS)) as pool:
            list(pool.map(lambda h: hostfs.ensure_host_cert(h, paths), HOSTS))
            list(pool.map(lambda h: hostfs.ensure_host_keys(h, paths), HOSTS))
        timings["keys"] = time.monotonic() - t1
        t2 = time.monotonic()
        topology.create_bridge()
        errors: dict[str, str] = {}
        for host in HOSTS:
            try:
                topology.create_host_network(host)
            except LabError as exc:
                errors[host.name] = str(exc)
        timings["network"] = time.monotonic() - t2
        t3 = time.monotonic()
        state = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "rootfs": str(lower),
            "edge_root": edge_suite,
            "edge_rootfs": str(edge_lower) if edge_lower is not None else None,
            "init": mode,
            "inventory": None,
            "errors": errors,
        }
        _write_state(paths, state)

        def start(host: LabHost) -> tuple[str, str | None]:
            if host.name in errors:
                return host.name, errors[host.name]
            try:
                _start_host(host, paths, host_lower(host, lower, edge_lower), mode)
            except (LabError, OSError) as exc:
                return host.name, str(exc)
            return host.name, None

        with ThreadPoolExecutor(max_workers=len(HOSTS)) as pool:
            for name, err in pool.map(start, HOSTS):
                if err:
                    errors[name] = err
        t_wait = time.monotonic()
        notes: list[str] = []
        with ThreadPoolExecutor(max_workers=len(HOSTS)) as pool:
            waited = list(
                pool.map(
                    lambda h: (None, "")
                    if h.name in errors
                    else _wait_host(h, paths, mode, t_wait),
                    HOSTS,
                )
            )
        for host, (err, note) in zip(HOSTS, waited, strict=True):
            if err and host.name not in errors:
                errors[host.name] = err
            if note:
                notes.append(note)
                progress(note)
        timings["hosts"] = time.monotonic() - t3
        t4 = time.monotonic()
        errors |= _ensure_services(paths, skip=set(errors))
        timings["services"] = time.monotonic() - t4
        inv = write_inventory(example, out, paths, mode)
        state["errors"] = errors
        state["inventory"] = str(inv.resolve())
        _write_state(paths, state)
    after = status(paths)
    timings["total"] = time.monotonic() - t0
    return UpResult(
        after.hosts,
        cleaned,
        False,
        lower,
        inv,
        timings["total"],
        timings,
        init=mode,
        notes=notes,
        edge_root=edge_suite,
    )


# --- running things in hosts ------------------------------------------------------------


def shell_argv(name: str, cmd: Sequence[str], paths: LabPaths | None = None) -> list[str]:
    """argv that runs ``cmd`` (or a login shell) inside host ``name``."""
    require_root()
    paths = paths or LabPaths.default()
    host = get_host(name)
    if not Path(f"/run/netns/{host.netns}").exists() or not hostfs.is_mounted(
        paths.host_root(name)
    ):
        raise LabError(f"{name} is not up", hint="run `siporch lab up` first")
    return hostfs.host_argv(host, paths, list(cmd) or ["/bin/bash", "-l"])


def run(
    name: str, cmd: Sequence[str], paths: LabPaths | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` inside host ``name``; returns the CompletedProcess."""
    paths = paths or LabPaths.default()
    shell_argv(name, cmd, paths)  # checks the host is up
    return hostfs.run_in_host(get_host(name), paths, cmd, timeout=timeout)
