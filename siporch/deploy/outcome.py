"""What a deploy or rollback run came to: the explanation of a failure, the one release
every host runs after a full successful run (remembered for `diff` and `drift`), and the
whole run as typed data (:class:`RunOutcome`, printed by ``--json`` as ``siporch.run/1``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from siporch.deploy.runner import RunResult
from siporch.release import mark_deployed


def failure_summary(report: dict[str, Any], what: str) -> tuple[list[str], str]:
    """The lines that explain a failed run (plain text: host, step, reason, then what
    became of every host of the run) and the one-line error."""
    hosts = report.get("hosts", [])
    failed = [h for h in hosts if "failure" in h]
    lines = [f"{what} FAILED"]
    for h in failed:
        f = h["failure"]
        lines.append(f'  {h["host"]} failed at "{f.get("step", "?")}": {f.get("reason", "?")}')
    lines.append("every host of the run:")
    back, kept, lost = [], [], []
    for h in hosts:
        note = str(h.get("rollback") or f"on {h.get('current') or '(none)'}")
        lines.append(f"  {h['host']}: {note}")
        if note.startswith("rolled back"):
            back.append(h["host"])
        elif note.startswith(("still on", "no earlier release", "not deployed", "on ")):
            kept.append(h["host"])
        else:
            lost.append(h["host"])
    where = ", ".join(
        h["host"] + (" (unreachable)" if unreachable(h) else "") for h in failed
    )
    parts = [f"{len(back)} host(s) rolled back"] if back else []
    if kept:
        parts.append(f"{len(kept)} unchanged")
    if lost:
        parts.append(f"NOT rolled back: {', '.join(lost)}")
    message = f"{what} failed on {where}; " + (", ".join(parts) or "no host was changed")
    return lines, message


def unreachable(host: dict[str, Any]) -> bool:
    """A host of the run report whose failure is that it could not be reached."""
    return str(host.get("failure", {}).get("reason", "")).startswith("unreachable")


def record_deployed(inventory: Path, result: RunResult, limit: str | None) -> None:
    """After a full successful run, remember the one release every host now runs (for
    `siporch diff` and `siporch drift`)."""
    hosts = (result.report or {}).get("hosts", [])
    currents = {h.get("current") for h in hosts}
    if result.ok and not limit and len(currents) == 1 and None not in currents:
        mark_deployed(inventory, str(currents.pop()))


# ------------------------------------------------------------------ the run as data

#: The name and version of the JSON document `siporch deploy --json` and `siporch rollback
#: --json` print (docs/cli.md; the JSON Schema is :data:`RUN_SCHEMA`).
SCHEMA = "siporch.run/1"

#: What became of a host in a run (``HostOutcome.outcome``).
DEPLOYED = "deployed"  # runs the run's release now (for a rollback: the release gone back to)
UNCHANGED = "unchanged"  # the release changes none of its files; nothing reloaded
WOULD_CHANGE = "would_change"  # check mode: a deploy would change its files or reload
ROLLED_BACK = "rolled_back"  # the run failed elsewhere; this host was put back on `before`
NOT_DEPLOYED = "not_deployed"  # the run stopped before it reached this host: it runs `before`
FAILED = "failed"  # this host failed (see `failure`); `rollback` says where it was left
UNREACHABLE = "unreachable"  # this host could not be reached; it may run `before` or the new one
ROLLBACK_FAILED = "rollback_failed"  # the run failed and putting this host back failed too
OUTCOMES = (
    DEPLOYED,
    UNCHANGED,
    WOULD_CHANGE,
    ROLLED_BACK,
    NOT_DEPLOYED,
    FAILED,
    UNREACHABLE,
    ROLLBACK_FAILED,
)

#: The kind of reload a host went through (``HostOutcome.reload_kind``): the strongest of
#: its reload actions.
RELOAD_KINDS = ("none", "reload", "restart")


@dataclass(frozen=True)
class Failure:
    """Where and why a host failed: the playbook's task and its reason."""

    step: str
    reason: str
    unreachable: bool

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "reason": self.reason, "unreachable": self.unreachable}


