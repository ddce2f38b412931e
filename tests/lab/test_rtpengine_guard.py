"""The deploy's session guard on the pair's standby edge: a foreign session (rtpengine's
replica, through Redis, of a call the other edge carries) counts while the call's key is
in that edge's Redis database, and stops counting once the key is gone although the
standby never heard of its deletion (a lost keyspace notification, or one sent while the
standby was not subscribed). Such a stale replica stays in rtpengine until it restarts; the
guard used to count it for ever and refuse every deploy that restarts that rtpengine.

The call is made by hand over the ng protocol on edge-central (an offer, no SIP), its
notification lost by turning Redis' keyspace events off around the key's deletion."""

from __future__ import annotations

import json
import uuid
from typing import Any

import callkit as ck
import pairkit as pk
import pytest

pytestmark = pytest.mark.lab

ACTIVE, STANDBY = "edge-central", "edge-central-2"
REDIS_HOST = "db-central"
#: rtpengine's database of edge-central (redis-write = .../1 in its rendered config)
ACTIVE_DB = "1"

_NG = (
    "import json, sys; from pathlib import Path; sys.path.insert(0, '/usr/local/lib/siporch');"
    "import siporch_rtpengine as r;"
    "reply = r.ng(Path('" + pk.RTPENGINE_CONF + "'), json.loads(sys.argv[1]));"
    "print(json.dumps(reply, default=lambda b: b.decode(errors='replace')))"
)

_SDP = (
    "v=0\r\no=- 1 1 IN IP4 198.18.1.10\r\ns=-\r\nc=IN IP4 198.18.1.10\r\nt=0 0\r\n"
    "m=audio 30000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def _ng(k: ck.Lab, edge: str, command: dict[str, Any]) -> dict[str, Any]:
    out = k.run(edge, ["python3", "-c", _NG, json.dumps(command)])
    reply: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return reply


def _foreign(k: ck.Lab, edge: str) -> int:
    stats = _ng(k, edge, {"command": "statistics"})["statistics"]["currentstatistics"]
    return int(stats["sessionsforeign"])


def _listed(k: ck.Lab, edge: str) -> set[str]:
    return set(_ng(k, edge, {"command": "list", "limit": "100000"}).get("calls") or [])


def _redis(k: ck.Lab, *args: str) -> str:
    address = k.addr(REDIS_HOST)
    return k.run(REDIS_HOST, ["redis-cli", "-h", address, *args]).strip()


def test_a_foreign_session_counts_only_while_its_call_is_in_redis(lab: Any) -> None:
    k = ck.Lab(lab)
    ck.ensure_deployed(k, lab.inventory, (ACTIVE, STANDBY, REDIS_HOST))
    callid = f"siporch-guard-{uuid.uuid4().hex[:12]}"
    base = pk.media_sessions(k, STANDBY)
    assert base >= 0
    events = _redis(k, "config", "get", "notify-keyspace-events").splitlines()[-1]
    try:
        offer = _ng(
            k,
            ACTIVE,
            {"command": "offer", "call-id": callid, "from-tag": "guard", "sdp": _SDP},
        )
        assert offer.get("result") == "ok", offer
        # the standby holds the call as a foreign session, and the guard counts it
        assert ck.wait_for(lambda: callid in _listed(k, STANDBY), 20, 0.2), "no replica"
        assert _redis(k, "-n", ACTIVE_DB, "exists", callid) == "1"
        assert pk.media_sessions(k, STANDBY) == base + 1

        # the key deleted with no notification: the standby keeps its replica ...
        _redis(k, "config", "set", "notify-keyspace-events", "")
        try:
            assert _redis(k, "-n", ACTIVE_DB, "del", callid) == "1"
        finally:
            _redis(k, "config", "set", "notify-keyspace-events", events)
        assert callid in _listed(k, STANDBY)
        assert _foreign(k, STANDBY) >= 1
        # ... which the guard no longer counts: a deploy may restart that rtpengine
        assert pk.media_sessions(k, STANDBY) == base
    finally:
        for edge in (ACTIVE, STANDBY):
            _ng(k, edge, {"command": "delete", "call-id": callid, "delete-delay": 0})
        _redis(k, "-n", ACTIVE_DB, "del", callid)
    assert ck.wait_for(lambda: callid not in _listed(k, STANDBY), 20, 0.2)
