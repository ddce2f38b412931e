"""Kamailio JSON-RPC (jsonrpcs over HTTP, xhttp `/RPC`) for the edge: dispatcher and dialogs."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from siporch.errors import MonitorError


@dataclass(frozen=True)
class DispatcherTarget:
    set_id: int
    uri: str
    flags: str
    priority: int | None
    attrs: str
    iuid: str = ""  # changes whenever the list is loaded again (it carries the load time)

    @property
    def up(self) -> bool:
        """Active (`A`), not inactive (`I`), disabled (`D`) or trying (`T`)."""
        return self.flags[:1] == "A"

    @property
    def state(self) -> str:
        return {"A": "up", "I": "down", "D": "disabled", "T": "trying"}.get(
            self.flags[:1], "unknown"
        )

    @property
    def host(self) -> str:
        """The host part of the target URI."""
        rest = self.uri.split(":", 1)[1] if ":" in self.uri else self.uri
        rest = rest.split("@", 1)[-1].split(";", 1)[0]
        if rest.startswith("["):
            return rest[1 : rest.index("]")]
        return rest.split(":", 1)[0]


#: Straight to the edge: never through an HTTP proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _call_unix(path: str, body: bytes, timeout: float) -> bytes:
    """jsonrpcs `dgram_socket`: one datagram out, the reply to our own bound socket."""
    with tempfile.TemporaryDirectory(prefix="siporch-rpc-") as tmp:
        me = os.path.join(tmp, "c.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(me)
            sock.settimeout(timeout)
            sock.sendto(body, path)
            return sock.recv(1 << 20)


def _call(url: str, method: str, params: list[Any] | None, timeout: float) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params or [], "id": 1})
    if url.startswith("unix:"):
        path = url[len("unix:") :]
        try:
            data = json.loads(_call_unix(path, body.encode(), timeout).decode() or "null")
        except TimeoutError:
            raise MonitorError(f"Kamailio RPC {url} {method}: no answer in {timeout:g} s") from None
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise MonitorError(f"Kamailio RPC {url} {method}: {reason}") from None
        return _result(url, method, data)
    req = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            data = json.loads(resp.read().decode() or "null")
    except urllib.error.HTTPError as exc:
        raise MonitorError(f"Kamailio RPC {url} {method}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = getattr(exc.reason, "strerror", None) or str(exc.reason)
        raise MonitorError(f"Kamailio RPC {url} {method}: {reason}") from None
    except TimeoutError:
        raise MonitorError(f"Kamailio RPC {url} {method}: no answer in {timeout:g} s") from None
    except (OSError, ValueError) as exc:
        raise MonitorError(f"Kamailio RPC {url} {method}: {exc}") from None
    return _result(url, method, data)


def _result(url: str, method: str, data: Any) -> Any:
    if isinstance(data, dict) and "error" in data:
        err = data["error"]
        msg = err.get("message", err) if isinstance(err, dict) else err
        raise MonitorError(f"Kamailio RPC {url} {method}: {msg}")
    return data.get("result") if isinstance(data, dict) else None


async def rpc(
    url: str, method: str, params: list[Any] | None = None, *, timeout: float = 2.0
) -> Any:
    """One JSON-RPC call; raises `MonitorError` on any failure."""
    return await asyncio.to_thread(_call, url, method, params, timeout)


def parse_dispatcher_list(result: Any) -> list[DispatcherTarget]:
    """Targets from `dispatcher.list` (Kamailio 5.6 and 6.x shapes)."""
    targets: list[DispatcherTarget] = []
    if not isinstance(result, dict):
        return targets
    records = result.get("RECORDS") or []
    for record in records:
        s = record.get("SET", record) if isinstance(record, dict) else {}
        set_id = int(s.get("ID", 0))
        entries = s.get("TARGETS") or []
        for entry in entries:
            dest = entry.get("DEST", entry) if isinstance(entry, dict) else {}
            attrs = dest.get("ATTRS", "")
            if isinstance(attrs, dict):
                attrs = attrs.get("BODY", "")
            prio = dest.get("PRIORITY")
            targets.append(
                DispatcherTarget(
                    set_id=set_id,
                    uri=str(dest.get("URI", "")),
                    flags=str(dest.get("FLAGS", "")),
                    priority=int(prio) if prio is not None else None,
                    attrs=str(attrs or ""),
                    iuid=str(dest.get("IUID") or ""),
                )
            )
    return targets


async def dispatcher_list(url: str, *, timeout: float = 2.0) -> list[DispatcherTarget]:
    return parse_dispatcher_list(await rpc(url, "dispatcher.list", timeout=timeout))


async def dialog_stats(url: str, *, timeout: float = 2.0) -> dict[str, int]:
    """`dlg.stats_active`: dialogs by state (starting, connecting, answering, ongoing, all)."""
    result = await rpc(url, "dlg.stats_active", timeout=timeout)
    if isinstance(result, dict):
        stats = result.get("active", result)
        return {str(k): int(v) for k, v in stats.items() if isinstance(v, int | str)}
    return {}


# ----- DMQ: the other edges of a pair this edge sees


@dataclass(frozen=True)
class DmqNode:
    host: str
    port: int
    status: str
    local: bool


def parse_dmq_nodes(result: Any) -> list[DmqNode]:
    """`dmq.list_nodes`: one entry per node of the bus, this edge's own (local) too."""
    items = result if isinstance(result, list) else []
    out = []
    for item in items:
        if not isinstance(item, dict):
            continue
        try:
            port = int(item.get("port", 0) or 0)
        except (TypeError, ValueError):
            port = 0
        out.append(
            DmqNode(
                host=str(item.get("host", "")),
                port=port,
                status=str(item.get("status", "unknown")),
                local=str(item.get("local", "0")) in ("1", "True", "true"),
            )
        )
    return out


async def dmq_nodes(url: str, *, timeout: float = 2.0) -> list[DmqNode]:
    return parse_dmq_nodes(await rpc(url, "dmq.list_nodes", timeout=timeout))


# ----- TLS peers by name: the edge's recent certificate name mismatches


def parse_htable_prefix(result: Any, prefix: str) -> dict[str, str]:
    """``key without prefix -> value`` of the items of an `htable.dump` whose key starts
    with ``prefix``."""
    out: dict[str, str] = {}
    stack = [result]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            name, value = item.get("name"), item.get("value")
            if isinstance(name, str) and name.startswith(prefix) and value is not None:
                out[name[len(prefix) :]] = str(value)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return out


def parse_tls_mismatches(result: Any) -> dict[str, str]:
    """Peer name -> ``address:port`` from `htable.dump tlsn`: the keys ``mm.<name>`` the
    edge sets when a TLS peer's certificate did not name it (kept 300 s)."""
    return parse_htable_prefix(result, "mm.")


def parse_auth_failures(result: Any) -> dict[str, str]:
    """Trunk name -> ``<code> <reason>`` from `htable.dump authf`: the keys ``af.<trunk>``
    the edge sets when a provider refused its credentials (kept 300 s)."""
    return parse_htable_prefix(result, "af.")


async def tls_mismatches(url: str, *, timeout: float = 2.0) -> dict[str, str]:
    return parse_tls_mismatches(await rpc(url, "htable.dump", ["tlsn"], timeout=timeout))


async def auth_failures(url: str, *, timeout: float = 2.0) -> dict[str, str]:
    return parse_auth_failures(await rpc(url, "htable.dump", ["authf"], timeout=timeout))
