"""A pub/sub subscriber that survives Valkey restarts and says when it may have missed messages.

redis-py's own resubscription after a reconnect is not reliable (redis-py #2089, #2417) and its
`socket_timeout` breaks an idle subscriber, so `Bus` owns the loop: one connection without a read
timeout, a PING when nothing arrived for `health_interval_s` (a silent server — paused, behind a
dead NAT entry — is dropped after a second quiet interval), and on any failure a new connection,
with backoff, that subscribes to every channel again. Pub/sub is at-most-once: what was published
while the connection was down is gone, so every resubscription is reported to `on_gap` with the
channels concerned, once the server confirmed them — the caller re-reads those sessions' streams
from its `Cursor` (`recovery`), which makes the loss invisible.

Contract:
- `subscribe(channel)` returns once the server confirmed the subscription (so a stream read made
  after it misses nothing), or raises `FleetUnavailable` after `timeout_s` (the channel stays
  wanted and is subscribed on the next reconnect, reported through `on_gap`).
- `unsubscribe(channel)` stops delivery for it (at once locally, then on the server).
- `on_message(channel, data)` is called in order for each message; it must not block.
- `run()` loops until cancelled; `connected` tells whether the subscription is live.
- `lane(on_message, on_gap)`: a share of the connection for one user (`Lane`, same contract):
  one process runs one `Bus` for its tenant broadcasts, forwarded commands and followed
  sessions, each lane told only of its own channels' messages and gaps.
- `live(channel)`: the server confirmed the channel on this connection and no gap of it is
  waiting to be reported — nothing published on it since then can have been missed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from loguru import logger
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from diminuendo.fleet.connection import DEFAULT_TIMEOUT_S, FleetUnavailable
from diminuendo.settings import without_credentials

RECONNECT_FIRST_S = 0.05
RECONNECT_MAX_S = 2.0


OnMessage = Callable[[str, bytes], None]
OnGap = Callable[[frozenset[str]], None]


def _nothing(*_: Any) -> None:
    """The handlers of a `Bus` used through its lanes only."""


class Lane:
    """One user's share of a `Bus`, with the Bus's contract for its own channels: `subscribe`,
    `unsubscribe`, `live`, and its `on_message` / `on_gap` called for them only (channel names
    never overlap between users). `run()` only waits until cancelled: the connection is run by
    the Bus's owner, so a user starts and stops its lane as it did its own bus."""

    __slots__ = ("_bus", "on_gap", "on_message")

    def __init__(self, bus: Bus, on_message: OnMessage, on_gap: OnGap) -> None:
        self._bus = bus
        self.on_message = on_message
        self.on_gap = on_gap

    async def subscribe(self, channel: str) -> None:
        await self._bus.subscribe_for(self, channel)

    async def unsubscribe(self, channel: str) -> None:
        await self._bus.unsubscribe(channel)

    def live(self, channel: str) -> bool:
        return self._bus.live(channel)

    @property
    def connected(self) -> bool:
        return self._bus.connected

    async def run(self) -> None:
        await asyncio.Event().wait()


