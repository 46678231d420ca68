"""An edge's subscription to a gateway session for the span of one call (docs/EDGES.md).

An AG-UI run, an MCP tool call that follows a turn and an A2A task each do the same around their
own projection: join the session (which activates it) with a subscriber of their own, read the
join snapshot, read every frame as the gateway event it carries, and leave the session when the
call ends, however it ends. Leaving includes a join whose activation failed: `SessionService.join`
leaves the subscriber joined then.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec

from diminuendo.auth.identity import Identity
from diminuendo.gateway.context import Gateway
from diminuendo.sessions.stream import Replay, Subscriber

# A frame's data as the gateway event it carries (the dict the session stream encoded).
decode_event: Callable[[bytes], Any] = msgspec.json.Decoder().decode


@asynccontextmanager
async def subscribed(
    gateway: Gateway,
    identity: Identity,
    session_id: str,
    subscriber: Subscriber,
    *,
    after_seq: int | None = None,
    epoch: str | None = None,
    on_join: Callable[[dict[str, Any], Replay], None] | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Join `session_id` with `subscriber` for the `async with` block, which gets the join
    snapshot. `on_join(snapshot, replay)` runs at the join itself, before any live frame reaches
    the subscriber (where a projection starts, or the replay is handed over)."""
    joined: dict[str, Any] = {}

    def send(snapshot: dict[str, Any], replay: Replay) -> None:
        joined.update(snapshot)
        if on_join is not None:
            on_join(snapshot, replay)

    try:
        await gateway.sessions.join(
            identity, subscriber, session_id, after_seq=after_seq, epoch=epoch, send=send
        )
        yield joined
    finally:
        gateway.sessions.leave(session_id, subscriber)
