"""Deploy benchmarks on the lab (root, `siporch lab up`); prints Markdown for docs/benchmarks.md.

    python bench/deploy_bench.py [--only noop scale pair rollback drops init load] [--trunks 1000] [--calls 20]
        [--cps 20] [--hold 1000] [--repeat 3] [--profile DIR] [--baseline]

* noop: wall time of a deploy of an unchanged model (after one deploy of it).
* --baseline (noop, scale): each measured deploy also step by step, right after it
  (-e siporch_quick=false, Ansible's own host_group_vars): the deploy before the one-call
  deploy and the vars plugin, under the same machine load.
* scale: a model with --trunks trunks (bench/genmodel.py, the lab's hosts): time of its first
  deploy, then of a deploy that adds one peer to one trunk, and the reloads that needed.
* pair: a one-trunk change of the lab model itself, whose central site is an active-standby
  edge pair: itsp-a's max_channels 30 -> 40 and back, --repeat times each (reloads only).
* rollback: the `pair` change deployed, then `siporch rollback` (rollback-trunk.yml) timed,
  --repeat times; with --baseline each rollback also step by step (-e siporch_quick=false).
* init: the same deploys on systemd lab hosts and on hosts without init, in one run:
  for each --init mode, `lab up --init MODE` (timed; the lab is started again when the
  mode changes), a first deploy of the lab's model, no-op deploys (--repeat), and a deploy
  that adds one peer to one trunk (and one that removes it again).
* load: a steady --cps new calls per second from itsp-a1 through edge-central (SIPp,
  Record-Route aware, --hold s each) from before a deploy that adds a peer to the calls'
  trunk until after it ends; once with siporch's least reloads, once with every changed
  daemon restarted (siporch_restart_on_change), in the same run. A call failed at setup
  got no 200 OK to its INVITE; a call dropped was answered but its BYE got no 200 OK.
* drops: --calls long SIPp calls through the edge (siporch call, Record-Route aware), then a
  deploy that adds a peer to the calls' trunk; once with siporch's least reloads, once with
  every changed daemon restarted (siporch_restart_on_change); calls whose BYE got no 200 OK.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.genmodel import generate  # noqa: E402
from siporch.deploy import runner  # noqa: E402

LAB_INVENTORY = REPO / "inventory" / "lab"
QUIET = {"asterisk_pbx_health_registrations": False}  # no registrar behind itsp-b in the lab


def copy_inventory(dest: Path) -> Path:
    inv = dest / "inv"
    shutil.copytree(LAB_INVENTORY, inv)
    vault = LAB_INVENTORY.parent / ".vault-pass"
    if vault.exists():
        shutil.copy(vault, dest / ".vault-pass")
    return inv


def edit_model(inv: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    path = inv / "group_vars" / "all" / "siporch.yml"
    doc = yaml.safe_load(path.read_text())
    edit(doc["siporch"])
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


PROFILE: dict[str, Any] = {"dir": None, "n": 0}


def profile_env(label: str) -> dict[str, str]:
    """Environment that makes ansible-playbook write per-task timing (--profile DIR)."""
    if PROFILE["dir"] is None:
        return {}
    PROFILE["n"] += 1
    path = Path(PROFILE["dir"]) / f"{PROFILE['n']:02d}-{label}.jsonl"
    return {
        "ANSIBLE_CALLBACK_PLUGINS": str(REPO / "bench" / "callbacks"),
        "ANSIBLE_CALLBACKS_ENABLED": "siporch_timing",
        "SIPORCH_TIMING_FILE": str(path),
    }


def summarise_profile(path: Path, top: int = 8) -> str:
    """Where the time of one profiled run went: by play, by host, the slowest tasks."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    tasks = [r for r in rows if "task" in r]
    total = next((r["end_of_run"] for r in rows if "end_of_run" in r), 0.0)
    plays: dict[str, list[float]] = {}
    for r in tasks:
        span = plays.setdefault(r["play"], [r["start"], r["end"]])
        span[0], span[1] = min(span[0], r["start"]), max(span[1], r["end"])
    hosts: dict[str, float] = {}
    count: dict[str, int] = {}
    by_task: dict[tuple[str, str], float] = {}
    for r in tasks:
        d = r["end"] - r["start"]
        hosts[r["host"]] = hosts.get(r["host"], 0.0) + d
        if r["status"] != "skipped":
            count[r["host"]] = count.get(r["host"], 0) + 1
        key = (r["host"], r["task"])
        by_task[key] = by_task.get(key, 0.0) + d
    out = [f"{path.name}: {total:.1f} s in all"]
    out += [f"  play {name!r}: {b - a:.1f} s" for name, (a, b) in plays.items()]
    out += [
        f"  host {h}: {t:.1f} s in {count.get(h, 0)} task results (skipped ones not counted)"
        for h, t in sorted(hosts.items())
    ]
    slow = sorted(by_task.items(), key=lambda kv: -kv[1])[:top]
    out += [f"  slow: {h} {name!r} {t:.2f} s" for (h, name), t in slow]
    return "\n".join(out)


