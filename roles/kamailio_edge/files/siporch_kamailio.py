#!/usr/bin/env python3
"""Host-side helper for the kamailio_edge role (standard library only).

Subcommands:
  check-tree RELEASE_DIR   check a release with the real kamailio (`kamailio -c -f`) before it
                           goes live (and that it is a supported version, 5.6 or newer): the tree is copied to a scratch directory and every
                           reference to the live release path is pointed at the copy, so the
                           includes and db_text tables checked are those of RELEASE_DIR.
  rpc METHOD [PARAM...]    one JSON-RPC call; prints the result as JSON.
  reload ACTION            one runtime reload (dispatcher.reload, permissions.addressReload,
                           dialplan.reload, htable.reload:<table>, tls.reload); reloads of one
                           table are serialised with a lock and spaced by the reload interval.
  dispatcher-check DB      every destination of the dispatcher table DB is loaded in Kamailio.
  options HOST PORT        the edge answers a SIP OPTIONS over UDP.
  pair-gate WAIT REDIS [PEER...]
                           an edge of an active-standby pair: every PEER edge whose Kamailio
                           answers OPTIONS is active on this edge's DMQ bus, and the pair's
                           Redis (host:port; none when empty) answers PING, within WAIT s.
  records-init DB SQL [--user U] [--stamp FILE]
                           create or upgrade the call-record database DB with the schema in
                           SQL (idempotent); DB and its directory belong to U, mode 0600/0700;
                           FILE then says which schema was applied (its sha256).
Exit status: 0 on success, 1 on a failed check, 2 on bad usage.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # siporch_hostlib beside it
from siporch_hostlib import Failure, Helper, run, schema_stamp_clear, schema_stamp_write

LIVE_ROOT = "/etc/siporch/current"
LOCK_DIR = Path("/run/siporch")
DEFAULT_RUNTIME_DIR = "/run/kamailio"


# ---------------------------------------------------------------- configuration discovery


def _defines(cfg_text: str) -> dict[str, str]:
    """``#!define NAME value`` (and ``#!substdef``-free) preprocessor definitions."""
    found: dict[str, str] = {}
    for name, value in re.findall(r"^\s*#!(?:define|trydef)\s+(\w+)\s+(.+?)\s*$", cfg_text, re.M):
        found.setdefault(name, value.strip().strip('"'))
    return found


def _modparams(cfg_text: str, module: str) -> dict[str, str]:
    """modparam values of ``module``, with preprocessor names resolved."""
    defines = _defines(cfg_text)
    found: dict[str, str] = {}
    pattern = re.compile(
        r'^\s*modparam\(\s*"' + re.escape(module) + r'"\s*,\s*"([^"]+)"\s*,\s*([^)]*)\)',
        re.MULTILINE,
    )
    for name, value in pattern.findall(cfg_text):
        value = value.strip()
        found[name] = value.strip('"') if value.startswith('"') else defines.get(value, value)
    return found


def _cfg_text(cfg: Path) -> str:
    """kamailio.cfg with its include_file/import_file siblings, as one text."""
    seen: set[Path] = set()
    parts: list[str] = []

    def walk(path: Path) -> None:
        if path in seen or not path.is_file():
            return
        seen.add(path)
        text = path.read_text(errors="replace")
        parts.append(text)
        for inc in re.findall(r'^\s*#?!?(?:include_file|import_file)\s+"([^"]+)"', text, re.M):
            target = Path(inc) if inc.startswith("/") else path.parent / inc
            walk(target)

    walk(cfg)
    return "\n".join(parts)


def rpc_endpoint(cfg: Path) -> tuple[str, str]:
    """(kind, address) of the JSON-RPC endpoint the rendered kamailio.cfg exposes."""
    text = _cfg_text(cfg) if cfg.is_file() else ""
    runtime = DEFAULT_RUNTIME_DIR
    m = re.search(r'^\s*runtime_dir\s*=\s*"([^"]+)"', text, re.M)
    if m:
        runtime = m.group(1)
    params = _modparams(text, "jsonrpcs")
    transport = int(params.get("transport", "0") or 0)
    if "jsonrpcs.so" in text and transport in (0, 4, 5, 6, 7):
        sock = params.get("dgram_socket", "kamailio_rpc.sock")
        if sock.startswith("udp:"):
            return "udp", sock[4:]
        sock = sock.removeprefix("unix:")
        if not sock.startswith("/"):
            sock = f"{runtime}/{sock}"
        return "unix", sock
    if "ctl.so" in text:
        return "kamcmd", ""
    return "unix", f"{runtime}/kamailio_rpc.sock"


