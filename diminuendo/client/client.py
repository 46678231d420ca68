"""`DiminuendoClient`: the protocol's messages (PROTOCOL.md §2 to §7) as typed coroutines, over
a `Connection` that survives drops (`connection.py`).

Following a session (`join`) yields a `Subscription` that sees each `seq` once, in order, across
any number of reconnects, with `gap: true` turned into a `Gap` marker (`subscriptions.py`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from diminuendo.client.connection import Connection
from diminuendo.client.errors import ClientError
from diminuendo.client.events import (
    Ack,
    Event,
    Events,
    FileContent,
    FileEntry,
    FileHistory,
    FileIteration,
    FileList,
    Gap,
    History,
    Member,
    MemberList,
    Pong,
    SessionArchived,
    SessionCreated,
    SessionDeleted,
    SessionLeft,
    SessionList,
    SessionMeta,
    SessionUnarchived,
    SessionUpdated,
    TurnComplete,
    TurnError,
    TurnStarted,
)
from diminuendo.client.subscriptions import Feed, Joining, Subscription

__all__ = ["DiminuendoClient"]

logger = logging.getLogger("diminuendo.client")


class DiminuendoClient(Connection):
    """An asyncio client of the Diminuendo protocol (PROTOCOL.md §2 to §7).

    Use it as `async with DiminuendoClient.connect(url, token=…) as client:`; every method is a
    coroutine that sends one message and returns its typed reply, raising `ServerError` when the
    server answers with an `error`. `join()` follows a session; `stream_turn()` runs a turn and
    yields its events. `token` is a string or a `TokenSource` callable (see `tokens.py`).
    """

    # ----- subscriptions ----------------------------------------------------------------------

    def join(
        self, session_id: str, *, after_seq: int | None = None, epoch: str | None = None
    ) -> Joining:
        """Follow a session: `async with client.join(id) as events: async for e in events`.

        Joining activates the session. Without `after_seq` the subscription starts live after
        the snapshot; with it (and the `epoch` it belongs to) it first replays what came after.
        Joining a session this client already follows adds another subscription that starts
        with the next event, so `after_seq`/`epoch` are then refused."""
        return Joining(lambda: self._subscribe(session_id, after_seq, epoch))

    async def _subscribe(
        self, session_id: str, after_seq: int | None, epoch: str | None
    ) -> Subscription:
        await self._wait_ready()
        feed = self._feeds.get(session_id)
        if feed is not None:
            if after_seq is not None or epoch is not None:
                raise ValueError(f"already following {session_id}: a second subscription is live")
            return feed.subscribe(self._unsubscribe)
        feed = Feed(session_id, after_seq, epoch)
        self._feeds[session_id] = feed
        subscription = feed.subscribe(self._unsubscribe)
        try:
            await self._send_join(feed)
            async with asyncio.timeout(self.request_timeout_s):
                await asyncio.shield(feed.joined)
        except BaseException:
            if self._feeds.get(session_id) is feed:
                del self._feeds[session_id]
                feed.end(None)
            raise
        return subscription

    async def _unsubscribe(self, feed: Feed, subscription: Subscription) -> None:
        """`Subscription.close()`: the last reader of a followed session leaves it."""
        if not feed.remove(subscription):
            return
        if feed.subscriptions or self._feeds.get(feed.session_id) is not feed or self._closed:
            return
        try:
            await self.leave(feed.session_id)
        except ClientError as exc:
            logger.debug("leaving %s: %s", feed.session_id, exc)

    async def leave(self, session_id: str) -> None:
        """Stop following a session; its subscriptions end."""
        feed = self._feeds.pop(session_id, None)
        if feed is not None:
            feed.end(None)
        await self._call(SessionLeft, "leave_session", sessionId=session_id)

    # ----- sessions ---------------------------------------------------------------------------

    async def ping(self, ts: int | None = None) -> Pong:
        return await self._call(Pong, "ping", ts=ts)

    async def list_sessions(self, *, include_archived: bool = False) -> list[SessionMeta]:
        """The tenant's sessions, newest activity first."""
        reply = await self._call(SessionList, "list_sessions", includeArchived=include_archived)
        return reply.sessions

    async def create_session(
        self,
        agent_type: str,
        *,
        name: str | None = None,
        project_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> SessionMeta:
        reply = await self._call(
            SessionCreated,
            "create_session",
            agentType=agent_type,
            name=name,
            projectId=project_id,
            metadata=metadata,
        )
        return reply.session

    async def rename_session(self, session_id: str, name: str) -> SessionMeta:
        reply = await self._call(SessionUpdated, "rename_session", sessionId=session_id, name=name)
        return reply.session

    async def archive_session(self, session_id: str) -> None:
        await self._call(SessionArchived, "archive_session", sessionId=session_id)

    async def unarchive_session(self, session_id: str) -> None:
        await self._call(SessionUnarchived, "unarchive_session", sessionId=session_id)

    async def delete_session(self, session_id: str) -> None:
        """Delete the session and stop its instance; its subscriptions here end."""
        await self._call(SessionDeleted, "delete_session", sessionId=session_id)
        feed = self._feeds.pop(session_id, None)
        if feed is not None:
            feed.end(None)

    # ----- turns ------------------------------------------------------------------------------

    async def run_turn(
        self, session_id: str, text: str, *, client_turn_id: str | None = None
    ) -> TurnStarted:
        """Start a turn (activating the session if needed). Its events reach the session's
        subscriptions; `stream_turn` is the one-call version."""
        return await self._call(
            TurnStarted,
            "run_turn",
            sessionId=session_id,
            text=text,
            clientTurnId=client_turn_id,
        )

    async def stream_turn(
        self, session_id: str, text: str, *, client_turn_id: str | None = None
    ) -> AsyncIterator[Event | Gap]:
        """Run a turn and yield its events, from its `turn_started` up to and including its
        `turn_complete` or `turn_error`: `async for event in client.stream_turn(id, text)`.

        Gaps are yielded too. If a gap shows the turn already ended while the client was away,
        the iteration stops after what the server could still replay."""
        async with self.join(session_id) as subscription:
            started = await self.run_turn(session_id, text, client_turn_id=client_turn_id)
            turn_id = started.turn_id
            streaming = False
            replay_end: int | None = None  # after a gap past the turn's end: last replayed seq
            async for event in subscription:
                if isinstance(event, Gap):
                    streaming = True
                    current = event.snapshot.current_turn
                    if current is None or current.turn_id != turn_id:
                        if event.epoch != event.previous_epoch:
                            yield event
                            return  # another epoch replays nothing
                        replay_end = event.last_seq
                elif not streaming:
                    streaming = isinstance(event, TurnStarted) and event.turn_id == turn_id
                if not streaming:
                    continue  # events of the session before this turn
                yield event
                if isinstance(event, TurnComplete | TurnError) and event.turn_id in (None, turn_id):
                    return
                seq = getattr(event, "seq", None)
                if replay_end is not None and seq is not None and seq >= replay_end:
                    return

    async def stop_turn(self, session_id: str) -> None:
        """Cancel the running turn; it ends with `turn_complete {stopReason: "cancelled"}`."""
        await self._call(Ack, "stop_turn", sessionId=session_id)

    async def steer(self, session_id: str, content: str) -> None:
        """Add guidance to the running turn."""
        await self._call(Ack, "steer", sessionId=session_id, content=content)

    async def answer_question(
        self,
        session_id: str,
        request_id: str,
        *,
        answers: dict[str, Any] | None = None,
        approved: bool | None = None,
        dismissed: bool | None = None,
    ) -> None:
        """Answer a `question_requested` (by question id) or a `permission_requested`
        (`approved`); the turn continues after `approval_resolved`."""
        await self._call(
            Ack,
            "answer_question",
            sessionId=session_id,
            requestId=request_id,
            answers=answers,
            approved=approved,
            dismissed=dismissed,
        )

    # ----- reads ------------------------------------------------------------------------------

    async def get_history(
        self, session_id: str, *, limit: int | None = None, before: str | None = None
    ) -> History:
        """The durable transcript (also what a client rebuilds from after a `Gap`)."""
        return await self._call(
            History, "get_history", sessionId=session_id, limit=limit, before=before
        )

    async def get_events(
        self,
        session_id: str,
        after_seq: int,
        *,
        epoch: str | None = None,
        limit: int | None = None,
    ) -> Events:
        """Retained stream events after `after_seq`, as a request (no subscription)."""
        return await self._call(
            Events,
            "get_events",
            sessionId=session_id,
            afterSeq=after_seq,
            epoch=epoch,
            limit=limit,
        )

    async def list_files(
        self, session_id: str, path: str = "", *, depth: int | None = None
    ) -> list[FileEntry]:
        reply = await self._call(
            FileList, "list_files", sessionId=session_id, path=path, depth=depth
        )
        return reply.entries

    async def read_file(self, session_id: str, path: str) -> FileContent:
        return await self._call(FileContent, "read_file", sessionId=session_id, path=path)

    async def file_history(self, session_id: str, path: str) -> list[FileIteration]:
        reply = await self._call(FileHistory, "file_history", sessionId=session_id, path=path)
        return reply.iterations

    async def file_at_iteration(self, session_id: str, path: str, iteration: int) -> FileContent:
        return await self._call(
            FileContent,
            "file_at_iteration",
            sessionId=session_id,
            path=path,
            iteration=iteration,
        )

    async def manage_members(
        self, action: str = "list", *, user_id: str | None = None, role: str | None = None
    ) -> list[Member]:
        """`list`, `add`, `update` or `remove` a tenant member; returns the members after."""
        reply = await self._call(
            MemberList, "manage_members", action=action, userId=user_id, role=role
        )
        return reply.members
