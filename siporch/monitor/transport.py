"""AMI transport: one panoramisk `Manager` per Asterisk host.

`AmiConnection.snapshot()` logs in, asks the host for its channels, contacts, registrations
and endpoints, feeds the answers to the host's `CallStateHandler` and logs out.
`AmiConnection.watch()` stays connected and feeds every AMI event to the handler;
panoramisk reconnects by itself after the connection drops (an Asterisk restart), the
connection shows `reconnecting` meanwhile, and after each login the host's state is read
afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from panoramisk import Manager
from panoramisk.message import Message

from siporch.errors import MonitorError
from siporch.monitor.handler import CallStateHandler
from siporch.monitor.topology import TRUNK_VARIABLE, PbxTarget

LOG = logging.getLogger("siporch.monitor.ami")
LOG.addHandler(logging.NullHandler())

#: Host connection states shown by `status`.
UP = "up"
CONNECTING = "connecting"
RECONNECTING = "reconnecting"
UNREACHABLE = "unreachable"
AUTH_FAILED = "auth_failed"
CLOSED = "closed"

#: Actions whose event lists describe the host; each entry is fed to the handler.
SYNC_ACTIONS: tuple[dict[str, str], ...] = (
    {"Action": "Status", "Variables": TRUNK_VARIABLE, "AllVariables": "false"},
    {"Action": "PJSIPShowContacts"},
    {"Action": "PJSIPShowRegistrationsOutbound"},
    {"Action": "PJSIPShowEndpoints"},
)


class UnreachableError(MonitorError):
    """The host did not accept a TCP connection to its AMI port in time."""


class AuthError(MonitorError):
    """The host refused the AMI credentials."""


class _Manager(Manager):  # type: ignore[misc]
    """panoramisk's Manager that stops reconnecting once it is closed."""

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self.closing = False

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        if self.closing:
            return None
        return super().connect(*args, **kwargs)

    def connection_made(self, f: Any) -> None:
        # A connection attempt cancelled by our own timeout (an unreachable host) has no
        # result: panoramisk would raise CancelledError in its callback and asyncio print
        # it as "Exception in callback"; open() already reports the host.
        if f.cancelled():
            return
        super().connection_made(f)

    def connection_lost(self, exc: Any) -> None:
        if self.closing:
            return
        super().connection_lost(exc)

    def close(self) -> None:
        self.closing = True
        super().close()


def _events(answer: Any) -> list[Message]:
    """The list entries of an event-list action (without the response and *Complete)."""
    if isinstance(answer, list):
        return [
            m for m in answer if "event" in m and not str(m.get("Event", "")).endswith("Complete")
        ]
    return []