def rpc(cfg: Path, method: str, params: list[object] | None = None, timeout: float = 5.0) -> object:
    kind, address = rpc_endpoint(cfg)
    request = {"jsonrpc": "2.0", "method": method, "id": 1}
    if params:
        request["params"] = params
    payload = json.dumps(request).encode()
    if kind == "kamcmd":
        args = ["kamcmd", method, *(str(p) for p in params or [])]
        out = run(args, timeout=timeout)
        if out.returncode != 0:
            raise Failure(f"kamcmd {method}: {out.stderr.strip() or out.stdout.strip()}")
        return out.stdout.strip()
    if kind == "udp":
        host, _, port = address.rpartition(":")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.sendto(payload, (host or "127.0.0.1", int(port)))
            data = sock.recv(1 << 20)
    else:
        reply_path = Path(tempfile.gettempdir()) / f"siporch-rpc-{uuid.uuid4().hex[:12]}.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(str(reply_path))
            try:
                os.chmod(reply_path, 0o666)
                sock.settimeout(timeout)
                try:
                    sock.sendto(payload, address)
                except OSError as exc:
                    raise Failure(f"Kamailio JSON-RPC socket {address}: {exc}") from exc
                try:
                    data = sock.recv(1 << 20)
                except TimeoutError as exc:
                    raise Failure(f"no answer from Kamailio JSON-RPC on {address}") from exc
            finally:
                reply_path.unlink(missing_ok=True)
    reply = json.loads(data.decode(errors="replace"))
    if "error" in reply:
        err = reply["error"]
        raise Failure(f"{method}: {err.get('code')} {err.get('message')}")
    return reply.get("result")


# ---------------------------------------------------------------- check before going live


def _db_text_problems(db_dir: Path) -> list[str]:
    problems: list[str] = []
    if not db_dir.is_dir():
        return problems
    for table in sorted(db_dir.iterdir()):
        if not table.is_file() or table.name.startswith("."):
            continue
        lines = table.read_text(errors="replace").splitlines()
        if not lines:
            problems.append(f"{table.name}: empty table file (no header)")
            continue
        columns = lines[0].split()
        for col in columns:
            if not re.fullmatch(
                r"\w+\((int|double|string|str|datetime|blob)(,(auto|null))*\)", col
            ):
                problems.append(f"{table.name}: bad column header {col!r}")
        for number, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            fields = re.split(r"(?<!\\):", line)
            if len(fields) != len(columns):
                problems.append(
                    f"{table.name}:{number}: {len(fields)} fields, header has {len(columns)}"
                )
    return problems


# The oldest Kamailio the rendered configuration is made for (Debian 12's).
OLDEST_KAMAILIO = (5, 6)


def kamailio_version(text: str) -> tuple[int, int]:
    """(major, minor) from the output of `kamailio -v`."""
    m = re.search(r"version:\s*kamailio\s+(\d+)\.(\d+)", text)
    if not m:
        first = text.strip().splitlines()[0] if text.strip() else "nothing"
        raise Failure(f"cannot read the Kamailio version from `kamailio -v`: {first}")
    return int(m.group(1)), int(m.group(2))


def require_kamailio(version: tuple[int, int]) -> None:
    if version < OLDEST_KAMAILIO:
        have = ".".join(map(str, version))
        want = ".".join(map(str, OLDEST_KAMAILIO))
        raise Failure(f"Kamailio {have} is not supported: siporch needs Kamailio {want} or newer")


def check_tree(release: Path, kamailio: str) -> str:
    cfg = release / "kamailio" / "kamailio.cfg"
    if not cfg.is_file():
        raise Failure(f"{cfg} is missing")
    ver = run([kamailio, "-v"])
    version = kamailio_version(ver.stdout + ver.stderr)
    require_kamailio(version)
    scratch = Path(tempfile.mkdtemp(prefix="siporch-check-"))
    try:
        copy = scratch / "current"
        shutil.copytree(release, copy, symlinks=True)
        for path in copy.rglob("*"):
            if path.is_file() and not path.is_symlink():
                try:
                    text = path.read_text()
                except UnicodeDecodeError:
                    continue
                if LIVE_ROOT in text:
                    path.write_text(text.replace(LIVE_ROOT, str(copy)))
        out = run([kamailio, "-c", "-f", str(copy / "kamailio" / "kamailio.cfg")], timeout=60)
        log = (out.stdout + out.stderr).replace(str(copy), LIVE_ROOT)
        if out.returncode != 0:
            errors = [line for line in log.splitlines() if "ERROR" in line or "error" in line]
            raise Failure("kamailio -c failed: " + " | ".join(errors[-8:] or log.splitlines()[-8:]))
        problems = _db_text_problems(copy / "kamailio" / "db")
        if problems:
            raise Failure("db_text tables: " + "; ".join(problems[:10]))
        return f"kamailio -c ({'.'.join(map(str, version))}): config file ok"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# ---------------------------------------------------------------- reloads