@dataclass(frozen=True)
class HostPlanned:
    """What the run's release changes on one host: ``files`` ({path: added | removed |
    modified}) and the reloads they need; None where the run did not learn it (a host the
    run never reached, or one put back, whose last comparison was that of going back)."""

    host: str
    files: dict[str, str] | None
    reloads: tuple[str, ...] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": None if self.files is None else dict(sorted(self.files.items())),
            "reloads": None if self.reloads is None else list(self.reloads),
        }


@dataclass(frozen=True)
class HostOutcome:
    """What became of one host: one of :data:`OUTCOMES`, the releases it ran before and
    runs after the run, the reloads it went through and, for a host that failed, where
    and why; ``rollback`` is the playbook's own note of where a host of a failed run was
    left; ``seconds`` the wall time from its first to its last task of the rollout."""

    host: str
    outcome: str
    before: str | None
    after: str | None
    reloads: tuple[str, ...]
    failure: Failure | None = None
    rollback: str | None = None
    seconds: float | None = None

    @property
    def release_changed(self) -> bool:
        return self.before != self.after

    @property
    def reload_kind(self) -> str:
        return reload_kind(self.reloads)

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "outcome": self.outcome,
            "before": self.before,
            "after": self.after,
            "release_changed": self.release_changed,
            "reloads": list(self.reloads),
            "reload_kind": self.reload_kind,
            "failure": None if self.failure is None else self.failure.to_dict(),
            "rollback": self.rollback,
            "seconds": None if self.seconds is None else round(self.seconds, 1),
        }


