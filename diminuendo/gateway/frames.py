"""The typed frames of `protocol/events.py` from what `SessionService` answers with.

The service hands the gateway wire-shaped payloads (dicts with camelCase keys, nested values
ready to encode); each function here puts one into its frame, with the `id` of the request it
answers, so the handlers never spell a frame. Nothing is copied or validated: the nested values
are encoded as they are.
"""

from __future__ import annotations

from typing import Any

import msgspec

from diminuendo.auth.identity import Identity
from diminuendo.protocol import events as ev
from diminuendo.protocol import shapes

Payload = dict[str, Any]


def identity(who: Identity) -> shapes.Identity:
    """The `identity` of `authenticated` (§3)."""
    return msgspec.convert(who.to_wire(), shapes.Identity)


def snapshot(
    payload: Payload, request_id: str | None = None, *, gap: bool | None = None
) -> ev.StateSnapshot:
    """`join_session`'s reply; `gap` overrides the service's (an SSE resume from an older epoch)."""
    return ev.StateSnapshot(
        session_id=payload["sessionId"],
        session=payload["session"],
        epoch=payload["epoch"],
        last_seq=payload["lastSeq"],
        gap=payload["gap"] if gap is None else gap,
        pending=payload["pending"],
        current_turn=payload.get("currentTurn"),
        id=request_id,
    )


def history(payload: Payload, request_id: str | None) -> ev.History:
    return ev.History(
        session_id=payload["sessionId"],
        messages=payload["messages"],
        has_more=payload["hasMore"],
        id=request_id,
    )


def events(payload: Payload, request_id: str | None) -> ev.Events:
    return ev.Events(
        session_id=payload["sessionId"],
        epoch=payload["epoch"],
        events=payload["events"],
        last_seq=payload["lastSeq"],
        gap=payload["gap"],
        has_more=payload["hasMore"],
        id=request_id,
    )


def file_list(payload: Payload, request_id: str | None) -> ev.FileList:
    return ev.FileList(
        session_id=payload["sessionId"],
        path=payload["path"],
        entries=payload["entries"],
        id=request_id,
    )


def file_content(payload: Payload, request_id: str | None) -> ev.FileContent:
    return ev.FileContent(
        session_id=payload["sessionId"],
        path=payload["path"],
        content=payload["content"],
        encoding=payload["encoding"],
        size=payload["size"],
        iteration=payload.get("iteration"),
        id=request_id,
    )


def file_history(payload: Payload, request_id: str | None) -> ev.FileHistory:
    return ev.FileHistory(
        session_id=payload["sessionId"],
        path=payload["path"],
        iterations=payload["iterations"],
        id=request_id,
    )