RELOAD_METHODS: dict[str, tuple[str, str, list[str]]] = {
    "dispatcher.reload": ("dispatcher", "dispatcher.reload", []),
    "permissions.addressReload": ("permissions", "permissions.addressReload", []),
    "dialplan.reload": ("dialplan", "dialplan.reload", []),
    "tls.reload": ("tls", "tls.reload", []),
}


def reload(cfg: Path, action: str, interval: float, retry_for: float) -> str:
    if action.startswith("htable.reload:"):
        table = action.split(":", 1)[1]
        key, method, params = f"htable-{table}", "htable.reload", [table]
    elif action in RELOAD_METHODS:
        key, method, params = RELOAD_METHODS[action]
    else:
        raise Failure(f"unknown reload action {action!r}")
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    stamp = LOCK_DIR / f"kamailio-{key}.last"
    with open(LOCK_DIR / f"kamailio-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one reload of a table at a time
        if stamp.exists():
            wait = interval - (time.time() - stamp.stat().st_mtime)
            if wait > 0:
                time.sleep(min(wait, interval))
        deadline = time.monotonic() + retry_for
        while True:
            try:
                result = rpc(cfg, method, list(params))
                break
            except Failure as exc:
                # Kamailio refuses a reload inside its reload interval ("Ongoing reload").
                if "ongoing" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(1.0)
        stamp.touch()
    return f"{action}: {result}"


# ---------------------------------------------------------------- health


def _destinations(db_file: Path) -> set[str]:
    lines = db_file.read_text(errors="replace").splitlines()
    if not lines:
        return set()
    columns = [c.split("(")[0] for c in lines[0].split()]
    if "destination" not in columns:
        raise Failure(f"{db_file}: no destination column")
    index = columns.index("destination")
    found = set()
    for line in lines[1:]:
        if line.strip():
            fields = re.split(r"(?<!\\):", line)
            found.add(fields[index].replace("\\:", ":"))
    return found


def _loaded_destinations(result: object) -> dict[str, str]:
    loaded: dict[str, str] = {}
    if not isinstance(result, dict):
        return loaded
    for record in result.get("RECORDS", []) or []:
        for target in (record.get("SET") or {}).get("TARGETS", []) or []:
            dest = target.get("DEST") or {}
            loaded[dest.get("URI", "")] = dest.get("FLAGS", "")
    return loaded


def ctl_socket(cfg: Path) -> str:
    """The binrpc socket of the ctl module (kamcmd), from the rendered kamailio.cfg."""
    params = _modparams(_cfg_text(cfg), "ctl")
    return params.get("binrpc", "unix:/run/kamailio/kamailio_ctl")


def _kamcmd_destinations(cfg: Path) -> dict[str, str]:
    """dispatcher.list over kamcmd: no datagram size limit (large dispatcher tables)."""
    out = run(["kamcmd", "-s", ctl_socket(cfg), "dispatcher.list"])
    if out.returncode != 0:
        raise Failure(f"kamcmd dispatcher.list: {(out.stderr or out.stdout).strip()}")
    loaded: dict[str, str] = {}
    uri = ""
    for line in out.stdout.splitlines():
        line = line.strip()
        if line.startswith("URI:"):
            uri = line.split(":", 1)[1].strip()
        elif line.startswith("FLAGS:") and uri:
            loaded[uri] = line.split(":", 1)[1].strip()
            uri = ""
    return loaded


def rpc_fifo(cfg: Path, method: str, timeout: float = 10.0) -> object:
    """One JSON-RPC call over the jsonrpcs FIFO: no size limit on the reply."""
    import select

    text = _cfg_text(cfg)
    params = _modparams(text, "jsonrpcs")
    runtime = DEFAULT_RUNTIME_DIR
    fifo = params.get("fifo_name", "kamailio_rpc.fifo")
    if not fifo.startswith("/"):
        fifo = f"{runtime}/{fifo}"
    reply_dir = Path(params.get("fifo_reply_dir", "/tmp/"))
    name = f"siporch_reply_{uuid.uuid4().hex[:12]}"
    reply = reply_dir / name
    os.mkfifo(reply, 0o666)
    try:
        os.chmod(reply, 0o666)
        # Read end opened read-write: no end of file before Kamailio has written.
        rfd = os.open(reply, os.O_RDWR | os.O_NONBLOCK)
        try:
            request = {"jsonrpc": "2.0", "method": method, "id": 1, "reply_name": name}
            try:
                wfd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                raise Failure(f"Kamailio JSON-RPC FIFO {fifo}: {exc}") from exc
            try:
                os.write(wfd, (json.dumps(request) + "\n").encode())
            finally:
                os.close(wfd)
            data = b""
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                ready, _, _ = select.select([rfd], [], [], 0.5)
                if not ready:
                    continue
                data += os.read(rfd, 1 << 20)
                try:
                    answer = json.loads(data.decode(errors="replace"))
                except ValueError:
                    continue
                if "error" in answer:
                    err = answer["error"]
                    raise Failure(f"{method}: {err.get('code')} {err.get('message')}")
                return answer.get("result")
            raise Failure(f"no answer from Kamailio JSON-RPC FIFO {fifo}")
        finally:
            os.close(rfd)
    finally:
        reply.unlink(missing_ok=True)


#: Destinations above which dispatcher.list is asked over the FIFO first: its reply does not
#: fit in one datagram, which would be waited for until the datagram timeout (5 s).
LARGE_DISPATCHER = 150


def loaded_destinations(cfg: Path, expected: int = 0) -> dict[str, str]:
    """URI -> flags of every destination Kamailio's dispatcher holds."""
    if expected > LARGE_DISPATCHER:
        try:
            return _loaded_destinations(rpc_fifo(cfg, "dispatcher.list"))
        except Failure:
            pass  # no FIFO: the datagram socket, then kamcmd, as for a small table
    try:
        return _loaded_destinations(rpc(cfg, "dispatcher.list"))
    except Failure as exc:
        # A reply larger than one datagram never arrives: ask over the FIFO, then kamcmd.
        if "no answer" not in str(exc):
            raise
        try:
            return _loaded_destinations(rpc_fifo(cfg, "dispatcher.list"))
        except Failure:
            if "ctl.so" not in _cfg_text(cfg):
                raise
        return _kamcmd_destinations(cfg)


def dispatcher_check(cfg: Path, db_file: Path, wait: float) -> str:
    expected = _destinations(db_file)
    deadline = time.monotonic() + wait
    while True:
        try:
            loaded = loaded_destinations(cfg, len(expected))
        except Failure as exc:
            if "no destination sets" in str(exc).lower() and not expected:
                return "dispatcher: no destinations expected, none loaded"
            raise
        missing = sorted(expected - set(loaded))
        extra = sorted(set(loaded) - expected)
        disabled = sorted(uri for uri, flags in loaded.items() if flags.startswith("D"))
        if not missing and not extra and not disabled:
            return f"dispatcher: {len(loaded)} destination(s) loaded as expected"
        if time.monotonic() > deadline:
            raise Failure(
                "dispatcher not in the expected state:"
                + (f" missing {missing}" if missing else "")
                + (f" unexpected {extra}" if extra else "")
                + (f" administratively disabled {disabled}" if disabled else "")
            )
        time.sleep(0.5)


def options(host: str, port: int, timeout: float, attempts: int) -> str:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind(("", 0))
        local_port = sock.getsockname()[1]
        sock.settimeout(timeout)
        for attempt in range(attempts):
            branch = "z9hG4bK-siporch-" + uuid.uuid4().hex[:16]
            call_id = uuid.uuid4().hex
            msg = (
                f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {host}:{local_port};branch={branch};rport\r\n"
                "Max-Forwards: 70\r\n"
                f"From: <sip:health@{host}>;tag={uuid.uuid4().hex[:10]}\r\n"
                f"To: <sip:{host}:{port}>\r\n"
                f"Call-ID: {call_id}\r\n"
                f"CSeq: {attempt + 1} OPTIONS\r\n"
                "User-Agent: siporch-health\r\n"
                "Content-Length: 0\r\n\r\n"
            )
            sock.sendto(msg.encode(), (host, port))
            try:
                while True:
                    data = sock.recv(65535).decode(errors="replace")
                    if call_id in data and data.startswith("SIP/2.0 "):
                        status = data.split("\r\n", 1)[0]
                        return f"OPTIONS sip:{host}:{port}: {status[8:]}"
            except TimeoutError:
                continue
    raise Failure(f"no answer to OPTIONS on {host}:{port} after {attempts} attempt(s)")


def _redis_ping(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except (OSError, ValueError):
        return False


def _dmq_port(cfg: Path) -> int | None:
    """This edge's DMQ port (``DMQ_PORT`` of the host.cfg beside its kamailio.cfg): the
    pair's, the same on each of its edges. None when this edge runs no DMQ."""
    try:
        text = (cfg.parent / "host.cfg").read_text()
    except OSError:
        return None
    m = re.search(r"^#!define DMQ_PORT (\d+)\s*$", text, re.M)
    return int(m.group(1)) if m else None


def _dmq_closed(peer: str, port: int, timeout: float = 0.5) -> bool:
    """Whether ``peer`` says its DMQ port is closed: a CRLF keepalive (which Kamailio
    drops without an answer) sent to it comes back as ICMP port unreachable. An edge
    that answers SIP but runs a release without the pair (a site that gets its pair
    in this deploy, the edge's turn not come yet) listens on no DMQ port. A port that
    listens, or a peer that says nothing, is not closed."""
    family = socket.AF_INET6 if ":" in peer else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((peer, port))
            sock.send(b"\r\n\r\n")
            sock.recv(64)
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
    return False


def pair_gate(cfg: Path, wait: float, redis: str, peers: list[str]) -> str:
    """The shared state of an active-standby pair before its next edge is touched: every
    peer edge whose Kamailio answers an OPTIONS (one attempt: an edge not deployed yet is
    not waited for) and listens on the pair's DMQ port (an edge that runs a release
    without the pair yet is not waited for either) is on this edge's DMQ bus as active
    (``dmq.list_nodes``), and the pair's Redis (``host:port``, none when empty) answers
    PING; each waited for until ``wait`` seconds from the start, polled every second."""
    end = time.monotonic() + wait
    on_bus = 0
    dmq_port = _dmq_port(cfg)
    for peer in peers:
        try:
            options(peer, 5060, 1.0, 1)
        except (Failure, OSError):
            continue
        if dmq_port is not None and _dmq_closed(peer, dmq_port):
            continue
        active = re.compile('"host":"' + re.escape(peer) + '"[^}]*"status":"active"')
        while True:
            try:
                nodes = json.dumps(rpc(cfg, "dmq.list_nodes"), indent=1)
            except (Failure, OSError, ValueError):
                nodes = ""
            if active.search(nodes.replace(" ", "").replace("\n", "")):
                break
            if time.monotonic() >= end:
                raise Failure(f"edge {peer} is not on the DMQ bus")
            time.sleep(1)
        on_bus += 1
    if not redis:
        return f"pair: {on_bus} peer edge(s) on the DMQ bus"
    while not _redis_ping(redis):
        if time.monotonic() >= end:
            raise Failure(f"Redis {redis} does not answer")
        time.sleep(1)
    return f"pair: {on_bus} peer edge(s) on the DMQ bus, Redis {redis} answers"


def records_init(db: Path, sql: Path, user: str, stamp: str = "") -> str:
    """The call-record database, outside every release: created (or upgraded: the schema is
    idempotent) and readable by root and Kamailio's user only. ``stamp``: the file that
    says, once it is done, which schema was applied (the quick deploy skips this when the
    release's schema is that one, byte for byte)."""
    import sqlite3

    schema = sql.read_bytes()
    if stamp:
        schema_stamp_clear(stamp)

    uid = gid = 0
    if user:
        import pwd

        entry = pwd.getpwnam(user)
        uid, gid = entry.pw_uid, entry.pw_gid
    db.parent.mkdir(parents=True, exist_ok=True)
    os.chown(db.parent, uid, gid)
    os.chmod(db.parent, 0o700)
    old = os.umask(0o077)
    try:
        con = sqlite3.connect(str(db), timeout=30)
        try:
            con.executescript(schema.decode())
            con.commit()
        finally:
            con.close()
    finally:
        os.umask(old)
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        if path.exists():
            os.chown(path, uid, gid)
            os.chmod(path, 0o600)
    if stamp:
        schema_stamp_write(stamp, schema, str(db))
    return f"call records in {db}"


def records_init_pg(host_cfg: Path, sql: Path) -> str:
    """The call-record tables in the PostgreSQL server of the edge's records URL (its
    host.cfg): created or upgraded (the schema is idempotent) with psql, the password in
    psql's environment only."""
    m = re.search(
        r'#!define ACC_DB_URL "postgres://([^:@/]+):([^@/]*)@([^/"]+?)(?::(\d+))?/([^"]+)"',
        host_cfg.read_text(),
    )
    if not m:
        raise Failure(f"{host_cfg} has no PostgreSQL records URL (ACC_DB_URL)")
    user, password, host, port, db = m.groups()
    psql = shutil.which("psql")
    if psql is None:
        raise Failure("psql is not installed: install postgresql-client for the call records")
    env = dict(os.environ, PGPASSWORD=password, PGCONNECT_TIMEOUT="10")
    argv = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", host.strip("[]"),
            "-p", port or "5432", "-U", user, "-d", db, "-f", str(sql)]  # fmt: skip
    proc = run(argv, timeout=60, env=env)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise Failure(f"call records in PostgreSQL {user}@{host}/{db}: {last}")
    return f"call records in PostgreSQL {user}@{host}:{port or 5432}/{db}"


def set_release(cfg: Path) -> str:
    """Tell the running Kamailio the release it now runs (the id in the call records):
    the id of the manifest of the release ``cfg`` belongs to, set in ``$shv(rel)``. Its own
    timer reads it too, but only every 15 s, and a switch that reloads nothing (a rollback
    to identical tables) would not be seen until then."""
    manifest = cfg.resolve().parent.parent / "manifest.json"
    try:
        release_id = str(json.loads(manifest.read_text()).get("id", ""))
    except (OSError, ValueError):
        return f"no manifest at {manifest}: release not set"
    if not release_id:
        return "no release id in the manifest: release not set"
    try:
        rpc(cfg, "pv.shvSet", ["rel", "str", release_id])
    except (Failure, OSError, ValueError) as exc:  # a label only: never fails a run
        return f"release not set: {exc}"
    return f"release {release_id}"


def helper() -> Helper:
    h = Helper("siporch_kamailio", __doc__)
    h.parser.add_argument("--cfg", default=f"{LIVE_ROOT}/kamailio/kamailio.cfg")
    cfg = lambda a: Path(a.cfg)  # noqa: E731
    p = h.command("check-tree", lambda a: check_tree(Path(a.release), a.kamailio))
    p.add_argument("release")
    p.add_argument("--kamailio", default="kamailio")
    p = h.command(
        "rpc", lambda a: json.dumps(rpc(cfg(a), a.method, list(a.params)), indent=1)
    )
    p.add_argument("method")
    p.add_argument("params", nargs="*")
    p = h.command("reload", lambda a: reload(cfg(a), a.action, a.interval, a.retry_for))
    p.add_argument("action")
    p.add_argument("--interval", type=float, default=5.0)
    p.add_argument("--retry-for", type=float, default=15.0)
    p = h.command("dispatcher-check", lambda a: dispatcher_check(cfg(a), Path(a.db), a.wait))
    p.add_argument("db")
    p.add_argument("--wait", type=float, default=10.0)
    p = h.command("options", lambda a: options(a.host, a.port, a.timeout, a.attempts))
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--timeout", type=float, default=1.0)
    p.add_argument("--attempts", type=int, default=5)
    p = h.command(
        "pair-gate", lambda a: pair_gate(cfg(a), a.wait, a.redis, list(a.peers))
    )
    p.add_argument("wait", type=float)
    p.add_argument("redis")
    p.add_argument("peers", nargs="*")
    h.command("set-release", lambda a: set_release(cfg(a)))
    p = h.command(
        "records-init", lambda a: records_init(Path(a.db), Path(a.sql), a.user, a.stamp)
    )
    p.add_argument("db")
    p.add_argument("sql")
    p.add_argument("--user", default="")
    p.add_argument("--stamp", default="")
    p = h.command(
        "records-init-pg", lambda a: records_init_pg(Path(a.host_cfg), Path(a.sql))
    )
    p.add_argument("host_cfg")
    p.add_argument("sql")
    return h


def main(argv: list[str]) -> int:
    return helper().main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