class AmiConnection:
    """The AMI session with one Asterisk host."""

    def __init__(
        self,
        target: PbxTarget,
        handler: CallStateHandler,
        *,
        timeout: float = 3.0,
        ping_interval: int = 5,
        reconnect_after: int = 1,
        on_state: Callable[[AmiConnection], None] | None = None,
        secret: str | None = None,
    ) -> None:
        self.target = target
        self.handler = handler
        self.timeout = timeout
        self.ping_interval = ping_interval
        self.reconnect_after = reconnect_after
        self.on_state = on_state
        self.secret = target.secret if secret is None else secret
        self.state = CONNECTING
        self.error: str | None = None
        self.version: str | None = None
        self.manager: _Manager | None = None
        self._sync_task: asyncio.Task[None] | None = None
        self._logged_in: asyncio.Event | None = None
        self._tasks: set[asyncio.Future[None]] = set()

    # ------------------------------------------------------------------------------ state

    def _set_state(self, state: str, error: str | None = None) -> None:
        self.state = state
        self.error = error
        if self.on_state is not None:
            self.on_state(self)

    @property
    def where(self) -> str:
        return f"{self.target.address}:{self.target.port}"

    # ------------------------------------------------------------------------ connecting

    def _manager(self, events: bool) -> _Manager:
        return _Manager(
            loop=asyncio.get_running_loop(),
            host=self.target.address,
            port=self.target.port,
            username=self.target.user,
            secret=self.secret,
            events="on" if events else "off",
            ping_delay=self.ping_interval,
            ping_interval=self.ping_interval,
            reconnect_timeout=self.reconnect_after,
            log=LOG,
            on_login=self._on_login,
            on_disconnect=self._on_disconnect,
        )

    async def open(self, *, events: bool = False) -> None:
        """Connect and log in; raises `UnreachableError` or `AuthError`."""
        self._set_state(CONNECTING)
        manager = self._manager(events)
        self.manager = manager
        try:
            async with asyncio.timeout(self.timeout):
                await manager.connect()
                future = manager.authenticated_future
                if future is None:  # pragma: no cover - panoramisk always sends Login
                    raise OSError("no login was sent")
                # shielded: on timeout panoramisk's own login callback must not see a
                # cancelled future
                answer = await asyncio.shield(future)
        except TimeoutError:
            manager.close()
            msg = (
                f"{self.target.name}: AMI at {self.where} did not answer within {self.timeout:g} s"
            )
            self._set_state(UNREACHABLE, msg)
            raise UnreachableError(msg) from None
        except OSError as exc:
            manager.close()
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            msg = f"{self.target.name}: cannot connect to AMI at {self.where}: {reason}"
            self._set_state(UNREACHABLE, msg)
            raise UnreachableError(msg) from None
        if not answer.success:
            manager.close()
            reason = answer.get("Message") or "login refused"
            msg = (
                f"{self.target.name}: AMI at {self.where} refused user {self.target.user!r}: "
                f"{reason}"
            )
            self._set_state(AUTH_FAILED, msg)
            raise AuthError(
                msg, hint="check hosts.<name>.ami.user/secret in the model and the vault"
            )
        self._set_state(UP)

    def close(self) -> None:
        if self.manager is not None:
            self.manager.close()
        if self._sync_task is not None:
            self._sync_task.cancel()
        if self.state not in (AUTH_FAILED, UNREACHABLE):
            self._set_state(CLOSED, self.error)

    # ------------------------------------------------------------------------- actions

    async def action(self, action: Mapping[str, str]) -> Any:
        if self.manager is None:
            raise MonitorError(f"{self.target.name}: not connected")
        try:
            return await asyncio.wait_for(
                self.manager.send_action(dict(action)), timeout=self.timeout
            )
        except TimeoutError:
            raise UnreachableError(
                f"{self.target.name}: AMI action {action['Action']} got no answer "
                f"within {self.timeout:g} s"
            ) from None

    async def sync(self) -> None:
        """Read the host's channels, contacts, registrations and endpoints afresh.

        While connected with events on, events keep arriving during the sync; the handler
        is reset first, so they apply on top, and channels that hang up meanwhile are not
        brought back by the (older) `Status` entries.
        """
        self.handler.begin_sync()
        try:
            answers = await asyncio.gather(*(self.action(a) for a in SYNC_ACTIONS))
            for action, answer in zip(SYNC_ACTIONS, answers, strict=True):
                self._check_permission(action, answer)
            for answer in answers:
                for event in _events(answer):
                    self.handler.on_event(event)
            # static contacts (a trunk's peers, the edge) are listed only per endpoint
            endpoints = [
                name for name, _ in self.handler.endpoints.items() if self.handler.watches(name)
            ]
            for answer in await self._endpoint_details(endpoints):
                for event in _events(answer):
                    self.handler.on_event(event)
        finally:
            self.handler.end_sync()
        settings = await self.action({"Action": "CoreSettings"})
        if isinstance(settings, Message):
            self.version = settings.get("AsteriskVersion") or None

    def _check_permission(self, action: Mapping[str, str], answer: Any) -> None:
        """An action refused for lack of rights is a credentials problem, not "no calls"."""
        if isinstance(answer, Message) and not answer.success:
            message = str(answer.get("Message", ""))
            if "permission" in message.lower():
                msg = (
                    f"{self.target.name}: AMI user {self.target.user!r} may not run "
                    f"{action['Action']}: {message}"
                )
                self._set_state(AUTH_FAILED, msg)
                raise AuthError(
                    msg, hint="the AMI user needs read=system,call and write=system,call,reporting"
                )

    async def _endpoint_details(self, endpoints: list[str], parallel: int = 32) -> list[Any]:
        limit = asyncio.Semaphore(parallel)

        async def one(name: str) -> Any:
            async with limit:
                return await self.action({"Action": "PJSIPShowEndpoint", "Endpoint": name})

        return list(await asyncio.gather(*(one(n) for n in endpoints)))

    async def snapshot(self) -> None:
        """Connect, read the host's state into the handler, disconnect."""
        await self.open(events=False)
        try:
            await self.sync()
        finally:
            self.close()
            if self.state == CLOSED and self.error is None:
                self.state = UP

    # -------------------------------------------------------------------------- watching

    async def watch(self, stop: asyncio.Event, *, retry_auth_after: float = 10.0) -> None:
        """Stay connected until `stop` is set, feeding every event to the handler."""
        self._logged_in = asyncio.Event()
        while not stop.is_set():
            try:
                await self.open(events=True)
                break
            except UnreachableError:
                delay = float(self.reconnect_after)
            except AuthError:
                delay = retry_auth_after
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
        if stop.is_set():
            self.close()
            return
        assert self.manager is not None
        self.manager.register_event("*", self._on_event)
        # the first login happened inside open(); read the state now
        self._schedule_sync()
        await stop.wait()
        self.close()

    def _on_event(self, manager: Any, event: Message) -> None:
        self.handler.on_event(event)
        name = event.get("Event")
        if name == "Shutdown":
            self._on_disconnect(manager, None)
        elif name == "Registry" and self.handler.registrations_unsure:
            task = asyncio.ensure_future(self._registrations())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif (name == "Newstate" and event.get("ChannelStateDesc") == "Up") or (
            name == "DialEnd" and event.get("DialStatus") == "ANSWER"
        ):
            # the codec (and, for outbound calls, the trunk) is known once answered
            uid = event.get("DestUniqueid" if name == "DialEnd" else "Uniqueid", "")
            if uid in self.handler.channels:
                channel = event.get("DestChannel" if name == "DialEnd" else "Channel", "")
                task = asyncio.ensure_future(self._codec(channel))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _registrations(self) -> None:
        """Read the outbound registrations again, by name (after a `Registry` event that
        could be any of a trunk's registrations through several edges)."""
        self.handler.registrations_unsure = False
        try:
            answer = await self.action({"Action": "PJSIPShowRegistrationsOutbound"})
        except MonitorError:
            self.handler.registrations_unsure = True
            return
        for event in _events(answer):
            self.handler.on_event(event)
        self.handler.registrations_read()

    async def _codec(self, channel: str) -> None:
        try:
            answer = await self.action(
                {"Action": "Status", "Channel": channel, "Variables": TRUNK_VARIABLE}
            )
        except MonitorError:
            return
        for event in _events(answer):
            self.handler.on_event(event)

    def _on_login(self, manager: Any) -> None:
        if self.state != UP:
            self._set_state(UP)
        if self._logged_in is not None and self._logged_in.is_set():
            # a reconnect: forget the calls of the previous connection, read them again
            self.handler.reset_calls()
            self._schedule_sync()
        if self._logged_in is not None:
            self._logged_in.set()

    def _on_disconnect(self, manager: Any, exc: Any) -> None:
        if self.manager is not None and self.manager.closing:
            return
        if self.state != RECONNECTING:
            self._set_state(RECONNECTING, f"{self.target.name}: connection lost, reconnecting")

    def _schedule_sync(self) -> None:
        async def run() -> None:
            try:
                await self.sync()
                if self.state != UP:
                    self._set_state(UP)
                if self.on_state is not None:
                    self.on_state(self)
            except MonitorError as exc:
                self._set_state(RECONNECTING, str(exc))

        self._sync_task = asyncio.ensure_future(run())
