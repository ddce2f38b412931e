"""``python -m siporch.torture``: send torture messages, or run them on the lab and report.

python -m siporch.torture send --edge ADDR --src ADDR [--transport udp|tcp] [CASE ...]
python -m siporch.torture --report [-i inventory/lab] [--write docs/robustness.md]
python -m siporch.torture --readme > tests/data/rfc4475/README.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from siporch.errors import SiporchError

START = "<!-- torture-table:start -->"
END = "<!-- torture-table:end -->"


def _send(args: argparse.Namespace) -> int:
    from siporch.torture import load_cases, send_all

    cases = load_cases(Path(args.dir), args.cases or None)
    outcomes = send_all(
        cases, edge=args.edge, src=args.src, transport=args.transport, timeout=args.timeout
    )
    print(json.dumps([o.to_dict() for o in outcomes], indent=1))
    return 0


def _report(args: argparse.Namespace) -> int:
    from siporch.torture.lab import campaign, kamailio_pid, lab_info, markdown

    info = lab_info(Path(args.inventory))
    before = kamailio_pid(info)
    if before is None:
        print("siporch: Kamailio does not run on edge-central: deploy first", file=sys.stderr)
        return 2
    runs = campaign(Path(args.inventory), args.only or None, timeout=args.timeout)
    after = kamailio_pid(info)
    table = markdown(runs)
    survived = (
        f"Kamailio on edge-central: pid {before} before, "
        f"{after if after is not None else 'not running'} after."
    )
    text = table + "\n" + survived + "\n"
    if args.write:
        path = Path(args.write)
        doc = path.read_text()
        if START not in doc or END not in doc:
            print(f"siporch: {path} has no {START} ... {END} block", file=sys.stderr)
            return 2
        head, _, rest = doc.partition(START)
        _, _, tail = rest.partition(END)
        path.write_text(f"{head}{START}\n{text}{END}{tail}")
    else:
        print(text, end="")
    return 0 if before == after else 1


def _readme() -> int:
    from siporch.torture import CATALOG, TCP_CASES

    print(
        "# Torture messages for the edge\n\n"
        "One SIP message per file, modelled on RFC 4475 (SIP Torture Test Messages) and\n"
        "written for siporch: the names follow the RFC's test names, the content is our own\n"
        "and addressed to the lab edge. Files use LF line ends; the sender turns them into\n"
        "CRLF and fills in the placeholders:\n\n"
        "| placeholder | replaced by |\n|---|---|\n"
        "| `{edge}` | the edge's address |\n"
        "| `{src}`, `{sport}` | the sender's address and port |\n"
        "| `{transport}` | `UDP` or `TCP` (in Via) |\n"
        "| `{id}` | a token unique per send (branch, Call-ID) |\n"
        "| `{clen}` | the length of the body as sent (messages that test Content-Length "
        "carry a literal value instead) |\n\n"
        "Every request carries `torture` in its Request-URI, To or From user, or its "
        "Call-ID, so a message that reached the PBX would be recognised. No user part is a "
        "DID of the example model. Host names other than the lab's are under `.invalid`; "
        "`bcast.sip` uses the lab's broadcast address 198.19.255.255 where the RFC uses "
        "255.255.255.255.\n\n"
        "Send them with `python -m siporch.torture send --edge ADDR --src ADDR "
        "[--transport tcp] [CASE ...]` (inside a lab host's namespace), or run the lab "
        "campaign with `python -m siporch.torture --report` (see docs/robustness.md).\n\n"
        "| file | RFC 4475 section | RFC title | what it exercises | TCP too |\n"
        "|---|---|---|---|---|"
    )
    for name, info in CATALOG.items():
        section = info.section or "(none)"
        tcp = "yes" if name in TCP_CASES else ""
        print(f"| `{name}.sip` | {section} | {info.title} | {info.what} | {tcp} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    from siporch.torture import CASES_DIR

    parser = argparse.ArgumentParser(prog="python -m siporch.torture")
    parser.add_argument("--report", action="store_true", help="run on the lab, print a table")
    parser.add_argument("--readme", action="store_true", help="print the cases' README")
    parser.add_argument("-i", "--inventory", default="inventory/lab")
    parser.add_argument("--write", metavar="FILE", help="with --report: update FILE's table")
    parser.add_argument("--timeout", type=float, default=1.0, help="seconds per message")
    sub = parser.add_subparsers(dest="command")
    s = sub.add_parser("send", help="send cases from this network namespace")
    s.add_argument("--edge", required=True)
    s.add_argument("--src", required=True)
    s.add_argument("--transport", choices=("udp", "tcp"), default="udp")
    s.add_argument("--timeout", type=float, default=1.0)
    s.add_argument("--dir", default=str(CASES_DIR))
    s.add_argument("cases", nargs="*")
    parser.add_argument(
        "--case", dest="only", action="append", default=[], help="with --report: only this case"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "send":
            return _send(args)
        if args.report:
            return _report(args)
        if args.readme:
            return _readme()
    except SiporchError as exc:
        print(f"siporch: {exc}", file=sys.stderr)
        return exc.exit_code
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
