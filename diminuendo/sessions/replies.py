"""Keeping one reply under `REPLY_MAX_BYTES` (PROTOCOL.md §5, §13). Pure: no I/O.

A reply is built whole in memory and then queued whole for one client, so its size is what a
client can make the gateway hold per request. `get_events` pages (`SessionStream.replay` with a
byte bound and `hasMore`), `read_file` refuses a larger file (`FILE_TOO_LARGE`), and
`get_history` keeps the newest messages that fit (`hasMore: true`, the client pages on with
`before`). Sizes are of the encoded JSON, so escaping counts.

A single history message larger than a whole reply cannot be paged past, so it comes cut:
its `text` shortened to fit, its `toolCalls` left out if they do not fit beside it, and
`truncated: true`; the complete message stays in the durable transcript.
"""

from __future__ import annotations

from typing import Any

import msgspec

from diminuendo.protocol.events import ServerFrame

__all__ = ["REQUEST_ID_ALLOWANCE", "fit_history", "room_for"]

_encode = msgspec.json.Encoder().encode

# The reply echoes the client's `id` (at most 64 characters; JSON escaping can grow it):
# reserved rather than measured, since the edge adds it after the service built the reply.
REQUEST_ID_ALLOWANCE = 8 + 6 * 64


def room_for(envelope: ServerFrame | dict[str, Any], max_bytes: int) -> int:
    """Bytes left for a reply's list items (and the commas between them) once `envelope` (the
    reply with that list empty) and the echoed request id are counted."""
    return max_bytes - len(_encode(envelope)) - REQUEST_ID_ALLOWANCE


def fit_history(messages: list[dict[str, Any]], room: int) -> tuple[list[dict[str, Any]], bool]:
    """The newest of `messages` (oldest first, as a history page is) whose encoded list fits in
    `room` bytes, and whether older ones were left out. When not even the newest fits, it comes
    alone and cut (`truncated: true`)."""
    kept = 0
    used = 0
    for message in reversed(messages):
        size = len(_encode(message)) + (1 if kept else 0)  # the comma between two
        if used + size > room:
            break
        used += size
        kept += 1
    if kept == 0 and messages:
        return [_cut(messages[-1], room)], len(messages) > 1
    return messages[len(messages) - kept :], kept < len(messages)


def _cut(message: dict[str, Any], room: int) -> dict[str, Any]:
    cut = {**message, "text": "", "truncated": True}
    if len(_encode(cut)) > room:
        cut.pop("toolCalls", None)
    spare = room - len(_encode(cut))
    text = message.get("text") or ""
    length = min(len(text), max(spare, 0))  # a character encodes to at least one byte
    while length > 0:
        size = len(_encode(text[:length])) - 2  # without the quotes
        if size <= spare:
            break
        length = max(0, min(length - 1, length * spare // size))
    cut["text"] = text[:length]
    return cut
