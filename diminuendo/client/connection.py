"""One WebSocket to the gateway that survives drops: the socket, its supervisor and the
reconnect loop, under `DiminuendoClient` (`client.py`, the protocol as typed methods).

The connection owns one socket and one supervisor task. The supervisor reads every frame,
resolves the request waiting for its `id` (`replies.py`), and routes session events to their
feeds (`subscriptions.py`). When the socket drops for any reason but `aclose()`, it runs the
reconnect recipe of PROTOCOL.md §7 by itself: reconnect with jittered backoff, authenticate
(`handshake.py`, with a fresh token from `tokens.py`), re-join every followed session with
`{afterSeq, epoch}` of the last event it delivered. Only a request whose reply was in flight
when the socket dropped fails (`ConnectionLost`), because the client cannot know whether the
server acted on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar

import msgspec
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from diminuendo.client.errors import (
    ClientError,
    ConnectionFailed,
    ConnectionLost,
    ProtocolError,
    ServerError,
)
from diminuendo.client.events import (
    Authenticated,
    AuthExpiring,
    ErrorEvent,
    Event,
    Identity,
    ServerFrame,
    StateSnapshot,
    decode_event,
)
from diminuendo.client.handshake import STALE_GRACE_S, open_socket
from diminuendo.client.replies import PendingReplies, message
from diminuendo.client.subscriptions import Feed
from diminuendo.client.tokens import TokenRefresh, TokenSource, current_token

logger = logging.getLogger("diminuendo.client")
_encoder = msgspec.json.Encoder()
Reply = TypeVar("Reply", bound=ServerFrame)


@dataclass(frozen=True)
class ReconnectPolicy:
    """How hard to try after an unplanned drop. The client gives up (and every subscription
    raises `ConnectionLost`) after `max_attempts` failed attempts or `max_elapsed_s` seconds,
    whichever comes first; `max_attempts=0` turns reconnecting off."""

    max_attempts: int = 10
    max_elapsed_s: float = 60.0
    initial_delay_s: float = 0.2
    max_delay_s: float = 5.0

    def delay(self, attempt: int) -> float:
        """Equal jitter: half of the exponential step plus a random share of the other half, so
        clients dropped together (a gateway restart) spread out, yet none retries at once."""
        step = min(self.max_delay_s, self.initial_delay_s * 2**attempt)
        return step / 2 + random.uniform(0, step / 2)


class Connection:
    """The socket, its supervisor and the reconnect loop; `DiminuendoClient` adds the protocol's
    messages on top. `token` is a string or a `TokenSource` callable (see `tokens.py`)."""

    def __init__(
        self,
        url: str,
        *,
        token: TokenSource | None = None,
        protocol_version: int = 1,
        reconnect: ReconnectPolicy | None = None,
        request_timeout_s: float = 30.0,
        open_timeout_s: float = 10.0,
    ) -> None:
        self.url = url
        self.token = token
        self.protocol_version = protocol_version
        self.reconnect = reconnect or ReconnectPolicy()
        self.request_timeout_s = request_timeout_s
        self.open_timeout_s = open_timeout_s
        self.reconnects = 0  # how many times the connection came back after a drop
        self.identity: Identity | None = None
        self.server_version: str | None = None
        self._ws: ClientConnection | None = None
        self._stale_after_s = 30.0 + STALE_GRACE_S
        self._pending = PendingReplies()
        self._feeds: dict[str, Feed] = {}
        self._supervisor: asyncio.Task[None] | None = None
        self._refresh = TokenRefresh(self._reauthenticate)  # answering `auth_expiring`
        self._ready = asyncio.Event()  # set while connected, and for good once closed
        self._closed = False  # no reconnect from now on
        self._finished = False  # waiters woken and failed
        self._failure: ClientError | None = None

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        token: TokenSource | None = None,
        protocol_version: int = 1,
        **options: Any,
    ) -> Self:
        """A client for `url`, opened by `async with` (or `await client.open()`). `options` are
        the other constructor arguments (`reconnect`, `request_timeout_s`, `open_timeout_s`)."""
        return cls(url, token=token, protocol_version=protocol_version, **options)

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def websocket(self) -> ClientConnection | None:
        """The current socket (replaced on every reconnect), for diagnostics."""
        return self._ws

    # ----- lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and authenticate once; raises `ConnectionFailed` or `ServerError` at once
        (no retry: a wrong URL or token should fail fast). Reconnects happen only later."""
        await self._open_socket()
        self._supervisor = asyncio.create_task(self._supervise(), name="diminuendo-client")
        self._ready.set()

    async def aclose(self) -> None:
        """Close deliberately (code 1000): no reconnect; subscriptions end, pending requests
        raise `ConnectionLost`. Safe to call more than once."""
        self._closed = True
        self._refresh.cancel()
        if self._supervisor is not None and not self._supervisor.done():
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._ws is not None:
            await self._ws.close()
        self._shutdown(None)

    async def _open_socket(self) -> None:
        opened = await open_socket(
            self.url,
            protocol_version=self.protocol_version,
            open_timeout_s=self.open_timeout_s,
            token=lambda: current_token(self.token),
        )
        self._ws = opened.ws
        self._stale_after_s = opened.stale_after_s
        self.identity = opened.identity
        self.server_version = opened.server_version

    async def _supervise(self) -> None:
        """Read until the socket drops, then reconnect and re-join; forever, until closed or
        out of attempts."""
        try:
            while True:
                assert self._ws is not None
                await self._read(self._ws)
                if self._closed:
                    return
                self._ready.clear()
                self._pending.fail_all(ConnectionLost("the connection dropped before the reply"))
                logger.info("connection to %s dropped; reconnecting", self.url)
                await self._reconnect()
                for feed in list(self._feeds.values()):
                    await self._send_join(feed)
                self._ready.set()
        except ClientError as exc:
            logger.warning("giving up on %s: %s", self.url, exc)
            self._shutdown(exc)
        except Exception as exc:  # a bug here must not leave callers waiting forever
            logger.exception("client supervisor failed")
            self._shutdown(ConnectionLost(f"client failure: {exc!r}"))

    async def _read(self, ws: ClientConnection) -> None:
        while True:
            try:
                async with asyncio.timeout(self._stale_after_s):
                    data = await ws.recv()
            except TimeoutError:
                logger.warning("no frame for %.0f s: the connection is stale", self._stale_after_s)
                ws.transport.abort()
                return
            except ConnectionClosed:
                return
            self._dispatch(data)

    async def _reconnect(self) -> None:
        policy = self.reconnect
        loop = asyncio.get_running_loop()
        deadline = loop.time() + policy.max_elapsed_s
        last_error: ClientError | None = None
        for attempt in range(policy.max_attempts):
            delay = policy.delay(attempt)
            if isinstance(last_error, ServerError) and last_error.retry_after_ms:
                delay = max(delay, last_error.retry_after_ms / 1000)
            if loop.time() + delay > deadline:
                break
            await asyncio.sleep(delay)
            try:
                await self._open_socket()
            except ConnectionFailed as exc:
                last_error = exc
            except ServerError as exc:
                if not exc.retryable:
                    raise
                last_error = exc
            else:
                self.reconnects += 1
                return
        raise ConnectionLost(
            f"lost the connection to {self.url} and could not reconnect: {last_error}"
        )

    def _shutdown(self, error: ClientError | None) -> None:
        """End for good (the first call wins): wake and fail every waiter."""
        if self._finished:
            return
        self._finished = self._closed = True
        self._failure = error
        self._ready.set()
        self._pending.fail_all(error or ConnectionLost("the client was closed"))
        for feed in list(self._feeds.values()):
            feed.end(error)
        self._feeds.clear()

    # ----- frames -----------------------------------------------------------------------------

    def _dispatch(self, data: str | bytes) -> None:
        """One frame: route it to its session's subscriptions, then to the request it answers."""
        try:
            event = decode_event(data)
        except ProtocolError as exc:
            logger.warning("ignoring a frame: %s", exc)
            return
        session_id = getattr(event, "session_id", None)
        feed = self._feeds.get(session_id) if session_id else None
        if feed is not None:
            seq = getattr(event, "seq", None)
            if isinstance(event, StateSnapshot):
                if event.id is not None and event.id == feed.join_id:
                    feed.on_snapshot(event)
            elif seq is not None:
                feed.on_event(event, seq)
        if self._pending.resolve(event):
            return
        if isinstance(event, ErrorEvent):
            logger.warning("error from the server: %s %s", event.code, event.message)
        elif isinstance(event, AuthExpiring):
            self._refresh.on_expiring(self.token, event)

    # ----- requests ---------------------------------------------------------------------------

    async def _send(self, message: dict[str, Any]) -> None:
        ws = self._ws
        assert ws is not None
        try:
            await ws.send(_encoder.encode(message), text=True)
        except ConnectionClosed as exc:
            raise ConnectionLost("the connection dropped before the message was sent") from exc

    async def _wait_ready(self) -> None:
        """Wait out a reconnect, also one the supervisor has yet to notice (the socket died a
        moment ago): a message not yet sent is safe to hold. Raise once closed or given up."""
        while True:
            await self._ready.wait()
            if self._closed:
                raise self._failure or ConnectionLost("the client is closed")
            if self._ws is not None and self._ws.state is State.OPEN:
                return
            self._ready.clear()  # the supervisor sets it again after reconnecting

    async def request(self, message: dict[str, Any], *, timeout_s: float | None = None) -> Event:
        """Send any client message (a dict with `type`) with a fresh `id` and return the reply.

        Raises `ServerError` for an `error` reply, `ConnectionLost` when the socket drops before
        the reply, `TimeoutError` after `timeout_s` (default `request_timeout_s`), which
        includes waiting for a reconnect to finish."""
        async with asyncio.timeout(timeout_s or self.request_timeout_s):
            await self._wait_ready()
            request_id, future = self._pending.expect()
            try:
                await self._send({**message, "id": request_id})
                return await future
            finally:
                self._pending.forget(request_id)

    async def _call(self, expected: type[Reply], kind: str, **fields: Any) -> Reply:
        reply = await self.request(message(kind, **fields))
        if not isinstance(reply, expected):
            raise ProtocolError(f"`{kind}` was answered with `{reply.type}`")
        return reply

    async def _reauthenticate(self, token: str | None) -> None:
        """`authenticate` again on the open socket (a token refresh); the server moves the
        connection's deadline and answers with the identity."""
        reply = await self.request(
            message("authenticate", token=token, protocolVersion=self.protocol_version)
        )
        if isinstance(reply, Authenticated):
            self.identity = reply.identity

    # ----- re-joining -------------------------------------------------------------------------

    async def _send_join(self, feed: Feed) -> None:
        """Send (or resend, after a reconnect) the feed's `join_session`. A drop before the reply
        is not an error here: the next reconnect re-joins every feed."""
        request_id, future = self._pending.expect()
        future.add_done_callback(lambda done: self._joined(feed, done))
        try:
            await self._send(feed.join_message(request_id))
        except ConnectionLost:
            self._pending.forget(request_id)

    def _joined(self, feed: Feed, future: asyncio.Future[Event]) -> None:
        error = future.exception()
        if isinstance(error, ServerError) and self._feeds.get(feed.session_id) is feed:
            del self._feeds[feed.session_id]
            feed.end(error)
