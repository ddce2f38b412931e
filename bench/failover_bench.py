"""Failover time on the lab: how long an outbound call from the PBX takes to reach ITSP A's
second peer when the first one fails.

    sudo python bench/failover_bench.py --calls 3 --json bench/results/failover.json

Asterisk (pbx-central) originates 3125550100 (route national -> itsp-a: itsp-a1 first,
then itsp-a2) while a SIPp UAS answers on itsp-a2 only. Cases:

* ``timeout``: nothing listens on itsp-a1 (ICMP port unreachable, which Kamailio does not
  act on: the INVITE times out there);
* ``partition``: ``siporch lab impair edge-central itsp-a1 --partition`` (packets dropped);
* ``send_error``: the edge's own sends to itsp-a1's SIP port fail at once (a DROP rule in
  edge-central's ``OUTPUT``, removed after the call: ``sendto()`` gets EPERM, as with no
  route);
* ``branch_partition``: a branch call, from the branch's PBX address (198.18.2.20, SIPp
  on pstn-gw's namespace) to edge-branch, with ``siporch lab impair edge-branch
  itsp-branch --partition``: the time until ITSP A (the central site's trunk, through
  edge-central) gets the INVITE.

Before each call itsp-a1 is set active on the edge (``dispatcher.set_state ap``), as it
is until OPTIONS probing notices a fault, so the call really tries it first.
The time is from the originate to the INVITE at itsp-a2 (SIPp's own time stamp), so it
includes Asterisk's and the edge's own handling (a call with itsp-a1 answering is measured
the same way as ``baseline``). Needs the lab up and deployed; holds the deploy lock.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "lab"))
sys.path.insert(0, str(REPO))

import callkit as ck  # noqa: E402

from siporch.lab import lab as lab_mod  # noqa: E402
from siporch.lab.inventory import read_lab_json  # noqa: E402

LAB_INV = REPO / "inventory" / "lab"
NUMBER = "3125550100"
A1_URI = "sip:198.18.1.10:5060;transport=udp"
ITSP_BRANCH_URI = "sip:198.18.1.50:5060;transport=udp"
BRANCH_PBX = "198.18.2.20"
SEND_BLOCK = "SIPORCH-FOBENCH"


class Handle:
    """The little of the lab the call kit needs."""

    def __init__(self) -> None:
        self.inventory = LAB_INV
        self.info = read_lab_json(LAB_INV / "lab.json")

    def netns(self, host: str) -> str:
        return str(self.info["hosts"][host]["netns"])

    def address(self, host: str) -> str:
        return str(self.info["hosts"][host]["address"])

    def run(self, host: str, cmd: str | list[str], timeout: float = 60.0) -> Any:
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        return lab_mod.run(host, argv, timeout=timeout)


def impair(*args: str) -> None:
    subprocess.run(["siporch", "lab", "impair", *args], capture_output=True, timeout=60)


def run_case(kit: ck.Lab, case: str, calls: int, wait_s: float) -> list[float | None]:
    out: list[float | None] = []
    for _ in range(calls):
        with ck.uas(kit, "itsp-a2") as a2:
            if case == "baseline":
                with ck.uas(kit, "itsp-a1") as a1:
                    out.append(_measure(kit, a1, wait_s))
                continue
            if case == "branch_partition":
                out.append(_branch(kit, a2))
                continue
            if case == "partition":
                impair("edge-central", "itsp-a1", "--partition")
            if case == "send_error":
                ck.block_send(kit, True, SEND_BLOCK)
            try:
                out.append(_measure(kit, a2, wait_s))
            finally:
                if case == "partition":
                    impair("edge-central", "itsp-a1", "--clear")
                if case == "send_error":
                    ck.block_send(kit, False, SEND_BLOCK)
    return out


def _branch(kit: ck.Lab, a2: ck.Uas) -> float | None:
    with ck.uas(kit, "itsp-a1") as a1, ck.uas(kit, "itsp-branch"):
        kit.set_active("edge-branch", 3, ITSP_BRANCH_URI)
        kit.set_active("edge-central", 1, A1_URI)
        impair("edge-branch", "itsp-branch", "--partition")
        try:
            start = time.time()
            result = ck.uac(
                kit, "pstn-gw", f"{kit.addr('edge-branch')}:5060", NUMBER, address=BRANCH_PBX,
                port=25080, duration_ms=1000, timeout_s=40,
            )  # fmt: skip
            times = a1.invite_times() + a2.invite_times()
        finally:
            impair("edge-branch", "itsp-branch", "--clear")
    if result.successful != 1 or not times:
        return None
    return round(min(times) - start, 3)


def _measure(kit: ck.Lab, uas: ck.Uas, wait_s: float) -> float | None:
    # itsp-a1 as the edge sees it before its probing notices the fault: active
    kit.set_active("edge-central", 1, A1_URI)
    start = time.time()
    ck.originate(kit, NUMBER, seconds=1)
    got = ck.wait_for(lambda: bool(uas.invites()), wait_s)
    times = uas.invite_times()
    # let the call end (BYE) before the UAS goes away
    ck.wait_for(lambda: any(m.startswith("BYE ") for m in uas.messages()), 10)
    return round(times[0] - start, 3) if got and times else None


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "| case | calls | answered by the expected peer | median s | max s |",
        "|---|---:|---:|---:|---:|",
    ]
    for case, values in r["cases"].items():
        ok = [v for v in values if v is not None]
        med = f"{statistics.median(ok):.2f}" if ok else "-"
        mx = f"{max(ok):.2f}" if ok else "-"
        lines.append(f"| {case} | {len(values)} | {len(ok)} | {med} | {mx} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=3, help="calls per case (1..20)")
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for a call")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("failover_bench needs root (the lab)", file=sys.stderr)
        return 2
    if not 1 <= args.calls <= 20:
        print("--calls must be 1..20", file=sys.stderr)
        return 2
    try:
        kit = ck.Lab(Handle())
    except (OSError, KeyError, ValueError) as exc:
        print(f"the lab is not up: {exc}", file=sys.stderr)
        return 2
    result: dict[str, Any] = {"number": NUMBER, "cases": {}}
    with ck.deploy_lock(wait=1800):
        ck.ensure_deployed(kit, LAB_INV, ("edge-central", "edge-branch", "pbx-central", "pbx-central-2"))
        impair("--clear")
        for case in ("baseline", "timeout", "partition", "send_error", "branch_partition"):
            result["cases"][case] = run_case(kit, case, args.calls, args.wait)
        impair("--clear")
    print(markdown(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if all(v is not None for vs in result["cases"].values() for v in vs) else 1


if __name__ == "__main__":
    sys.exit(main())
