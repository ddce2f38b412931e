"""Outbound calls per second through the rendered edge with 1,000 trunks whose peers are DNS
names (RFC 3263: SRV, then A, answered by a lab resolver) vs the same edge with IP peers,
same run; then the time from a DNS record change to the first call on the new target.

    sudo python bench/cps_fqdn_bench.py --calls 3000 --json bench/results/cps_fqdn.json

Everything runs in a network namespace of its own (``sipo-cpsdns``, removed at the end)
whose only interface is ``lo``, holding lab addresses (198.18.0.0/15), so no packet leaves
it. In it:

* dnsmasq on 198.18.0.53 answers ``itsp.example`` only (no upstream): per trunk ``tNNNNN``,
  SRV ``_sip._udp.tNNNNN.itsp.example`` -> ``sbc1.tNNNNN.itsp.example:5060`` (priority 10)
  and ``sbc2...`` (priority 20), and A records for both. ``ip netns exec`` binds
  ``/etc/netns/sipo-cpsdns/resolv.conf`` over ``/etc/resolv.conf`` for the processes of the
  namespace only, so the edge resolves through it; the machine's resolver is never touched.
* two rendered edges of ``bench/genmodel.py``'s model (same trunks, routes, Kamailio
  sizing): 198.18.0.10 with IP peers, 198.18.0.13 with DNS-name peers, each with its rtpengine;
* a SIPp UAS playing the first SBC of trunk-00000 (198.19.128.1), and the SIPp UAC
  (``siporch/sipp/uac_rr.xml``) on the PBX's address, dialling a number of route
  ``prefix-00000`` (trunk-00000 first).

Each measurement is closed-loop (``--concurrency`` calls in flight, ``--calls`` calls,
no hold time); rounds alternate the two edges; cps = successful calls / wall time; the
ratio is DNS / IP. Then the A record of ``sbc1.t00000.itsp.example`` is pointed at a second
UAS (198.19.128.9) and dnsmasq re-reads its hosts file (SIGHUP): one call every 0.2 s goes
through the DNS edge until one is answered by the new UAS; that time is reported.
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

from bench import cps_bench  # noqa: E402
from bench.genmodel import generate, trunk_name  # noqa: E402
from siporch.model.schema import Model  # noqa: E402
from siporch.render import kamailio as kamailio_render  # noqa: E402
from siporch.sipp import scenario  # noqa: E402

NS = "sipo-cpsdns"
EDGE_IP, EDGE_DNS, PBX, DNS = "198.18.0.10", "198.18.0.13", "198.18.0.20", "198.18.0.53"
PEER, PEER_NEW = "198.19.128.1", "198.19.128.9"
NUMBER = "+440000012345"  # route prefix-00000: trunk-00000, then trunk-00001
ZONE = "itsp.example"
NG_IP, NG_DNS = 2223, 2224
TTL = 2  # seconds: what dnsmasq gives out, so a change is seen soon after


def _domain(i: int) -> str:
    return f"t{i:05d}.{ZONE}"


def dns_files(base: Path, model: dict[str, Any]) -> tuple[Path, Path]:
    """dnsmasq's config and its hosts file (A records, re-read on SIGHUP) for the model's
    IP peers, each trunk's peers becoming sbc1/sbc2 of its own domain."""
    conf, hosts = base / "dnsmasq.conf", base / "dns.hosts"
    lines = [
        "no-resolv", "no-hosts", "no-poll", f"listen-address={DNS}", "bind-interfaces",
        "user=root",  # it reads its files from a private temporary directory
        "port=53", f"local-ttl={TTL}", f"auth-ttl={TTL}", f"addn-hosts={hosts}",
        f"local=/{ZONE}/", "cache-size=10000", "log-facility=-",
    ]  # fmt: skip
    host_lines = []
    for i, trunk in enumerate(model["trunks"].values()):
        for k, peer in enumerate(trunk["peers"], start=1):
            target = f"sbc{k}.{_domain(i)}"
            lines.append(f"srv-host=_sip._udp.{_domain(i)},{target},5060,{10 * k},10")
            host_lines.append(f"{peer['address']} {target}")
    conf.write_text("\n".join(lines) + "\n")
    hosts.write_text("\n".join(host_lines) + "\n")
    return conf, hosts


def dns_model(data: dict[str, Any]) -> dict[str, Any]:
    """The same model with each trunk's two peers replaced by one DNS name (SRV)."""
    out = json.loads(json.dumps(data))
    for i, trunk in enumerate(out["trunks"].values()):
        trunk["peers"] = [{"address": _domain(i), "transport": "udp"}]
    return out


