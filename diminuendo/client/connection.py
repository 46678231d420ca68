"""`DiminuendoClient`: one WebSocket to the gateway that survives drops.

The client owns one socket and one supervisor task. The supervisor reads every frame, resolves
the request waiting for its `id`, and routes session events to subscriptions. When the socket
drops for any reason but `aclose()`, it runs the reconnect recipe of PROTOCOL.md §7 by itself:
reconnect with jittered backoff, authenticate, re-join every followed session with
`{afterSeq, epoch}` of the last event it delivered, drop replayed duplicates, and turn
`gap: true` into a `Gap` marker. A subscription therefore sees each `seq` once, in order, across
any number of drops; only a request whose reply was in flight when the socket dropped fails
(`ConnectionLost`), because the client cannot know whether the server acted on it.

Tokens expire (PROTOCOL.md §3): `token` may be a callable (sync or async) that the client calls
for a fresh token at every connect and whenever the server sends `auth_expiring`, so one socket
outlives any number of short-lived tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.protocol import State

from diminuendo import __version__
from diminuendo.client.errors import (
    ClientError,
    ConnectionFailed,
    ConnectionLost,
    ProtocolError,
    ServerError,
)
from diminuendo.client.events import (
    Ack,
    Authenticated,
    AuthExpiring,
    Connected,
    ErrorEvent,
    Event,
    Events,
    FileContent,
    FileEntry,
    FileHistory,
    FileIteration,
    FileList,
    Gap,
    History,
    Identity,
    Member,
    MemberList,
    Pong,
    ServerFrame,
    SessionArchived,
    SessionCreated,
    SessionDeleted,
    SessionLeft,
    SessionList,
    SessionMeta,
    SessionUnarchived,
    SessionUpdated,
    StateSnapshot,
    TurnComplete,
    TurnError,
    TurnStarted,
    Welcome,
    decode_event,
)

__all__ = ["DiminuendoClient", "ReconnectPolicy", "Subscription", "TokenSource"]

SUBPROTOCOL = "diminuendo.v1"
# §6: the server sends a heartbeat every `heartbeatIntervalMs`; a client that hears nothing for
# that long plus this grace (35 s at the default 30 s) treats the socket as stale.
STALE_GRACE_S = 5.0

logger = logging.getLogger("diminuendo.client")
_encoder = msgspec.json.Encoder()
Reply = TypeVar("Reply", bound=ServerFrame)
TokenSource = str | Callable[[], str | Awaitable[str]]
"""A bearer token, or a function (sync or async) returning a currently valid one."""


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


class _End:
    """Queued after a subscription's last item: iteration stops, or raises `error`."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class _Feed:
    """One followed session: where its stream stands (epoch, last delivered seq) and who reads
    it. Shared by every `Subscription` to the session; the unit the reconnect re-joins."""

    def __init__(self, session_id: str, after_seq: int | None, epoch: str | None) -> None:
        self.session_id = session_id
        self.last_seq = after_seq
        self.epoch = epoch
        self.snapshot: StateSnapshot | None = None
        self.subscriptions: list[Subscription] = []
        self.joined: asyncio.Future[StateSnapshot] = asyncio.get_running_loop().create_future()
        self.join_id: str | None = None
        self._sent: tuple[int | None, str | None] = (None, None)

    def join_message(self, request_id: str) -> dict[str, Any]:
        """`join_session` resuming after the last delivered event; its snapshot (and only its)
        will reset the stream position."""
        self.join_id = request_id
        self._sent = (self.last_seq, self.epoch)
        return _message(
            "join_session",
            id=request_id,
            sessionId=self.session_id,
            afterSeq=self.last_seq,
            epoch=self.epoch,
        )

    def on_snapshot(self, snapshot: StateSnapshot) -> None:
        """Runs in the reader before any replayed frame, so the position it sets is the one the
        replay is checked against."""
        sent_after, sent_epoch = self._sent
        if snapshot.gap:
            self._publish(
                Gap(
                    session_id=self.session_id,
                    epoch=snapshot.epoch,
                    last_seq=snapshot.last_seq,
                    previous_epoch=self.epoch,
                    previous_seq=self.last_seq,
                    snapshot=snapshot,
                )
            )
        # Live-only join, or another epoch (nothing replayed): the stream resumes after lastSeq.
        # Otherwise the server replays everything retained after what we sent.
        if sent_after is None or (sent_epoch is not None and snapshot.epoch != sent_epoch):
            self.last_seq = snapshot.last_seq
        self.epoch = snapshot.epoch
        self.snapshot = snapshot
        self.join_id = None
        if not self.joined.done():
            self.joined.set_result(snapshot)

    def on_event(self, event: Event, seq: int) -> None:
        if self.snapshot is None:
            return  # sent before our join was handled (e.g. to a subscription just left)
        if self.last_seq is not None and seq <= self.last_seq:
            return  # already delivered: a replay overlapping what arrived live
        self.last_seq = seq
        self._publish(event)

    def _publish(self, item: Event | Gap) -> None:
        for subscription in self.subscriptions:
            subscription._queue.put_nowait(item)

    def end(self, error: BaseException | None) -> None:
        if not self.joined.done():
            self.joined.set_exception(error or ConnectionLost("the client was closed"))
            self.joined.exception()  # retrieved here: nobody may be waiting any more
        for subscription in self.subscriptions:
            subscription._queue.put_nowait(_End(error))
        self.subscriptions.clear()


