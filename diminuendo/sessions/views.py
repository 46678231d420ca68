"""What clients see of a session, built from the stored record and (when this process holds it)
its live half: `SessionMeta`, the `state_snapshot` of a join and the `events` page of
`get_events`. Pure: no I/O."""

from __future__ import annotations

from typing import Any

import msgspec

from diminuendo.protocol.models import SessionRecord
from diminuendo.sessions.active import ActiveSession
from diminuendo.sessions.replies import room_for
from diminuendo.sessions.state import SessionStatus
from diminuendo.sessions.stream import Replay

__all__ = ["events_page", "session_view", "snapshot"]


def session_view(record: SessionRecord, active: ActiveSession | None) -> dict[str, Any]:
    """SessionMeta as clients see it: status, epoch and lastSeq from the live stream when
    active; a session this process does not hold is reported `inactive` (start-up recovery of
    records a previous process left in another state)."""
    wire = record.to_wire()
    if active is None:
        wire["status"] = SessionStatus.INACTIVE.value
    else:
        wire["status"] = active.status.value
        wire["epoch"] = active.stream.epoch
        wire["lastSeq"] = active.stream.last_seq
    return wire


def snapshot(active: ActiveSession, replay: Replay) -> dict[str, Any]:
    """The `state_snapshot` a joining client gets before its replay."""
    reply: dict[str, Any] = {
        "type": "state_snapshot",
        "sessionId": active.record.id,
        "session": session_view(active.current(), active),
        "epoch": replay.epoch,
        "lastSeq": replay.last_seq,
        "gap": replay.gap,
        "pending": list(active.live.pending.values()),
    }
    turn = active.turn
    if turn is not None:
        reply["currentTurn"] = {
            "turnId": turn.turn_id,
            "text": "".join(turn.output),
            "startedAt": turn.started_at,
        }
    return reply


def events_page(
    record: SessionRecord,
    active: ActiveSession | None,
    after_seq: int,
    epoch: str | None,
    limit: int,
    reply_max_bytes: int,
) -> dict[str, Any]:
    """The retained events after `after_seq`, at most `limit` and within one reply."""
    if active is None:
        # Nothing retained in this process: anything after `after_seq` is a gap.
        stale = epoch not in (None, record.epoch) or after_seq < record.last_seq
        return {
            "sessionId": record.id,
            "epoch": record.epoch,
            "events": [],
            "lastSeq": record.last_seq,
            "gap": stale,
            "hasMore": False,
        }
    stream = active.stream
    envelope = {
        "type": "events",
        "sessionId": record.id,
        "epoch": stream.epoch,
        "events": [],
        "lastSeq": stream.last_seq,
        "gap": False,
        "hasMore": False,
    }
    # Each event also costs the comma before it.
    room = room_for(envelope, reply_max_bytes) - limit
    replay = stream.replay(after_seq, epoch, limit, max_bytes=room)
    return {
        "sessionId": record.id,
        "epoch": replay.epoch,
        # Spliced into the reply as encoded: no decode and re-encode of every event.
        "events": [msgspec.Raw(f.data) for f in replay.frames],
        "lastSeq": replay.last_seq,
        "gap": replay.gap,
        "hasMore": replay.more,
    }