@dataclass(frozen=True)
class RunOutcome:
    """A deploy or rollback run as data (``siporch deploy --json``): the plan, each host's
    outcome, the failure, the timings and the exit code the command exits with."""

    command: str  # deploy | rollback
    check: bool
    release: str | None
    exit_code: int
    error: str | None
    refused: str | None
    warnings: tuple[str, ...]
    planned: tuple[HostPlanned, ...]
    hosts: tuple[HostOutcome, ...]
    started: float
    duration: float
    returncode: int
    recap: dict[str, dict[str, int]] = field(default_factory=dict)
    #: ansible-playbook's last lines, when the run failed with no host to blame
    output_tail: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(OUTCOMES, 0)
        for h in self.hosts:
            out[h.outcome] = out.get(h.outcome, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        changed = [p.host for p in self.planned if p.files or p.reloads]
        return {
            "schema": SCHEMA,
            "command": self.command,
            "check": self.check,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "release": self.release,
            "error": self.error,
            "refused": self.refused,
            "plan": {
                "hosts": {p.host: p.to_dict() for p in self.planned},
                "changed_hosts": changed,
                "trunk_id_warnings": list(self.warnings),
            },
            "hosts": [h.to_dict() for h in self.hosts],
            "counts": self.counts(),
            "timings": {
                "started": _iso(self.started),
                "finished": _iso(self.started + self.duration),
                "seconds": round(self.duration, 1),
                "hosts": {h.host: round(h.seconds, 1) for h in self.hosts if h.seconds is not None},
            },
            "ansible": {
                "returncode": self.returncode,
                "recap": self.recap,
                "output_tail": list(self.output_tail),
            },
        }


def _iso(epoch: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z"
    )


def reload_kind(reloads: Sequence[str]) -> str:
    """``restart`` when any action restarts a daemon, ``reload`` when any reloads, else
    ``none``."""
    if any(a.endswith(":restart") for a in reloads):
        return "restart"
    return "reload" if reloads else "none"


def host_outcome(
    host: dict[str, Any], *, check: bool, seconds: float | None = None
) -> HostOutcome:
    """One host of the playbook's report (``tasks/report.yml``) as a :class:`HostOutcome`."""
    before = str(host.get("before") or "") or None
    after = str(host.get("current") or "") or None
    reloads = tuple(str(a) for a in host.get("reloads") or ())
    files = host.get("changed_files") or {}
    note = str(host.get("rollback") or "").strip() or None
    failure = None
    if "failure" in host:
        f = host["failure"] or {}
        failure = Failure(
            str(f.get("step") or "?"), str(f.get("reason") or "?"), unreachable(host)
        )
    outcome: str
    if failure is not None:
        outcome = UNREACHABLE if failure.unreachable else FAILED
    elif note is None:
        changes = WOULD_CHANGE if check else DEPLOYED
        outcome = changes if files or reloads else UNCHANGED
    elif note.startswith("rolled back"):
        outcome = ROLLED_BACK
    elif note.startswith(("still on", "no earlier release", "not deployed")):
        outcome = NOT_DEPLOYED
    else:  # "rollback to R failed at ...", "unreachable, not ..."
        outcome = ROLLBACK_FAILED
    return HostOutcome(host["host"], outcome, before, after, reloads, failure, note, seconds)


def _planned(host: dict[str, Any], outcome: HostOutcome) -> HostPlanned:
    """The host's planned changes, when the report's comparison is that of the run's
    release: a host that went through it, or one that failed before it switched."""
    known = outcome.outcome in (DEPLOYED, UNCHANGED, WOULD_CHANGE) or (
        outcome.failure is not None and (outcome.rollback or "").startswith("still on")
    )
    if not known:
        return HostPlanned(outcome.host, None, None)
    files = {str(k): str(v) for k, v in (host.get("changed_files") or {}).items()}
    return HostPlanned(outcome.host, files, outcome.reloads)


def run_outcome(
    result: RunResult,
    *,
    command: str,
    check: bool = False,
    release: str | None = None,
    started: float | None = None,
    host_seconds: dict[str, float] | None = None,
) -> RunOutcome:
    """The run of ``result`` as data, with the exit code the CLI gives it: 0 the run
    succeeded; 1 it failed (ansible-playbook, a host); 2 it was refused before any host
    was touched (a trunk whose id would change)."""
    import time

    report = result.report or {}
    seconds = host_seconds or {}
    hosts = [
        host_outcome(h, check=check, seconds=seconds.get(h["host"]))
        for h in report.get("hosts") or ()
        if isinstance(h, dict) and "host" in h
    ]
    planned = [
        _planned(h, o) for h, o in zip(report.get("hosts") or (), hosts, strict=False)
    ]
    if not result.ok:  # a host the failed run left alone was not deployed, not "unchanged"
        hosts = [
            replace(h, outcome=NOT_DEPLOYED)
            if h.outcome == UNCHANGED and h.before == h.after
            else h
            for h in hosts
        ]
    refused = str(report["refused"]) if report.get("refused") else None
    what = "check" if check else command
    error: str | None = None
    tail: tuple[str, ...] = ()
    if refused:
        code, error = 2, refused
    elif result.ok:
        code = 0
    elif result.failures():
        code = 1
        _, error = failure_summary(report, what)
    else:
        code = 1
        error = f"{what} failed (ansible-playbook exited {result.returncode})"
        tail = tuple(result.output[-25:])
    return RunOutcome(
        command=command,
        check=check,
        release=str(report.get("release") or "") or release,
        exit_code=code,
        error=error,
        refused=refused,
        warnings=tuple(str(w) for w in report.get("warnings") or ()),
        planned=tuple(planned),
        hosts=tuple(hosts),
        started=time.time() - result.duration if started is None else started,
        duration=result.duration,
        returncode=result.returncode,
        recap=dict(result.recap),
        output_tail=tail,
    )


def error_outcome(command: str, check: bool, message: str, exit_code: int) -> RunOutcome:
    """A run that could not start (no inventory, no ansible-playbook): no host touched."""
    import time

    return RunOutcome(
        command=command,
        check=check,
        release=None,
        exit_code=exit_code,
        error=message,
        refused=None,
        warnings=(),
        planned=(),
        hosts=(),
        started=time.time(),
        duration=0.0,
        returncode=-1,
    )


class HostTimer:
    """A `siporch.deploy.progress.Reporter` that times each host: from its first to its
    last task result after the plays that only read the hosts; hands every event and line
    on to ``inner``."""

    #: Plays whose host results do not count (reading what each host runs).
    READ_PLAYS = ("Read the release each host runs", "Read the release each host runs and "
                  "choose the target")  # fmt: skip

    def __init__(self, inner: Any = None, clock: Any = None) -> None:
        import time

        self.inner = inner
        self.clock = clock or time.monotonic
        self.play = ""
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}

    def event(self, event: Any) -> None:
        if event.kind == "play":
            self.play = event.name
        elif event.kind == "host" and event.host and self.play not in self.READ_PLAYS:
            now = self.clock()
            self.first.setdefault(event.host, now)
            self.last[event.host] = now
        if self.inner is not None:
            self.inner.event(event)

    def line(self, line: str) -> None:
        if self.inner is not None:
            self.inner.line(line)

    def seconds(self) -> dict[str, float]:
        return {h: self.last[h] - t for h, t in self.first.items()}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


