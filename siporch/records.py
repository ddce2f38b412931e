"""Call records: what each edge's Kamailio writes, and how ``siporch calls`` reads it.

Every edge keeps its records in a local SQLite database outside the release directories
(``/var/lib/siporch/records/records.sqlite``, mode 0600 in a 0700 directory owned by
Kamailio's user), so a deploy, a rollback or a restart never loses them:

* ``calls``: one row per call (from the dialog module; queued and written in batches by
  one Kamailio process, SQLite and PostgreSQL alike): setup, ring, answer and
  end times, the final code and reason, the trunk and peer of the last leg, direction,
  calling and called numbers after translation, the number of legs and the release.
* ``legs``: one row per failed leg (a failover attempt) with its code and reason (queued
  by the failure routes for the same process); the answered leg is the call's own record.

Kamailio deletes records older than ``records.retention_days`` and, when the database
holds more than ``records.max_mb``, the oldest ones (route RECORDS_TRIM, every 15 s).

Reading: :func:`remote_script` is a small stdlib-only Python program run on each edge over
SSH (`siporch.hosts`, through the host's become); it prints one JSON object per line
(streamed, filtered on the edge); :func:`read_calls` parses them as they arrive.
:func:`summarize` folds such rows into per-trunk figures in bounded memory.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import re
import shlex
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from siporch.errors import SiporchError

RECORDS_DIR = "/var/lib/siporch/records"
RECORDS_DB = "records.sqlite"
SCHEMA_VERSION = 1

# Columns of the two tables, each "name kind" (kind "real" for seconds and durations).
_CALL_COLUMNS = (
    "start_time text", "end_time text", "duration real", "callid text", "edge text",
    "direction text", "trunk text", "peer text", "source text", "calling text", "called text",
    "code int", "reason text", "setup real", "ring real", "answer real", "legs int",
    "release text",
)  # fmt: skip
_LEG_COLUMNS = (
    "method text", "from_tag text", "to_tag text", "callid text", "sip_code text",
    "sip_reason text", "time text", "ts real", "edge text", "direction text", "trunk text",
    "peer text", "calling text", "called text", "leg int", "release text",
)  # fmt: skip


def _schema(postgres: bool) -> str:
    """The tables' DDL for SQLite (one file per edge) or PostgreSQL (one database for every
    edge, each row naming its edge, so indexes lead with the edge). Idempotent."""
    kinds = {"text": "TEXT", "int": "INTEGER", "real": "DOUBLE PRECISION" if postgres else "REAL"}
    key = "BIGSERIAL PRIMARY KEY" if postgres else "INTEGER PRIMARY KEY AUTOINCREMENT"

    def table(name: str, columns: tuple[str, ...]) -> str:
        cols = [f"    id {key}"] + [
            f"    {c} {kinds[k]}" for c, k in (col.split() for col in columns)
        ]
        return f"CREATE TABLE IF NOT EXISTS {name} (\n" + ",\n".join(cols) + "\n);\n"

    def index(name: str, table_name: str, columns: str) -> str:
        return f"CREATE INDEX IF NOT EXISTS {name} ON {table_name} ({columns});\n"

    out = "" if postgres else "PRAGMA journal_mode=WAL;\n"
    out += table("calls", _CALL_COLUMNS) + index("calls_setup", "calls", "setup")
    if postgres:
        out += index("calls_edge_setup", "calls", "edge, setup")
    out += table("legs", _LEG_COLUMNS) + index("legs_ts", "legs", "ts")
    if postgres:
        out += index("legs_edge_ts", "legs", "edge, ts")
    out += index("legs_callid", "legs", "callid")
    out += "CREATE TABLE IF NOT EXISTS version (table_name TEXT PRIMARY KEY, table_version INTEGER);\n"
    values = "('calls', 1), ('legs', 1)"
    if postgres:
        return out + f"INSERT INTO version VALUES {values} ON CONFLICT (table_name) DO NOTHING;\n"
    return out + f"INSERT OR REPLACE INTO version VALUES {values};\n"


# The columns are those acc wrote (start_time, end_time, duration of its CDR; method,
# from_tag, to_tag, callid, sip_code, sip_reason, time of its transaction records; the
# rest its extras). acc is no longer loaded: the edge's routes RECORD_INSERT and
# LEG_INSERT (templates/kamailio/kamailio.cfg, one version per backend) fill the same
# columns, the tags excepted.
SCHEMA = _schema(postgres=False)
# The same tables in PostgreSQL (records.backend postgresql); applied by the kamailio_edge
# role with psql.
SCHEMA_PG = _schema(postgres=True)

RESULTS = ("answered", "failed", "busy", "cancelled")


# --------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class Call:
    """One call as ``siporch calls`` shows it (times in seconds since the epoch, UTC)."""

    edge: str
    callid: str
    direction: str
    trunk: str
    peer: str
    calling: str
    called: str
    code: int
    reason: str
    setup: float
    ring: float | None
    answer: float | None
    end: float | None
    legs: int
    failed_legs: list[dict[str, Any]]
    release: str
    #: The PBX side: the Asterisk CDRs with this call's Call-ID (see :func:`join_pbx`).
    pbx: tuple[PbxCdr, ...] = ()

    @property
    def result(self) -> str:
        return result_of(self.code)

    @property
    def pdd(self) -> float | None:
        """Post-dial delay: setup to the first ringing (or the answer when none)."""
        first = self.ring if self.ring is not None else self.answer
        return None if first is None else max(0.0, first - self.setup)

    @property
    def duration(self) -> float | None:
        if self.answer is None or self.end is None:
            return None
        return max(0.0, self.end - self.answer)

    def as_dict(self, mask: bool = False) -> dict[str, Any]:
        return {
            "edge": self.edge,
            "callid": self.callid,
            "direction": self.direction,
            "trunk": self.trunk,
            "peer": self.peer,
            "calling": mask_number(self.calling) if mask else self.calling,
            "called": mask_number(self.called) if mask else self.called,
            "result": self.result,
            "code": self.code,
            "reason": self.reason,
            "setup": iso(self.setup),
            "ring": iso(self.ring),
            "answer": iso(self.answer),
            "end": iso(self.end),
            "pdd": None if self.pdd is None else round(self.pdd, 3),
            "duration": None if self.duration is None else round(self.duration, 3),
            "legs": self.legs,
            "failed_legs": [
                {**leg, "called": mask_number(leg.get("called", "")) if mask else leg.get("called")}
                for leg in self.failed_legs
            ],
            "release": self.release,
            "pbx": [cdr.as_dict(mask) for cdr in self.pbx],
        }

    @property
    def pbx_main(self) -> PbxCdr | None:
        """The CDR that stands for the PBX side: the answered one with the longest billsec,
        else the last one."""
        if not self.pbx:
            return None
        answered = [c for c in self.pbx if c.disposition == "ANSWERED"]
        if answered:
            return max(answered, key=lambda c: c.billsec)
        return self.pbx[-1]


@dataclass(frozen=True)
class PbxCdr:
    """One Asterisk CDR of siporch's CDR database on a PBX (columns of
    ``siporch.render.asterisk.CDR_COLUMNS``)."""

    host: str
    callid: str
    start: float | None
    answer: float | None
    end: float | None
    clid: str
    src: str
    dst: str
    dcontext: str
    channel: str
    dstchannel: str
    lastapp: str
    disposition: str
    duration: int
    billsec: int
    accountcode: str
    uniqueid: str
    linkedid: str

    def as_dict(self, mask: bool = False) -> dict[str, Any]:
        m = mask_text if mask else _same
        return {
            "host": self.host,
            "channel": m(self.channel),
            "dstchannel": m(self.dstchannel),
            "disposition": self.disposition,
            "billsec": self.billsec,
            "duration": self.duration,
            "start": iso(self.start),
            "answer": iso(self.answer),
            "end": iso(self.end),
            "src": mask_number(self.src) if mask else self.src,
            "dst": mask_number(self.dst) if mask else self.dst,
            "clid": m(self.clid),
            "dcontext": self.dcontext,
            "lastapp": self.lastapp,
            "accountcode": self.accountcode,
            "uniqueid": self.uniqueid,
            "linkedid": self.linkedid,
        }


def _int(v: Any) -> int:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return 0


def pbx_cdr_from_row(host: str, row: dict[str, Any]) -> PbxCdr:
    def text(k: str) -> str:
        v = row.get(k)
        return "" if v is None else str(v)

    return PbxCdr(
        host=host,
        callid=text("callid"),
        start=_float(row.get("start")),
        answer=_float(row.get("answer")),
        end=_float(row.get("end")),
        clid=text("clid"),
        src=text("src"),
        dst=text("dst"),
        dcontext=text("dcontext"),
        channel=text("channel"),
        dstchannel=text("dstchannel"),
        lastapp=text("lastapp"),
        disposition=text("disposition"),
        duration=_int(row.get("duration")),
        billsec=_int(row.get("billsec")),
        accountcode=text("accountcode"),
        uniqueid=text("uniqueid"),
        linkedid=text("linkedid"),
    )


def result_of(code: int) -> str:
    if 200 <= code < 300:
        return "answered"
    if code in (486, 600):
        return "busy"
    if code == 487:
        return "cancelled"
    return "failed"


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def mask_number(number: str | None) -> str:
    """Keep a leading '+', the first 3 digits and the last 2: +1312*****00."""
    if not number:
        return number or ""
    plus = "+" if number.startswith("+") else ""
    digits = number[len(plus) :]
    if len(digits) <= 5:
        return plus + "*" * len(digits)
    return plus + digits[:3] + "*" * (len(digits) - 5) + digits[-2:]


# a run of 6 or more digits (with its '+') that does not end a channel name's "-0000001f"
# suffix or sit in a unique id: the numbers in a channel name, a caller ID or a dial string
_NUMBER_IN_TEXT = re.compile(r"(?<![\w.-])\+?\d{6,}(?![\d.])")


def mask_text(text: str) -> str:
    """``mask_number`` on every phone number inside a text (channel name, caller ID)."""
    return _NUMBER_IN_TEXT.sub(lambda m: mask_number(m.group(0)), text) if text else text


def _same(text: str) -> str:
    return text


def _float(v: Any) -> float | None:
    if v in (None, "", "0", 0):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if f > 0 else None


def call_from_row(row: dict[str, Any]) -> Call:
    """A row as the edge script prints it (columns of ``calls`` + ``failed_legs``)."""
    setup = _float(row.get("setup")) or 0.0
    answer = _float(row.get("answer"))
    end = None
    duration = row.get("duration")
    if answer is not None and duration not in (None, ""):
        # duration is from dialog creation (the setup) to the BYE
        end = setup + float(duration)
        end = max(end, answer)
    try:
        code = int(row.get("code") or 0)
    except ValueError:
        code = 0
    return Call(
        edge=str(row.get("edge") or ""),
        callid=str(row.get("callid") or ""),
        direction=str(row.get("direction") or ""),
        trunk=str(row.get("trunk") or ""),
        peer=str(row.get("peer") or ""),
        calling=str(row.get("calling") or ""),
        called=str(row.get("called") or ""),
        code=code,
        reason=str(row.get("reason") or ""),
        setup=setup,
        ring=_float(row.get("ring")),
        answer=answer,
        end=end,
        legs=int(row.get("legs") or 0),
        failed_legs=list(row.get("failed_legs") or []),
        release=str(row.get("release") or ""),
    )


LEG_FIELDS = ("ts", "trunk", "peer", "called", "code", "reason")


def parse_lines(lines: Iterable[str], edge: str = "") -> Iterator[Call]:
    """Calls from what the edge script printed: a ``# columns [...]`` line, then one JSON
    array per call (JSON objects are read too). Other lines are skipped."""
    columns: list[str] | None = None
    for line in lines:
        if line.startswith("# columns "):
            columns = json.loads(line[len("# columns ") :])
            continue
        line = line.strip()
        if not line or line[0] not in "[{":
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(data, list):
            if columns is None or len(columns) != len(data):
                continue
            row = dict(zip(columns, data, strict=True))
        else:
            row = data
        legs = row.get("failed_legs")
        if isinstance(legs, str):
            row["failed_legs"] = [dict(zip(LEG_FIELDS, x, strict=False)) for x in json.loads(legs)]
        elif legs is None:
            row["failed_legs"] = []
        if edge and not row.get("edge"):
            row["edge"] = edge
        yield call_from_row(row)


# --------------------------------------------------------------------------- filters


@dataclass(frozen=True)
class Filters:
    since: float | None = None
    until: float | None = None
    trunk: str | None = None
    number: str | None = None
    result: str | None = None

    def as_json(self) -> str:
        return json.dumps(
            {
                "since": self.since,
                "until": self.until,
                "trunk": self.trunk,
                "number": self.number,
                "result": self.result,
            }
        )

    def match(self, call: Call) -> bool:
        if self.since is not None and call.setup < self.since:
            return False
        if self.until is not None and call.setup >= self.until:
            return False
        if self.trunk and call.trunk != self.trunk:
            return False
        if self.number and self.number not in call.calling and self.number not in call.called:
            return False
        return not (self.result and call.result != self.result)


_REL = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")


def parse_time(text: str, now: float) -> float:
    """``2026-12-05T10:00``, ``2026-12-05 10:00:00Z``, an epoch, or ``30m``/``2h``/``7d`` ago."""
    t = text.strip()
    m = _REL.match(t)
    if m:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
        return now - float(m.group(1)) * unit
    try:
        return float(t)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(
            f"'{text}' is not a time (use 2026-12-05T10:00, an epoch, or 30m / 2h / 7d)"
        ) from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


# --------------------------------------------------------------------------- summary


class Quantiles:
    """Median and p95 in bounded memory: a uniform reservoir sample (exact below its size)."""

    def __init__(self, size: int = 20000, seed: int = 1) -> None:
        self.size = size
        self.seen = 0
        self.sample: list[float] = []
        self._rng = random.Random(seed)

    def add(self, v: float) -> None:
        self.seen += 1
        if len(self.sample) < self.size:
            self.sample.append(v)
        else:
            j = self._rng.randrange(self.seen)
            if j < self.size:
                self.sample[j] = v

    def quantile(self, q: float) -> float | None:
        if not self.sample:
            return None
        s = sorted(self.sample)
        k = (len(s) - 1) * q
        lo, hi = math.floor(k), math.ceil(k)
        return s[lo] + (s[hi] - s[lo]) * (k - lo)


@dataclass
class TrunkSummary:
    trunk: str
    attempts: int = 0
    answered: int = 0
    talk: float = 0.0
    failovers: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    pdd: Quantiles = field(default_factory=Quantiles)
    #: PDD median and p95 computed elsewhere (the PostgreSQL server), instead of ``pdd``
    pdd_exact: tuple[float | None, float | None] | None = None

    @property
    def asr(self) -> float | None:
        return None if self.attempts == 0 else self.answered / self.attempts

    @property
    def acd(self) -> float | None:
        return None if self.answered == 0 else self.talk / self.answered

    def as_dict(self) -> dict[str, Any]:
        if self.pdd_exact is not None:
            med, p95 = self.pdd_exact
        else:
            med, p95 = self.pdd.quantile(0.5), self.pdd.quantile(0.95)
        return {
            "trunk": self.trunk,
            "attempts": self.attempts,
            "answered": self.answered,
            "asr": None if self.asr is None else round(self.asr, 4),
            "acd": None if self.acd is None else round(self.acd, 3),
            "pdd_median": None if med is None else round(med, 3),
            "pdd_p95": None if p95 is None else round(p95, 3),
            "failovers": self.failovers,
            "top_failures": [f"{c} x{n}" for c, n in self.codes.most_common(3)],
        }


def summarize(calls: Iterable[Call]) -> list[TrunkSummary]:
    """Per trunk: attempts (calls whose last leg was on the trunk), answered, ASR, ACD (s),
    PDD median and p95 (s, answered or ringing calls), failovers (failed legs on the
    trunk that another leg followed) and the most frequent final failure codes."""
    by: dict[str, TrunkSummary] = {}
    for c in calls:
        s = by.get(c.trunk)
        if s is None:
            s = by[c.trunk] = TrunkSummary(c.trunk or "-")
        s.attempts += 1
        if c.result == "answered":
            s.answered += 1
            s.talk += c.duration or 0.0
        else:
            s.codes[f"{c.code} {c.reason}".strip()] += 1
        pdd = c.pdd
        if pdd is not None:
            s.pdd.add(pdd)
        # the last failed leg of a failed call was its final attempt, not a failover
        followed = c.failed_legs if c.result == "answered" else c.failed_legs[:-1]
        for leg in followed:
            t = str(leg.get("trunk") or c.trunk)
            ls = by.get(t)
            if ls is None:
                ls = by[t] = TrunkSummary(t or "-")
            ls.failovers += 1
    return sorted(by.values(), key=lambda s: s.trunk)


CSV_FIELDS = (
    "edge",
    "setup",
    "direction",
    "trunk",
    "peer",
    "calling",
    "called",
    "result",
    "code",
    "reason",
    "pdd",
    "answer",
    "end",
    "duration",
    "legs",
    "release",
    "callid",
    "pbx_host",
    "pbx_channel",
    "pbx_dstchannel",
    "pbx_disposition",
    "pbx_billsec",
    "pbx_cdrs",
)


def csv_header() -> str:
    buf = io.StringIO()
    csv.writer(buf).writerow(CSV_FIELDS)
    return buf.getvalue()


def csv_row(call: Call, mask: bool = False) -> str:
    d = call.as_dict(mask)
    main = call.pbx_main
    p = main.as_dict(mask) if main is not None else {}
    d.update(
        pbx_host=p.get("host"),
        pbx_channel=p.get("channel"),
        pbx_dstchannel=p.get("dstchannel"),
        pbx_disposition=p.get("disposition"),
        pbx_billsec=p.get("billsec"),
        pbx_cdrs=len(call.pbx) if call.pbx else None,
    )
    buf = io.StringIO()
    csv.writer(buf).writerow(["" if d[k] is None else d[k] for k in CSV_FIELDS])
    return buf.getvalue()


# --------------------------------------------------------------------------- edge side


# Run on an edge with python3 (standard library only): argv[1] is the database, stdin-free,
# argv[2] the filters as JSON. One JSON object per call on stdout, oldest first, with the
# failed legs of the call; "#" lines are diagnostics.
_REMOTE = r"""
import json, os, sqlite3, sys
path, flt = sys.argv[1], json.loads(sys.argv[2])
if not os.path.exists(path):
    print("# no-records " + path)
    sys.exit(0)
