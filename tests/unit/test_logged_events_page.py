"""`sessions.views.logged_events_page`: a `get_events` page built from a session's log in Valkey
(fleet mode, on an instance that holds no stream of the session) follows the in-memory page's
rules: within one reply, at least one event, `hasMore` while the log holds more."""

from __future__ import annotations

import json

import msgspec

from diminuendo.fleet.replay_log import Event, Replay
from diminuendo.sessions.views import logged_events_page
from tests.unit.test_protocol_events import RECORD  # epoch "e1": the log's epoch must win


def event(seq: int, size: int = 10) -> Event:
    return Event(seq, json.dumps({"seq": seq, "text": "x" * size}).encode())


def seqs(page: dict) -> list[int]:
    return [json.loads(bytes(raw))["seq"] for raw in page["events"]]


def test_a_page_within_limit_says_more_follows_and_carries_the_logs_epoch() -> None:
    logged = Replay(False, [event(s) for s in range(3, 9)], 20, "log-epoch")
    page = logged_events_page(RECORD, logged, limit=4, reply_max_bytes=1 << 20)
    assert seqs(page) == [3, 4, 5, 6]
    assert (page["epoch"], page["lastSeq"], page["gap"], page["hasMore"]) == (
        "log-epoch",
        20,
        False,
        True,
    )
    msgspec.json.encode(page)  # the raw events splice into the reply


def test_the_whole_rest_of_the_log_has_no_more() -> None:
    logged = Replay(False, [event(s) for s in range(1, 4)], 3, "log-epoch")
    page = logged_events_page(RECORD, logged, limit=500, reply_max_bytes=1 << 20)
    assert (seqs(page), page["hasMore"]) == ([1, 2, 3], False)


def test_reply_bytes_cut_the_page_but_never_below_one_event() -> None:
    logged = Replay(False, [event(s, size=3000) for s in range(1, 6)], 5, "log-epoch")
    page = logged_events_page(RECORD, logged, limit=500, reply_max_bytes=1000 + 7000)
    assert (seqs(page), page["hasMore"]) == ([1, 2], True)
    alone = logged_events_page(RECORD, logged, limit=500, reply_max_bytes=10)
    assert (seqs(alone), alone["hasMore"]) == ([1], True)


def test_a_gap_is_passed_on() -> None:
    logged = Replay(True, [event(7)], 7, "log-epoch")
    page = logged_events_page(RECORD, logged, limit=500, reply_max_bytes=1 << 20)
    assert (seqs(page), page["gap"], page["hasMore"]) == ([7], True, False)
