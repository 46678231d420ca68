"""AG-UI edge (docs/EDGES.md): `POST /agui/{agentType}` and `POST /agui/threads/{sessionId}`.

A `RunAgentInput` (validated by the `ag-ui-protocol` SDK) runs one turn of a gateway session and
answers with the run's events as Server-Sent Events, encoded by the SDK's `EventEncoder`; each
event's SSE `id:` is the `seq` of the gateway event it was projected from. The adapter is a thin
subscriber of the session's own stream (like REST's SSE), so identity, tenant walls, permissions,
rate limits and `seq` are the gateway's; the projection itself is `agui_projection`.

Threads: on `/agui/threads/{sessionId}` the thread is that session. On `/agui/{agentType}` a
`threadId` that names one of your sessions is that session; any other `threadId` (CopilotKit
makes its own) is bound to a new session of `agentType`, recorded in its metadata as
`aguiThreadId`, and found again on the next run. `runId` becomes the turn's `clientTurnId`.

A run that ends on a question or permission request finishes with the interrupt outcome; the next
run's `resume` entries answer it and the same gateway turn continues. Closing the response before
the run has ended stops the turn (AG-UI's abort is the client dropping the request).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import pydantic
from ag_ui.core import BaseEvent, RunAgentInput, UserMessage
from ag_ui.encoder import EventEncoder
from loguru import logger
from sanic import Blueprint, Request, Sanic
from sanic.response import HTTPResponse

from diminuendo.auth.identity import Identity
from diminuendo.auth.policy import MESSAGE_PERMISSIONS, require
from diminuendo.edges.abandoned import stop_abandoned_turn
from diminuendo.edges.agui_interrupts import resume_answer
from diminuendo.edges.agui_projection import RunProjection
from diminuendo.edges.replies import send_reply
from diminuendo.edges.subscription import decode_event, subscribed
from diminuendo.gateway.context import Gateway
from diminuendo.gateway.rest import SseSubscriber, authorize
from diminuendo.gateway.stream_limits import SLOW_CONSUMER, held_stream, token_expired
from diminuendo.protocol import messages as m
from diminuendo.protocol import rest
from diminuendo.protocol.errors import ErrorCode, GatewayError
from diminuendo.sessions.stream import Frame, Replay

bp = Blueprint("agui")

THREAD_METADATA_KEY = "aguiThreadId"
_MAX_THREAD_ID = 128
_encoder = EventEncoder()


def mount(app: Sanic) -> None:
    app.blueprint(bp)


class AguiSubscriber(SseSubscriber):
    """A session subscriber that projects each frame onto this run's AG-UI events."""

    def __init__(self, projection: RunProjection, limit: int) -> None:
        super().__init__(limit)
        self.projection = projection

    def deliver(self, frame: Frame) -> None:
        events = self.projection.project(decode_event(frame.data))
        if events:
            self.push_events(events, b"id: %d\n" % frame.seq)

    def push_events(self, events: list[BaseEvent], prefix: bytes = b"") -> None:
        for event in events:
            self.push(prefix + _encoder.encode(event).encode())


def _run_input(request: Request) -> RunAgentInput:
    try:
        body = RunAgentInput.model_validate_json(request.body or b"")
    except pydantic.ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(part) for part in problem["loc"])
        raise GatewayError(
            ErrorCode.INVALID_MESSAGE, f"Invalid RunAgentInput: {where}: {problem['msg']}"[:300]
        ) from None
    if len(body.thread_id) > _MAX_THREAD_ID:
        raise GatewayError(ErrorCode.INVALID_MESSAGE, "threadId is longer than 128 characters")
    return body


def _user_text(body: RunAgentInput) -> str:
    """The text of the newest user message: the prompt of this run (AG-UI clients send the whole
    conversation; the session already holds the earlier turns)."""
    for message in reversed(body.messages):
        if isinstance(message, UserMessage):
            content = message.content
            if isinstance(content, str):
                return content
            if any(part.type != "text" for part in content):
                raise GatewayError(
                    ErrorCode.INVALID_MESSAGE, "Only text content parts are supported"
                )
            return "".join(part.text for part in content)
    return ""


@bp.post("/agui/<agent_type>")
async def run_agent(request: Request, agent_type: str) -> HTTPResponse | None:
    identity = await authorize(request, m.RunTurn)
    body = _run_input(request)
    gateway: Gateway = request.app.ctx.gateway
    with held_stream(gateway, identity) as ends_at:
        session_id = await _thread_session(gateway, identity, agent_type, body.thread_id)
        return await _run(request, gateway, identity, session_id, body, ends_at)


@bp.post("/agui/threads/<session_id>")
async def run_thread(request: Request, session_id: str) -> HTTPResponse | None:
    identity = await authorize(request, m.RunTurn)
    body = _run_input(request)
    gateway: Gateway = request.app.ctx.gateway
    await gateway.sessions.get_session(identity, session_id)  # 404 before anything else
    with held_stream(gateway, identity) as ends_at:
        return await _run(request, gateway, identity, session_id, body, ends_at)


