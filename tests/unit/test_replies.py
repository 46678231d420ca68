"""Keeping replies under REPLY_MAX_BYTES (diminuendo.sessions.replies)."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from diminuendo.sessions.replies import REQUEST_ID_ALLOWANCE, fit_history, room_for


def message(n: int, text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"id": f"m{n}", "role": "assistant", "text": text, "turnId": "t", "ts": n, **extra}


def items_size(messages: list[dict[str, Any]]) -> int:
    """What the items of a list take inside its (already counted) brackets."""
    return len(msgspec.json.encode(messages)) - 2


def test_room_is_what_the_envelope_and_the_request_id_leave() -> None:
    envelope = {"type": "history", "sessionId": "s", "messages": [], "hasMore": True}
    assert room_for(envelope, 1000) == 1000 - len(msgspec.json.encode(envelope)) - (
        REQUEST_ID_ALLOWANCE
    )


def test_everything_that_fits_is_kept() -> None:
    messages = [message(i) for i in range(5)]
    assert fit_history(messages, 10_000) == (messages, False)
    assert fit_history([], 10) == ([], False)


def test_the_newest_messages_are_kept_and_older_left_for_the_next_page() -> None:
    messages = [message(i, "x" * 100) for i in range(10)]
    room = items_size(messages[-3:])
    kept, trimmed = fit_history(messages, room)
    assert kept == messages[-3:] and trimmed
    assert fit_history(messages, room - 1)[0] == messages[-2:]


def test_a_message_larger_than_the_room_comes_alone_and_cut() -> None:
    older = message(0)
    big = message(1, "é" * 5000, toolCalls=[{"toolCallId": "c", "output": "o" * 10}])
    kept, trimmed = fit_history([older, big], 2000)
    assert trimmed  # the older one is still to fetch
    assert len(kept) == 1 and kept[0]["truncated"] is True and kept[0]["id"] == "m1"
    assert big["text"].startswith(kept[0]["text"]) and 0 < len(kept[0]["text"]) < 5000
    assert kept[0]["toolCalls"] == big["toolCalls"]  # small enough to keep
    assert items_size(kept) <= 2000
    assert "truncated" not in big  # the input is not changed


def test_tool_calls_that_do_not_fit_are_left_out_of_a_cut_message() -> None:
    big = message(1, "t" * 100, toolCalls=[{"toolCallId": "c", "output": "o" * 5000}])
    (cut,), trimmed = fit_history([big], 500)
    assert not trimmed and "toolCalls" not in cut and cut["text"] == "t" * 100


@settings(max_examples=200, deadline=None)
@given(
    texts=st.lists(st.text(max_size=300), min_size=1, max_size=8),
    room=st.integers(150, 3000),
)
def test_the_kept_list_always_fits(texts: list[str], room: int) -> None:
    messages = [message(i, text) for i, text in enumerate(texts)]
    kept, trimmed = fit_history(messages, room)
    assert kept and items_size(kept) <= room
    assert trimmed == (kept[0].get("id") != "m0" or len(kept) < len(messages))
    assert kept[-1]["id"] == messages[-1]["id"]
