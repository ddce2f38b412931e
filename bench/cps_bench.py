"""Calls per second through the rendered edge (1,000 trunks loaded) vs a minimal stateful
Kamailio relay, same machine, same run.

    sudo python bench/cps_bench.py --calls 3000 --json bench/results/cps.json

Everything runs in a network namespace of its own (``sipo-cps``, removed at the end) whose
only interface is ``lo``, holding lab addresses (198.18.0.0/15), so no packet leaves it: the rendered edge of ``bench/genmodel.py``'s 1,000-trunk model on 198.18.0.10
with its rtpengine, the minimal relay (``t_relay`` + ``record_route``) on 198.18.0.12, a
SIPp UAS as the PBX on 198.18.0.20 and the SIPp UAC (``siporch/sipp/uac_rr.xml``) on the
peer addresses of two generated trunks: trunk-00000 (media ``anchor``) and trunk-00001
(media ``bypass``). Both Kamailio instances get the same ``-m``/``-M`` and children.

Each measurement is closed-loop: SIPp keeps ``--concurrency`` calls in flight (``-l``) at
an unbounded rate and places ``--calls`` calls (INVITE, 200, ACK, BYE, 200, no hold
time); cps = successful calls / wall time. Rounds alternate the targets.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.genmodel import generate  # noqa: E402
from siporch.model.schema import Model  # noqa: E402
from siporch.render import kamailio as kamailio_render  # noqa: E402
from siporch.sipp import scenario  # noqa: E402

NS = "sipo-cps"
EDGE, RELAY, PBX = "198.18.0.10", "198.18.0.12", "198.18.0.20"
PEER_ANCHOR, PEER_BYPASS = "198.19.128.1", "198.19.128.3"  # trunk-00000, trunk-00001
DID_ANCHOR = "2000000000"  # -> +12000000000, did-00000-00 -> pbx-central
DID_BYPASS = "2000001000"  # -> +12000001000, did-00001-00 -> pbx-central
NG_PORT = 2223
SHM_MB, PKG_MB, CHILDREN = 1024, 32, 8
# rtpengine keeps a deleted call's ports for delete-delay seconds (default 30): at a few
# thousand calls a second that alone exhausts any port range, so the bench frees them at once
DELETE_DELAY = 0

RELAY_CFG = f"""#!KAMAILIO
# A minimal stateful relay: record-route, then t_relay to the UAS.
debug=1
log_stderror=yes
memdbg=5
memlog=5
children={CHILDREN}
listen=udp:{RELAY}:5060
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (has_totag()) {{
        if (loose_route()) {{ t_relay(); exit; }}
        if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
        sl_send_reply("404", "Not Here");
        exit;
    }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    record_route();
    $du = "sip:{PBX}:5060";
    t_relay();
}}
"""


def sh(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=check)


def ns(*argv: str, netns: str = NS) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv]


def netns_up() -> None:
    sh("ip", "netns", "del", NS, check=False)
    sh("ip", "netns", "add", NS)
    sh(*ns("ip", "link", "set", "lo", "up"))
    for a in (EDGE, RELAY, PBX, PEER_ANCHOR, PEER_BYPASS):
        sh(*ns("ip", "addr", "add", f"{a}/32", "dev", "lo"))


def netns_down() -> None:
    sh("ip", "netns", "del", NS, check=False)


def wait_port(proto: str, address: str, port: int, seconds: float = 30, netns: str = NS) -> bool:
    end = time.monotonic() + seconds
    flag = "-lun" if proto == "udp" else "-ltn"
    while time.monotonic() < end:
        out = sh(*ns("ss", flag, netns=netns), check=False).stdout
        if f"{address}:{port} " in out:
            return True
        time.sleep(0.3)
    return False


def start(argv: list[str], log: Path, netns: str = NS) -> subprocess.Popen[bytes]:
    with log.open("wb") as fh:
        return subprocess.Popen(
            ns(*argv, netns=netns), stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )


def start_rtpengine(base: Path, interface: str = EDGE, netns: str = NS) -> subprocess.Popen[bytes]:
    """rtpengine in userspace on ``interface``, its control (ng) on 127.0.0.1:NG_PORT."""
    return start(
        [
            "rtpengine", "--config-file=none", "--table=-1", f"--interface={interface}",
            f"--listen-ng=127.0.0.1:{NG_PORT}", "-f", "-E",
            "--port-min=20000", "--port-max=59999", "--log-level=3",
            f"--delete-delay={DELETE_DELAY}",
        ],
        base / "rtpengine.log",
        netns=netns,
    )  # fmt: skip


def start_pbx(base: Path, netns: str = NS) -> subprocess.Popen[bytes]:
    """The PBX: a SIPp UAS on PBX:5060 that answers every call."""
    return start(
        [
            shutil.which("sipp") or "sipp", "-sf", str(scenario("uas_answer")),
            "-i", PBX, "-p", "5060", "-t", "u1", "-nostdin", "-m", "10000000",
            "-max_socket", "1000", "-timeout", "3600s",
        ],
        base / "uas.log",
        netns=netns,
    )  # fmt: skip


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def write_edge(
    base: Path,
    trunks: int,
    records: bool = False,
    inner: Path | None = None,
    records_model: dict[str, Any] | None = None,
) -> Path:
    """The rendered edge under ``base``; call records (when ``records``: off by default, as
    this bench measured the edge before records existed; bench/records_bench.py compares
    the two) in ``base/records``, a fresh database. ``inner``: ``base`` as Kamailio sees it (inside a
    chroot); the returned path is the config as Kamailio sees it. ``records_model``: more of
    the model's ``records`` section (e.g. the PostgreSQL backend)."""
    inner = inner or base
    data = generate(trunks)
    data["records"] = {"enabled": records, **(records_model or {})}
    data["hosts"]["edge-central"]["kamailio"] = {
        "shm_mb": SHM_MB,
        "pkg_mb": PKG_MB,
        "children": CHILDREN,
    }
    data["hosts"]["edge-central"]["rtpengine"] = {"ng_port": NG_PORT}
    # the two calling trunks get no channel limit: this measures throughput, not capacity
    for name in ("trunk-00000", "trunk-00001"):
        data["trunks"][name].pop("max_channels", None)
    model = Model.model_validate(data)
    root = base / "current"
    files = kamailio_render.render(
        model,
        "edge-central",
        root=str(inner / "current"),
        run_dir=str(inner / "run"),
        records_dir=str(inner / "records"),
    )
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (base / "run").mkdir(exist_ok=True)
    # as a deploy ships it: the release id the records carry
    (root / "manifest.json").write_text('{\n  "host": "edge-central",\n  "id": "bench"\n}\n')
    if records and data["records"].get("backend", "sqlite") == "sqlite":
        import sqlite3

        db = base / "records" / "records.sqlite"
        db.parent.mkdir(exist_ok=True)
        db.unlink(missing_ok=True)
        con = sqlite3.connect(db)
        con.executescript(files["kamailio/records.sql"])
        con.close()
    return inner / "current" / "kamailio" / "kamailio.cfg"