st = os.stat(path)
if os.getuid() == 0 and st.st_uid != 0:
    # read as the database's owner: a file SQLite creates beside it (-wal, -shm) stays theirs
    os.setgid(st.st_gid)
    os.setuid(st.st_uid)
con = sqlite3.connect("file:" + path + "?mode=ro", uri=True, timeout=10)
where, args = [], []
if flt.get("since") is not None:
    where.append("setup >= ?"); args.append(flt["since"])
if flt.get("until") is not None:
    where.append("setup < ?"); args.append(flt["until"])
if flt.get("trunk"):
    where.append("trunk = ?"); args.append(flt["trunk"])
if flt.get("number"):
    where.append("(instr(calling, ?) > 0 OR instr(called, ?) > 0)"); args += [flt["number"]] * 2
sql = (
    "SELECT c.*, CASE WHEN c.legs > 1 OR c.code >= 300 THEN (SELECT json_group_array("
    "json_array(l.ts, l.trunk, l.peer, l.called, l.sip_code, l.sip_reason)) FROM "
    "(SELECT * FROM legs WHERE callid = c.callid AND CAST(sip_code AS INTEGER) >= 300 "
    "ORDER BY ts) AS l) END AS failed_legs FROM calls AS c"
    + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY setup"
)
cur = con.execute(sql, args)
out = sys.stdout
out.write("# columns " + json.dumps([d[0] for d in cur.description]) + "\n")
dumps = json.dumps
while True:
    rows = cur.fetchmany(2000)
    if not rows:
        break
    out.write("".join(dumps(r) + "\n" for r in rows))