_STR = {"type": "string"}
_RELEASE = _nullable(_STR)

#: The JSON Schema of ``siporch deploy --json`` and ``siporch rollback --json``
#: (:data:`SCHEMA`; docs/cli.md).
RUN_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "siporch deploy/rollback --json (siporch.run/1)",
    "type": "object",
    "required": [
        "schema", "command", "check", "ok", "exit_code", "release", "error", "refused",
        "plan", "hosts", "counts", "timings", "ansible",
    ],
    "properties": {
        "schema": {"const": SCHEMA},
        "command": {"enum": ["deploy", "rollback"]},
        "check": {"type": "boolean"},
        "ok": {"type": "boolean"},
        "exit_code": {"enum": [0, 1, 2]},
        "release": _RELEASE,
        "error": _nullable(_STR),
        "refused": _nullable(_STR),
        "plan": {
            "type": "object",
            "required": ["hosts", "changed_hosts", "trunk_id_warnings"],
            "properties": {
                "hosts": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["files", "reloads"],
                        "properties": {
                            "files": _nullable(
                                {
                                    "type": "object",
                                    # added | removed | modified; a redeploy
                                    # of the same release: restored | removed (...)
                                    "additionalProperties": _STR,
                                }
                            ),
                            "reloads": _nullable({"type": "array", "items": _STR}),
                        },
                        "additionalProperties": False,
                    },
                },
                "changed_hosts": {"type": "array", "items": _STR},
                "trunk_id_warnings": {"type": "array", "items": _STR},
            },
            "additionalProperties": False,
        },
        "hosts": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [
                    "host", "outcome", "before", "after", "release_changed", "reloads",
                    "reload_kind", "failure", "rollback", "seconds",
                ],
                "properties": {
                    "host": _STR,
                    "outcome": {"enum": list(OUTCOMES)},
                    "before": _RELEASE,
                    "after": _RELEASE,
                    "release_changed": {"type": "boolean"},
                    "reloads": {"type": "array", "items": _STR},
                    "reload_kind": {"enum": list(RELOAD_KINDS)},
                    "failure": _nullable(
                        {
                            "type": "object",
                            "required": ["step", "reason", "unreachable"],
                            "properties": {
                                "step": _STR,
                                "reason": _STR,
                                "unreachable": {"type": "boolean"},
                            },
                            "additionalProperties": False,
                        }
                    ),
                    "rollback": _nullable(_STR),
                    "seconds": _nullable({"type": "number", "minimum": 0}),
                },
                "additionalProperties": False,
            },
        },
        "counts": {
            "type": "object",
            "required": list(OUTCOMES),
            "additionalProperties": {"type": "integer", "minimum": 0},
        },
        "timings": {
            "type": "object",
            "required": ["started", "finished", "seconds", "hosts"],
            "properties": {
                "started": {"type": "string", "format": "date-time"},
                "finished": {"type": "string", "format": "date-time"},
                "seconds": {"type": "number", "minimum": 0},
                "hosts": {"type": "object", "additionalProperties": {"type": "number"}},
            },
            "additionalProperties": False,
        },
        "ansible": {
            "type": "object",
            "required": ["returncode", "recap", "output_tail"],
            "properties": {
                "returncode": {"type": "integer"},
                "recap": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "additionalProperties": {"type": "integer"},
                    },
                },
                "output_tail": {"type": "array", "items": _STR},
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}  # fmt: skip
