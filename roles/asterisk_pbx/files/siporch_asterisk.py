#!/usr/bin/env python3
"""Host-side helper for the asterisk_pbx role (standard library only).

Subcommands:
  check-tree RELEASE_DIR  parse every Asterisk config file of a release the way Asterisk's
                          config loader does (sections, templates, key=value, key=>value,
                          #include targets) and check what siporch relies on (asterisk.conf
                          directories, pjsip object types, dialplan contexts, manager user).
  ami-login               log in to AMI with the user and secret of the live manager.conf.
  registrations           every outbound registration is Registered (waits --wait seconds).
  calls                   print the number of active calls.
Asterisk itself is driven with `asterisk -C <asterisk.conf> -rx <command>`.
Exit status: 0 on success, 1 on a failed check.
"""

from __future__ import annotations

import argparse
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

LIVE_ROOT = "/etc/siporch/current"
PJSIP_TYPES = {
    "transport",
    "endpoint",
    "aor",
    "auth",
    "identify",
    "registration",
    "domain_alias",
    "acl",
    "contact",
    "system",
    "global",
    "phoneprov",
    "outbound-publish",
    "resource_list",
    "inbound-publication",
}


class Failure(Exception):
    """A check failed; the message says why."""


Section = tuple[str, dict[str, list[str]]]


def parse_conf(path: Path, root: Path, problems: list[str], depth: int = 0) -> list[Section]:
    """Asterisk config syntax: [name](options), key = value, key => value, #include."""
    sections: list[Section] = []
    if depth > 10:
        problems.append(f"{path.name}: #include nested too deep")
        return sections
    current: dict[str, list[str]] | None = None
    in_comment = False
    for number, raw in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        line = raw
        if in_comment:
            if "--;" not in line:
                continue
            line = line.split("--;", 1)[1]
            in_comment = False
        if ";--" in line:
            before, _, after = line.partition(";--")
            if "--;" not in after:
                in_comment = True
            line = before
        line = re.sub(r"(?<!\\);.*$", "", line).strip()
        if not line:
            continue
        where = f"{path.relative_to(root)}:{number}"
        if line.startswith("#"):
            m = re.fullmatch(r'#(include|tryinclude)\s+"?([^"]+?)"?', line)
            if m:
                target = Path(m.group(2))
                if not target.is_absolute():
                    target = path.parent / target
                target = Path(str(target).replace(LIVE_ROOT, str(root)))
                if target.is_file():
                    sections.extend(parse_conf(target, root, problems, depth + 1))
                elif m.group(1) == "include":
                    problems.append(f"{where}: #include {m.group(2)} does not exist")
                continue
            if line.startswith("#exec"):
                continue
            problems.append(f"{where}: unknown directive {line.split()[0]!r}")
            continue
        m = re.fullmatch(r"\[([^\]]+)\]\s*(\(([^)]*)\))?", line)
        if m:
            current = {}
            sections.append((m.group(1), current))
            continue
        m = re.fullmatch(r"([^=]+?)\s*=>?\s*(.*)", line)
        if m and current is not None:
            current.setdefault(m.group(1).strip(), []).append(m.group(2).strip())
            continue
        if m:
            problems.append(f"{where}: setting outside any [section]")
            continue
        problems.append(f"{where}: cannot parse {line!r}")
    return sections


def check_tree(release: Path) -> str:
    base = release / "asterisk"
    if not base.is_dir():
        raise Failure(f"{base} is missing")
    problems: list[str] = []
    parsed: dict[str, list[Section]] = {}
    for conf in sorted(base.glob("*.conf")):
        parsed[conf.name] = parse_conf(conf, release, problems)
    for required in ("asterisk.conf", "pjsip.conf", "extensions.conf", "manager.conf"):
        if required not in parsed:
            problems.append(f"{required} is missing")
    for name, options in parsed.get("asterisk.conf", []):
        if name == "directories":
            etc = (options.get("astetcdir") or [""])[-1]
            if etc and etc.rstrip("/") != f"{LIVE_ROOT}/asterisk":
                problems.append(f"asterisk.conf: astetcdir is {etc}, not {LIVE_ROOT}/asterisk")
    for name, options in parsed.get("pjsip.conf", []):
        kinds = options.get("type")
        if kinds and kinds[-1] not in PJSIP_TYPES:
            problems.append(f"pjsip.conf: [{name}] has unknown type {kinds[-1]!r}")
    contexts = [name for name, _ in parsed.get("extensions.conf", [])]
    if parsed.get("extensions.conf") is not None and not contexts:
        problems.append("extensions.conf: no context")
    users = [n for n, o in parsed.get("manager.conf", []) if n != "general" and "secret" in o]
    if "manager.conf" in parsed and not users:
        problems.append("manager.conf: no AMI user with a secret")
    if problems:
        raise Failure("; ".join(problems[:12]))
    total = sum(len(s) for s in parsed.values())
    return f"asterisk configs parse: {len(parsed)} file(s), {total} section(s)"


