"""Following a session: where its stream stands, who reads it, and how a re-join resumes it
(PROTOCOL.md §7) so that every reader sees each `seq` once, in order, across any number of drops.

A `Feed` is one followed session (shared by every `Subscription` to it, the unit the reconnect
re-joins); a `Subscription` is one reader of it. Neither touches the socket: the connection
sends the feed's `join_message` and hands it the frames of its session.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

from diminuendo.client.errors import ConnectionLost
from diminuendo.client.events import Event, Gap, StateSnapshot
from diminuendo.client.replies import message


class _End:
    """Queued after a subscription's last item: iteration stops, or raises `error`."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class Feed:
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
        return message(
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

    def subscribe(
        self, unsubscribe: Callable[[Feed, Subscription], Awaitable[None]]
    ) -> Subscription:
        """A new reader, from the next event on; `unsubscribe` runs when it is closed."""
        subscription = Subscription(self, unsubscribe)
        self.subscriptions.append(subscription)
        return subscription

    def remove(self, subscription: Subscription) -> bool:
        """End one reader; False when it had already ended."""
        if subscription not in self.subscriptions:
            return False
        self.subscriptions.remove(subscription)
        subscription._queue.put_nowait(_End(None))
        return True

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

    def __init__(
        self, feed: Feed, unsubscribe: Callable[[Feed, Subscription], Awaitable[None]]
    ) -> None:
        self._feed = feed
        self._unsubscribe = unsubscribe  # the client's: the last reader leaves the session
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
        await self._unsubscribe(self._feed, self)


class Joining:
    """What `join()` returns: await it for a `Subscription`, or use it as an async context
    manager that closes the subscription on exit."""

    def __init__(self, subscribe: Callable[[], Coroutine[Any, Any, Subscription]]) -> None:
        self._subscribe = subscribe
        self._subscription: Subscription | None = None

    def __await__(self) -> Generator[Any, None, Subscription]:
        return self._subscribe().__await__()

    async def __aenter__(self) -> Subscription:
        self._subscription = await self._subscribe()
        return self._subscription

    async def __aexit__(self, *exc_info: object) -> None:
        if self._subscription is not None:
            await self._subscription.close()
