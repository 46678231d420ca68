"""What the `a2a-sdk` calls the agent: `GatewayExecutor` runs a task as one turn of its gateway
session and publishes the session's events as the task's (`a2a_mapping` projects them), so the
session is visible and joinable on `/ws` with the same `seq`.

A task that waits for an answer (`input-required`) keeps in its metadata where its stream stood;
the next message on the task is the answer and the stream goes on from there. The executor reads
the session's frames through a `FrameQueue`, bounded like an SSE response, and the task fails
with `SLOW_CONSUMER` past it or with `NOT_AUTHENTICATED` at the token's expiry, the turn going on
in its session either way (docs/EDGES.md "Limits and token lifetime").
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events.event_queue_v2 import EventQueue
from a2a.types.a2a_pb2 import Part, Task, TaskState, TaskStatus
from google.protobuf.json_format import MessageToDict

from diminuendo.auth.identity import Identity
from diminuendo.edges.a2a_mapping import (
    Done,
    FileArtifact,
    Pause,
    TaskProjection,
    a2a_error,
    answer_from,
)
from diminuendo.edges.a2a_tasks import caller
from diminuendo.edges.replies import send_reply
from diminuendo.edges.subscription import decode_event, subscribed
from diminuendo.gateway.context import Gateway
from diminuendo.gateway.stream_limits import SLOW_CONSUMER, stream_deadline, token_expired
from diminuendo.protocol.errors import ErrorCode, GatewayError
from diminuendo.sessions.stream import Frame, Replay

STATES_WAITING = (TaskState.TASK_STATE_INPUT_REQUIRED,)


class FellBehind(Exception):
    """The task's client did not keep up: the task fails with `SLOW_CONSUMER` (docs/EDGES.md),
    the turn going on in its session."""

    code = SLOW_CONSUMER
    message = "The client did not keep up with the task's stream"


class FrameQueue:
    """A session subscriber for one task: the frames, in order, for the executor to read,
    bounded like an SSE response (`WS_SEND_BUFFER_BYTES` of frame data not yet taken). The SDK's
    own queues hold at most 1,024 events; when the client reads slowly they fill and the
    executor waits, so without this bound the session's frames would pile up here."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.queued_bytes = 0
        self.overflowed = False
        self._frames: asyncio.Queue[Frame | None] = asyncio.Queue()

    def deliver(self, frame: Frame) -> None:
        if self.overflowed:
            return
        if self.queued_bytes + len(frame.data) > self.max_bytes:
            self.overflowed = True
            self._frames.put_nowait(None)  # wakes the reader, which ends the task
            return
        self.queued_bytes += len(frame.data)
        self._frames.put_nowait(frame)

    async def next(self, timeout: float) -> Frame | None:
        """The next frame, None once the client fell too far behind; TimeoutError after
        `timeout` seconds without one."""
        frame = await asyncio.wait_for(self._frames.get(), timeout)
        if frame is not None:
            self.queued_bytes -= len(frame.data)
        return frame


def new_task(context: RequestContext) -> Task:
    task = Task(
        id=context.task_id or "",
        context_id=context.context_id or "",
        status=TaskStatus(state=TaskState.TASK_STATE_SUBMITTED),
    )
    if context.message is not None:
        task.history.append(context.message)
    return task


