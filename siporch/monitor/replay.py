"""Recorded AMI event streams: record them from a live Asterisk, replay them through the handler.

A stream is a JSON file holding a list of events; each event is an object of AMI header ->
value (a list when a header repeats, e.g. `Variable`). Entries answering an action carry
the extra key `"_action"` with the action's name; `_`-prefixed keys are never AMI headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from siporch.errors import MonitorError
from siporch.monitor.handler import CallStateHandler
from siporch.monitor.topology import PbxTarget
from siporch.monitor.transport import SYNC_ACTIONS, AmiConnection, _events

Event = dict[str, Any]


def load_stream(path: Path) -> list[Event]:
    """Read a recorded stream; raises `MonitorError` on a missing or malformed file."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise MonitorError(f"cannot read AMI stream {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise MonitorError(f"{path}: not JSON: {exc}") from None
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise MonitorError(f"{path}: an AMI stream is a JSON list of objects")
    return data


def events_only(stream: Iterable[Event]) -> Iterator[Event]:
    """The pushed events of a stream (not the answers to actions)."""
    return (e for e in stream if "_action" not in e)


def replay(stream: Iterable[Mapping[str, Any]], handler: CallStateHandler) -> CallStateHandler:
    """Feed every event of a stream to the handler, in order."""
    on_event = handler.on_event
    for event in stream:
        on_event(event)
    return handler


#: Headers whose values are secrets; recorded streams hold "***" instead.
SECRET_HEADERS = frozenset({"password", "secret", "md5cred", "oauthsecret", "refreshtoken"})


def _plain(message: Mapping[str, Any]) -> Event:
    item: Event = {}
    for k, v in message.items():
        key = str(k)
        if key == "content" and not v:
            continue
        item[key] = "***" if key.lower() in SECRET_HEADERS and v else v
    return item


async def record(
    target: PbxTarget,
    *,
    seconds: float,
    until: asyncio.Event | None = None,
    actions: Sequence[Mapping[str, str]] = SYNC_ACTIONS,
    snapshot_at_end: bool = True,
) -> list[Event]:
    """Record every AMI event of a live host for `seconds` (or until `until` is set).

    With `snapshot_at_end`, the answers to `actions` are appended, each entry tagged with
    `"_action"`.
    """
    stream: list[Event] = []
    handler = CallStateHandler(target.name, ())
    conn = AmiConnection(target, handler)
    await conn.open(events=True)
    assert conn.manager is not None
    t0 = time.monotonic()

    def on_event(manager: Any, event: Any) -> None:
        item = _plain(event)
        item["_t"] = round(time.monotonic() - t0, 6)
        stream.append(item)

    conn.manager.register_event("*", on_event)
    stop = until or asyncio.Event()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    if snapshot_at_end:
        for action in actions:
            answer = await conn.action(action)
            for entry in _events(answer):
                item = _plain(entry)
                item["_action"] = action["Action"]
                item.pop("ActionID", None)
                stream.append(item)
        # static contacts are listed per endpoint only
        endpoints = [e.get("ObjectName", "") for e in stream if e.get("Event") == "EndpointList"]
        for name in endpoints:
            answer = await conn.action({"Action": "PJSIPShowEndpoint", "Endpoint": name})
            for entry in _events(answer):
                if entry.get("Event") == "ContactStatusDetail":
                    item = _plain(entry)
                    item["_action"] = "PJSIPShowEndpoint"
                    item.pop("ActionID", None)
                    stream.append(item)
    conn.close()
    return stream


def write_stream(stream: Sequence[Event], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(list(stream), indent=1, sort_keys=False) + "\n")
