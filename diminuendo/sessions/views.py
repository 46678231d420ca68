"""What clients see of a session, built from the stored record and (when this process holds it)
its live half: `SessionMeta`, the `state_snapshot` of a join and the `events` page of
`get_events`. Pure: no I/O."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from diminuendo.protocol.events import CurrentTurn, Events, SessionMeta, StateSnapshot
from diminuendo.protocol.models import SessionRecord
from diminuendo.sessions.active import ActiveSession
from diminuendo.sessions.replies import room_for
from diminuendo.sessions.state import SessionStatus
from diminuendo.sessions.stream import Replay, fitting

if TYPE_CHECKING:  # fleet mode only: without REDIS_URL nothing of it is imported
    from diminuendo.fleet.replay_log import Replay as LoggedReplay

__all__ = ["events_page", "logged_events_page", "session_meta", "session_view", "snapshot"]


def session_meta(
    record: SessionRecord, active: ActiveSession | None, *, held_elsewhere: bool = False
) -> SessionMeta:
    """SessionMeta as clients see it: status, epoch and lastSeq from the live stream when
    active; a session this process does not hold is reported `inactive` (start-up recovery of
    records a previous process left in another state) — unless another instance holds it
    (fleet mode, a live lease): then as its owner stored it."""
    if active is None:
        return record.meta() if held_elsewhere else record.meta(status=SessionStatus.INACTIVE.value)
    stream = active.stream
    return record.meta(status=active.status.value, epoch=stream.epoch, last_seq=stream.last_seq)


def session_view(
    record: SessionRecord, active: ActiveSession | None, *, held_elsewhere: bool = False
) -> dict[str, Any]:
    """`session_meta` as the plain dict the edges return and patch."""
    return msgspec.to_builtins(session_meta(record, active, held_elsewhere=held_elsewhere))


def snapshot(active: ActiveSession, replay: Replay) -> dict[str, Any]:
    """The `state_snapshot` a joining client gets before its replay (a dict: the edges add the
    request's `id`, or read it as they project it)."""
    turn = active.turn
    reply = StateSnapshot(
        session_id=active.record.id,
        session=session_meta(active.current(), active),
        epoch=replay.epoch,
        last_seq=replay.last_seq,
        gap=replay.gap,
        # Held as the runtime's mapped events (already client-shaped); encoded as they are.
        pending=list(active.live.pending.values()),
        current_turn=None
        if turn is None
        else CurrentTurn(
            turn_id=turn.turn_id, text="".join(turn.output), started_at=turn.started_at
        ),
    )
    return msgspec.to_builtins(reply)


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
    envelope = Events(
        session_id=record.id,
        epoch=stream.epoch,
        events=[],
        last_seq=stream.last_seq,
        gap=False,
        has_more=False,
    )
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


def logged_events_page(
    record: SessionRecord, logged: LoggedReplay, limit: int, reply_max_bytes: int
) -> dict[str, Any]:
    """`events_page` for a session this process does not hold, from a page of its log in Valkey
    (fleet mode), by the same rules: within one reply, at least one event when there is one,
    `hasMore` while the log holds events after the page."""
    envelope = Events(
        session_id=record.id,
        epoch=logged.epoch or record.epoch,
        events=[],
        last_seq=logged.last_seq,
        gap=logged.gap,
        has_more=False,
    )
    room = room_for(envelope, reply_max_bytes) - limit  # each event also costs a comma
    events = logged.events[: max(limit, 0)]
    kept = events[: fitting((e.payload for e in events), room)]
    return {
        "sessionId": record.id,
        "epoch": envelope.epoch,
        "events": [msgspec.Raw(e.payload) for e in kept],
        "lastSeq": logged.last_seq,
        "gap": logged.gap,
        "hasMore": bool(kept) and kept[-1].seq < logged.last_seq,
    }
