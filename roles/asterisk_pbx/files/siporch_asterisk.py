#!/usr/bin/env python3
"""Host-side helper for the asterisk_pbx role (standard library only).

Subcommands:
  check-tree RELEASE_DIR [--etc /etc/asterisk]
                          parse siporch's Asterisk files of a release, and with --etc the
                          site's configs that include them (as they will read once the
                          release is current), the way Asterisk's config loader does
                          (sections, templates, key=value, key=>value, #include and
                          #tryinclude targets, globs) and check what siporch relies on: the
                          include lines, pjsip object types, one global and one system
                          object, no object or context of siporch also defined by the site,
                          the DID destination contexts in the site's dialplan, the manager
                          user, the [general] sections siporch's files add to.
  ami-login               log in to AMI with the user and secret of the live manager.conf.
  registrations           every outbound registration is Registered (waits --wait seconds).
  calls                   print the number of active calls.
  cdr-init [RELEASE_DIR] [--stamp FILE]
                          prepare siporch's CDR database (cdr_sqlite3_custom_siporch.conf of
                          the release): its table as Asterisk would create it, indexes on
                          the Call-ID and the start time, and a trigger that deletes the
                          CDRs older than the model's retention at each insert; FILE then
                          says which mapping was applied (its sha256).
Asterisk itself is driven with `asterisk -C <asterisk.conf> -rx <command>`.
Exit status: 0 on success, 1 on a failed check.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # siporch_hostlib beside it
from siporch_hostlib import Failure, Helper, run, schema_stamp_clear, schema_stamp_write

LIVE_ROOT = "/etc/siporch/current"
SITE_ETC = "/etc/asterisk"
ASTERISK_CONF = f"{SITE_ETC}/asterisk.conf"
#: site file -> siporch's file it includes (from the current release)
SITE_INCLUDES = {
    "pjsip.conf": "pjsip_siporch.conf",
    "extensions.conf": "extensions_siporch.conf",
    "manager.conf": "manager_siporch.conf",
    "cdr_sqlite3_custom.conf": "cdr_sqlite3_custom_siporch.conf",
}
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


Section = tuple[str, dict[str, list[str]]]


def parse_conf(
    path: Path,
    root: Path,
    problems: list[str],
    depth: int = 0,
    etc: Path | None = None,
    included: list[Path] | None = None,
) -> list[Section]:
    """Asterisk config syntax: [name](options), key = value, key => value, #include.

    A relative include is read from ``etc`` (Asterisk's astetcdir), else from the including
    file's directory; ``/etc/siporch/current`` in an include is read from ``root`` (the
    release being checked). The files read through includes are appended to ``included``.
    """
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
        where = f"{path.relative_to(root) if path.is_relative_to(root) else path}:{number}"
        if line.startswith("#"):
            m = re.fullmatch(r'#(include|tryinclude)\s+"?([^"]+?)"?', line)
            if m:
                target = Path(m.group(2))
                if not target.is_absolute():
                    target = (etc or path.parent) / target
                target = Path(str(target).replace(LIVE_ROOT, str(root)))
                if "*" in target.name or "?" in target.name:
                    targets = sorted(p for p in target.parent.glob(target.name) if p.is_file())
                else:
                    targets = [target] if target.is_file() else []
                for t in targets:
                    if included is not None:
                        included.append(t)
                    sections.extend(parse_conf(t, root, problems, depth + 1, etc, included))
                if not targets and m.group(1) == "include" and "*" not in target.name:
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


def _kinds(sections: list[Section]) -> list[tuple[str, str]]:
    """(name, type) of each pjsip section; a section without type is skipped."""
    return [(name, (o.get("type") or [""])[-1]) for name, o in sections if o.get("type")]


def check_tree(release: Path, etc: Path | None = None) -> str:
    """siporch's files of ``release``; with ``etc``, the site's configs including them."""
    base = release / "asterisk"
    if not base.is_dir():
        raise Failure(f"{base} is missing")
    problems: list[str] = []
    own: dict[str, list[Section]] = {}
    for conf in sorted(base.glob("*.conf")):
        own[conf.name] = parse_conf(conf, release, problems, etc=etc)
    for required in SITE_INCLUDES.values():
        if required not in own:
            problems.append(f"{required} is missing")
    site: dict[str, list[Section]] = {}
    if etc is not None:
        for site_file, own_file in SITE_INCLUDES.items():
            path = etc / site_file
            if not path.is_file():
                problems.append(f"{path} is missing")
                continue
            included: list[Path] = []
            site[site_file] = parse_conf(path, release, problems, etc=etc, included=included)
            if base / own_file not in included:
                problems.append(
                    f"{path} does not include {LIVE_ROOT}/asterisk/{own_file} "
                    f"(#tryinclude {LIVE_ROOT}/asterisk/{own_file})"
                )
    pjsip = site.get("pjsip.conf", own.get("pjsip_siporch.conf", []))
    for name, kind in _kinds(pjsip):
        if kind not in PJSIP_TYPES:
            problems.append(f"pjsip: [{name}] has unknown type {kind!r}")
    for singleton in ("global", "system"):
        count = sum(1 for _, kind in _kinds(pjsip) if kind == singleton)
        if count > 1:
            problems.append(
                f"pjsip: {count} type={singleton} objects; siporch's file has the one "
                "Asterisk allows, the site's pjsip.conf must not define another"
            )
    if "pjsip.conf" in site:
        mine = Counter(_kinds(own.get("pjsip_siporch.conf", [])))
        mine.update(_kinds(own.get("pjsip_siporch_transports.conf", [])))
        for key, n in sorted(Counter(_kinds(pjsip)).items()):
            if key in mine and n > mine[key] and key[1] not in ("global", "system"):
                problems.append(
                    f"{etc / 'pjsip.conf'}: [{key[0]}] (type={key[1]}) is also one of siporch's "
                    "objects; rename the site's"
                )
    own_contexts = [name for name, _ in own.get("extensions_siporch.conf", [])]
    if "extensions_siporch.conf" in own and "siporch-inbound" not in own_contexts:
        problems.append("extensions_siporch.conf: no context siporch-inbound")
    if "extensions.conf" in site:
        contexts = Counter(name for name, _ in site["extensions.conf"])
        for name in sorted(set(own_contexts)):
            if contexts[name] > own_contexts.count(name):
                problems.append(
                    f"{etc / 'extensions.conf'}: context [{name}] belongs to siporch; "
                    "rename the site's"
                )
        text = (base / "extensions_siporch.conf").read_text(errors="replace")
        wanted = sorted(set(re.findall(r"Goto\(([A-Za-z0-9_-]+),\$\{EXTEN\},1\)", text)))
        for name in wanted:
            if not name.startswith("siporch-") and name not in contexts:
                problems.append(
                    f"DID destination context [{name}] is not in the site's dialplan "
                    f"({etc / 'extensions.conf'})"
                )
    manager = own.get("manager_siporch.conf", [])
    users = [n for n, o in manager if n != "general" and "secret" in o]
    if manager and not users:
        problems.append("manager_siporch.conf: no AMI user with a secret")
    if "manager.conf" in site and users:
        every = [n for n, o in site["manager.conf"] if n != "general"]
        for user in users:
            if every.count(user) > 1:
                problems.append(f"{etc / 'manager.conf'}: AMI user [{user}] is siporch's")
    for site_file, own_file in SITE_INCLUDES.items():
        adds = sum(1 for name, _ in own.get(own_file, []) if name == "general")
        if adds and site_file in site:
            generals = sum(1 for n, _ in site[site_file] if n == "general")
            if generals <= adds and f"{own_file} (#tryinclude" not in "; ".join(problems):
                problems.append(
                    f"{etc / site_file}: no [general] section, which {own_file} adds to "
                    "([general](+)); add one before the include line"
                )
    if problems:
        raise Failure("; ".join(problems[:12]))
    total = sum(len(v) for v in own.values())
    where = f"; with the site's configs in {etc}" if etc is not None else ""
    return f"asterisk configs parse: {len(own)} siporch file(s), {total} section(s){where}"


def _manager(conf: Path) -> tuple[str, int, str, str] | None:
    """(host, port, user, secret) of the AMI, or None when the release disables it."""
    problems: list[str] = []
    sections = parse_conf(conf, conf.parent.parent, problems)
    if not sections:
        return None
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
    out = run(["asterisk", "-C", str(asterisk_conf), "-rx", command])
    if out.returncode != 0:
        raise Failure(f"asterisk -rx {command!r}: {(out.stderr or out.stdout).strip()}")
    return out.stdout


#: Seconds between two REGISTERs the gate sends for a registration that is still not
#: Registered: one lost (an edge reloading its tables as the PBX's gate runs beside it)
#: is sent again instead of waiting out Asterisk's retry interval (60 s, 300 s after a
#: fatal answer).
NUDGE_EVERY_S = 5.0

#: A registration whose next attempt Asterisk has scheduled within this many seconds
#: ("(exp. 5s)") is left to it. `pjsip send register` on a registration that is
#: Registered unregisters it and schedules the REGISTER some seconds later (Asterisk 22):
#: sending it again before then starts that wait over, and a gate that did so every
#: NUDGE_EVERY_S seconds kept it Unregistered to the end.
NUDGE_IF_LATER_S = 10.0

_EXPIRES = re.compile(r"\(exp\.\s*(\d+)s\)")


def _next_attempt(rest: str) -> int | None:
    """Seconds until Asterisk's next attempt of a registration, from the rest of its row
    of `pjsip show registrations` ("(exp. 5s)"); None when the row does not say."""
    m = _EXPIRES.search(rest)
    return int(m.group(1)) if m else None


def registrations(asterisk_conf: Path, wait: float) -> str:
    """Wait until every outbound registration is Registered. One that is not (rejected or
    failed before, waiting for its retry interval) is sent a REGISTER at once, and again
    every NUDGE_EVERY_S seconds while it stays so, so the wait measures the registrar's
    answer, not Asterisk's retry timer; one whose next attempt is due within
    NUDGE_IF_LATER_S seconds is left to Asterisk.

    Every registration counts by itself: a trunk of an active-active site registers once
    through each edge (``<trunk>-reg-<edge>``), and the gate waits for each of them, so a
    deploy passes only when the provider took every edge's binding (a release that breaks
    the registration through one edge fails here, although the trunk would still take
    calls through the other)."""
    deadline = time.monotonic() + wait
    nudged_at: float | None = None
    reloaded = False
    left: dict[str, float] = {}
    while True:
        text = _cli(asterisk_conf, "pjsip show registrations")
        rows = [
            line.split()
            for line in text.splitlines()
            if re.match(r"^\s+\S+/\S+\s+\S+\s+\S+", line) and "<Registration" not in line
        ]
        states = {row[0]: row[2] for row in rows if len(row) >= 3}
        due = {row[0]: _next_attempt(" ".join(row[3:])) for row in rows if len(row) >= 3}
        bad = {name: state for name, state in states.items() if state != "Registered"}
        if not bad:
            return f"{len(states)} outbound registration(s) Registered"
        now = time.monotonic()
        if nudged_at is None or now - nudged_at >= NUDGE_EVERY_S:
            nudged_at = now
            for name in sorted(bad):
                if bad[name] not in ("Rejected", "Unregistered", "Stopped"):
                    continue
                # left to Asterisk while its attempt is due soon, but not for ever: one
                # whose countdown never ends in a REGISTER is sent one after a while
                soon = due[name] is not None and due[name] <= NUDGE_IF_LATER_S
                if soon and now - left.setdefault(name, now) < NUDGE_IF_LATER_S + NUDGE_EVERY_S:
                    continue
                left.pop(name, None)
                out = _cli(asterisk_conf, f"pjsip send register {name.split('/')[0]}")
                if "Unable to retrieve registration" in out and not reloaded:
                    # after `pjsip send unregister` Asterisk keeps the registration but
                    # no longer finds it by name (a module reload does not help either);
                    # sending every registration again starts it
                    reloaded = True
                    _cli(asterisk_conf, "pjsip send register *all")
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


CDR_FILE = "cdr_sqlite3_custom_siporch.conf"


def cdr_init(release: Path, stamp: str = "") -> str:
    """siporch's CDR database, ready before Asterisk writes to it (idempotent). The table
    has Asterisk's own layout (an ``id`` primary key, then the mapping's columns, untyped),
    which cdr_sqlite3_custom takes as its own; as the directory's owner (Asterisk's user).
    ``stamp``: the file that says, once it is done, which mapping it was made from (the
    quick deploy skips this when the release's mapping is that one, byte for byte)."""
    import sqlite3

    if stamp:
        schema_stamp_clear(stamp)
    conf = release / "asterisk" / CDR_FILE
    if not conf.is_file():
        return f"{conf}: none (no siporch CDRs)"
    db = table = ""
    columns: list[str] = []
    days = 0
    schema = conf.read_bytes()
    for line in schema.decode().splitlines():
        m = re.fullmatch(r"\[(/[^\]]+)\]\s*", line)
        if m:
            db = m.group(1)
        m = re.fullmatch(r"table\s*=\s*([A-Za-z_][A-Za-z0-9_]*)\s*", line)
        if m:
            table = m.group(1)
        m = re.fullmatch(r"columns\s*=\s*(.+)", line)
        if m:
            columns = [c.strip() for c in m.group(1).split(",")]
        m = re.fullmatch(r";\s*siporch-retention-days:\s*(\d+)\s*", line)
        if m:
            days = int(m.group(1))
    if not db:
        return f"{conf}: no database (records disabled)"
    if not table or not columns or not all(re.fullmatch(r"[A-Za-z_]\w*", c) for c in columns):
        raise Failure(f"{conf}: no table or columns")
    directory = Path(db).parent
    st = directory.stat()
    pid = os.fork()
    if pid == 0:  # the database is the directory owner's: Asterisk writes it as that user
        code = 0
        try:
            if os.getuid() == 0 and st.st_uid != 0:
                os.setgid(st.st_gid)
                os.setuid(st.st_uid)
            os.umask(0o077)
            con = sqlite3.connect(db, timeout=10)
            con.execute(
                f"CREATE TABLE IF NOT EXISTS {table} "
                f"(id INTEGER PRIMARY KEY AUTOINCREMENT, {', '.join(columns)})"
            )
            con.execute(f"CREATE INDEX IF NOT EXISTS {table}_callid ON {table} (callid)")
            con.execute(
                f"CREATE INDEX IF NOT EXISTS {table}_start ON {table} (CAST(start AS REAL))"
            )
            con.execute(f"DROP TRIGGER IF EXISTS {table}_retention")
            if days > 0:
                con.execute(
                    f"CREATE TRIGGER {table}_retention AFTER INSERT ON {table} BEGIN "
                    f"DELETE FROM {table} WHERE CAST(start AS REAL) < "
                    f"CAST(strftime('%s', 'now') AS REAL) - {days * 86400}; END"
                )
            con.commit()
            con.close()
        except Exception as exc:  # reported by the exit code
            print(f"cdr-init: {db}: {exc}", file=sys.stderr)
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise Failure(f"cdr-init: {db} could not be prepared")
    if stamp:
        schema_stamp_write(stamp, schema, db)
    kept = f"{days} days" if days else "no retention"
    return f"{db}: table {table} ready ({kept})"


def helper() -> Helper:
    h = Helper("siporch_asterisk", __doc__)
    h.parser.add_argument("--root", default=LIVE_ROOT)
    h.parser.add_argument("--asterisk-conf", default=ASTERISK_CONF)
    tree = h.command(
        "check-tree", lambda a: check_tree(Path(a.release), Path(a.etc) if a.etc else None)
    )
    tree.add_argument("release")
    tree.add_argument("--etc", default=None)
    h.command(
        "ami-login", lambda a: ami_login(Path(a.root) / "asterisk" / "manager_siporch.conf", a.timeout)
    ).add_argument("--timeout", type=float, default=20.0)
    h.command(
        "registrations", lambda a: registrations(Path(a.asterisk_conf), a.wait)
    ).add_argument("--wait", type=float, default=30.0)
    h.command("calls", lambda a: calls(Path(a.asterisk_conf)))
    p = h.command("cdr-init", lambda a: cdr_init(Path(a.release or a.root), a.stamp))
    p.add_argument("release", nargs="?", default=None)
    p.add_argument("--stamp", default="")
    return h


def main(argv: list[str]) -> int:
    return helper().main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