#: the deploy as it was before the one-call deploy and the vars plugin (``--baseline``):
#: every host step by step, group_vars read by Ansible's own plugin
BASELINE_VARS = {"siporch_quick": False}
BASELINE_ENV = {"ANSIBLE_VARS_ENABLED": "host_group_vars"}


def deploy(
    inv: Path,
    label: str = "deploy",
    baseline: bool = False,
    playbook: str = "deploy-trunk.yml",
    **extra: Any,
) -> tuple[float, runner.RunResult]:
    report = runner.report_path()
    if baseline:
        extra = {**BASELINE_VARS, **extra}
        label = f"{label}-baseline"
    cmd = runner.build_command(
        playbook,
        inv,
        vault_file=runner.vault_password_file(inv, None),
        report_file=report,
        extra_vars={**QUIET, **extra},
    )
    env = {**profile_env(label), **(BASELINE_ENV if baseline else {})}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    started = time.monotonic()
    try:
        result = runner.run(cmd, report)
    finally:
        report.unlink(missing_ok=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if "SIPORCH_TIMING_FILE" in env:  # --profile (--baseline's env alone: no profile)
        print(summarise_profile(Path(env["SIPORCH_TIMING_FILE"])), file=sys.stderr, flush=True)
    if not result.ok:
        tail = "\n".join(result.output[-30:])
        raise SystemExit(f"{playbook} of {inv} failed:\n{tail}")
    return time.monotonic() - started, result


def reloads(result: runner.RunResult) -> str:
    hosts = (result.report or {}).get("hosts", [])
    return "; ".join(f"{h['host']}: {', '.join(h['reloads']) or 'none'}" for h in hosts)


def bench_noop(tmp: Path, repeat: int, baseline: bool = False) -> list[str]:
    inv = copy_inventory(tmp / "noop")
    deploy(inv)
    times = []
    base: list[float] = []
    changed = []
    for _ in range(repeat):
        t, result = deploy(inv, "noop")
        times.append(t)
        changed.append(result.changed)
        if baseline:  # the same deploy step by step, right after (the same machine load)
            base.append(deploy(inv, "noop", baseline=True)[0])
    hosts = len((result.report or {}).get("hosts", []))
    rows = [
        f"| no-op deploy ({hosts} lab hosts, unchanged model) | {span(times)} | changed={max(changed)} |"
    ]
    if baseline:
        rows.append(f"| the same, step by step (baseline) | {span(base)} | |")
    return rows


def bench_scale(tmp: Path, trunks: int, repeat: int = 1, baseline: bool = False) -> list[str]:
    inv = copy_inventory(tmp / "scale")
    lab_hosts = yaml.safe_load((inv / "group_vars" / "all" / "siporch.yml").read_text())
    model = generate(trunks)
    model["hosts"] = lab_hosts["siporch"]["hosts"]
    (inv / "group_vars" / "all" / "siporch.yml").write_text(
        yaml.safe_dump({"siporch": model}, sort_keys=False)
    )
    t_first, first = deploy(inv, "first")
    t_noop: list[float] = []
    b_noop: list[float] = []
    for _ in range(repeat):
        t_noop.append(deploy(inv, "scale-noop")[0])
        if baseline:
            b_noop.append(deploy(inv, "scale-noop", baseline=True)[0])
    first_trunk = next(iter(model["trunks"]))
    peer = {"address": "198.19.255.250", "port": 5060, "transport": "udp", "priority": 3}
    adds: list[float] = []
    backs: list[float] = []
    b_adds: list[float] = []
    b_backs: list[float] = []
    change = None
    for _ in range(repeat):
        for base in [False, True] if baseline else [False]:
            edit_model(inv, lambda m: m["trunks"][first_trunk]["peers"].append(dict(peer)))
            t, result = deploy(inv, "peer-added", baseline=base)
            (b_adds if base else adds).append(t)
            change = change if base else result
            edit_model(inv, lambda m: m["trunks"][first_trunk]["peers"].remove(peer))
            (b_backs if base else backs).append(deploy(inv, "peer-removed", baseline=base)[0])
    assert change is not None
    rows = [
        f"| first deploy of a {trunks}-trunk model | {t_first:.1f} s | {reloads(first)} |",
        f"| no-op deploy with {trunks} trunks | {span(t_noop)} | |",
        f"| one trunk change (a peer added) with {trunks} trunks | {span(adds)} | "
        f"{reloads(change)} |",
        f"| the change back (the peer removed) | {span(backs)} | |",
    ]
    if baseline:
        rows += [
            f"| baseline (step by step): no-op deploy with {trunks} trunks | {span(b_noop)} | |",
            f"| baseline: one trunk change with {trunks} trunks | {span(b_adds)} | |",
            f"| baseline: the change back | {span(b_backs)} | |",
        ]
    return rows


def bench_pair(tmp: Path, repeat: int) -> list[str]:
    """A one-trunk change of the lab model, where the central site is an active-standby
    pair: itsp-a's max_channels 30 -> 40, then back (a Kamailio htable reload on the edges,
    an Asterisk pjsip reload on the PBXs; the pair's second edge after the first)."""
    inv = copy_inventory(tmp / "pair")
    deploy(inv)  # from the lab model
    times: list[float] = []
    result = None
    for _ in range(repeat):
        for value in (40, 30):
            edit_model(inv, lambda m, v=value: m["trunks"]["itsp-a"].update(max_channels=v))
            t, result = deploy(inv, f"pair-{value}")
            times.append(t)
    assert result is not None
    return [
        f"| one-trunk change of the lab model (itsp-a max_channels 30 <-> 40) | {span(times)} "
        f"| {reloads(result)} |"
    ]


def bench_rollback(tmp: Path, repeat: int, baseline: bool = False) -> list[str]:
    """The operator's rollback (rollback-trunk.yml) of the `pair` change: itsp-a's
    max_channels 30 -> 40 deployed, then rolled back to 30 (not timed, the deploy; timed,
    the rollback), --repeat times; with --baseline each time also step by step
    (-e siporch_quick=false) right after, the deploy made again in between."""
    inv = copy_inventory(tmp / "rollback")
    deploy(inv)  # from the lab model
    times: list[float] = []
    base: list[float] = []
    result = None
    for _ in range(repeat):
        for step in [False, True] if baseline else [False]:
            edit_model(inv, lambda m: m["trunks"]["itsp-a"].update(max_channels=40))
            deploy(inv, "rollback-change")
            edit_model(inv, lambda m: m["trunks"]["itsp-a"].update(max_channels=30))
            t, res = deploy(inv, "rollback", baseline=step, playbook="rollback-trunk.yml")
            (base if step else times).append(t)
            result = result if step else res
    assert result is not None
    rows = [
        f"| rollback of a one-trunk change of the lab model (itsp-a max_channels 40 -> 30) "
        f"| {span(times)} | {reloads(result)} |"
    ]
    if baseline:
        rows.append(f"| the same, step by step (-e siporch_quick=false) | {span(base)} | |")
    return rows


def span(times: list[float]) -> str:
    if len(times) == 1:
        return f"{times[0]:.1f} s"
    return (
        f"{statistics.median(times):.1f} s median of {len(times)} "
        f"(min {min(times):.1f}, max {max(times):.1f})"
    )


def bench_init(tmp: Path, modes: list[str], repeat: int) -> list[str]:
    from siporch.lab import lab

    example = REPO / "inventory" / "example"
    rows = []
    for mode in modes:
        lab.down()
        started = time.monotonic()
        result = lab.up(example, LAB_INVENTORY, init=mode)
        t_up = time.monotonic() - started
        if not result.ok:
            problems = "; ".join(f"{h.name}: {h.problem()}" for h in result.hosts if not h.ok)
            raise SystemExit(f"lab up --init {mode} failed: {problems}")
        base = copy_inventory(tmp / f"init-{mode}-base")
        peer = copy_inventory(tmp / f"init-{mode}-peer")
        edit_model(
            peer,
            lambda m: m["trunks"]["itsp-a"]["peers"].append(
                {"address": "198.18.1.12", "port": 5060, "transport": "udp", "priority": 3}
            ),
        )
        t_first, _ = deploy(base)
        noop = [deploy(base)[0] for _ in range(repeat)]
        t_add, add = deploy(peer)
        t_back, _ = deploy(base)
        rows.append(
            f"| {mode} | {t_up:.1f} s | {t_first:.1f} s | {statistics.median(noop):.1f} s "
            f"(min {min(noop):.1f}, max {max(noop):.1f}, {repeat} runs) | {t_add:.1f} s "
            f"({reloads(add)}) | {t_back:.1f} s |"
        )
        print(rows[-1], flush=True)
    return rows


def place_calls(inv: Path, calls: int, duration: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable, "-m", "siporch", "call", "+12025550100", "-i", str(inv),
            "--from", "itsp-a1", "--calls", str(calls), "--rate", "5",
            "--duration", str(duration), "--timeout", str(duration + 120), "--json",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip


def start_load(inv: Path, cps: int, seconds: float, hold_ms: int, workdir: Path) -> Any:
    """SIPp placing ``cps`` calls per second for ``seconds`` from itsp-a1 to edge-central;
    returns the process (its counts file is written in ``workdir``)."""
    from siporch.calls import lab_hosts
    from siporch.sipp import scenario

    hosts = lab_hosts(inv)
    src = hosts["itsp-a1"]
    target = hosts["edge-central"]["lab_address"]
    calls = int(cps * seconds)
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [
        "ip", "netns", "exec", src["lab_netns"], shutil.which("sipp") or "sipp",
        "-sf", str(scenario("uac_rr")), "-s", "+12025550100",
        "-i", src["lab_address"], "-p", str(27000 + os.getpid() % 2000), "-t", "u1",
        "-m", str(calls), "-r", str(cps), "-l", str(cps * (hold_ms // 1000 + 3)),
        "-d", str(hold_ms), "-timeout", f"{int(seconds) + 60}s", "-recv_timeout", "10000",
        "-nostdin", "-trace_counts", "-trace_stat", "-fd", "1",
        f"{target}:5060",
    ]  # fmt: skip
    return subprocess.Popen(
        argv, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def load_counts(workdir: Path) -> dict[str, int]:
    """attempted, answered (a 200 OK to the INVITE), completed (a 200 OK to the BYE) from
    SIPp's last -trace_counts and -trace_stat lines."""
    counts = next(workdir.glob("*_counts.csv"))
    rows = [r.split(";") for r in counts.read_text().splitlines() if r.strip()]
    head, last = rows[0], rows[-1]
    ok200 = [i for i, name in enumerate(head) if name.endswith("_200_Recv")]
    stat = next(workdir.glob("*_.csv"))
    srows = [r.split(";") for r in stat.read_text().splitlines() if r.strip()]
    shead, slast = srows[0], srows[-1]
    attempted = int(slast[shead.index("TotalCallCreated")])
    return {
        "attempted": attempted,
        "answered": int(last[ok200[0]]),
        "completed": int(last[ok200[1]]),
    }


def bench_load(tmp: Path, cps: int, hold_ms: int) -> list[str]:
    base = copy_inventory(tmp / "load-base")
    peer = copy_inventory(tmp / "load-peer")
    edit_model(
        peer,
        lambda m: m["trunks"]["itsp-a"]["peers"].append(
            {"address": "198.18.1.12", "port": 5060, "transport": "udp", "priority": 3}
        ),
    )
    rows = []
    for label, extra in (
        ("siporch (least reloads)", {}),
        ("restart on change (baseline)", {"siporch_restart_on_change": True}),
    ):
        deploy(base, "load-base")
        # load from 3 s before the deploy until well after it: the deploy's own time, measured
        # on a no-op deploy just before, times two, and 10 s more
        t_noop, _ = deploy(base, "load-noop")
        seconds = 3 + 2 * t_noop + 10
        workdir = tmp / f"load-{len(rows)}"
        proc = start_load(base, cps, seconds, hold_ms, workdir)
        time.sleep(3)
        t, result = deploy(peer, "load-peer", **extra)
        proc.communicate(timeout=seconds + 120)
        c = load_counts(workdir)
        setup_failed = c["attempted"] - c["answered"]
        dropped = c["answered"] - c["completed"]
        rows.append(
            f"| {label} | {c['attempted']} | {setup_failed} | {dropped} | {t:.1f} s | "
            f"{reloads(result)} |"
        )
        print(rows[-1], flush=True)
    deploy(base, "load-base")
    return rows


def bench_drops(tmp: Path, calls: int) -> list[str]:
    base = copy_inventory(tmp / "drops-base")
    peer = copy_inventory(tmp / "drops-peer")
    edit_model(
        peer,
        lambda m: m["trunks"]["itsp-a"]["peers"].append(
            {"address": "198.18.1.12", "port": 5060, "transport": "udp", "priority": 3}
        ),
    )
    rows = []
    for label, extra in (
        ("siporch (least reloads)", {}),
        ("restart on change", {"siporch_restart_on_change": True}),
    ):
        deploy(base)
        proc = place_calls(base, calls, 45)
        time.sleep(calls / 5 + 4)
        t, result = deploy(peer, **extra)
        out, err = proc.communicate(timeout=400)
        try:
            calls_result = json.loads(out)
        except json.JSONDecodeError:
            raise SystemExit(f"siporch call failed: {err or out}") from None
        dropped = calls_result["attempted"] - calls_result["successful"]
        rows.append(
            f"| {label} | {calls_result['attempted']} | {dropped} | {t:.1f} s | {reloads(result)} |"
        )
    deploy(base)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--only",
        nargs="+",
        choices=["noop", "scale", "pair", "rollback", "drops", "init", "load"],
    )
    ap.add_argument("--cps", type=int, default=20, help="new calls per second (`load`)")
    ap.add_argument(
        "--hold",
        type=int,
        default=1000,
        help="ms each call is held (`load`; cps x hold stays under the trunk's max_channels)",
    )
    ap.add_argument(
        "--init",
        nargs="+",
        choices=["none", "systemd"],
        default=["none", "systemd"],
        help="lab init modes compared by `--only init` (the lab is left in the last one)",
    )
    ap.add_argument("--trunks", type=int, default=1000)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--baseline",
        action="store_true",
        help="`noop`, `scale`, `rollback`: run each measured deploy again right after, step by step "
        "(-e siporch_quick=false, Ansible's own group_vars plugin), for a comparison under "
        "the same machine load",
    )
    ap.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="write per-task timing of every deploy to DIR (JSON lines) and print where "
        "the time went (stderr)",
    )
    args = ap.parse_args()
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        PROFILE["dir"] = args.profile
    if not (LAB_INVENTORY / "lab.json").is_file():
        raise SystemExit("the lab is not up: run `siporch lab up` first")
    which = set(args.only or ["noop", "scale", "drops"])  # `init` only when asked for
    # Hold the controller's deploy lock for the whole benchmark: no other deploy in between.
    sys.path.insert(0, str(REPO / "playbooks" / "files"))
    import deploy_lock

    lock = Path("/tmp/siporch-deploy.lock")
    token = deploy_lock.acquire(lock, 1800, os.getpid())
    os.environ["SIPORCH_DEPLOY_LOCK"] = token
    try:
        run_benchmarks(which, args)
    finally:
        deploy_lock.release(lock, token)
    return 0


def run_benchmarks(which: set[str], args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="siporch-deploy-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if which & {"noop", "scale", "pair", "rollback"}:
            print("| deploy | time | reloads / changes |\n|---|---|---|")
            if "noop" in which:
                print("\n".join(bench_noop(tmp, args.repeat, args.baseline)), flush=True)
            if "pair" in which:
                print("\n".join(bench_pair(tmp, args.repeat)), flush=True)
            if "rollback" in which:
                print("\n".join(bench_rollback(tmp, args.repeat, args.baseline)), flush=True)
            if "scale" in which:
                rows = bench_scale(tmp, args.trunks, args.repeat, args.baseline)
                print("\n".join(rows), flush=True)
            print()
        if "init" in which:
            from siporch.lab.spec import HOSTS

            print(
                f"| lab init | `lab up` ({len(HOSTS)} hosts) | first deploy | no-op deploy | "
                "one trunk change (peer added) | change back |"
            )
            print("|---|---|---|---|---|---|", flush=True)
            bench_init(tmp, args.init, args.repeat)
            print()
        if "load" in which:
            print(
                f"| deploy of a peer change under {args.cps} new calls/s | calls | failed at "
                "setup | dropped | deploy time | reloads |"
            )
            print("|---|---|---|---|---|---|", flush=True)
            bench_load(tmp, args.cps, args.hold)
            print()
        if "drops" in which:
            print(
                "| deploy of a peer change under load | calls | dropped | deploy time | reloads |"
            )
            print("|---|---|---|---|---|")
            print("\n".join(bench_drops(tmp, args.calls)), flush=True)
        # leave the lab on the lab's own model
        deploy(copy_inventory(tmp / "restore"))


if __name__ == "__main__":
    sys.exit(main())