class Subscription:
    """One reader of a joined session: an async iterator of its events (`Event`, and `Gap`
    markers) in `seq` order, each `seq` once, across reconnects. Iteration ends when the
    subscription is closed, the session is left or deleted through this client, or the client
    closes; it raises `ConnectionLost` when the client gave up reconnecting, or `ServerError`
    when re-joining failed (e.g. the session was deleted elsewhere).

    Events are queued without bound while nobody iterates: the client always keeps reading, so
    the server never closes it as a slow consumer."""

    def __init__(self, client: DiminuendoClient, feed: _Feed) -> None:
        self._client = client
        self._feed = feed
        self._queue: asyncio.Queue[Event | Gap | _End] = asyncio.Queue()

    @property
    def session_id(self) -> str:
        return self._feed.session_id

    @property
    def snapshot(self) -> StateSnapshot | None:
        """The latest `state_snapshot` of the session (renewed on every re-join)."""
        return self._feed.snapshot

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event | Gap:
        item = await self._queue.get()
        if isinstance(item, _End):
            self._queue.put_nowait(item)  # keep ending on every later call
            if item.error is not None:
                raise item.error
            raise StopAsyncIteration
        return item

    async def close(self) -> None:
        """Stop reading; the last subscription of a session leaves it. Best effort: the server
        forgets a subscription anyway when the socket closes."""
        await self._client._unsubscribe(self)


class _Joining:
    """What `join()` returns: await it for a `Subscription`, or use it as an async context
    manager that closes the subscription on exit."""

    def __init__(
        self, client: DiminuendoClient, session_id: str, after_seq: int | None, epoch: str | None
    ) -> None:
        self._client = client
        self._args = (session_id, after_seq, epoch)
        self._subscription: Subscription | None = None

    def __await__(self) -> Generator[Any, None, Subscription]:
        return self._client._subscribe(*self._args).__await__()

    async def __aenter__(self) -> Subscription:
        self._subscription = await self._client._subscribe(*self._args)
        return self._subscription

    async def __aexit__(self, *exc_info: object) -> None:
        if self._subscription is not None:
            await self._subscription.close()


def _message(kind: str, **fields: Any) -> dict[str, Any]:
    """A client message; optional fields left as None are omitted, never sent as null."""
    return {"type": kind, **{k: v for k, v in fields.items() if v is not None}}