"""


def db_path() -> str:
    """Where an edge keeps its records (the kamailio_edge role's kamailio_edge_records_db)."""
    return f"{RECORDS_DIR}/{RECORDS_DB}"


def remote_script() -> str:
    return _REMOTE


def remote_command(db_path: str, filters: Filters) -> list[str]:
    return ["python3", "-c", _REMOTE, db_path, filters.as_json()]


# `siporch calls --summary` when the records are in PostgreSQL: the server aggregates (one
# row per trunk, not one per call, crosses the network), with the semantics of
# :func:`summarize` (a test compares both on the same records): the times as
# :func:`call_from_row` reads them (a value <= 0 is none), PDD median and p95 exact
# (percentile_cont, the interpolation of :class:`Quantiles`), the top failures in the order
# of their counts and then of their first call, failovers counted on the leg's trunk. Three
# kinds of lines: "t" (a trunk's calls), "f" (a trunk's failovers), "c" (a trunk's three
# most frequent failures). @WHERE@: the filters on calls AS c.
SUMMARY_SQL_PG = """
CREATE TEMPORARY VIEW sc AS
SELECT c.id, c.edge, c.callid, coalesce(c.trunk, '') AS trunk, coalesce(c.code, 0) AS code,
  coalesce(c.reason, '') AS reason, c.legs,
  CASE WHEN c.setup > 0 THEN c.setup ELSE 0 END AS setup,
  CASE WHEN c.ring > 0 THEN c.ring END AS ring,
  CASE WHEN c.answer > 0 THEN c.answer END AS answer, c.duration,
  row_number() OVER (ORDER BY c.setup, c.id) AS n
FROM calls AS c@WHERE@;
SELECT json_build_object('k', 't', 'trunk', trunk, 'attempts', count(*),
  'answered', count(*) FILTER (WHERE code BETWEEN 200 AND 299),
  'talk', coalesce(sum(CASE WHEN answer IS NOT NULL AND duration IS NOT NULL
    THEN greatest(0, greatest(setup + duration, answer) - answer) ELSE 0 END)
    FILTER (WHERE code BETWEEN 200 AND 299), 0),
  'pdd', percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY
    CASE WHEN coalesce(ring, answer) IS NOT NULL
    THEN greatest(0, coalesce(ring, answer) - setup) END))
FROM sc GROUP BY trunk;
SELECT json_build_object('k', 'f', 'trunk', trunk, 'n', count(*)) FROM (
  SELECT coalesce(nullif(l.trunk, ''), sc.trunk) AS trunk, sc.code BETWEEN 200 AND 299 AS ok,
    row_number() OVER (PARTITION BY sc.id ORDER BY l.ts DESC) AS last
  FROM sc JOIN legs AS l ON l.callid = sc.callid AND l.edge IS NOT DISTINCT FROM sc.edge
  WHERE (sc.legs > 1 OR sc.code >= 300) AND l.sip_code ~ '^[0-9]+$'
    AND l.sip_code::integer >= 300) AS f
WHERE ok OR last > 1 GROUP BY trunk;
SELECT json_build_object('k', 'c', 'trunk', trunk, 'code', label, 'n', n) FROM (
  SELECT trunk, label, n, row_number() OVER (PARTITION BY trunk ORDER BY n DESC, first) AS r
  FROM (SELECT trunk, btrim(code || ' ' || reason) AS label, count(*) AS n, min(n) AS first
    FROM sc WHERE code NOT BETWEEN 200 AND 299 GROUP BY trunk, label) AS g) AS t
WHERE r <= 3 ORDER BY trunk, r;
"""


def summary_from_lines(lines: Iterable[str]) -> list[TrunkSummary]:
    """The per-trunk summary from the lines of the PostgreSQL reader's "summary" mode."""
    by: dict[str, TrunkSummary] = {}

    def get(trunk: str) -> TrunkSummary:
        s = by.get(trunk)
        if s is None:
            s = by[trunk] = TrunkSummary(trunk or "-")
        return s

    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        row = json.loads(line)
        s = get(str(row.get("trunk") or ""))
        if row["k"] == "t":
            s.attempts = int(row["attempts"])
            s.answered = int(row["answered"])
            s.talk = float(row["talk"] or 0.0)
            med, p95 = row.get("pdd") or (None, None)
            s.pdd_exact = (med, p95)
        elif row["k"] == "f":
            s.failovers = int(row["n"])
        elif row["k"] == "c":
            s.codes[str(row["code"])] = int(row["n"])
    return sorted(by.values(), key=lambda s: s.trunk)


# Run on an edge with python3 (standard library only) when the records are in PostgreSQL:
# argv[1] the edge's live host.cfg (its ACC_DB_URL names the server, user and password),
# argv[2] the filters as JSON, argv[3] the edges to read (JSON list; empty: all). psql
# prints one JSON object per call (FETCH_COUNT: a cursor, streamed), oldest first, with its
# failed legs; "#" lines are diagnostics. The password goes to psql in its environment.
# argv[4] "summary": the server aggregates instead (SUMMARY_SQL_PG), one JSON object per
# line.
_REMOTE_PG = r"""
import json, os, re, shutil, subprocess, sys
cfg, flt, edges = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
mode = sys.argv[4] if len(sys.argv) > 4 else "calls"
try:
    text = open(cfg).read()
except OSError as exc:
    print("# no-records " + cfg + ": " + exc.strerror)
    sys.exit(0)
m = re.search(r'#!define ACC_DB_URL "postgres://([^:@/]+):([^@/]*)@([^/:]+)(?::(\d+))?/([^"]+)"', text)
if not m:
    print("# no-records " + cfg + " has no PostgreSQL records URL")
    sys.exit(0)
user, password, host, port, db = m.groups()
psql = shutil.which("psql")
if psql is None:
    sys.stderr.write("psql is not installed on this edge (postgresql-client)\n")
    sys.exit(3)
def lit(v):
    return "'" + str(v).replace("'", "''") + "'"
where = []
if flt.get("since") is not None:
    where.append("c.setup >= %r" % float(flt["since"]))
if flt.get("until") is not None:
    where.append("c.setup < %r" % float(flt["until"]))
if flt.get("trunk"):
    where.append("c.trunk = " + lit(flt["trunk"]))
if flt.get("number"):
    n = lit(flt["number"])
    where.append("(strpos(c.calling, %s) > 0 OR strpos(c.called, %s) > 0)" % (n, n))
if edges:
    where.append("c.edge IN (" + ", ".join(lit(e) for e in edges) + ")")
if mode == "summary":
    sql = "SET standard_conforming_strings = on;\n" + SUMMARY.replace(
        "@WHERE@", " WHERE " + " AND ".join(where) if where else "")
else:
  sql = (
    "SET standard_conforming_strings = on;\n"
    "SELECT row_to_json(x) FROM (SELECT c.*, CASE WHEN c.legs > 1 OR c.code >= 300 THEN "
    "(SELECT json_agg(json_build_array(l.ts, l.trunk, l.peer, l.called, l.sip_code, "
    "l.sip_reason) ORDER BY l.ts)::text FROM legs AS l WHERE l.callid = c.callid "
    "AND l.edge IS NOT DISTINCT FROM c.edge AND l.sip_code ~ '^[0-9]+$' "
    "AND l.sip_code::integer >= 300) END AS failed_legs FROM calls AS c"
    + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY c.setup, c.id) AS x;\n"
)
env = dict(os.environ, PGPASSWORD=password, PGCONNECT_TIMEOUT="10", PGAPPNAME="siporch-calls")
argv = [psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-v", "FETCH_COUNT=2000",
        "-h", host, "-p", port or "5432", "-U", user, "-d", db, "-f", "-"]
proc = subprocess.Popen(argv, stdin=subprocess.PIPE, env=env, text=True)
proc.communicate(sql)
sys.exit(proc.returncode)
"""


_REMOTE_PG = f"SUMMARY = {SUMMARY_SQL_PG!r}\n" + _REMOTE_PG


def live_host_cfg() -> str:
    """The live host.cfg of an edge (its records URL), read by the PostgreSQL reader."""
    return "/etc/siporch/current/kamailio/host.cfg"


def remote_command_pg(
    host_cfg: str, filters: Filters, edges: Iterable[str] = (), summary: bool = False
) -> list[str]:
    return [
        "python3", "-c", _REMOTE_PG, host_cfg, filters.as_json(), json.dumps(list(edges)),
        "summary" if summary else "calls",
    ]  # fmt: skip


# --------------------------------------------------------------------- reading the edges

#: Where records are read from: a name (the edge, or a file's stem) and the argv that
#: prints them, one JSON object per line.
Source = tuple[str, list[str]]


class RecordsError(SiporchError):
    exit_code = 2


def edges_of(
    model: Any, inventory: Any, hosts: Sequence[str] = (), limit: str | None = None
) -> list[tuple[str, str]]:
    """``(name, address)`` of the model's edges: only the named ``hosts`` (an unknown name
    is an error) and those the Ansible host pattern ``limit`` selects."""
    from siporch.hosts import primary, select

    edges = [(n, str(h.address)) for n, h in model.hosts.items() if h.role == "edge"]
    unknown = [h for h in hosts if h not in model.hosts]
    if unknown:
        raise RecordsError(
            f"unknown host(s): {', '.join(unknown)}",
            hint=f"edges in the model: {', '.join(n for n, _ in edges)}",
        )
    if hosts:
        edges = [(n, a) for n, a in edges if n in hosts]
    if limit and edges:
        chosen = select(inventory, limit, [n for n, _ in edges])
        edges = [(n, a) for n, a in edges if n in chosen]
    if not edges:
        raise RecordsError(f"{primary(inventory)}: the model has no edge host")
    return edges


def edge_sources(
    inventory: Any,
    edges: Sequence[tuple[str, str]],
    filters: Filters,
    timeout: float,
    problems: list[str],
    *,
    backend: str = "sqlite",
    only: Sequence[str] = (),
    summary: bool = False,
) -> list[Source]:
    """How to read the edges' records over SSH with the inventory's settings; the records
    are readable only by root and Kamailio's user: through the host's become. An edge that
    cannot be reached so is noted in ``problems``.

    SQLite: each edge its own database. PostgreSQL: one database for every edge, read once
    through the first edge that can be reached (``only``: those edges' records);
    ``summary``: the server aggregates (:data:`SUMMARY_SQL_PG`, read with
    :func:`summary_from_lines`)."""
    from siporch.hosts import primary, try_access

    out: list[Source] = []
    if backend == "postgresql":
        remote = shlex.join(remote_command_pg(live_host_cfg(), filters, only, summary))
        for edge, address in edges:
            access = try_access(inventory, edge, address, timeout)
            if access is not None:
                return [(edge, access.argv(remote, root=True))]
        problems.append(f"no edge is in the Ansible inventory {primary(inventory)}")
        return out
    remote = shlex.join(remote_command(db_path(), filters))
    for edge, address in edges:
        access = try_access(inventory, edge, address, timeout)
        if access is None:
            problems.append(f"{edge}: not in the Ansible inventory {primary(inventory)}")
            continue
        out.append((edge, access.argv(remote, root=True)))
    return out


def file_sources(files: Sequence[Path], filters: Filters) -> list[Source]:
    """How to read copies of records databases on this machine."""
    return [(f.stem, [sys.executable, "-c", _REMOTE, str(f), filters.as_json()]) for f in files]


def stream_lines(argv: list[str], edge: str, timeout: float, problems: list[str]) -> Iterator[str]:
    """Lines of a command's output as they come; a failure is noted in ``problems``."""
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1 << 16,
        )
    except OSError as exc:
        problems.append(f"{edge}: {exc}")
        return
    assert proc.stdout is not None and proc.stderr is not None
    try:
        for line in proc.stdout:
            if line.startswith("# no-records"):
                problems.append(f"{edge}: no call records yet ({line.split(' ', 2)[-1].strip()})")
                continue
            yield line
        err = proc.stderr.read()
        rc = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if rc != 0:
        last = (err.strip().splitlines() or [f"exit code {rc}"])[-1]
        problems.append(f"{edge}: records not read: {last}")