class Bus:
    def __init__(
        self,
        url: str,
        *,
        on_message: OnMessage = _nothing,
        on_gap: OnGap = _nothing,
        health_interval_s: float = 5.0,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._url = url
        self._own = Lane(self, on_message, on_gap)
        self._lanes: dict[str, Lane] = {}  # every wanted channel → the lane that wants it
        self._health_interval_s = health_interval_s
        self._timeout_s = timeout_s
        self._wanted: set[str] = set()
        self._confirmed: set[str] = set()
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._pending_gap: set[str] = set()  # resubscribed, reported once all are confirmed
        self._pubsub: PubSub | None = None
        self._client: Redis | None = None
        self._wanted_changed = asyncio.Event()
        self.connected = False
        self._ever_connected = False
        self.reconnects = 0

    def lane(self, on_message: OnMessage, on_gap: OnGap) -> Lane:
        return Lane(self, on_message, on_gap)

    async def subscribe(self, channel: str) -> None:
        await self.subscribe_for(self._own, channel)

    async def subscribe_for(self, lane: Lane, channel: str) -> None:
        self._lanes[channel] = lane
        self._wanted.add(channel)
        self._wanted_changed.set()
        if channel in self._confirmed:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append(waiter)
        if self._pubsub is not None and self.connected:
            with suppress(RedisError, OSError, TimeoutError):  # the loop notices, resubscribes
                await asyncio.wait_for(self._pubsub.subscribe(channel), self._timeout_s)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self._timeout_s)
        except TimeoutError:
            self._pending_gap.add(channel)  # on_gap tells the caller once it is subscribed
            raise FleetUnavailable(
                f"Valkey at {without_credentials(self._url)}: subscribe {channel} timed out"
            ) from None
        finally:
            waiters = self._waiters.get(channel, [])
            if waiter in waiters:
                waiters.remove(waiter)

    def live(self, channel: str) -> bool:
        return channel in self._confirmed and channel not in self._pending_gap

    async def unsubscribe(self, channel: str) -> None:
        self._lanes.pop(channel, None)
        self._wanted.discard(channel)
        self._confirmed.discard(channel)
        self._pending_gap.discard(channel)
        if self._pubsub is not None and self.connected:
            with suppress(RedisError, OSError, TimeoutError):
                await asyncio.wait_for(self._pubsub.unsubscribe(channel), self._timeout_s)

    async def run(self) -> None:
        delay = RECONNECT_FIRST_S
        while True:
            try:
                await self._connect()
                delay = RECONNECT_FIRST_S
                await self._read()
            except (RedisError, OSError, TimeoutError) as exc:
                logger.warning(
                    "pub/sub to Valkey at {} lost ({}); reconnecting",
                    without_credentials(self._url),
                    type(exc).__name__,
                )
            finally:
                await self._disconnect()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    async def _connect(self) -> None:
        self._client = Redis.from_url(
            self._url,
            protocol=3,
            socket_timeout=None,  # an idle subscriber is normal; health pings find dead ones
            socket_connect_timeout=self._timeout_s,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
            single_connection_client=True,
        )
        self._pubsub = self._client.pubsub()
        # PubSub opens its connection lazily, on its first command: two first subscriptions at
        # once would each open one, and the one left behind stays subscribed and unread.
        await asyncio.wait_for(self._pubsub.connect(), self._timeout_s)
        channels = set(self._wanted)
        if channels:
            await asyncio.wait_for(self._pubsub.subscribe(*channels), self._timeout_s)
        if self._ever_connected:
            self.reconnects += 1
        self._ever_connected = self.connected = True
        # A channel whose `subscribe()` is waiting learns of the subscription from it; every other
        # one was wanted before this connection (a reconnect, or a subscribe() that timed out
        # while Valkey was down): its caller may have missed messages and must re-read.
        self._pending_gap = {channel for channel in channels if not self._waiters.get(channel)}
        self._report_gap_when_confirmed()

    async def _disconnect(self) -> None:
        self.connected = False
        self._confirmed.clear()
        pubsub, client = self._pubsub, self._client
        self._pubsub = self._client = None
        with suppress(Exception):
            if pubsub is not None:
                await pubsub.aclose()
        with suppress(Exception):
            if client is not None:
                await client.aclose()

    async def _read(self) -> None:
        assert self._pubsub is not None
        pubsub = self._pubsub
        quiet = 0
        while True:
            if not pubsub.subscribed:
                # Nothing to read on a connection without subscriptions: wait for one.
                self._wanted_changed.clear()
                if not self._wanted:
                    await self._wanted_changed.wait()
                await asyncio.wait_for(pubsub.subscribe(*self._wanted), self._timeout_s)
                continue
            message = await pubsub.get_message(timeout=self._health_interval_s)
            if message is None:
                quiet += 1
                if quiet >= 2:
                    raise TimeoutError("no answer to PING")
                await asyncio.wait_for(pubsub.ping(), self._timeout_s)
                continue
            quiet = 0
            self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        channel = message.get("channel")
        if isinstance(channel, bytes):
            channel = channel.decode()
        if kind == "message":
            lane = self._lanes.get(channel)  # wanted channels only
            if lane is not None:
                try:
                    lane.on_message(channel, message["data"])
                except Exception:  # a caller's bug must not end the subscription of all others
                    logger.exception("pub/sub message handler failed on {}", channel)
        elif kind == "unsubscribe":
            self._confirmed.discard(channel)
        elif kind == "subscribe" and channel in self._wanted:
            self._confirmed.add(channel)
            for waiter in self._waiters.pop(channel, []):
                if not waiter.done():
                    waiter.set_result(None)
            self._report_gap_when_confirmed()

    def _report_gap_when_confirmed(self) -> None:
        pending = self._pending_gap & self._wanted
        if pending and pending <= self._confirmed:
            self._pending_gap = set()
            by_lane: dict[Lane, set[str]] = {}
            for channel in pending:
                by_lane.setdefault(self._lanes[channel], set()).add(channel)
            for lane, channels in by_lane.items():
                try:
                    lane.on_gap(frozenset(channels))
                except Exception:  # one user's bug must not end the others' subscriptions
                    logger.exception("pub/sub gap handler failed")