class DiminuendoClient:
    """An asyncio client of the Diminuendo protocol (PROTOCOL.md §2 to §7).

    Use it as `async with DiminuendoClient.connect(url, token=…) as client:`; every method is a
    coroutine that sends one message and returns its typed reply, raising `ServerError` when the
    server answers with an `error`. `join()` follows a session; `stream_turn()` runs a turn and
    yields its events. `token` is a string or a `TokenSource` callable (see the module doc).
    """

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
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[Event]] = {}
        self._feeds: dict[str, _Feed] = {}
        self._supervisor: asyncio.Task[None] | None = None
        self._refresh: asyncio.Task[None] | None = None  # answering `auth_expiring`
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
    ) -> DiminuendoClient:
        """A client for `url`, opened by `async with` (or `await client.open()`). `options` are
        the other constructor arguments (`reconnect`, `request_timeout_s`, `open_timeout_s`)."""
        return cls(url, token=token, protocol_version=protocol_version, **options)

    async def __aenter__(self) -> DiminuendoClient:
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

    # ----- connection lifecycle ---------------------------------------------------------------

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
        if self._refresh is not None:
            self._refresh.cancel()
        if self._supervisor is not None and not self._supervisor.done():
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._ws is not None:
            await self._ws.close()
        self._shutdown(None)

    def _upgrade_url(self) -> str:
        """The URL with `?protocolVersion=N`, so the server refuses a version it does not speak
        before the handshake, also in dev mode where no `authenticate` is sent."""
        parts = urlsplit(self.url)
        query = [(k, v) for k, v in parse_qsl(parts.query) if k != "protocolVersion"]
        query.append(("protocolVersion", str(self.protocol_version)))
        return urlunsplit(parts._replace(query=urlencode(query)))

    async def _open_socket(self) -> None:
        try:
            ws = await connect(
                self._upgrade_url(),
                subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                compression=None,  # §2: no compression
                max_size=None,  # the server bounds its own frames; a file may be large
                open_timeout=self.open_timeout_s,
                user_agent_header=f"diminuendo-client/{__version__}",
            )
        except InvalidStatus as exc:
            raise _refusal(self.url, exc) from None
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise ConnectionFailed(f"cannot connect to {self.url}: {_reason(exc)}") from exc
        try:
            async with asyncio.timeout(self.open_timeout_s):
                await self._handshake(ws)
        except BaseException as exc:
            ws.transport.abort()
            if isinstance(exc, TimeoutError | ConnectionClosed):
                raise ConnectionFailed(f"handshake with {self.url} failed: {_reason(exc)}") from exc
            raise
        self._ws = ws

    async def _handshake(self, ws: ClientConnection) -> None:
        """welcome → connected → authenticated, sending `authenticate` when the server asks."""
        welcome = await _receive(ws, Welcome)
        if welcome.protocol_version != self.protocol_version:
            raise ProtocolError(f"the server speaks protocol {welcome.protocol_version}")
        connected = await _receive(ws, Connected)
        self._stale_after_s = connected.heartbeat_interval_ms / 1000 + STALE_GRACE_S
        if welcome.requires_auth:
            token = await self._current_token()
            if token is None:
                raise ServerError("NOT_AUTHENTICATED", "The server requires a token")
            await ws.send(
                _encoder.encode(
                    _message("authenticate", token=token, protocolVersion=self.protocol_version)
                ),
                text=True,
            )
        authenticated = await _receive(ws, Authenticated)
        self.identity = authenticated.identity
        self.server_version = welcome.server_version

    async def _current_token(self) -> str | None:
        """The token to authenticate with now: the string, or what the callable returns. A
        failing callable is `ConnectionFailed`, so a reconnect retries it with backoff."""
        source = self.token
        if source is None or isinstance(source, str):
            return source
        try:
            token = source()
            if inspect.isawaitable(token):
                token = await token
        except Exception as exc:
            raise ConnectionFailed(f"the token callback failed: {exc!r}") from exc
        return token

    def _token_expiring(self, event: AuthExpiring) -> None:
        """`auth_expiring`: authenticate again with a fresh token from the callback. With a
        plain string there is nothing fresher to send: the socket will be closed with 4003 and
        the reconnect fail, so say so now."""
        if self.token is None or isinstance(self.token, str):
            logger.warning(
                "the token expires at %d (epoch ms) and cannot be refreshed: "
                "pass a callable as token= to keep the connection",
                event.expires_at,
            )
            return
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.create_task(self._reauthenticate(), name="diminuendo-auth")

    async def _reauthenticate(self) -> None:
        """Send `authenticate` with a fresh token; the server moves the connection's deadline.
        A failure is only logged: at expiry the socket closes (4003) and the reconnect asks the
        callback again."""
        try:
            token = await self._current_token()
            reply = await self.request(
                _message("authenticate", token=token, protocolVersion=self.protocol_version)
            )
        except (ClientError, TimeoutError) as exc:
            logger.warning("refreshing the token failed: %s", exc)
            return
        if isinstance(reply, Authenticated):
            self.identity = reply.identity

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
                self._fail_pending(ConnectionLost("the connection dropped before the reply"))
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
        self._fail_pending(error or ConnectionLost("the client was closed"))
        for feed in list(self._feeds.values()):
            feed.end(error)
        self._feeds.clear()

    def _fail_pending(self, error: ClientError) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()

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
        request_id = event.id
        future = self._pending.pop(request_id, None) if request_id is not None else None
        if future is not None and not future.done():
            if isinstance(event, ErrorEvent):
                future.set_exception(_server_error(event))
            else:
                future.set_result(event)
        elif isinstance(event, ErrorEvent):
            logger.warning("error from the server: %s %s", event.code, event.message)
        elif isinstance(event, AuthExpiring):
            self._token_expiring(event)

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

    def _expect_reply(self) -> tuple[str, asyncio.Future[Event]]:
        request_id = f"c{next(self._ids)}"
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        return request_id, future

    async def request(self, message: dict[str, Any], *, timeout_s: float | None = None) -> Event:
        """Send any client message (a dict with `type`) with a fresh `id` and return the reply.

        Raises `ServerError` for an `error` reply, `ConnectionLost` when the socket drops before
        the reply, `TimeoutError` after `timeout_s` (default `request_timeout_s`), which
        includes waiting for a reconnect to finish."""
        async with asyncio.timeout(timeout_s or self.request_timeout_s):
            await self._wait_ready()
            request_id, future = self._expect_reply()
            try:
                await self._send({**message, "id": request_id})
                return await future
            finally:
                self._pending.pop(request_id, None)

    async def _call(self, expected: type[Reply], kind: str, **fields: Any) -> Reply:
        reply = await self.request(_message(kind, **fields))
        if not isinstance(reply, expected):
            raise ProtocolError(f"`{kind}` was answered with `{reply.type}`")
        return reply

    # ----- subscriptions ----------------------------------------------------------------------

    def join(
        self, session_id: str, *, after_seq: int | None = None, epoch: str | None = None
    ) -> _Joining:
        """Follow a session: `async with client.join(id) as events: async for e in events`.

        Joining activates the session. Without `after_seq` the subscription starts live after
        the snapshot; with it (and the `epoch` it belongs to) it first replays what came after.
        Joining a session this client already follows adds another subscription that starts
        with the next event, so `after_seq`/`epoch` are then refused."""
        return _Joining(self, session_id, after_seq, epoch)

    async def _subscribe(
        self, session_id: str, after_seq: int | None, epoch: str | None
    ) -> Subscription:
        await self._wait_ready()
        feed = self._feeds.get(session_id)
        if feed is not None:
            if after_seq is not None or epoch is not None:
                raise ValueError(f"already following {session_id}: a second subscription is live")
            subscription = Subscription(self, feed)
            feed.subscriptions.append(subscription)
            return subscription
        feed = _Feed(session_id, after_seq, epoch)
        self._feeds[session_id] = feed
        subscription = Subscription(self, feed)
        feed.subscriptions.append(subscription)
        try:
            await self._send_join(feed)
            async with asyncio.timeout(self.request_timeout_s):
                await asyncio.shield(feed.joined)
        except BaseException:
            if self._feeds.get(session_id) is feed:
                del self._feeds[session_id]
                feed.end(None)
            raise
        return subscription

    async def _send_join(self, feed: _Feed) -> None:
        """Send (or resend, after a reconnect) the feed's `join_session`. A drop before the reply
        is not an error here: the next reconnect re-joins every feed."""
        request_id, future = self._expect_reply()
        future.add_done_callback(lambda done: self._joined(feed, done))
        try:
            await self._send(feed.join_message(request_id))
        except ConnectionLost:
            self._pending.pop(request_id, None)

    def _joined(self, feed: _Feed, future: asyncio.Future[Event]) -> None:
        error = future.exception()
        if isinstance(error, ServerError) and self._feeds.get(feed.session_id) is feed:
            del self._feeds[feed.session_id]
            feed.end(error)

    async def _unsubscribe(self, subscription: Subscription) -> None:
        feed = subscription._feed
        if subscription not in feed.subscriptions:
            return
        feed.subscriptions.remove(subscription)
        subscription._queue.put_nowait(_End(None))
        if feed.subscriptions or self._feeds.get(feed.session_id) is not feed or self._closed:
            return
        try:
            await self.leave(feed.session_id)
        except ClientError as exc:
            logger.debug("leaving %s: %s", feed.session_id, exc)

    async def leave(self, session_id: str) -> None:
        """Stop following a session; its subscriptions end."""
        feed = self._feeds.pop(session_id, None)
        if feed is not None:
            feed.end(None)
        await self._call(SessionLeft, "leave_session", sessionId=session_id)

    # ----- sessions ---------------------------------------------------------------------------

    async def ping(self, ts: int | None = None) -> Pong:
        return await self._call(Pong, "ping", ts=ts)

    async def list_sessions(self, *, include_archived: bool = False) -> list[SessionMeta]:
        """The tenant's sessions, newest activity first."""
        reply = await self._call(SessionList, "list_sessions", includeArchived=include_archived)
        return reply.sessions

    async def create_session(
        self,
        agent_type: str,
        *,
        name: str | None = None,
        project_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> SessionMeta:
        reply = await self._call(
            SessionCreated,
            "create_session",
            agentType=agent_type,
            name=name,
            projectId=project_id,
            metadata=metadata,
        )
        return reply.session

    async def rename_session(self, session_id: str, name: str) -> SessionMeta:
        reply = await self._call(SessionUpdated, "rename_session", sessionId=session_id, name=name)
        return reply.session

    async def archive_session(self, session_id: str) -> None:
        await self._call(SessionArchived, "archive_session", sessionId=session_id)

    async def unarchive_session(self, session_id: str) -> None:
        await self._call(SessionUnarchived, "unarchive_session", sessionId=session_id)

    async def delete_session(self, session_id: str) -> None:
        """Delete the session and stop its instance; its subscriptions here end."""
        await self._call(SessionDeleted, "delete_session", sessionId=session_id)
        feed = self._feeds.pop(session_id, None)
        if feed is not None:
            feed.end(None)

    # ----- turns ------------------------------------------------------------------------------

    async def run_turn(
        self, session_id: str, text: str, *, client_turn_id: str | None = None
    ) -> TurnStarted:
        """Start a turn (activating the session if needed). Its events reach the session's
        subscriptions; `stream_turn` is the one-call version."""
        return await self._call(
            TurnStarted,
            "run_turn",
            sessionId=session_id,
            text=text,
            clientTurnId=client_turn_id,
        )

    async def stream_turn(
        self, session_id: str, text: str, *, client_turn_id: str | None = None
    ) -> AsyncIterator[Event | Gap]:
        """Run a turn and yield its events, from its `turn_started` up to and including its
        `turn_complete` or `turn_error`: `async for event in client.stream_turn(id, text)`.

        Gaps are yielded too. If a gap shows the turn already ended while the client was away,
        the iteration stops after what the server could still replay."""
        async with self.join(session_id) as subscription:
            started = await self.run_turn(session_id, text, client_turn_id=client_turn_id)
            turn_id = started.turn_id
            streaming = False
            replay_end: int | None = None  # after a gap past the turn's end: last replayed seq
            async for event in subscription:
                if isinstance(event, Gap):
                    streaming = True
                    current = event.snapshot.current_turn
                    if current is None or current.turn_id != turn_id:
                        if event.epoch != event.previous_epoch:
                            yield event
                            return  # another epoch replays nothing
                        replay_end = event.last_seq
                elif not streaming:
                    streaming = isinstance(event, TurnStarted) and event.turn_id == turn_id
                if not streaming:
                    continue  # events of the session before this turn
                yield event
                if isinstance(event, TurnComplete | TurnError) and event.turn_id in (None, turn_id):
                    return
                seq = getattr(event, "seq", None)
                if replay_end is not None and seq is not None and seq >= replay_end:
                    return

    async def stop_turn(self, session_id: str) -> None:
        """Cancel the running turn; it ends with `turn_complete {stopReason: "cancelled"}`."""
        await self._call(Ack, "stop_turn", sessionId=session_id)

    async def steer(self, session_id: str, content: str) -> None:
        """Add guidance to the running turn."""
        await self._call(Ack, "steer", sessionId=session_id, content=content)

    async def answer_question(
        self,
        session_id: str,
        request_id: str,
        *,
        answers: dict[str, Any] | None = None,
        approved: bool | None = None,
        dismissed: bool | None = None,
    ) -> None:
        """Answer a `question_requested` (by question id) or a `permission_requested`
        (`approved`); the turn continues after `approval_resolved`."""
        await self._call(
            Ack,
            "answer_question",
            sessionId=session_id,
            requestId=request_id,
            answers=answers,
            approved=approved,
            dismissed=dismissed,
        )

    # ----- reads ------------------------------------------------------------------------------

    async def get_history(
        self, session_id: str, *, limit: int | None = None, before: str | None = None
    ) -> History:
        """The durable transcript (also what a client rebuilds from after a `Gap`)."""
        return await self._call(
            History, "get_history", sessionId=session_id, limit=limit, before=before
        )

    async def get_events(
        self,
        session_id: str,
        after_seq: int,
        *,
        epoch: str | None = None,
        limit: int | None = None,
    ) -> Events:
        """Retained stream events after `after_seq`, as a request (no subscription)."""
        return await self._call(
            Events,
            "get_events",
            sessionId=session_id,
            afterSeq=after_seq,
            epoch=epoch,
            limit=limit,
        )

    async def list_files(
        self, session_id: str, path: str = "", *, depth: int | None = None
    ) -> list[FileEntry]:
        reply = await self._call(
            FileList, "list_files", sessionId=session_id, path=path, depth=depth
        )
        return reply.entries

    async def read_file(self, session_id: str, path: str) -> FileContent:
        return await self._call(FileContent, "read_file", sessionId=session_id, path=path)

    async def file_history(self, session_id: str, path: str) -> list[FileIteration]:
        reply = await self._call(FileHistory, "file_history", sessionId=session_id, path=path)
        return reply.iterations

    async def file_at_iteration(self, session_id: str, path: str, iteration: int) -> FileContent:
        return await self._call(
            FileContent,
            "file_at_iteration",
            sessionId=session_id,
            path=path,
            iteration=iteration,
        )

    async def manage_members(
        self, action: str = "list", *, user_id: str | None = None, role: str | None = None
    ) -> list[Member]:
        """`list`, `add`, `update` or `remove` a tenant member; returns the members after."""
        reply = await self._call(
            MemberList, "manage_members", action=action, userId=user_id, role=role
        )
        return reply.members


async def _receive(ws: ClientConnection, expected: type[Reply]) -> Reply:
    """The next handshake frame of type `expected`; an `error` frame raises it."""
    while True:
        event = decode_event(await ws.recv())
        if isinstance(event, ErrorEvent):
            raise _server_error(event)
        if isinstance(event, expected):
            return event


def _server_error(event: ErrorEvent) -> ServerError:
    return ServerError(
        event.code,
        event.message,
        retry_after_ms=event.retry_after_ms,
        session_id=event.session_id,
        details=event.details,
    )


def _refusal(url: str, exc: InvalidStatus) -> ClientError:
    """An upgrade refused with an HTTP status: the body's `{"error": {code, message}}` when the
    gateway sent one (401 bad token, 403 origin, 503 draining), else the bare status."""
    status = exc.response.status_code
    try:
        error = msgspec.json.decode(exc.response.body or b"")["error"]
        return ServerError(str(error["code"]), f"{error['message']} (HTTP {status} from {url})")
    except (msgspec.DecodeError, KeyError, TypeError):
        return ConnectionFailed(f"{url} refused the connection with HTTP {status}")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
