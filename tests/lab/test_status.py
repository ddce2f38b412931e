"""`siporch status` against a real Asterisk 22 running the configuration siporch renders.

The PBX runs from the lab's Debian sid root (a private overlay), inside a network namespace
of its own where every host of the example model lives on a loopback address: the PBX on
127.0.0.1 (AMI there too), edge-central on 127.0.0.10, edge-branch on 127.0.0.11. SIPp
plays the edge: it relays inbound trunk calls (X-Siporch-Trunk) from 127.0.0.10, answers
the outbound calls Asterisk sends to the edge, and stands in for the registrar that the
registration trunk reaches through the edge. `siporch status` runs inside the namespace
on a copy of the example inventory with those addresses, exactly as a user runs it.

The tests named shared_lab look at the shared lab's own hosts (its PBX on 198.18.0.20, its
edges), which they deploy first unless the hosts run the lab's model already.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
ROOTFS = Path(os.environ.get("SIPORCH_ROOTFS", "/var/cache/siporch/rootfs/current"))
SIPP_DIR = REPO / "tests" / "data" / "ami" / "sipp"
PBX = "pbx-central"
EDGE = "127.0.0.10"
ADDRESSES = {"192.0.2.20": "127.0.0.1", "192.0.2.10": EDGE, "198.51.100.10": "127.0.0.11"}


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (mounts and network namespaces)"
    if not (ROOTFS / "usr" / "sbin" / "asterisk").exists():
        return f"no Asterisk root filesystem at {ROOTFS} (build the lab root first)"
    for tool in ("ip", "mount", "umount", "chroot", "sipp"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def copy_inventory(dest: Path, *, secret: str | None = None) -> Path:
    """The example inventory with loopback addresses (and, optionally, another AMI secret)."""
    inv = dest / "inventory"
    shutil.copytree(REPO / "inventory" / "example", inv)
    vault_pass = REPO / "inventory" / ".vault-pass"
    if vault_pass.exists():
        shutil.copy(vault_pass, dest / ".vault-pass")
    model = inv / "group_vars" / "all" / "siporch.yml"
    text = model.read_text()
    for old, new in ADDRESSES.items():
        text = text.replace(f"address: {old}\n", f"address: {new}\n")
    if secret is not None:
        text = text.replace('secret: "{{ vault_ami_secret }}"', f'secret: "{secret}"')
    model.write_text(text)
    # the inventory's hosts where the model puts them (validation cross-checks both)
    hosts = inv / "hosts.yml"
    text = hosts.read_text()
    for old, new in ADDRESSES.items():
        text = text.replace(f"ansible_host: {old}\n", f"ansible_host: {new}\n")
    hosts.write_text(text)
    _one_pbx(inv)
    _one_edge(inv)
    return inv


def _one_edge(inv: Path) -> None:
    """Only edge-central at the central site: SIPp plays that one edge at its own address
    (the example's pair, edge-central-2 and the floating address, has no host here)."""
    model = inv / "group_vars" / "all" / "siporch.yml"
    data = yaml.safe_load(model.read_text())
    m = data["siporch"]
    m["hosts"].pop("edge-central-2", None)
    m["sites"]["central"].pop("edges", None)
    model.write_text(yaml.safe_dump(data, sort_keys=False))
    hosts = inv / "hosts.yml"
    doc = yaml.safe_load(hosts.read_text())
    doc["all"]["children"]["siporch_edge"]["hosts"].pop("edge-central-2", None)
    hosts.write_text(yaml.safe_dump(doc, sort_keys=False))


def _one_pbx(inv: Path) -> None:
    """Only pbx-central: the example's second PBX (pbx-central-2, in the PBX group of its
    DIDs) has no Asterisk in this namespace, and these tests look at one PBX's AMI."""
    model = inv / "group_vars" / "all" / "siporch.yml"
    data = yaml.safe_load(model.read_text())
    m = data["siporch"]
    m["hosts"].pop("pbx-central-2", None)
    m.pop("pbx_groups", None)
    for did in m["inbound"]:
        dest = did["destination"]
        if "group" in dest:
            did["destination"] = {"host": PBX, "context": dest["context"]}
    model.write_text(yaml.safe_dump(data, sort_keys=False))
    hosts = inv / "hosts.yml"
    doc = yaml.safe_load(hosts.read_text())
    doc["all"]["children"]["siporch_pbx"]["hosts"].pop("pbx-central-2", None)
    hosts.write_text(yaml.safe_dump(doc, sort_keys=False))


@dataclass
class StatusLab:
    netns: str
    root: Path
    work: Path
    inventory: Path
    console: Path
    conf: str

    @property
    def chroot(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns, "chroot", str(self.root)]

    def rx(self, command: str, timeout: float = 15) -> str:
        out = subprocess.run(
            [*self.chroot, "asterisk", "-C", self.conf, "-rx", command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return out.stdout

    def status(
        self, *args: str, inventory: Path | None = None, timeout: float = 60
    ) -> tuple[int, dict[str, Any] | None, str]:
        cmd = [sys.executable, "-m", "siporch", "status", "--no-edges", "--no-releases"]
        cmd += ["-i", str(inventory or self.inventory), *args]
        proc = subprocess.run(
            ["ip", "netns", "exec", self.netns, *cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=REPO,
        )
        report = None
        if "--json" in args and proc.stdout.strip():
            report = json.loads(proc.stdout)
        return proc.returncode, report, proc.stderr

    def sipp(self, *args: str, seconds: float) -> subprocess.Popen[bytes]:
        argv = ["ip", "netns", "exec", self.netns, "timeout", str(int(seconds)), "sipp"]
        argv += ["-nostdin", "-error_file", "/dev/null", *args]
        return subprocess.Popen(
            argv, cwd=self.work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="module")
def slab() -> Iterator[StatusLab]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    from siporch.model import load_model
    from siporch.render import asterisk

    work = Path(tempfile.mkdtemp(prefix="status-lab-"))
    inventory = copy_inventory(work)
    model = load_model(inventory).model
    upper, ovl_work, merged = work / "upper", work / "ovlwork", work / "merged"
    for d in (upper, ovl_work, merged):
        d.mkdir()
    netns = f"statuslab-{os.getpid()}"
    conf = f"{asterisk.SITE_ETC}/asterisk.conf"
    chroot = ["ip", "netns", "exec", netns, "chroot", str(merged)]
    mounted: list[Path] = []
    proc: subprocess.Popen[bytes] | None = None
    console = work / "console.log"
    try:
        lower = f"lowerdir={ROOTFS.resolve()},upperdir={upper},workdir={ovl_work}"
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", lower, str(merged)], check=True)
        mounted.append(merged)
        subprocess.run(["mount", "-t", "proc", "proc", str(merged / "proc")], check=True)
        mounted.append(merged / "proc")
        subprocess.run(["mount", "--bind", "/dev", str(merged / "dev")], check=True)
        mounted.append(merged / "dev")
        for sub in ("run", "log", "lib", "spool"):
            (merged / "var" / sub / "asterisk").mkdir(parents=True, exist_ok=True)
        # the site's packaged /etc/asterisk, the lab site's dialplan, siporch's include lines
        release = merged / asterisk.ASTERISK_DIR.lstrip("/")
        for rel, text in asterisk.render(model, PBX).items():
            path = release.parent / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        from siporch.lab.hosts import install_site_dialplan

        install_site_dialplan(merged)
        for name in asterisk.SITE_INCLUDES:
            with (merged / asterisk.SITE_ETC.lstrip("/") / name).open("a") as fh:
                fh.write(f"\n{asterisk.include_line(name)}\n")
        subprocess.run(["ip", "netns", "add", netns], check=True)
        subprocess.run(["ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up"], check=True)
        with console.open("wb") as out:
            proc = subprocess.Popen(
                [*chroot, "asterisk", "-C", conf, "-f"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        handle = StatusLab(netns, merged, work, inventory, console, conf)
        deadline = time.monotonic() + 30
        while "fully booted" not in handle.rx("core waitfullybooted", timeout=15):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("Asterisk did not start:\n" + console.read_text(errors="replace"))
            time.sleep(0.5)
        yield handle
    finally:
        if proc is not None and proc.poll() is None:
            subprocess.run(
                [*chroot, "asterisk", "-C", conf, "-rx", "core stop now"],
                capture_output=True,
                timeout=15,
                check=False,
            )
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)
        for m in reversed(mounted):
            subprocess.run(["umount", "-l", str(m)], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)


def wait_for(
    slab: StatusLab, predicate: Any, seconds: float, *args: str
) -> tuple[int, dict[str, Any]]:
    """Run `status --json` until predicate(report) holds; the last result either way."""
    deadline = time.monotonic() + seconds
    while True:
        code, report, err = slab.status("--json", *args)
        assert report is not None, err
        if predicate(report) or time.monotonic() > deadline:
            return code, report
        time.sleep(0.5)


def kinds(report: dict[str, Any]) -> Counter[tuple[str, str | None]]:
    return Counter((c["direction"], c["trunk"]) for c in report["calls"])


def test_calls_are_listed_with_trunks_and_directions_then_gone(slab: StatusLab) -> None:
    edge = slab.sipp(
        "-i", EDGE, "-p", "5060", "-mp", "41000", "-sf", str(SIPP_DIR / "edge_uas.xml"),
        "-key", "trunk", "itsp-a", seconds=60,
    )  # fmt: skip
    calls: list[subprocess.Popen[bytes]] = []
    try:
        time.sleep(0.5)
        slab.rx("pjsip qualify siporch-edge-edge-central")
        time.sleep(1)
        for trunk, did, n, port, media in (
            ("itsp-a", "+12025550100", 3, "5098", "42000"),
            ("itsp-branch", "+12065550120", 2, "5097", "42100"),
        ):
            calls.append(
                slab.sipp(
                    "-i",
                    EDGE,
                    "-p",
                    port,
                    "-mp",
                    media,
                    "-sf",
                    str(SIPP_DIR / "trunk_uac.xml"),
                    "-key",
                    "trunk",
                    trunk,
                    "-key",
                    "caller",
                    "+15551230001",
                    "-s",
                    did,
                    "-m",
                    str(n),
                    "-l",
                    str(n),
                    "-r",
                    "10",
                    "-d",
                    "14000",
                    "127.0.0.1:5060",
                    seconds=40,
                )
            )
        for _ in range(2):
            out = slab.rx(
                "channel originate Local/+12025551234@siporch-outbound application Wait 14"
            )
            assert "rror" not in out, out
        expected = Counter(
            {("inbound", "itsp-a"): 3, ("inbound", "itsp-branch"): 2, ("outbound", "itsp-a"): 2}
        )
        _, report = wait_for(slab, lambda r: kinds(r) == expected, 10)
        assert kinds(report) == expected, report["calls"]
        assert len(report["calls"]) == 7
        inbound_a = [
            c for c in report["calls"] if c["trunk"] == "itsp-a" and c["direction"] == "inbound"
        ]
        assert {(c["caller"], c["callee"]) for c in inbound_a} == {("+15551230001", "+12025550100")}
        outbound = [c for c in report["calls"] if c["direction"] == "outbound"]
        assert {c["callee"] for c in outbound} == {"+12025551234"}
        assert all(c["state"] == "Up" and c["codec"] for c in report["calls"])
        trunks = {t["name"]: t for t in report["trunks"]}
        assert trunks["itsp-a"]["active_calls"] == 5
        assert trunks["itsp-branch"]["active_calls"] == 2
        # hung up (SIPp's BYE inbound, the end of Wait outbound) -> gone
        _, report = wait_for(slab, lambda r: not r["calls"], 30)
        assert report["calls"] == []
        assert all(t["active_calls"] == 0 for t in report["trunks"])
    finally:
        for p in [*calls, edge]:
            stop(p)
        slab.rx("channel request hangup all")


def _ami_sessions(slab: StatusLab) -> int:
    """How many AMI sessions Asterisk has ("N users connected.")."""
    m = re.search(r"^(\d+) users? connected", slab.rx("manager show connected"), re.M)
    assert m, slab.rx("manager show connected")
    return int(m.group(1))


def test_interval_counts_attempts_and_failures(slab: StatusLab) -> None:
    """`--interval`: follow events for a while, then one report with that interval's counts.
    itsp-branch allows 10 channels: the 11th call is refused by the dialplan (cause 34)."""
    cmd = [sys.executable, "-m", "siporch", "status", "--no-edges", "--no-releases"]
    cmd += ["-i", str(slab.inventory), "--json", "--interval", "10"]
    before = _ami_sessions(slab)
    status = subprocess.Popen(
        ["ip", "netns", "exec", slab.netns, *cmd],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    # the interval counts what happens once siporch status is logged in to AMI
    deadline = time.monotonic() + 30
    while _ami_sessions(slab) <= before:
        assert status.poll() is None, status.communicate()
        assert time.monotonic() < deadline, "siporch status did not log in to AMI in 30 s"
        time.sleep(0.2)
    call = slab.sipp(
        "-i", EDGE, "-p", "5098", "-mp", "48000", "-sf", str(SIPP_DIR / "trunk_uac.xml"),
        "-key", "trunk", "itsp-branch", "-key", "caller", "+15551230001",
        "-s", "+12065550120", "-m", "11", "-l", "11", "-r", "20", "-d", "3000",
        "127.0.0.1:5060", seconds=20,
    )  # fmt: skip
    try:
        out, err = status.communicate(timeout=40)
    finally:
        stop(call)
    report = json.loads(out)
    trunk = next(t for t in report["trunks"] if t["name"] == "itsp-branch")
    assert (trunk["attempts"], trunk["failures"]) == (11, 1), (trunk, err)
    other = next(t for t in report["trunks"] if t["name"] == "itsp-a")
    assert (other["attempts"], other["failures"]) == (0, 0)
    assert report["counters_since"] is not None
    assert report["calls"] == []


def _wait_listening(slab: StatusLab, address: str, port: int, proc: Any) -> None:
    """Until something listens on UDP ``address``:``port`` in the namespace (SIPp started)."""
    deadline = time.monotonic() + 20
    while not subprocess.run(
        ["ip", "netns", "exec", slab.netns, "ss", "-Hlun", f"src {address}:{port}"],
        capture_output=True, text=True, check=False,
    ).stdout.strip():  # fmt: skip
        assert proc.poll() is None, f"SIPp on {address}:{port} exited"
        assert time.monotonic() < deadline, f"nothing listens on {address}:{port} after 20 s"
        time.sleep(0.2)


def test_registrar_stops_then_exit_1_and_trunk_unregistered(slab: StatusLab) -> None:
    # the registration trunk registers through the edge: the stand-in registrar listens there
    registrar = slab.sipp(
        "-i", EDGE, "-p", "5060", "-mp", "43000", "-sf", str(SIPP_DIR / "registrar.xml"),
        seconds=60,
    )  # fmt: skip
    try:
        _wait_listening(slab, EDGE, 5060, registrar)
        slab.rx("pjsip send register itsp-b-reg")

        def itsp_b(r: dict[str, Any]) -> dict[str, Any]:
            return next(t for t in r["trunks"] if t["name"] == "itsp-b")

        code, report = wait_for(slab, lambda r: itsp_b(r)["registration"] == "registered", 15)
        assert itsp_b(report)["registration"] == "registered", itsp_b(report)
        assert code == 0, report["problems"]
        assert report["health"] == "healthy"
    finally:
        stop(registrar)
    # the registrar is gone; the next REGISTER gets no answer (PJSIP gives up after 32 s)
    slab.rx("pjsip send register itsp-b-reg")
    code, report = wait_for(slab, lambda r: r["exit_code"] == 1, 60)
    trunk = itsp_b(report)
    assert code == 1, report
    assert trunk["registration"] in ("rejected", "unregistered", "failed"), trunk
    assert trunk["health"] == "unregistered"
    assert any(p["trunk"] == "itsp-b" for p in report["problems"])
    # the human view says so too
    code, _, _ = slab.status()
    assert code == 1


def test_wrong_ami_secret_is_exit_2_with_a_clear_message(slab: StatusLab) -> None:
    wrong = copy_inventory(Path(tempfile.mkdtemp(dir=slab.work)), secret="not-the-secret")
    code, report, err = slab.status("--json", inventory=wrong)
    assert code == 2
    assert report is not None
    assert report["hosts"][0]["state"] == "auth_failed"
    assert "AMI at 127.0.0.1:5038 refused user 'siporch': Authentication failed" in err
    assert "Traceback" not in err
    code, _, err = slab.status(inventory=wrong)
    assert code == 2 and "Traceback" not in err


def test_ami_user_without_rights_is_exit_2(slab: StatusLab) -> None:
    """Logged in but not allowed to list channels: not "no calls", a credentials problem."""
    from siporch.render import asterisk

    conf = slab.root / asterisk.ASTERISK_DIR.lstrip("/") / asterisk.MANAGER_FILE
    original = conf.read_text()
    lines = [
        "write = command" if line.startswith("write =") else line for line in original.splitlines()
    ]
    conf.write_text("\n".join(lines) + "\n")
    try:
        slab.rx("manager reload")
        code, report, err = slab.status("--json")
        assert code == 2
        assert report is not None and report["hosts"][0]["state"] == "auth_failed"
        assert "AMI user 'siporch' may not run" in err and "Permission denied" in err
    finally:
        conf.write_text(original)
        slab.rx("manager reload")
    code, report, err = slab.status("--json")
    assert report is not None and report["hosts"][0]["state"] == "up", err


def test_unreachable_host_is_exit_2(slab: StatusLab) -> None:
    code, report, err = slab.status("--json", "--timeout", "1")
    assert code in (0, 1), err  # reachable now
    # another port: nothing listens there
    other = copy_inventory(Path(tempfile.mkdtemp(dir=slab.work)))
    model = other / "group_vars" / "all" / "siporch.yml"
    model.write_text(model.read_text().replace("port: 5038", "port: 5039"))
    code, report, err = slab.status("--json", "--timeout", "1", inventory=other)
    assert code == 2
    assert report is not None and report["hosts"][0]["state"] == "unreachable"
    assert "cannot connect to AMI at 127.0.0.1:5039" in err


def test_watch_reconnects_after_an_asterisk_restart(slab: StatusLab) -> None:
    cmd = [sys.executable, "-m", "siporch", "status", "--no-edges", "--no-releases"]
    cmd += ["-i", str(slab.inventory), "--watch", "--json", "--duration", "45"]
    watch = subprocess.Popen(
        ["ip", "netns", "exec", slab.netns, *cmd],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert watch.stdout is not None
    states: list[str] = []
    calls_after_restart = 0
    restarted = False
    call: subprocess.Popen[bytes] | None = None
    deadline = time.monotonic() + 55
    try:
        for line in watch.stdout:
            report = json.loads(line)
            state = report["hosts"][0]["state"]
            if not states or states[-1] != state:
                states.append(state)
            if state == "up" and not restarted:
                restarted = True
                slab.rx("core restart now")
            elif restarted and "reconnecting" in states and state == "up" and call is None:
                # carries on: a call placed after the restart shows up in the stream
                deadline_boot = time.monotonic() + 20
                while "fully booted" not in slab.rx("core waitfullybooted"):
                    assert time.monotonic() < deadline_boot
                    time.sleep(0.5)
                call = slab.sipp(
                    "-i",
                    EDGE,
                    "-p",
                    "5098",
                    "-mp",
                    "44000",
                    "-sf",
                    str(SIPP_DIR / "trunk_uac.xml"),
                    "-key",
                    "trunk",
                    "itsp-a",
                    "-key",
                    "caller",
                    "+15551230001",
                    "-s",
                    "+12025550101",
                    "-m",
                    "1",
                    "-d",
                    "6000",
                    "127.0.0.1:5060",
                    seconds=20,
                )
            if call is not None and report["calls"]:
                calls_after_restart = len(report["calls"])
                break
            if time.monotonic() > deadline:
                break
    finally:
        watch.send_signal(signal.SIGTERM)
        try:
            watch.wait(timeout=15)
        except subprocess.TimeoutExpired:
            watch.kill()
            watch.wait()
        if call is not None:
            stop(call)
        slab.rx("channel request hangup all")
    assert states[:3] == ["up", "reconnecting", "up"], states
    assert calls_after_restart == 1
    assert watch.returncode in (0, 1), watch.stderr.read() if watch.stderr else ""


@pytest.fixture
def lab_deployed(lab: Any) -> Iterator[Any]:
    """The shared lab running its own model (deployed unless every host runs it with its
    daemons up), the controller's deploy lock held while the test looks at it."""
    import callkit as ck

    kit = ck.Lab(lab)
    with ck.deploy_lock(wait=2400) as token:
        os.environ["SIPORCH_DEPLOY_LOCK"] = token
        try:
            hosts = ("edge-central", "edge-central-2", "edge-branch", "pbx-central", "pbx-central-2")
            ck.ensure_deployed(kit, lab.inventory, hosts)
            yield lab
        finally:
            os.environ.pop("SIPORCH_DEPLOY_LOCK", None)


def test_shared_lab_pbx(lab_deployed: Any) -> None:
    """The lab's own PBX (198.18.0.20), deployed: calls from ITSP A's first SBC through the
    central edge's Kamailio are listed on trunk itsp-a, then gone."""
    lab = lab_deployed

    def status() -> tuple[int, dict[str, Any], str]:
        proc = subprocess.run(
            [sys.executable, "-m", "siporch", "status", "--json", "-i", str(lab.inventory),
             "--no-edges"],
            capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
            env=lab.ansible_env,
        )  # fmt: skip
        return proc.returncode, json.loads(proc.stdout), proc.stderr

    _, report, err = status()
    pbx = next(h for h in report["hosts"] if h["name"] == PBX)
    assert pbx["state"] == "up", (pbx, err)
    assert pbx["release"], "the release the PBX runs is read over SSH"
    assert {t["name"] for t in report["trunks"]} >= {"itsp-a", "itsp-b", "pstn-gw"}
    before = len(report["calls"])
    sbc = lab.address("itsp-a1")
    edge = lab.address("edge-central")
    n = 3
    sipp = subprocess.Popen(
        ["ip", "netns", "exec", lab.netns("itsp-a1"), "timeout", "40", "sipp", "-nostdin",
         "-i", sbc, "-p", "5099", "-mp", "47600", "-sf", str(SIPP_DIR / "trunk_uac.xml"),
         "-key", "trunk", "itsp-a", "-key", "caller", "2025559876", "-s", "2025550100",
         "-m", str(n), "-l", str(n), "-r", "10", "-d", "12000", f"{edge}:5060"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            _, report, err = status()
            mine = [c for c in report["calls"] if c["caller"] == "2025559876"]
            if len(mine) == n or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert len(mine) == n, (report["calls"], err)
        assert {(c["direction"], c["trunk"], c["callee"]) for c in mine} == {
            ("inbound", "itsp-a", "+12025550100")
        }
        deadline = time.monotonic() + 30
        while mine and time.monotonic() < deadline:
            time.sleep(1)
            _, report, _ = status()
            mine = [c for c in report["calls"] if c["caller"] == "2025559876"]
        assert mine == []
        assert len(report["calls"]) <= before
    finally:
        stop(sipp)


KAMAILIO_CFG = """#!KAMAILIO
debug=1
log_stderror=yes
children=1
tcp_children=1
listen=udp:{edge}:5062
listen=tcp:{edge}:5071
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "xhttp.so"
loadmodule "jsonrpcs.so"
loadmodule "dialog.so"
loadmodule "dispatcher.so"
modparam("jsonrpcs", "transport", 0)
modparam("jsonrpcs", "dgram_socket", "{work}/kamailio_rpc.sock")
modparam("jsonrpcs", "fifo_name", "{work}/kamailio_rpc.fifo")
modparam("dispatcher", "list_file", "{work}/dispatcher.list")
modparam("dispatcher", "ds_ping_interval", 0)
request_route {{ sl_send_reply("404", "nothing here"); }}
event_route[xhttp:request] {{
    if ($hu =~ "^/RPC") {{ jsonrpc_dispatch(); exit; }}
    xhttp_reply("404", "Not Found", "text/plain", "");
}}
"""


def check_edges(slab: StatusLab, rpc: str) -> None:
    args = ["--host", PBX, "--host", "edge-central", "--timeout", "2", "--kamailio-rpc", rpc,
            "--rtpengine-ng", "{address}:{ng_port}"]  # fmt: skip
    netns = ["ip", "netns", "exec", slab.netns]
    code, report, err = 2, None, ""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        proc = subprocess.run(
            [*netns, sys.executable, "-m", "siporch", "status", "--json", "--no-releases",
             "-i", str(slab.inventory), *args],
            capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
        )  # fmt: skip
        code, report, err = proc.returncode, json.loads(proc.stdout), proc.stderr
        edge = report["edges"][0]
        if edge["kamailio"]["state"] == "up" and edge["rtpengine"]["state"] == "up":
            break
        time.sleep(0.5)
    assert report is not None
    edge = report["edges"][0]
    assert edge["kamailio"]["state"] == "up", err
    assert edge["rtpengine"]["state"] == "up", err
    assert edge["rtpengine"]["sessions"] == 0
    assert edge["kamailio"]["dialogs"]["all"] == 0
    by_trunk = Counter(t["trunk"] for t in edge["kamailio"]["targets"])
    assert by_trunk == {"itsp-a": 2, "pstn-gw": 1}
    trunks = {t["name"]: t for t in report["trunks"]}
    assert [p["edge"] for p in trunks["itsp-a"]["peers"]] == ["up", "up"]
    assert trunks["pstn-gw"]["health"] == "down"
    assert [p["state"] for p in trunks["pstn-gw"]["peers"]] == ["down"]
    assert code == 1
    assert any(p["message"] == "trunk pstn-gw: every peer is down" for p in report["problems"])
    assert [h["name"] for h in report["hosts"]] == [PBX, "edge-central"]
    assert edge["kamailio"]["url"] == rpc.format(address=EDGE)


def test_edges_from_kamailio_and_rtpengine(slab: StatusLab) -> None:
    """Kamailio (xhttp JSON-RPC on the edge address) and rtpengine (ng on the edge address)
    of this machine's Debian 12 stand in for edge-central: a trunk whose dispatcher targets
    are all inactive is down (exit 1); rtpengine's sessions and Kamailio's dialogs show."""
    from siporch.model import load_model
    from siporch.monitor.topology import from_model

    for tool in ("kamailio", "rtpengine"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    topo = from_model(load_model(slab.inventory).model)
    a, gw = topo.trunks["itsp-a"], topo.trunks["pstn-gw"]
    rows = [f"{a.set_id} sip:{p.address}:{p.port} 0 {p.port % 10}" for p in a.peers]
    rows += [f"{gw.set_id} sip:{p.address}:{p.port} 1 0" for p in gw.peers]  # 1: inactive
    (slab.work / "dispatcher.list").write_text("\n".join(rows) + "\n")
    cfg = slab.work / "kamailio.cfg"
    cfg.write_text(KAMAILIO_CFG.format(edge=EDGE, work=slab.work))
    netns = ["ip", "netns", "exec", slab.netns]
    kamailio = subprocess.Popen(
        [*netns, "kamailio", "-f", str(cfg), "-DD", "-E", "-m", "64", "-M", "8"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rtpengine = subprocess.Popen(
        [*netns, "rtpengine", "--table=-1", f"--interface={EDGE}",
         f"--listen-ng={EDGE}:2223", "--foreground", "--log-stderr", "-m", "45000",
         "-M", "45100", f"--pidfile={slab.work}/rtpengine.pid"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for rpc in ("http://{address}:5071/RPC", f"unix:{slab.work}/kamailio_rpc.sock"):
            check_edges(slab, rpc)
    finally:
        for p in (kamailio, rtpengine):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def test_release_of_each_lab_host_over_ssh(lab_deployed: Any) -> None:
    """The release id comes from /etc/siporch/current on the host, read over SSH."""
    import asyncio

    from siporch.hosts import read_current

    lab = lab_deployed
    for host in ("pbx-central", "edge-central"):
        link = lab.root(host) / "etc" / "siporch" / "current"
        assert link.is_symlink(), host
        expected = os.readlink(link).rstrip("/").rsplit("/", 1)[-1]
        got = asyncio.run(read_current(lab.inventory, host, lab.address(host), timeout=5))
        assert got == expected, host


def test_exporter_serves_metrics_from_ami_events(slab: StatusLab) -> None:
    port = "19810"
    cmd = [sys.executable, "-m", "siporch", "exporter", "--no-edges", "--no-releases"]
    cmd += ["-i", str(slab.inventory), "--listen", f"127.0.0.1:{port}", "--duration", "40"]
    exporter = subprocess.Popen(
        ["ip", "netns", "exec", slab.netns, *cmd],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    scrape = [
        "ip", "netns", "exec", slab.netns, sys.executable, "-c",
        f"import urllib.request; print(urllib.request.urlopen("
        f"'http://127.0.0.1:{port}/metrics', timeout=5).read().decode())",
    ]  # fmt: skip
    call: subprocess.Popen[bytes] | None = None

    def metrics() -> str:
        out = subprocess.run(scrape, capture_output=True, text=True, timeout=15, check=False)
        return out.stdout

    active = 'siporch_trunk_active_calls{site="central",trunk="itsp-a"}'
    try:
        deadline = time.monotonic() + 15
        while f"{active} 0.0" not in metrics():
            assert time.monotonic() < deadline, "the exporter did not come up"
            time.sleep(0.5)
        call = slab.sipp(
            "-i", EDGE, "-p", "5098", "-mp", "46000", "-sf", str(SIPP_DIR / "trunk_uac.xml"),
            "-key", "trunk", "itsp-a", "-key", "caller", "+15551230001",
            "-s", "+12025550102", "-m", "1", "-d", "8000", "127.0.0.1:5060", seconds=20,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        text = metrics()
        while f"{active} 1.0" not in text:
            assert time.monotonic() < deadline, text
            time.sleep(0.3)
            text = metrics()
        assert 'siporch_trunk_call_attempts_total{site="central",trunk="itsp-a"} 1.0' in text
        assert 'siporch_host_up{host="pbx-central",role="pbx",site="central"} 1.0' in text
    finally:
        if call is not None:
            stop(call)
        exporter.send_signal(signal.SIGTERM)
        try:
            exporter.wait(timeout=15)
        except subprocess.TimeoutExpired:
            exporter.kill()
            exporter.wait()
        slab.rx("channel request hangup all")
    assert exporter.returncode == 0, exporter.stderr.read() if exporter.stderr else ""


def test_shared_lab_edges(lab_deployed: Any) -> None:
    """The lab's edges, deployed: Kamailio's dispatcher (JSON-RPC over HTTP on :5071)
    maps every target of the central edge to a trunk of the model or a PBX."""
    lab = lab_deployed
    proc = subprocess.run(
        [sys.executable, "-m", "siporch", "status", "--json", "-i", str(lab.inventory),
         "--host", "edge-central", "--no-releases"],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO, env=lab.ansible_env,
    )  # fmt: skip
    report = json.loads(proc.stdout)
    (e,) = report["edges"]
    assert e["kamailio"]["state"] == "up", proc.stderr
    targets = e["kamailio"]["targets"]
    central = {t["name"] for t in report["trunks"] if t["site"] == "central"}
    assert {t["trunk"] for t in targets if t["trunk"]} == central
    assert all(t["trunk"] or t["set"] >= 1000000 for t in targets), targets
    assert e["kamailio"]["dialogs"] is not None