def run_uac(
    src: str, target: str, number: str, calls: int, concurrency: int, netns: str = NS
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="siporch-cps-") as tmp:
        stat = Path(tmp) / "stat.csv"
        argv = ns(
            shutil.which("sipp") or "sipp",
            "-sf", str(scenario("uac_rr")), "-s", number,
            "-i", src, "-p", "0", "-t", "u1",
            "-r", "100000", "-l", str(concurrency), "-m", str(calls), "-d", "0",
            "-recv_timeout", "10000", "-timeout", "300s", "-timeout_error", "-nostdin",
            "-trace_stat", "-stf", str(stat), "-fd", "1", "-max_socket", "1000",
            "-trace_err", "-error_file", str(Path(tmp) / "err.log"),
            f"{target}:5060",
            netns=netns,
        )  # fmt: skip
        t0 = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=360, cwd=tmp)
        wall = time.monotonic() - t0
        ok, failed = read_stat(stat)
        err = Path(tmp) / "err.log"
        errors = sorted(
            {
                ln.split(": ", 1)[-1][:160]
                for ln in (err.read_text(errors="replace").splitlines() if err.exists() else [])
                if "Aborting" in ln or "timeout" in ln or "Dead call" in ln
            }
        )[:5]
    return {
        "errors": errors,
        "successful": ok,
        "failed": failed + max(0, calls - ok - failed),
        "seconds": round(wall, 3),
        "cps": round(ok / wall, 1) if wall > 0 else 0.0,
        "exit": proc.returncode,
    }


def read_stat(path: Path) -> tuple[int, int]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return 0, 0
    if len(lines) < 2:
        return 0, 0
    idx = {n: i for i, n in enumerate(lines[0].split(";"))}
    last = lines[-1].split(";")
    return int(last[idx["SuccessfulCall(C)"]]), int(last[idx["FailedCall(C)"]])


