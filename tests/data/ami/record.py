"""Record the AMI events of a live Asterisk into a stream file for the replay tests.

    python tests/data/ami/record.py --host 127.0.0.1 --user siporch --secret S \
        --seconds 20 --out tests/data/ami/NAME.json

Stops after --seconds, then appends the answers to the status actions (Status,
PJSIPShowContacts, PJSIPShowRegistrationsOutbound, PJSIPShowEndpoints).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from siporch.monitor.replay import record, write_stream
from siporch.monitor.topology import PbxTarget


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5038)
    parser.add_argument("--user", default="siporch")
    parser.add_argument("--secret", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    target = PbxTarget("pbx", "site", args.host, args.port, args.user, args.secret)
    stream = asyncio.run(record(target, seconds=args.seconds))
    write_stream(stream, args.out)
    print(f"{len(stream)} events -> {args.out}")


if __name__ == "__main__":
    main()