def write_edge(base: Path, data: dict[str, Any], address: str, ng_port: int) -> Path:
    data = json.loads(json.dumps(data))
    edge = data["hosts"]["edge-central"]
    edge["address"] = address
    edge["kamailio"] = {
        "shm_mb": cps_bench.SHM_MB,
        "pkg_mb": cps_bench.PKG_MB,
        "children": cps_bench.CHILDREN,
    }
    edge["rtpengine"] = {"ng_port": ng_port}
    for name in (trunk_name(0), trunk_name(1)):
        data["trunks"][name].pop("max_channels", None)
    # no call records: this compares name resolution, as measured before records existed
    data["records"] = {"enabled": False}
    model = Model.model_validate(data)
    root = base / "current"
    run = base / "run"
    files = kamailio_render.render(model, "edge-central", root=str(root), run_dir=str(run))
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    run.mkdir(exist_ok=True)
    return root / "kamailio" / "kamailio.cfg"


def ns(*argv: str) -> list[str]:
    return cps_bench.ns(*argv, netns=NS)


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return cps_bench.sh(*argv, check=check)


def start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    return cps_bench.start(argv, log, netns=NS)


def wait_udp(address: str, port: int, seconds: float = 60) -> bool:
    return cps_bench.wait_port("udp", address, port, seconds, netns=NS)


def uas(address: str, log: Path, stat: Path | None = None) -> subprocess.Popen[bytes]:
    argv = [
        shutil.which("sipp") or "sipp", "-sf", str(scenario("uas_answer")),
        "-i", address, "-p", "5060", "-t", "u1", "-nostdin", "-m", "10000000",
        "-max_socket", "1000", "-timeout", "3600s",
    ]  # fmt: skip
    if stat is not None:
        argv += ["-trace_stat", "-stf", str(stat), "-fd", "1"]
    return start(argv, log)


def answered(stat: Path) -> int:
    """Calls the UAS answered so far (its statistics file, written each second)."""
    ok, _failed = cps_bench.read_stat(stat)
    return ok


def run_uac(edge: str, calls: int, concurrency: int) -> dict[str, Any]:
    return cps_bench.run_uac(PBX, edge, NUMBER, calls, concurrency, netns=NS)


def dns_change(base: Path, hosts: Path, dnsmasq: subprocess.Popen[bytes]) -> dict[str, Any]:
    """Point sbc1 of trunk-00000 at the new UAS; time until a call is answered there."""
    stat = base / "uas-new-stat.csv"
    new = uas(PEER_NEW, base / "uas-new.log", stat)
    try:
        if not wait_udp(PEER_NEW, 5060):
            raise RuntimeError("the second UAS did not start")
        text = hosts.read_text().replace(
            f"{PEER} sbc1.{_domain(0)}", f"{PEER_NEW} sbc1.{_domain(0)}"
        )
        hosts.write_text(text)
        t0 = time.monotonic()
        os.kill(dnsmasq.pid, signal.SIGHUP)
        calls = 0
        while time.monotonic() - t0 < 120:
            run_uac(EDGE_DNS, 1, 1)
            calls += 1
            if answered(stat) > 0:
                return {"seconds": round(time.monotonic() - t0, 2), "calls": calls, "ttl": TTL}
            time.sleep(0.2)
        raise RuntimeError("no call reached the new target within 120 s of the DNS change")
    finally:
        cps_bench.stop(new)