def read_calls(
    sources: Sequence[Source], filters: Filters, timeout: float, problems: list[str]
) -> Iterator[Call]:
    """The calls of every source, one source after another, as they are read."""
    for edge, argv in sources:
        for call in parse_lines(stream_lines(argv, edge, timeout, problems), edge=edge):
            # the edge filtered already; the result (derived from the code) is filtered here
            if filters.match(call):
                yield call


# --------------------------------------------------------------------- the PBX side

# Run on a PBX with python3 (standard library only): argv[1] siporch's CDR database,
# argv[2] its table. Reads batches of Call-IDs from stdin (one JSON list per line) and
# answers each with the CDRs of those Call-IDs (one JSON object per line, oldest first)
# then "# end"; "#" lines are diagnostics. The first time, an index on the Call-ID is
# added to the table Asterisk created (as the database's owner), so each batch is a look-up.
_REMOTE_PBX = r"""
import json, os, sqlite3, sys
path, table = sys.argv[1], sys.argv[2]
out = sys.stdout
con = None
if not os.path.exists(path):
    print("# no-records " + path)
else:
    st = os.stat(path)
    if os.getuid() == 0 and st.st_uid != 0:
        os.setgid(st.st_gid)
        os.setuid(st.st_uid)
    try:
        rw = sqlite3.connect(path, timeout=5)
        rw.execute("CREATE INDEX IF NOT EXISTS %s_callid ON %s (callid)" % (table, table))
        rw.commit()
        rw.close()
    except sqlite3.Error as exc:
        print("# no-index " + str(exc))
    con = sqlite3.connect("file:" + path + "?mode=ro", uri=True, timeout=10)
    try:
        con.execute("SELECT 1 FROM %s LIMIT 1" % table)
    except sqlite3.Error:
        print("# no-records " + path + " has no table " + table)
        con = None
out.flush()
for line in sys.stdin:
    ids = [str(x) for x in json.loads(line)]
    if con is not None:
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            cur = con.execute(
                "SELECT * FROM %s WHERE callid IN (%s) ORDER BY CAST(start AS REAL)"
                % (table, ", ".join("?" * len(part))), part)
            cols = [d[0] for d in cur.description]
            for row in cur:
                out.write(json.dumps(dict(zip(cols, row))) + "\n")
    out.write("# end\n")
    out.flush()
"""