def _manager(conf: Path) -> tuple[str, int, str, str] | None:
    """(host, port, user, secret) of the AMI, or None when the release disables it."""
    problems: list[str] = []
    sections = parse_conf(conf, conf.parent.parent, problems)
    host, port, user, secret = "127.0.0.1", 5038, "", ""
    for name, options in sections:
        if name == "general" and (options.get("enabled") or ["no"])[-1].lower() not in (
            "yes",
            "true",
            "1",
        ):
            return None
        if name == "general":
            host = (options.get("bindaddr") or [host])[-1]
            port = int((options.get("port") or [str(port)])[-1])
        elif "secret" in options and not user:
            user, secret = name, options["secret"][-1]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    if not user:
        raise Failure(f"{conf}: no AMI user with a secret")
    return host, port, user, secret


def ami_login(conf: Path, timeout: float) -> str:
    manager = _manager(conf)
    if manager is None:
        return "AMI is disabled in this release"
    host, port, user, secret = manager
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=3) as sock:
                sock.settimeout(3)
                banner = sock.recv(256).decode(errors="replace").strip()
                sock.sendall(
                    f"Action: Login\r\nActionID: siporch-health\r\nUsername: {user}\r\n"
                    f"Secret: {secret}\r\nEvents: off\r\n\r\n".encode()
                )
                reply = b""
                while b"\r\n\r\n" not in reply:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    reply += chunk
                text = reply.decode(errors="replace")
                sock.sendall(b"Action: Logoff\r\n\r\n")
            if "Response: Success" in text:
                return f"AMI login as {user} on {host}:{port} ok ({banner})"
            last = text.strip().replace("\r\n", " | ")
            break
        except OSError as exc:
            last = str(exc)
            time.sleep(1)
    raise Failure(f"AMI login on {host}:{port} failed: {last}")


def _cli(asterisk_conf: Path, command: str) -> str:
    out = subprocess.run(
        ["asterisk", "-C", str(asterisk_conf), "-rx", command],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if out.returncode != 0:
        raise Failure(f"asterisk -rx {command!r}: {(out.stderr or out.stdout).strip()}")
    return out.stdout


def registrations(asterisk_conf: Path, wait: float) -> str:
    """Wait until every outbound registration is Registered. One that is not (rejected or
    failed before, waiting for its retry interval) is sent a REGISTER at once, so the wait
    measures the registrar's answer, not Asterisk's retry timer."""
    deadline = time.monotonic() + wait
    nudged = False
    while True:
        text = _cli(asterisk_conf, "pjsip show registrations")
        rows = [
            line.split()
            for line in text.splitlines()
            if re.match(r"^\s+\S+/\S+\s+\S+\s+\S+", line) and "<Registration" not in line
        ]
        states = {row[0]: row[2] for row in rows if len(row) >= 3}
        bad = {name: state for name, state in states.items() if state != "Registered"}
        if not bad:
            return f"{len(states)} outbound registration(s) Registered"
        if not nudged:
            nudged = True
            for name in sorted(bad):
                if bad[name] in ("Rejected", "Unregistered", "Stopped"):
                    _cli(asterisk_conf, f"pjsip send register {name.split('/')[0]}")
        if time.monotonic() > deadline:
            return_text = ", ".join(f"{n}: {s}" for n, s in sorted(bad.items()))
            raise Failure(f"registrations not Registered after {wait:.0f}s: {return_text}")
        time.sleep(1)


def calls(asterisk_conf: Path) -> int:
    text = _cli(asterisk_conf, "core show channels count")
    m = re.search(r"(\d+) active call", text)
    if not m:
        raise Failure(f"cannot read the active call count from {text.strip()!r}")
    return int(m.group(1))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="siporch_asterisk")
    parser.add_argument("--root", default=LIVE_ROOT)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("check-tree").add_argument("release")
    sub.add_parser("ami-login").add_argument("--timeout", type=float, default=20.0)
    sub.add_parser("registrations").add_argument("--wait", type=float, default=30.0)
    sub.add_parser("calls")
    args = parser.parse_args(argv)
    root = Path(args.root)
    try:
        if args.cmd == "check-tree":
            print(check_tree(Path(args.release)))
        elif args.cmd == "ami-login":
            print(ami_login(root / "asterisk" / "manager.conf", args.timeout))
        elif args.cmd == "registrations":
            print(registrations(root / "asterisk" / "asterisk.conf", args.wait))
        elif args.cmd == "calls":
            print(calls(root / "asterisk" / "asterisk.conf"))
    except Failure as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        print(f"{args.cmd}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
