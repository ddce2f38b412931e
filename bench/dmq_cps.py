"""Calls per second through an edge whose dialogs are replicated to its pair over Kamailio
DMQ, as a ratio to the same edge alone, same run.

    sudo python bench/dmq_cps.py --calls 2000 --rounds 4 --json bench/results/dmq_cps.json
    sudo python bench/dmq_cps.py --root /var/cache/siporch/rootfs/<key>   # Kamailio 6

The rendered edge of bench/cps_bench.py (``--trunks`` generated trunks) in a network
namespace of its own (``siporch-dmqcps``, only ``lo``, lab addresses: no packet leaves
it), a SIPp UAS as the PBX (198.18.0.20) and the SIPp UAC on the peer addresses of the
generated trunks. Two edges, rendered from the same model and run one after the other,
the order turned round every other round:

* **DMQ on**: the model's central site has a pair (``sites.central.edges``: edge-central
  198.18.0.10 and edge-central-2 198.18.0.12, ``active-active``); both edges run, each
  rendered for itself, and every dialog of edge-central (its creation, each state change,
  its end, with the trunk's dialog profile) is sent to edge-central-2 over DMQ. The run
  starts once each edge lists the other as an active DMQ node;
* **DMQ off**: the same model without the pair: edge-central alone.

Each measurement is closed-loop (``--concurrency`` calls in flight, ``--calls`` calls,
INVITE/200/ACK/BYE/200, no hold time), media ``bypass`` (trunk-00001: what DMQ costs,
undiluted by rtpengine) and ``anchor`` (trunk-00000). Reported per run: calls/s, the CPU
time of edge-central's Kamailio per call (from /proc; less moved by other load than
calls/s), and with DMQ the requests edge-central-2 received (KDMQ) per call.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import cps_bench as cb  # noqa: E402
from bench.genmodel import generate  # noqa: E402
from bench.records_bench import _group_cpu  # noqa: E402
from siporch.model.schema import Model  # noqa: E402
from siporch.render import kamailio as kamailio_render  # noqa: E402

NS = "siporch-dmqcps"  # its own namespace (not sipo-*: the lab owns those names)
EDGE, PEER_EDGE = "198.18.0.10", "198.18.0.12"
LABELS = ("DMQ on", "DMQ off")
MEDIA = {
    "bypass": (cb.PEER_BYPASS, cb.DID_BYPASS),
    "anchor": (cb.PEER_ANCHOR, cb.DID_ANCHOR),
}


def netns_up() -> None:
    if cb.sh("ip", "netns", "add", NS, check=False).returncode != 0:
        raise RuntimeError(
            f"network namespace {NS} exists: another run is in progress "
            f"(or a killed one left it: ip netns del {NS})"
        )
    cb.sh(*cb.ns("ip", "link", "set", "lo", "up", netns=NS))
    for a in (EDGE, PEER_EDGE, cb.PBX, cb.PEER_ANCHOR, cb.PEER_BYPASS):
        cb.sh(*cb.ns("ip", "addr", "add", f"{a}/32", "dev", "lo", netns=NS))


def netns_down() -> None:
    cb.sh("ip", "netns", "del", NS, check=False)


def model(trunks: int, pair: bool) -> Model:
    data = generate(trunks)
    data["records"] = {"enabled": False}
    hosts = data["hosts"]
    for name in ("trunk-00000", "trunk-00001"):
        data["trunks"][name].pop("max_channels", None)
    if pair:
        hosts["edge-central-2"] = {**hosts["edge-central"], "address": PEER_EDGE}
        data["sites"]["central"]["edges"] = {
            "hosts": ["edge-central", "edge-central-2"],
            "mode": "active-active",
        }
    for name in ("edge-central", "edge-central-2"):
        if name in hosts:
            hosts[name]["kamailio"] = {
                "shm_mb": cb.SHM_MB,
                "pkg_mb": cb.PKG_MB,
                "children": cb.CHILDREN,
            }
            hosts[name]["rtpengine"] = {"ng_port": cb.NG_PORT}
    return Model.model_validate(data)


def write_edge(m: Model, host: str, base: Path, inner: Path) -> Path:
    """``host``'s rendered edge under ``base`` (``inner``: the same as Kamailio sees it);
    returns the config as Kamailio sees it."""
    files = kamailio_render.render(
        m,
        host,
        root=str(inner / "current"),
        run_dir=str(inner / "run"),
        records_dir=str(inner / "records"),
    )
    for rel, text in files.items():
        path = base / "current" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (base / "run").mkdir(exist_ok=True)
    (base / "current" / "manifest.json").write_text(
        json.dumps({"host": host, "id": "bench"}, indent=2) + "\n"
    )
    return inner / "current" / "kamailio" / "kamailio.cfg"


def kamcmd(base: Path, *args: str) -> str:
    ctl = f"unix:{base / 'run' / 'kamailio_ctl'}"
    out = cb.sh(*cb.ns("kamcmd", "-s", ctl, *args, netns=NS), check=False, timeout=20)
    return out.stdout + out.stderr


def dmq_active(base: Path, other: str) -> bool:
    """The edge lists ``other`` as an active DMQ node."""
    text = re.sub(r"\s+", " ", kamcmd(base, "dmq.list_nodes"))
    return bool(re.search(rf"host: {re.escape(other)} [^}}]*status: active", text))


def requests_received(base: Path) -> int:
    m = re.search(r"core:rcv_requests\s*=\s*(\d+)", kamcmd(base, "stats.get_statistics", "all"))
    return int(m.group(1)) if m else -1


def _start_edge(prefix: list[str], cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    return cb.start(
        [*prefix, "kamailio", "-DD", "-E", "-f", str(cfg), "-m", str(cb.SHM_MB),
         "-M", str(cb.PKG_MB)],
        log,
        netns=NS,
    )  # fmt: skip


def _version(prefix: list[str]) -> str:
    out = subprocess.run([*prefix, "kamailio", "-v"], capture_output=True, text=True, timeout=30)
    first = (out.stdout or out.stderr).splitlines()
    return first[0].strip() if first else "?"


def measure(args: argparse.Namespace) -> dict[str, Any]:
    if args.root:
        chroot = args.root.resolve()
        base = Path(tempfile.mkdtemp(prefix="dmq-", dir=chroot / "tmp"))
        inner_base = Path("/") / base.relative_to(chroot)
        prefix = ["chroot", str(chroot)]
    else:
        base = Path(tempfile.mkdtemp(prefix="siporch-dmqcps-"))
        inner_base, prefix = base, []
    models = {"DMQ on": model(args.trunks, True), "DMQ off": model(args.trunks, False)}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        label: {media: [] for media in args.media} for label in LABELS
    }
    procs: list[subprocess.Popen[bytes]] = []
    netns_up()  # before the try: a namespace of another run is not this one's to remove
    try:
        procs.append(cb.start_rtpengine(base, EDGE, netns=NS))
        procs.append(cb.start_pbx(base, netns=NS))
        for r in range(args.rounds):
            order = LABELS if r % 2 == 0 else LABELS[::-1]
            for label in order:
                m = models[label]
                sub = base / ("on" if label == "DMQ on" else "off")
                shutil.rmtree(sub, ignore_errors=True)
                # short directories: the control socket's path must fit in a sockaddr_un
                edges = {"edge-central": sub / "1"}
                if label == "DMQ on":
                    edges["edge-central-2"] = sub / "2"
                started: dict[str, subprocess.Popen[bytes]] = {}
                try:
                    for host, path in edges.items():
                        path.mkdir(parents=True)
                        cfg = write_edge(m, host, path, inner_base / path.relative_to(base))
                        started[host] = _start_edge(prefix, cfg, path / "edge.log")
                    for host, path in edges.items():
                        address = str(m.hosts[host].address)
                        if not cb.wait_port("udp", address, 5060, 60, netns=NS):
                            raise RuntimeError(
                                f"{host} did not start: " + (path / "edge.log").read_text()[-1500:]
                            )
                    if label == "DMQ on":
                        end = time.monotonic() + 60
                        while not (
                            dmq_active(edges["edge-central"], PEER_EDGE)
                            and dmq_active(edges["edge-central-2"], EDGE)
                        ):
                            if time.monotonic() > end:
                                raise RuntimeError(
                                    "the edges did not join on DMQ: "
                                    + " | ".join(
                                        re.sub(r"\s+", " ", kamcmd(p, "dmq.list_nodes"))
                                        for p in edges.values()
                                    )
                                )
                            time.sleep(0.5)
                    time.sleep(2.0)  # dispatcher's first probe of the PBX
                    for media in args.media:
                        src, number = MEDIA[media]
                        cb.run_uac(src, EDGE, number, 200, args.concurrency, netns=NS)  # warm-up
                        peer0 = (
                            requests_received(edges["edge-central-2"])
                            if "edge-central-2" in edges
                            else 0
                        )
                        cpu0 = _group_cpu(started["edge-central"].pid)
                        res = cb.run_uac(src, EDGE, number, args.calls, args.concurrency, netns=NS)
                        res["cpu_ms_per_call"] = round(
                            (_group_cpu(started["edge-central"].pid) - cpu0)
                            * 1000
                            / max(1, res["successful"]),
                            4,
                        )
                        if "edge-central-2" in edges:
                            got = requests_received(edges["edge-central-2"]) - peer0
                            res["peer_requests_per_call"] = round(
                                got / max(1, res["successful"]), 2
                            )
                        runs[label][media].append(res)
                finally:
                    for p in started.values():
                        cb.stop(p)
        out: dict[str, Any] = {
            "trunks": args.trunks,
            "calls": args.calls,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "kamailio": {
                "shm_mb": cb.SHM_MB,
                "pkg_mb": cb.PKG_MB,
                "children": cb.CHILDREN,
                "version": _version(prefix),
            },
            "media": {},
        }
        for media in args.media:
            on, off = runs["DMQ on"][media], runs["DMQ off"][media]
            row: dict[str, Any] = {}
            for label, results in (("DMQ on", on), ("DMQ off", off)):
                row[label] = {
                    "cps": statistics.median(x["cps"] for x in results),
                    "cpu_ms_per_call": statistics.median(x["cpu_ms_per_call"] for x in results),
                    "failed": sum(x["failed"] for x in results),
                    "runs": results,
                }
            row["peer_requests_per_call"] = statistics.median(
                x.get("peer_requests_per_call", 0) for x in on
            )
            # each round's on/off ran back to back: the median of the per-round ratios
            row["ratio_paired_median"] = round(
                statistics.median(
                    a["cps"] / (b["cps"] or 1.0) for a, b in zip(on, off, strict=True)
                ),
                3,
            )
            row["ratio_of_medians"] = round(
                row["DMQ on"]["cps"] / (row["DMQ off"]["cps"] or 1.0), 3
            )
            row["ratio_cpu"] = round(
                row["DMQ off"]["cpu_ms_per_call"] / (row["DMQ on"]["cpu_ms_per_call"] or 1.0), 3
            )
            out["media"][media] = row
        return out
    finally:
        for p in reversed(procs):
            cb.stop(p)
        netns_down()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"logs kept in {base}", file=sys.stderr)


def markdown(r: dict[str, Any]) -> str:
    k = r["kamailio"]
    lines = [
        f"{k['version']}; {r['calls']} calls per run, {r['concurrency']} in flight, "
        f"{r['rounds']} rounds (DMQ on / off alternating); -m {k['shm_mb']} -M {k['pkg_mb']}, "
        f"{k['children']} children",
        "",
        "| media | DMQ on: cps | DMQ off: cps | on / off (paired median) | on / off "
        "(medians) | CPU ms per call on / off | KDMQ requests per call | failed | runs on "
        "/ off (cps) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for media, row in r["media"].items():
        on, off = row["DMQ on"], row["DMQ off"]
        each = (
            ", ".join(f"{x['cps']:g}" for x in on["runs"])
            + " / "
            + ", ".join(f"{x['cps']:g}" for x in off["runs"])
        )
        lines.append(
            f"| {media} | {on['cps']:g} | {off['cps']:g} | {row['ratio_paired_median']:.2f}x "
            f"| {row['ratio_of_medians']:.2f}x | {on['cpu_ms_per_call']:g} / "
            f"{off['cpu_ms_per_call']:g} | {row['peer_requests_per_call']:g} "
            f"| {on['failed'] + off['failed']} | {each} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trunks", type=int, default=1000)
    p.add_argument("--calls", type=int, default=2000, help="calls per run (bounded)")
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument(
        "--media", action="append", choices=sorted(MEDIA), help="bypass and anchor by default"
    )
    p.add_argument(
        "--root",
        type=Path,
        help="run Kamailio from this root file system with chroot (e.g. the lab's, "
        "/var/cache/siporch/rootfs/<key>, for Kamailio 6)",
    )
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--keep", action="store_true", help="keep the logs")
    args = p.parse_args(argv)
    args.media = args.media or ["bypass", "anchor"]
    if os.geteuid() != 0:
        print("dmq_cps needs root (a network namespace)", file=sys.stderr)
        return 2
    if not 1 <= args.calls <= 100000 or not 1 <= args.concurrency <= 1000:
        print("--calls must be 1..100000 and --concurrency 1..1000", file=sys.stderr)
        return 2
    if not 1 <= args.rounds <= 20:
        print("--rounds must be 1..20", file=sys.stderr)
        return 2
    if args.root is not None and not (args.root / "usr" / "sbin" / "kamailio").exists():
        print(f"--root {args.root}: no usr/sbin/kamailio in it", file=sys.stderr)
        return 2
    if cb.missing_tool(
        "kamailio" if args.root is None else "chroot", "kamcmd", "rtpengine", "sipp"
    ):
        return 2
    try:
        result = measure(args)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"dmq_cps: {exc}", file=sys.stderr)
        return 1
    print(markdown(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    failed = sum(row[x]["failed"] for row in result["media"].values() for x in LABELS)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