def pbx_command(db: str, table: str) -> list[str]:
    return ["python3", "-c", _REMOTE_PBX, db, table]


def pbxs_of(model: Any) -> list[tuple[str, str]]:
    """``(name, address)`` of the model's PBX hosts (Asterisk): the PBX side of the calls."""
    return [(n, str(h.address)) for n, h in model.hosts.items() if h.role == "pbx"]


def pbx_sources(
    inventory: Any, pbxs: Sequence[tuple[str, str]], timeout: float, problems: list[str]
) -> list[Source]:
    """How to read each PBX's CDRs over SSH (as root through the host's become: the
    database is readable only by root and Asterisk's user)."""
    from siporch.hosts import primary, try_access
    from siporch.render.asterisk import CDR_DB, CDR_TABLE

    remote = shlex.join(pbx_command(CDR_DB, CDR_TABLE))
    out: list[Source] = []
    for name, address in pbxs:
        access = try_access(inventory, name, address, timeout)
        if access is None:
            problems.append(f"{name}: not in the Ansible inventory {primary(inventory)}")
            continue
        out.append((name, access.argv(remote, root=True)))
    return out


def pbx_file_sources(files: Sequence[Path]) -> list[Source]:
    """How to read copies of PBX CDR databases on this machine."""
    from siporch.render.asterisk import CDR_TABLE

    return [(f.stem, [sys.executable, *pbx_command(str(f), CDR_TABLE)[1:]]) for f in files]


