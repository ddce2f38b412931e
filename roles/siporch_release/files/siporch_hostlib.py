"""The scaffold of siporch's host helpers (standard library only; the system python3 of
the host, 3.9 or newer): the subcommand line, the output, failures and their exit codes,
commands with a timeout.

The daemon roles install it beside their helpers (``siporch_kamailio.py``,
``siporch_rtpengine.py``, ``siporch_asterisk.py``), which import it from their own
directory; ``siporch_release_state.py``, run with ``python3 -c`` before anything is
installed, is run with this file's text before its own (roles/siporch_release/tasks/
discover.yml). The one copy is roles/siporch_release/files/siporch_hostlib.py; the files
of the same name in the other roles link to it.

Exit status of a helper: 0 on success, 1 on a failed check (:class:`Failure`, or an
error of the system: a file, a socket, a command), 2 on bad usage (argparse).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

#: Seconds a command run by a helper may take unless it says otherwise.
COMMAND_TIMEOUT = 30.0


class Failure(Exception):
    """A check failed; the message says why (exit status 1)."""


def sha256_file(path: str) -> str:
    """The sha256 of a file's content, read by blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def schema_stamp_write(stamp: str, schema: bytes, db: str) -> None:
    """Say that the schema ``schema`` (the bytes of its file) was applied to the database
    ``db`` with success: ``stamp`` holds their sha256 and the database's path (JSON,
    written whole or not at all)."""
    os.makedirs(os.path.dirname(stamp) or ".", 0o755, exist_ok=True)
    tmp = stamp + ".new"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump({"sha256": hashlib.sha256(schema).hexdigest(), "db": db}, fh)
    os.replace(tmp, stamp)


def schema_stamp_clear(stamp: str) -> None:
    """Before a schema is applied: until it has been with success, no stamp says so."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(stamp)


def schema_applied(stamp: str, schema: str) -> bool:
    """Whether the schema file ``schema`` is byte for byte the one last applied with
    success to a database that is still there (``stamp``, :func:`schema_stamp_write`).
    A missing or unreadable stamp or schema, another checksum, a database gone: no."""
    try:
        with open(stamp, encoding="utf-8") as fh:
            done = json.load(fh)
        db = done["db"]
        return bool(db) and done["sha256"] == sha256_file(schema) and os.path.isfile(db)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def run(
    argv: Sequence[str], timeout: float = COMMAND_TIMEOUT, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run a command, its output captured as text, never raising on its exit status;
    past ``timeout`` seconds it is killed (``subprocess.TimeoutExpired``: exit 1)."""
    return subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )


def emit(value: Any) -> None:
    """A subcommand's result on stdout: text and numbers as they are, anything else as
    JSON."""
    if isinstance(value, (str, int, float)):
        print(value)
    else:
        print(json.dumps(value, indent=1))


def emit_json(value: Any) -> None:
    """One JSON document on stdout, compact (read by the playbooks with ``from_json``)."""
    sys.stdout.write(json.dumps(value))


Handler = Callable[[argparse.Namespace], Any]


class Helper:
    """A helper's command line: global options on :attr:`parser`, one subcommand per
    :meth:`command`, run by :meth:`main`."""

    def __init__(self, prog: str, doc: str | None = None) -> None:
        self.parser = argparse.ArgumentParser(
            prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        self._sub = self.parser.add_subparsers(dest="cmd", required=True)
        self._handlers: dict[str, Handler] = {}

    def command(self, name: str, handler: Handler) -> argparse.ArgumentParser:
        """Add the subcommand ``name``, run by ``handler(args)``, whose result
        :func:`emit` prints; returns its parser for its arguments."""
        self._handlers[name] = handler
        return self._sub.add_parser(name)

    def main(self, argv: list[str]) -> int:
        args = self.parser.parse_args(argv)
        try:
            emit(self._handlers[args.cmd](args))
        except Failure as exc:
            print(str(exc), file=sys.stderr)
            return 1
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            print(f"{args.cmd}: {exc}", file=sys.stderr)
            return 1
        return 0
