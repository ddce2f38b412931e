"""Faults between two lab hosts: delay, loss, partition.

An impairment of A and B acts on the packets A sends to B and on those B sends to A
(``one_way`` limits it to A -> B). It is made of rules in a chain ``SIPORCH-LAB`` of the
sending host's own firewall, inside its namespace (the machine's firewall is never
touched): a partition drops the packets where they arrive (chain ``SIPORCH-LAB-IN`` of the
receiving host's INPUT), so the sender sees no error, as on a real network where a link or
a peer silently goes away; delay and loss queue them (NFQUEUE) to a small
process in that namespace (``siporch.lab.nfqueue``) that holds each packet for the delay
and drops the given share. The kernel's ``netem`` is not used: it is a module many
kernels lack, and NFQUEUE gives the same effect.

``controller`` may stand for one side of a partition: the machine itself, where siporch
and Ansible run (198.18.0.1 on the lab bridge). The rule still lives only in the lab
host's namespace (its INPUT drops every packet from the controller, silently), so the
machine's own firewall is never touched; the host is out of reach of Ansible and of
anything else the controller sends it. Delay and loss are not offered for it.

The wanted impairments are kept in ``impair/impairments.json`` under the lab's state
directory; every change rebuilds the rules and delay processes of the hosts involved
from that file, so the file is the truth and the rules follow it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from siporch.errors import LabError
from siporch.lab import procs
from siporch.lab.spec import CONTROLLER_ADDRESS, HOSTS, LabHost, LabPaths, host_by_name

CONTROLLER = "controller"
CHAIN = "SIPORCH-LAB"
CHAIN_IN = "SIPORCH-LAB-IN"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s)?\s*$")
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%?\s*$")


@dataclass(frozen=True)
class Impairment:
    a: str
    b: str
    delay_ms: float = 0.0
    loss_percent: float = 0.0
    partition: bool = False
    one_way: bool = False

    def directions(self) -> list[tuple[str, str]]:
        return [(self.a, self.b)] if self.one_way else [(self.a, self.b), (self.b, self.a)]

    def describe(self) -> str:
        arrow = "->" if self.one_way else "<->"
        parts = []
        if self.partition:
            parts.append("partition")
        if self.delay_ms:
            parts.append(f"delay {self.delay_ms:g} ms")
        if self.loss_percent:
            parts.append(f"loss {self.loss_percent:g}%")
        return f"{self.a} {arrow} {self.b}: {', '.join(parts)}"


def parse_delay(text: str) -> float:
    """``200ms``, ``0.2s``, ``200`` (ms) -> milliseconds."""
    match = _DURATION.match(text)
    if not match:
        raise LabError(f"bad delay {text!r}", hint="write it like 200ms, 1.5s or 200")
    value, unit = float(match.group(1)), match.group(2) or "ms"
    ms = value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    if not 0 < ms <= 60_000:
        raise LabError(f"delay {text!r} is out of range", hint="between 1us and 60s")
    return ms


def parse_loss(text: str) -> float:
    """``30%`` or ``30`` -> 30.0 (percent)."""
    match = _PERCENT.match(text)
    if not match:
        raise LabError(f"bad loss {text!r}", hint="write it like 30% (0 < loss <= 100)")
    value = float(match.group(1))
    if not 0 < value <= 100:
        raise LabError(f"loss {text!r} is out of range", hint="0 < loss <= 100")
    return value


def _host(name: str) -> LabHost:
    host = host_by_name(name)
    if host is None:
        raise LabError(
            f"no lab host named {name!r}",
            hint="lab hosts: " + ", ".join(h.name for h in HOSTS) + f" (or {CONTROLLER})",
        )
    return host


def _side(name: str) -> None:
    """Check that ``name`` is a lab host or the controller."""
    if name != CONTROLLER:
        _host(name)


def _addresses(name: str) -> tuple[str, ...]:
    return (CONTROLLER_ADDRESS,) if name == CONTROLLER else _host(name).addresses


def _state_file(paths: LabPaths) -> Path:
    return paths.impair_dir / "impairments.json"


def load(paths: LabPaths) -> list[Impairment]:
    try:
        data = json.loads(_state_file(paths).read_text())
    except (OSError, ValueError):
        return []
    return [Impairment(**item) for item in data]


def _save(paths: LabPaths, items: list[Impairment]) -> None:
    paths.impair_dir.mkdir(parents=True, exist_ok=True)
    _state_file(paths).write_text(json.dumps([asdict(i) for i in items], indent=2) + "\n")


def _pid_file(paths: LabPaths, src: str, dst: str) -> Path:
    return paths.impair_dir / f"{src}--{dst}.pid"


def _queue_number(dst: str) -> int:
    return 1 + [h.name for h in HOSTS].index(dst)


def _stop_delayers(paths: LabPaths, src: str) -> None:
    pids: list[int] = []
    for pid_file in paths.impair_dir.glob(f"{src}--*.pid"):
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text().strip())
            info = procs.process_info(pid)
            if info is not None and "python" in info.comm:
                pids.append(pid)
        pid_file.unlink(missing_ok=True)
    procs.kill_processes(pids, grace=1.0)


def _start_delayer(paths: LabPaths, src: LabHost, dst: LabHost, item: Impairment) -> None:
    log = (paths.impair_dir / f"{src.name}--{dst.name}.log").open("w")
    cmd = ["ip", "netns", "exec", src.netns, sys.executable, "-m", "siporch.lab.nfqueue"]
    cmd += ["--queue", str(_queue_number(dst.name))]
    cmd += ["--delay-ms", str(item.delay_ms), "--loss-percent", str(item.loss_percent)]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        env=env,
        start_new_session=True,
        text=True,
    )
    log.close()
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 5.0)
    line = proc.stdout.readline() if ready else ""
    proc.stdout.close()
    if line.strip() != "ready":
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        detail = (paths.impair_dir / f"{src.name}--{dst.name}.log").read_text().strip()
        raise LabError(f"{src.name}: the delay process did not start: {detail or 'no output'}")
    _pid_file(paths, src.name, dst.name).write_text(f"{proc.pid}\n")


def _iptables(host: LabHost, args: list[str], stdin: str | None = None) -> None:
    proc = subprocess.run(
        ["ip", "netns", "exec", host.netns, *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise LabError(f"{host.name}: {' '.join(args)} failed: {proc.stderr.strip()}")


def partition_rules(host: str, items: list[Impairment]) -> list[str]:
    """The INPUT rules of ``host`` for the partitions in ``items``: packets are dropped
    where they arrive (a drop in the sender's OUTPUT fails its send at once with EPERM,
    which no real partition does)."""
    return [
        f"-A {CHAIN_IN} -s {address}/32 -j DROP"
        for item in items
        if item.partition
        for src, dst in item.directions()
        if dst == host and host != CONTROLLER
        for address in _addresses(src)
    ]


def _apply_host(paths: LabPaths, host: LabHost, items: list[Impairment]) -> None:
    """Rebuild the chain and delay processes of ``host`` from ``items``."""
    if not Path(f"/run/netns/{host.netns}").exists():
        raise LabError(f"{host.name} is not up", hint="run `siporch lab up` first")
    _stop_delayers(paths, host.name)
    rules: list[str] = []
    rules_in = partition_rules(host.name, items)
    for item in items:
        for src, dst in item.directions():
            if item.partition:
                continue
            if src != host.name or dst == CONTROLLER:
                continue
            peer = _host(dst)
            _start_delayer(paths, host, peer, item)
            queue = _queue_number(dst)
            rules += [
                f"-A {CHAIN} -d {a}/32 -j NFQUEUE --queue-num {queue} --queue-bypass"
                for a in peer.addresses
            ]
    script = "\n".join(
        ["*filter", f":{CHAIN} - [0:0]", f":{CHAIN_IN} - [0:0]", *rules, *rules_in, "COMMIT", ""]
    )
    _iptables(host, ["iptables-restore", "-w", "--noflush"], stdin=script)
    for hook, chain in (("OUTPUT", CHAIN), ("INPUT", CHAIN_IN)):
        check = subprocess.run(
            ["ip", "netns", "exec", host.netns, "iptables", "-w", "-C", hook, "-j", chain],
            capture_output=True,
            check=False,
        )
        if check.returncode != 0:
            _iptables(host, ["iptables", "-w", "-I", hook, "1", "-j", chain])


def impair(
    paths: LabPaths,
    a: str,
    b: str,
    *,
    delay_ms: float = 0.0,
    loss_percent: float = 0.0,
    partition: bool = False,
    one_way: bool = False,
) -> Impairment:
    """Set (replace) the impairment between ``a`` and ``b`` (one may be ``controller``)."""
    _side(a)
    _side(b)
    if a == b:
        raise LabError("impair needs two different hosts")
    if partition and (delay_ms or loss_percent):
        raise LabError("--partition cannot be combined with --delay or --loss")
    if not (partition or delay_ms or loss_percent):
        raise LabError("say what to do: --delay, --loss, --partition or --clear")
    if CONTROLLER in (a, b):
        if not partition:
            raise LabError(
                f"only --partition is offered with {CONTROLLER}",
                hint="delay and loss act between lab hosts",
            )
        if one_way and b == CONTROLLER:
            raise LabError(
                f"a one-way partition towards {CONTROLLER} would need the machine's firewall",
                hint=f"siporch lab impair {CONTROLLER} {a} --partition (the host drops the "
                "controller's packets)",
            )
    item = Impairment(a, b, delay_ms, loss_percent, partition, one_way)
    items = [i for i in load(paths) if {i.a, i.b} != {a, b}] + [item]
    _save(paths, items)
    for name in (a, b):
        if name != CONTROLLER:
            _apply_host(paths, _host(name), items)
    return item


def clear(paths: LabPaths, a: str | None = None, b: str | None = None) -> list[Impairment]:
    """Remove impairments: of the pair, of every pair with ``a``, or all. Returns them."""
    items = load(paths)
    if a is not None:
        _side(a)
    if b is not None:
        _side(b)

    def hit(i: Impairment) -> bool:
        if a is None:
            return True
        if b is None:
            return a in (i.a, i.b)
        return {i.a, i.b} == {a, b}

    removed = [i for i in items if hit(i)]
    kept = [i for i in items if not hit(i)]
    _save(paths, kept)
    touched = {n for i in removed for n in (i.a, i.b)} - {CONTROLLER}
    for name in sorted(touched):
        host = _host(name)
        if Path(f"/run/netns/{host.netns}").exists():
            _apply_host(paths, host, kept)
        else:
            _stop_delayers(paths, name)
    return removed


def forget(paths: LabPaths) -> None:
    """Drop the recorded impairments (after `lab down` removed namespaces and processes)."""
    if paths.impair_dir.is_dir():
        for f in paths.impair_dir.iterdir():
            f.unlink(missing_ok=True)