async def _thread_session(
    gateway: Gateway, identity: Identity, agent_type: str, thread_id: str
) -> str:
    """The session behind an AG-UI thread, created (with the caller's create permission) on the
    thread's first run."""
    if thread_id.startswith("ses_"):
        try:
            session = await gateway.sessions.get_session(identity, thread_id)
        except GatewayError as exc:
            if exc.code != ErrorCode.SESSION_NOT_FOUND:
                raise
        else:
            return session["id"]
    for session in await gateway.sessions.list_sessions(identity):
        metadata = session.get("metadata") or {}
        if metadata.get(THREAD_METADATA_KEY) == thread_id and session["agentType"] == agent_type:
            return session["id"]
    require(identity, MESSAGE_PERMISSIONS[m.CreateSession])
    session = await gateway.sessions.create_session(
        identity, agent_type, metadata={THREAD_METADATA_KEY: thread_id}
    )
    return session["id"]


async def _run(
    request: Request,
    gateway: Gateway,
    identity: Identity,
    session_id: str,
    body: RunAgentInput,
    ends_at: float,
) -> HTTPResponse | None:
    """Subscribe, start (or resume) the turn, then stream the run until `ends_at` at most.
    Anything refused before the turn starts is an ordinary JSON error response, as on REST."""
    projection = RunProjection(body.thread_id, body.run_id)
    subscriber = AguiSubscriber(projection, gateway.settings.ws_send_queue_max)

    def start(snapshot: dict[str, Any], replay: Replay) -> None:
        subscriber.push_events(projection.start(snapshot))

    async with subscribed(gateway, identity, session_id, subscriber, on_join=start) as joined:
        if body.resume:
            projection.turn_id = (joined.get("currentTurn") or {}).get("turnId")
            await _resume(gateway, identity, session_id, body, joined)
        else:
            turn = _turn_request(body)

            def accepted(turn_id: str) -> None:
                projection.turn_id = turn_id

            await gateway.sessions.run_turn(
                identity,
                session_id,
                turn.text,
                turn.client_turn_id,
                on_accept=accepted,
            )
        return await _stream(request, gateway, identity, session_id, subscriber, ends_at)


def _turn_request(body: RunAgentInput) -> rest.PostMessage:
    text = _user_text(body)
    if not text:
        raise GatewayError(
            ErrorCode.INVALID_MESSAGE, "RunAgentInput needs a user message or a resume"
        )
    try:
        return msgspec.convert({"text": text, "clientTurnId": body.run_id}, rest.PostMessage)
    except msgspec.ValidationError as exc:
        raise GatewayError(ErrorCode.INVALID_MESSAGE, f"Invalid run: {exc}"[:300]) from None


async def _resume(
    gateway: Gateway,
    identity: Identity,
    session_id: str,
    body: RunAgentInput,
    joined: dict[str, Any],
) -> None:
    """Answer each resumed interrupt (`agui_interrupts.resume_answer`)."""
    require(identity, MESSAGE_PERMISSIONS[m.AnswerQuestion])
    pending = {event.get("requestId"): event for event in joined.get("pending", [])}
    for entry in body.resume or []:
        asked = pending.get(entry.interrupt_id)
        if asked is None:
            raise GatewayError(
                ErrorCode.INVALID_STATE, "No pending interrupt with that id", session_id=session_id
            )
        await send_reply(
            gateway, identity, session_id, entry.interrupt_id, resume_answer(asked, entry)
        )


async def _stream(
    request: Request,
    gateway: Gateway,
    identity: Identity,
    session_id: str,
    subscriber: AguiSubscriber,
    ends_at: float,
) -> None:
    """The run's events until it finishes, or ends it with RUN_ERROR: the gateway drains
    (`DRAINING`), the client falls behind (`SLOW_CONSUMER`) or the token expires
    (`NOT_AUTHENTICATED`); the turn itself goes on in the runtime, visible on /ws and REST.
    The caller's subscription leaves the session afterwards."""
    projection = subscriber.projection
    response = await request.respond(
        content_type=_encoder.get_content_type(),
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    try:
        while True:
            if projection.pending_end is not None:
                history = await _history(gateway, identity, session_id)
                subscriber.push_events(projection.finish(history))
            elif gateway.draining and not projection.finished:
                subscriber.push_events(
                    projection.error(ErrorCode.DRAINING, "Server is shutting down")
                )
            elif subscriber.overflowed and not projection.finished:
                # The buffer is full: end the run; the turn goes on, visible on /ws and REST.
                subscriber.overflowed = False
                subscriber.items.clear()
                subscriber.push_events(
                    projection.error(SLOW_CONSUMER, "The client did not keep up with the run")
                )
            elif time.time() >= ends_at and not projection.finished:
                expired = token_expired()
                subscriber.push_events(projection.error(expired.code, expired.message))
            if projection.finished:
                break
            await subscriber.drain(response)
        await subscriber.flush(response)
        await response.eof()
    except asyncio.CancelledError:
        if not projection.finished and projection.turn_id is not None:
            stop_abandoned_turn(gateway, identity, session_id, projection.turn_id)
        raise


async def _history(gateway: Gateway, identity: Identity, session_id: str) -> dict[str, Any] | None:
    try:
        return await gateway.sessions.history(identity, session_id, limit=50, before=None)
    except GatewayError as exc:
        logger.warning("AG-UI run of {}: no messages snapshot: {}", session_id, exc.code)
        return None
