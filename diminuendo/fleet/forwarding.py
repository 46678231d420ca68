"""Commands that need a session's runtime (`run_turn`, `stop_turn`, `steer`, `answer_question`)
sent by an instance that does not own the session to the one that does, and answered as if local.

Every instance has an inbox (names in `keys.InboxKeys`): a stream that keeps each message for
`retain_s`, and a pub/sub channel that carries the same message live. One Lua script appends to
the stream and publishes, so a message is either in both or in neither. Requests go to the owner's
inbox, replies to the requester's; each side listens on its own channel through a `Bus` and, when
the bus reports a gap (its subscriber reconnected), re-reads its stream — so no request and no
reply is lost across a reconnect. A request is identified by a random id: the owner runs each id
at most once (a message seen live and again on a re-read is dropped), and a reply for an id no
longer waited for is dropped.

Contract of `Forwarder`:

- `start()` subscribes the instance's inbox and reads what it already holds (returns once the
  server confirmed the subscription, or raises `FleetUnavailable` after the 1 s bound; the bus
  keeps trying and re-reads the inbox then).
- `forward(holder, command)` → the owner's reply body (a dict), or raises what the owner's
  handler raised: a `GatewayError` with the same code and message, or `NotOwner` when the owner no
  longer holds the session (the caller looks the holder up again). It raises `ForwardFailed`
  (code `UPSTREAM_UNAVAILABLE`, with `reason` and `retry_after_ms`) when:
  - `timeout`: no reply within `timeout_s` (the command may still have run on the owner; a retry
    of `run_turn` then meets `SESSION_BUSY`, as after any lost reply);
  - `owner_gone`: the owner's inbox had no subscriber for `absent_grace_s` — it died or lost
    Valkey (a dead process's connection closes at once, so this is found in about `absent_grace_s`,
    not after the lease TTL); `retry_after_ms` is what is left of its lease, after which another
    instance can take the session;
  - `unavailable`: Valkey could not be reached to send the request.
- The owner side: `handler(command)` is awaited for each request, once per request id; its
  return value is the reply body; `GatewayError` and `NotOwner` are sent back as such; any other
  exception is logged and answered `INTERNAL_ERROR` (no stack trace leaves the owner). A request
  found on a re-read after its requester gave up (older than its timeout) is not run.
- `close()` stops listening and cancels running handlers.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any, Literal

import msgspec
from loguru import logger
from redis.asyncio import Redis

from diminuendo.fleet.bus import Bus, Lane
from diminuendo.fleet.connection import (
    DEFAULT_TIMEOUT_S,
    FleetError,
    FleetUnavailable,
    unavailable_as,
)
from diminuendo.fleet.keys import Keyspace
from diminuendo.protocol.errors import ErrorCode, GatewayError

# The commands that need the session's runtime, so only its owner can run them.
FORWARDED_COMMANDS = frozenset({"run_turn", "stop_turn", "steer", "answer_question"})

DEFAULT_FORWARD_TIMEOUT_S = 10.0
# Longer than the bus's longest reconnect backoff (2 s) plus a connect: an owner whose
# subscriber is only reconnecting is not declared gone.
DEFAULT_ABSENT_GRACE_S = 3.0
LIVENESS_CHECK_S = 0.5

# KEYS: inbox stream · ARGV: message, retain ms, channel → {entry id, receivers}.
# The entry id carries Valkey's clock, which `_READ` compares with the same clock.
_SEND = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id = redis.call('XADD', KEYS[1], 'MINID', '~', now - tonumber(ARGV[2]), '*', 'm', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {id, redis.call('PUBLISH', ARGV[3], ARGV[1])}
"""
# KEYS: inbox stream · ARGV: retain ms → {now ms, entries}.
_READ = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {now, redis.call('XRANGE', KEYS[1], now - tonumber(ARGV[1]), '+')}
"""


class Command(msgspec.Struct, frozen=True, kw_only=True):
    """A client's command for a session another instance owns, with who sent it: the owner
    runs it as that user (and checks the tenant against the session's, as for a local one)."""

    session_id: str
    name: str  # one of FORWARDED_COMMANDS
    tenant_id: str
    user_id: str
    owner_token: str  # the lease the sender saw (`<fence>:<instance>`): the owner checks it
    body: dict[str, Any] = msgspec.field(default_factory=dict)  # the client's message


Handler = Callable[[Command], Awaitable[dict[str, Any]]]


class NotOwner(FleetError):
    """Raised by the owner's handler when it does not hold `command.owner_token` (any more),
    and by `forward` on the sender's side: look the holder up again and retry or take over."""


class ForwardFailed(GatewayError):
    """The owner could not be asked or did not answer: `UPSTREAM_UNAVAILABLE`, retry later."""

    def __init__(
        self,
        reason: Literal["timeout", "owner_gone", "unavailable"],
        session_id: str,
        retry_after_ms: int,
    ) -> None:
        self.reason = reason
        super().__init__(
            ErrorCode.UPSTREAM_UNAVAILABLE,
            _FAILURE_MESSAGES[reason],
            session_id=session_id,
            retry_after_ms=retry_after_ms,
        )


_FAILURE_MESSAGES = {
    "timeout": "The instance running this session did not answer in time, try again shortly",
    "owner_gone": "The instance running this session is gone, try again shortly",
    "unavailable": "The session's instance cannot be reached, try again shortly",
}


class _Closing(Exception):
    """Set on the requests still waiting when the forwarder closes."""


class _ErrorBody(msgspec.Struct, frozen=True, omit_defaults=True):
    code: str
    message: str
    retry_after_ms: int | None = None
    details: str | None = None


class _Request(msgspec.Struct, frozen=True, tag="req"):
    id: str
    reply_to: str  # the sender's instance id
    timeout_ms: int  # the sender stops waiting after this: a later re-read does not run it
    command: Command


class _Reply(msgspec.Struct, frozen=True, tag="rep", omit_defaults=True):
    id: str
    body: msgspec.Raw = msgspec.Raw(b"{}")  # the handler's dict, encoded once by the owner
    error: _ErrorBody | None = None
    not_owner: bool = False


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(_Request | _Reply).decode


class Forwarder:
    """One instance's end of command forwarding: sends requests, answers them, one inbox."""

    def __init__(
        self,
        client: Redis,
        url: str,
        keyspace: Keyspace,
        instance_id: str,
        handler: Handler,
        *,
        timeout_s: float = DEFAULT_FORWARD_TIMEOUT_S,
        absent_grace_s: float = DEFAULT_ABSENT_GRACE_S,
        bus_timeout_s: float = DEFAULT_TIMEOUT_S,
        bus: Bus | None = None,
    ) -> None:
        self._client = client
        self._url = url
        self._keys = keyspace
        self.instance_id = instance_id
        self._inbox = keyspace.inbox(instance_id)
        self._handler = handler
        self.timeout_s = timeout_s
        self._absent_grace_s = absent_grace_s
        # Messages are kept long enough for a re-read to find any request still waited for.
        self._retain_ms = int((timeout_s + absent_grace_s) * 1000) + 5_000
        self._send_script = client.register_script(_SEND)
        self._read_script = client.register_script(_READ)
        self._pending: dict[str, asyncio.Future[_Reply]] = {}
        self._seen: dict[str, float] = {}  # request id → when it was run (monotonic), in order
        self._tasks: set[asyncio.Task[None]] = set()
        # The process's shared subscriber when given (`Fleet.bus`), else a connection of its own.
        self._bus: Bus | Lane = (
            bus.lane(self._on_message, self._on_gap)
            if bus is not None
            else Bus(url, on_message=self._on_message, on_gap=self._on_gap, timeout_s=bus_timeout_s)
        )
        self._bus_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._bus_task = asyncio.create_task(self._bus.run(), name="fleet-forwarder-bus")
        await self._bus.subscribe(self._inbox.channel)
        await self._reread()  # requests sent before this instance listened

    async def close(self) -> None:
        tasks = [*self._tasks, *([self._bus_task] if self._bus_task else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError, Exception):
                await task
        self._bus_task = None
        for request_id, waiter in self._pending.items():
            if not waiter.done():  # its sender gets an answer, not a cancellation
                waiter.set_exception(_Closing(request_id))

    # --- the sender's side ----------------------------------------------------------------

    async def forward(self, holder: str, command: Command) -> dict[str, Any]:
        if command.name not in FORWARDED_COMMANDS:
            raise ValueError(f"{command.name!r} is not a forwarded command")
        owner = holder.partition(":")[2]
        request = _Request(
            secrets.token_hex(12), self.instance_id, int(self.timeout_s * 1000), command
        )
        waiter: asyncio.Future[_Reply] = asyncio.get_running_loop().create_future()
        self._pending[request.id] = waiter
        try:
            try:
                receivers = await self._send(owner, _encode(request))
            except FleetUnavailable:
                raise ForwardFailed("unavailable", command.session_id, 1000) from None
            reply = await self._wait(waiter, owner, command, present=receivers > 0)
        finally:
            self._pending.pop(request.id, None)
        return _unpack(reply, command.session_id)

    async def _wait(
        self, waiter: asyncio.Future[_Reply], owner: str, command: Command, *, present: bool
    ) -> _Reply:
        """The reply, or `ForwardFailed` at the deadline or once the owner's inbox has had no
        subscriber for `absent_grace_s` (checked every `LIVENESS_CHECK_S`)."""
        now = time.monotonic()
        deadline = now + self.timeout_s
        absent_since = None if present else now
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ForwardFailed("timeout", command.session_id, 1000)
            done, _ = await asyncio.wait({waiter}, timeout=min(LIVENESS_CHECK_S, remaining))
            if done:
                try:
                    return waiter.result()
                except _Closing:  # this instance is shutting down
                    raise ForwardFailed("unavailable", command.session_id, 1000) from None
            if await self._listening(owner):
                absent_since = None
                continue
            now = time.monotonic()
            absent_since = absent_since or now
            if now - absent_since >= self._absent_grace_s:
                raise ForwardFailed(
                    "owner_gone", command.session_id, await self._lease_left_ms(command)
                )

    async def _listening(self, owner: str) -> bool:
        """Whether the owner's inbox has a subscriber; `True` when Valkey cannot tell (the
        deadline still bounds the wait)."""
        try:
            with unavailable_as(self._url, "inbox lookup"):
                [(_, count)] = await self._client.pubsub_numsub(self._keys.inbox(owner).channel)
        except FleetUnavailable:
            return True
        return count > 0

    async def _lease_left_ms(self, command: Command) -> int:
        try:
            with unavailable_as(self._url, "lease lookup"):
                left = await self._client.pttl(self._keys.session(command.session_id).lease)
        except FleetUnavailable:
            return 1000
        return max(int(left), 100)

    # --- both sides: the inbox ------------------------------------------------------------

    async def _send(self, instance_id: str, message: bytes) -> int:
        """Append `message` to the inbox of `instance_id` and publish it; the number of
        subscribers that received it live."""
        inbox = self._keys.inbox(instance_id)
        with unavailable_as(self._url, "forward"):
            _, receivers = await self._send_script(
                keys=[inbox.stream], args=[message, self._retain_ms, inbox.channel]
            )
        return int(receivers)

    def _on_message(self, _channel: str, data: bytes) -> None:
        self._receive(data, age_ms=0)

    def _on_gap(self, _channels: frozenset[str]) -> None:
        self._spawn(self._reread())

    async def _reread(self) -> None:
        """After a reconnect: everything the inbox kept, as if it arrived now (each request runs
        once, each reply is taken once, so what was already seen live is dropped)."""
        try:
            with unavailable_as(self._url, "inbox read"):
                now_ms, entries = await self._read_script(
                    keys=[self._inbox.stream], args=[self._retain_ms]
                )
        except FleetUnavailable as exc:
            logger.warning("forwarding inbox not re-read: {}", exc)  # the next gap re-reads
            return
        for entry_id, fields in entries:
            sent_ms = int(entry_id.partition(b"-")[0])
            self._receive(_field(fields, b"m"), age_ms=int(now_ms) - sent_ms)

    def _receive(self, data: bytes, *, age_ms: int) -> None:
        try:
            message = _decode(data)
        except msgspec.DecodeError:  # ValidationError too
            logger.warning("forwarding: dropped a malformed inbox message ({} bytes)", len(data))
            return
        if isinstance(message, _Reply):
            waiter = self._pending.get(message.id)
            if waiter is not None and not waiter.done():
                waiter.set_result(message)
            return
        if message.id in self._seen or age_ms > message.timeout_ms:
            return
        self._remember(message.id)
        self._spawn(self._answer(message))

    def _remember(self, request_id: str) -> None:
        now = time.monotonic()
        self._seen[request_id] = now
        horizon = now - self._retain_ms / 1000
        seen = self._seen
        while seen and (oldest := next(iter(seen))) and seen[oldest] < horizon:  # oldest first
            del seen[oldest]

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- the owner's side -----------------------------------------------------------------

    async def _answer(self, request: _Request) -> None:
        command = request.command
        try:
            if command.name not in FORWARDED_COMMANDS:
                raise GatewayError(ErrorCode.INVALID_MESSAGE, "Not a forwardable command")
            body = await self._handler(command)
            reply = _Reply(request.id, body=msgspec.Raw(_encode(body)))
        except NotOwner:
            reply = _Reply(request.id, not_owner=True)
        except GatewayError as exc:
            reply = _Reply(
                request.id,
                error=_ErrorBody(exc.code.value, exc.message, exc.retry_after_ms, exc.details),
            )
        except Exception:
            logger.exception("forwarded {} for {} failed", command.name, command.session_id)
            reply = _Reply(request.id, error=_ErrorBody(ErrorCode.INTERNAL_ERROR.value, ""))
        try:
            await self._send(request.reply_to, _encode(reply))
        except (FleetUnavailable, ValueError) as exc:  # the sender times out
            logger.warning("reply to forwarded {} not sent: {}", command.name, exc)


def _unpack(reply: _Reply, session_id: str) -> dict[str, Any]:
    if reply.not_owner:
        raise NotOwner(f"session {session_id}: the instance asked no longer owns it")
    if reply.error is not None:
        error = reply.error
        try:
            code = ErrorCode(error.code)
        except ValueError:  # an owner of a newer version: a code this one does not know
            code = ErrorCode.INTERNAL_ERROR
        raise GatewayError(
            code,
            error.message or None,
            session_id=session_id,
            retry_after_ms=error.retry_after_ms,
            details=error.details,
        )
    return msgspec.json.decode(reply.body)


def _field(fields: Any, name: bytes) -> bytes:
    """One field of a stream entry: RESP3 gives a map, RESP2 a flat list."""
    if isinstance(fields, dict):
        return fields[name]
    return dict(zip(fields[::2], fields[1::2], strict=True))[name]
