"""The client's resume logic without a socket (`client/subscriptions.py`, `client/replies.py`):
what a subscription yields after each join snapshot, and which reply resolves which request.

The same guarantees hold end to end, with real drops, in tests/integration/test_client.py; here
each rule of PROTOCOL.md §7 is one small case that names it."""

from __future__ import annotations

import asyncio

import pytest

from diminuendo.client.errors import ConnectionLost, ServerError
from diminuendo.client.events import Event, Gap, SessionMeta, StateSnapshot, decode_event
from diminuendo.client.replies import PendingReplies, message
from diminuendo.client.subscriptions import Feed, Subscription

META = SessionMeta(
    id="s1",
    tenant_id="t",
    owner_id="u",
    agent_type="echo",
    status="ready",
    created_at=1,
    updated_at=1,
    last_activity_at=1,
)


def snapshot(request_id: str, epoch: str, last_seq: int, gap: bool = False) -> StateSnapshot:
    return StateSnapshot(
        id=request_id, session_id="s1", session=META, epoch=epoch, last_seq=last_seq, gap=gap
    )


def delta(seq: int) -> Event:
    return decode_event(
        f'{{"type":"text_delta","sessionId":"s1","seq":{seq},"turnId":"t1","text":"{seq}"}}'
    )


class Reader:
    """A feed with one subscription, and what the subscription has yielded so far."""

    def __init__(self, after_seq: int | None = None, epoch: str | None = None) -> None:
        self.feed = Feed("s1", after_seq, epoch)
        self.subscription = self.feed.subscribe(self._unsubscribe)

    async def _unsubscribe(self, feed: Feed, subscription: Subscription) -> None:
        """The client's part (leaving the session); integration tests cover it."""

    def join(self, request_id: str = "c1") -> dict[str, object]:
        return self.feed.join_message(request_id)

    def receive(self, *events: Event) -> None:
        for event in events:
            assert event.seq is not None
            self.feed.on_event(event, event.seq)

    def yielded(self) -> list[int | str]:
        """Seqs yielded so far, and `gap` for a Gap marker, without waiting."""
        items: list[int | str] = []
        while not self.subscription._queue.empty():
            item = self.subscription._queue.get_nowait()
            items.append("gap" if isinstance(item, Gap) else item.seq)  # type: ignore[union-attr]
        return items


async def test_a_live_join_starts_after_the_snapshot() -> None:
    reader = Reader()
    assert reader.join() == {"type": "join_session", "id": "c1", "sessionId": "s1"}
    reader.receive(delta(5))  # sent before the server handled the join: not ours yet
    reader.feed.on_snapshot(snapshot("c1", "e1", last_seq=5))
    reader.receive(delta(5), delta(6), delta(7))
    assert reader.yielded() == [6, 7]
    assert reader.feed.joined.result().last_seq == 5


async def test_a_resume_sends_the_last_delivered_position_and_drops_replayed_duplicates() -> None:
    reader = Reader()
    reader.join("c1")
    reader.feed.on_snapshot(snapshot("c1", "e1", last_seq=2))
    reader.receive(delta(3), delta(4))
    assert reader.join("c2") == {
        "type": "join_session",
        "id": "c2",
        "sessionId": "s1",
        "afterSeq": 4,
        "epoch": "e1",
    }
    reader.feed.on_snapshot(snapshot("c2", "e1", last_seq=6))
    reader.receive(delta(3), delta(4), delta(5), delta(6), delta(5), delta(7))
    assert reader.yielded() == [3, 4, 5, 6, 7]


async def test_a_gap_is_a_marker_and_a_new_epoch_resumes_after_its_last_seq() -> None:
    reader = Reader(after_seq=4, epoch="e1")
    reader.join("c1")
    reader.feed.on_snapshot(snapshot("c1", "e2", last_seq=9, gap=True))
    reader.receive(delta(9), delta(10))
    assert reader.yielded() == ["gap", 10]
    gap = reader.feed.joined.result()
    assert (gap.epoch, gap.last_seq) == ("e2", 9)


async def test_a_gap_in_the_same_epoch_keeps_what_the_server_still_replays() -> None:
    reader = Reader(after_seq=2, epoch="e1")
    reader.join("c1")
    reader.feed.on_snapshot(snapshot("c1", "e1", last_seq=9, gap=True))
    reader.receive(delta(7), delta(8), delta(9), delta(10))
    assert reader.yielded() == ["gap", 7, 8, 9, 10]


async def test_ending_a_feed_ends_every_reader_and_keeps_ending() -> None:
    reader = Reader()
    second = reader.feed.subscribe(reader._unsubscribe)
    reader.feed.end(ConnectionLost("gave up"))
    for subscription in (reader.subscription, second, reader.subscription):
        with pytest.raises(ConnectionLost):
            await anext(subscription)
    with pytest.raises(ConnectionLost):
        reader.feed.joined.result()


async def test_removing_one_reader_ends_it_and_the_others_read_on() -> None:
    reader = Reader()
    other = reader.feed.subscribe(reader._unsubscribe)
    reader.join()
    reader.feed.on_snapshot(snapshot("c1", "e1", last_seq=0))
    assert reader.feed.remove(reader.subscription)
    assert not reader.feed.remove(reader.subscription)  # already ended
    reader.receive(delta(1))
    assert [item async for item in reader.subscription] == []
    assert (await anext(other)).seq == 1  # type: ignore[union-attr]


async def test_a_reply_resolves_its_request_and_an_error_raises() -> None:
    pending = PendingReplies()
    first_id, first = pending.expect()
    second_id, second = pending.expect()
    assert (first_id, second_id) == ("c1", "c2")
    assert pending.resolve(decode_event(f'{{"type":"pong","id":"{first_id}"}}'))
    error = f'{{"type":"error","id":"{second_id}","code":"RATE_LIMITED","message":"Slow down",'
    assert pending.resolve(decode_event(error + '"retryAfterMs":500}'))
    assert first.result().type == "pong"
    with pytest.raises(ServerError) as raised:
        second.result()
    assert (raised.value.code, raised.value.retry_after_ms, raised.value.retryable) == (
        "RATE_LIMITED",
        500,
        True,
    )
    # A late or unknown reply, and a frame that answers nothing, resolve nothing.
    assert not pending.resolve(decode_event(f'{{"type":"pong","id":"{first_id}"}}'))
    assert not pending.resolve(decode_event('{"type":"heartbeat","ts":1}'))


async def test_a_drop_fails_every_request_still_waiting() -> None:
    pending = PendingReplies()
    _, waiting = pending.expect()
    forgotten_id, forgotten = pending.expect()
    pending.forget(forgotten_id)
    pending.fail_all(ConnectionLost("dropped"))
    with pytest.raises(ConnectionLost):
        await waiting
    await asyncio.sleep(0)
    assert not forgotten.done()


def test_optional_fields_left_as_none_are_not_sent() -> None:
    assert message("list_files", sessionId="s1", path="", depth=None) == {
        "type": "list_files",
        "sessionId": "s1",
        "path": "",
    }