def bench(args: argparse.Namespace) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="siporch-cps-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        netns_up()
        t0 = time.monotonic()
        cfg = write_edge(base, args.trunks)
        render_s = time.monotonic() - t0
        (base / "relay.cfg").write_text(RELAY_CFG)
        procs.append(start_rtpengine(base))
        procs.append(
            start(
                ["kamailio", "-DD", "-E", "-f", str(cfg), "-m", str(SHM_MB), "-M", str(PKG_MB)],
                base / "edge.log",
            )
        )
        procs.append(
            start(
                ["kamailio", "-DD", "-E", "-f", str(base / "relay.cfg"),
                 "-m", str(SHM_MB), "-M", str(PKG_MB)],
                base / "relay.log",
            )
        )  # fmt: skip
        procs.append(start_pbx(base))
        for addr in (EDGE, RELAY, PBX):
            if not wait_port("udp", addr, 5060, 60):
                logs = {p.name: p.read_text()[-1500:] for p in base.glob("*.log")}
                raise RuntimeError(f"nothing listens on {addr}:5060: {logs}")
        time.sleep(2.0)  # dispatcher's first probe of the PBX
        targets = [
            ("minimal relay (t_relay + record_route)", PEER_BYPASS, RELAY, DID_BYPASS),
            (f"edge, {args.trunks} trunks, media bypass", PEER_BYPASS, EDGE, DID_BYPASS),
            (f"edge, {args.trunks} trunks, media anchor", PEER_ANCHOR, EDGE, DID_ANCHOR),
        ]
        # warm-up, not counted
        for _, src, dst, number in targets:
            run_uac(src, dst, number, min(200, args.calls), args.concurrency)
        runs: dict[str, list[dict[str, Any]]] = {t[0]: [] for t in targets}
        for _ in range(args.rounds):
            for label, src, dst, number in targets:
                runs[label].append(run_uac(src, dst, number, args.calls, args.concurrency))
        rows = []
        for label, results in runs.items():
            rows.append(
                {
                    "label": label,
                    "cps": statistics.median(r["cps"] for r in results),
                    "failed": sum(r["failed"] for r in results),
                    "runs": results,
                }
            )
        relay = rows[0]["cps"] or 1.0
        for row in rows:
            row["vs_relay"] = round(row["cps"] / relay, 3)
        return {
            "trunks": args.trunks,
            "calls": args.calls,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "render_seconds": round(render_s, 2),
            "kamailio": {"shm_mb": SHM_MB, "pkg_mb": PKG_MB, "children": CHILDREN},
            "rows": rows,
        }
    finally:
        for p in reversed(procs):
            stop(p)
        netns_down()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"logs kept in {base}", file=sys.stderr)


def markdown(r: dict[str, Any]) -> str:
    lines = [
        f"CPS, {r['calls']} calls per run, {r['concurrency']} in flight, "
        f"median of {r['rounds']} rounds; Kamailio -m {r['kamailio']['shm_mb']} "
        f"-M {r['kamailio']['pkg_mb']}, {r['kamailio']['children']} children",
        "",
        "| target | cps (median) | vs relay | failed calls | runs (cps) |",
        "|---|---:|---:|---:|---|",
    ]
    for row in r["rows"]:
        each = ", ".join(f"{x['cps']:g}" for x in row["runs"])
        lines.append(
            f"| {row['label']} | {row['cps']:g} | {row['vs_relay']:.2f}x | {row['failed']} "
            f"| {each} |"
        )
    return "\n".join(lines)


def missing_tool(*tools: str) -> str | None:
    """The first of ``tools`` not on PATH (said on stderr), or None."""
    for tool in tools:
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (scripts/setup installs it)", file=sys.stderr)
            return tool
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trunks", type=int, default=1000)
    p.add_argument("--calls", type=int, default=3000, help="calls per run (bounded)")
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path, help="write the results here (cps.json)")
    p.add_argument("--keep", action="store_true", help="keep the logs")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("cps_bench needs root (a network namespace)", file=sys.stderr)
        return 2
    if not 1 <= args.calls <= 100000 or not 1 <= args.concurrency <= 1000:
        print("--calls must be 1..100000 and --concurrency 1..1000", file=sys.stderr)
        return 2
    if missing_tool("kamailio", "rtpengine", "sipp"):
        return 2
    try:
        result = bench(args)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"cps_bench: {exc}", file=sys.stderr)
        return 1
    print(markdown(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if all(r["failed"] == 0 for r in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