class GatewayExecutor(AgentExecutor):
    """Runs a task as a turn of its session and publishes the session's events as the task's."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        gateway, identity = caller(context.call_context)
        session_id = context.context_id or ""
        task = context.current_task
        waiting = task is not None and task.status.state in STATES_WAITING
        # Where the stream of a task waiting for an answer stood (None: the task is not waiting).
        resume = MessageToDict(task.metadata) if waiting and task is not None else None
        subscriber = FrameQueue(gateway.settings.ws_send_buffer_bytes)
        joined: dict[str, Any] = {}  # the join snapshot, once joined

        def replay(snapshot: dict[str, Any], missed: Replay) -> None:
            for frame in missed.frames:
                subscriber.deliver(frame)

        after_seq = (resume or {}).get("lastSeq")
        projection = TaskProjection(context.task_id or "", session_id, "")
        if task is None:  # the SDK wants the task before any event about it, a failure too
            await event_queue.enqueue_event(new_task(context))
        try:
            async with subscribed(
                gateway,
                identity,
                session_id,
                subscriber,
                after_seq=int(after_seq) if isinstance(after_seq, int | float) else None,
                epoch=(resume or {}).get("epoch"),
                on_join=replay,
            ) as joined:
                projection.epoch = joined.get("epoch", "")
                if not await self._start(context, event_queue, projection, joined, resume):
                    return
                await self._stream(gateway, identity, subscriber, projection, event_queue)
        except (GatewayError, FellBehind) as exc:
            code, message = str(exc.code), exc.message
            failed = projection.status(
                TaskState.TASK_STATE_FAILED,
                joined.get("lastSeq", 0),
                f"{code}: {message}",
                {"code": code, "message": message},
            )
            await event_queue.enqueue_event(failed)

    async def _start(
        self,
        context: RequestContext,
        event_queue: EventQueue,
        projection: TaskProjection,
        joined: dict[str, Any],
        resume: dict[str, Any] | None,
    ) -> bool:
        """Start the turn; on a task waiting for input, send the message as the answer to the
        pending request instead. False when the message is no answer (the task asks again,
        still `input-required`)."""
        gateway, identity = caller(context.call_context)
        if resume is None:
            text = context.get_user_input()
            if not text.strip():
                raise GatewayError(ErrorCode.INVALID_MESSAGE, "The message has no text part")
            turn = await gateway.sessions.run_turn(identity, projection.context_id, text)
            projection.turn_id = turn.turn_id
            return True
        projection.turn_id = resume.get("turnId")
        request_id = resume.get("requestId")
        pending = next((p for p in joined.get("pending", []) if p["requestId"] == request_id), None)
        if pending is None:
            return True  # answered elsewhere (e.g. on /ws): the stream goes on
        answer = answer_from(pending, context.message)
        if isinstance(answer, str):
            again = projection.status(
                TaskState.TASK_STATE_INPUT_REQUIRED, joined.get("lastSeq", 0), answer, pending
            )
            await event_queue.enqueue_event(again)
            return False
        await send_reply(gateway, identity, projection.context_id, request_id, answer)
        return True

    async def _stream(
        self,
        gateway: Gateway,
        identity: Identity,
        subscriber: FrameQueue,
        projection: TaskProjection,
        event_queue: EventQueue,
    ) -> None:
        """Publish the turn's events until it ends or waits for an answer, or the caller's
        token expires (the task fails with `NOT_AUTHENTICATED`; the turn goes on in its
        session, the task's `contextId`, as when a socket closes)."""
        ends_at = stream_deadline(gateway, identity)
        while True:
            try:
                frame = await subscriber.next(ends_at - time.time())
            except TimeoutError:
                raise token_expired() from None
            if frame is None:
                raise FellBehind()
            for item in projection.project(decode_event(frame.data), frame.seq):
                if isinstance(item, Done | Pause):
                    return
                if isinstance(item, FileArtifact):
                    item = await self._file(gateway, identity, projection, item)
                    if item is None:
                        continue
                await event_queue.enqueue_event(item)

    async def _file(
        self, gateway: Gateway, identity: Identity, projection: TaskProjection, change: FileArtifact
    ) -> Any:
        """A changed file as an artifact named by its path (its text, or its bytes)."""
        try:
            file = await gateway.sessions.read_file(
                identity, projection.context_id, change.path, change.iteration
            )
        except GatewayError:
            return None  # gone again already: nothing to show
        if file["encoding"] == "base64":
            part = Part(raw=base64.b64decode(file["content"]), filename=change.path)
        else:
            part = Part(text=file["content"], filename=change.path, media_type="text/plain")
        return projection.artifact(f"file:{change.path}", [part], change.seq)

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        """Stop the session's running turn; the SDK then marks the task canceled."""
        gateway, identity = caller(context.call_context)
        try:
            await gateway.sessions.stop_turn(identity, context.context_id or "")
        except GatewayError as exc:
            raise a2a_error(exc) from None