class PbxReader:
    """One reader process per PBX, kept for the whole listing: each batch of Call-IDs goes
    to every PBX and comes back with their CDRs, so memory holds one batch at a time."""

    def __init__(self, sources: Sequence[Source], problems: list[str]) -> None:
        self.problems = problems
        self.procs: list[tuple[str, subprocess.Popen[str]]] = []
        for name, argv in sources:
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    bufsize=1,
                )
            except OSError as exc:
                problems.append(f"{name}: {exc}")
                continue
            self.procs.append((name, proc))

    def lookup(self, callids: Sequence[str]) -> dict[str, list[PbxCdr]]:
        found: dict[str, list[PbxCdr]] = {}
        if not callids:
            return found
        batch = json.dumps(list(callids)) + "\n"
        for name, proc in list(self.procs):
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(batch)
                proc.stdin.flush()
            except (BrokenPipeError, OSError):
                self._lost(name, proc)
                continue
            ended = False
            for line in proc.stdout:
                if line.startswith("# end"):
                    ended = True
                    break
                if line.startswith("# no-records"):
                    self.problems.append(
                        f"{name}: no PBX call records yet ({line.split(' ', 2)[-1].strip()})"
                    )
                    continue
                if not line.startswith("{"):
                    continue
                try:
                    cdr = pbx_cdr_from_row(name, json.loads(line))
                except json.JSONDecodeError:
                    continue
                found.setdefault(cdr.callid, []).append(cdr)
            if not ended:
                self._lost(name, proc)
        return found

    def _lost(self, name: str, proc: subprocess.Popen[str]) -> None:
        self.procs.remove((name, proc))
        err = ""
        try:
            proc.kill()
            _, err = proc.communicate(timeout=5)
        except (OSError, subprocess.SubprocessError):
            pass
        last = (err.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        self.problems.append(f"{name}: PBX records not read: {last}")

    def close(self) -> None:
        for _, proc in self.procs:
            try:
                if proc.stdin is not None:
                    proc.stdin.close()
                proc.wait(timeout=10)
            except (OSError, subprocess.SubprocessError):
                proc.kill()
                proc.wait()
        self.procs.clear()


def join_pbx(
    calls: Iterable[Call],
    lookup: Any,
    batch: int = 500,
) -> Iterator[Call]:
    """The calls with their PBX side: ``lookup(callids) -> {callid: [PbxCdr, ...]}`` is
    asked once per ``batch`` calls (only the calls being shown); order is kept."""
    import dataclasses

    pending: list[Call] = []

    def flush() -> Iterator[Call]:
        found = lookup(sorted({c.callid for c in pending if c.callid}))
        for c in pending:
            cdrs = found.get(c.callid)
            yield dataclasses.replace(c, pbx=tuple(cdrs)) if cdrs else c
        pending.clear()

    for call in calls:
        pending.append(call)
        if len(pending) >= batch:
            yield from flush()
    if pending:
        yield from flush()