def bench(args: argparse.Namespace) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="siporch-cpsdns-"))
    netns_etc = Path("/etc/netns") / NS
    procs: list[subprocess.Popen[bytes]] = []
    try:
        sh("ip", "netns", "del", NS, check=False)
        sh("ip", "netns", "add", NS)
        sh(*ns("ip", "link", "set", "lo", "up"))
        for a in (EDGE_IP, EDGE_DNS, PBX, DNS, PEER, PEER_NEW):
            sh(*ns("ip", "addr", "add", f"{a}/32", "dev", "lo"))
        netns_etc.mkdir(parents=True, exist_ok=True)
        (netns_etc / "resolv.conf").write_text(f"nameserver {DNS}\n")
        ip_data = generate(args.trunks)
        conf, hosts = dns_files(base, ip_data)
        dnsmasq = start(["dnsmasq", "-k", f"--conf-file={conf}"], base / "dnsmasq.log")
        procs.append(dnsmasq)
        edges = {}
        for label, data, address, ng in (
            ("ip", ip_data, EDGE_IP, NG_IP),
            ("dns", dns_model(ip_data), EDGE_DNS, NG_DNS),
        ):
            sub = base / label
            sub.mkdir()
            cfg = write_edge(sub, data, address, ng)
            procs.append(
                start(
                    [
                        "rtpengine", "--config-file=none", "--table=-1",
                        f"--interface={address}", f"--listen-ng=127.0.0.1:{ng}", "-f", "-E",
                        f"--port-min={20000 if label == 'ip' else 40000}",
                        f"--port-max={39999 if label == 'ip' else 59999}",
                        "--log-level=3", f"--delete-delay={cps_bench.DELETE_DELAY}",
                    ],
                    sub / "rtpengine.log",
                )
            )  # fmt: skip
            procs.append(
                start(
                    ["kamailio", "-DD", "-E", "-f", str(cfg),
                     "-m", str(cps_bench.SHM_MB), "-M", str(cps_bench.PKG_MB)],
                    sub / "edge.log",
                )
            )  # fmt: skip
            edges[label] = address
        procs.append(uas(PEER, base / "uas.log"))
        for addr in (EDGE_IP, EDGE_DNS, PEER):
            if not wait_udp(addr, 5060):
                logs = {
                    str(p.relative_to(base)): p.read_text()[-1500:] for p in base.rglob("*.log")
                }
                raise RuntimeError(f"nothing listens on {addr}:5060: {logs}")
        if not wait_udp(DNS, 53):
            raise RuntimeError(
                "dnsmasq did not start: " + (base / "dnsmasq.log").read_text()[-1500:]
            )
        labels = {"ip": f"edge, {args.trunks} trunks, IP peers",
                  "dns": f"edge, {args.trunks} trunks, DNS-name peers (SRV + A)"}  # fmt: skip
        for label in edges:  # warm-up, not counted (the DNS edge fills its cache here)
            warm = run_uac(edges[label], min(200, args.calls), args.concurrency)
            if warm["successful"] == 0:
                raise RuntimeError(f"no call completed through the {label} edge: {warm}")
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in edges}
        for _ in range(args.rounds):
            for label, address in edges.items():
                runs[label].append(run_uac(address, args.calls, args.concurrency))
        rows = [
            {
                "label": labels[k],
                "cps": statistics.median(r["cps"] for r in v),
                "failed": sum(r["failed"] for r in v),
                "runs": v,
            }
            for k, v in runs.items()
        ]
        ratio = round(rows[1]["cps"] / (rows[0]["cps"] or 1.0), 3)
        change = dns_change(base, hosts, dnsmasq)
        return {
            "trunks": args.trunks,
            "calls": args.calls,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "rows": rows,
            "dns_vs_ip": ratio,
            "dns_change": change,
        }
    finally:
        for p in reversed(procs):
            cps_bench.stop(p)
        sh("ip", "netns", "del", NS, check=False)
        shutil.rmtree(netns_etc, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"logs kept in {base}", file=sys.stderr)


def markdown(r: dict[str, Any]) -> str:
    lines = [
        f"Outbound CPS, {r['calls']} calls per run, {r['concurrency']} in flight, median of "
        f"{r['rounds']} rounds",
        "",
        "| target | cps (median) | failed calls | runs (cps) |",
        "|---|---:|---:|---|",
    ]
    for row in r["rows"]:
        each = ", ".join(f"{x['cps']:g}" for x in row["runs"])
        lines.append(f"| {row['label']} | {row['cps']:g} | {row['failed']} | {each} |")
    c = r["dns_change"]
    lines += [
        "",
        f"DNS names / IP peers: **{r['dns_vs_ip']:.2f}x**. A record changed (TTL {c['ttl']} s): "
        f"first call on the new target after **{c['seconds']:g} s** ({c['calls']} calls).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trunks", type=int, default=1000)
    p.add_argument("--calls", type=int, default=3000, help="calls per run (bounded)")
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--keep", action="store_true", help="keep the logs")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("cps_fqdn_bench needs root (a network namespace)", file=sys.stderr)
        return 2
    if not 2 <= args.trunks <= 10000 or not 1 <= args.calls <= 100000:
        print("--trunks must be 2..10000 and --calls 1..100000", file=sys.stderr)
        return 2
    if not 1 <= args.concurrency <= 1000 or not 1 <= args.rounds <= 20:
        print("--concurrency must be 1..1000 and --rounds 1..20", file=sys.stderr)
        return 2
    if cps_bench.missing_tool("kamailio", "rtpengine", "sipp", "dnsmasq"):
        return 2
    try:
        result = bench(args)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"cps_fqdn_bench: {exc}", file=sys.stderr)
        return 1
    print(markdown(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if all(r["failed"] == 0 for r in result["rows"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
