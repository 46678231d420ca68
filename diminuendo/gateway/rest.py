"""REST (PROTOCOL.md §8): sessions as "threads", the same `SessionService` calls the WebSocket
makes, authorised by the same permission table; and the session's events as Server-Sent Events
with the same no-gap replay as `join_session`."""

from __future__ import annotations

import time
from typing import Any, TypeVar

import msgspec
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, empty, json

from diminuendo.auth.identity import Identity
from diminuendo.auth.policy import MESSAGE_PERMISSIONS, require
from diminuendo.gateway import frames
from diminuendo.gateway.context import Gateway
from diminuendo.gateway.openapi import documented
from diminuendo.gateway.rest_auth import request_identity
from diminuendo.gateway.sse import SseSubscriber
from diminuendo.gateway.stream_limits import held_stream
from diminuendo.protocol import events as ev
from diminuendo.protocol import messages as m
from diminuendo.protocol import rest, shapes
from diminuendo.protocol.errors import ErrorCode, GatewayError
from diminuendo.sessions.stream import Replay, ReplayPager

bp = Blueprint("rest")
Command = TypeVar("Command", bound=m.ClientMessage)


async def authorize(request: Request, operation: type[m.ClientMessage]) -> Identity:
    """Authenticate, rate-limit per user, and check the permission of `operation`."""
    gateway: Gateway = request.app.ctx.gateway
    identity = await request_identity(request)
    wait = gateway.rest_limits.hit(f"{identity.tenant_id}/{identity.user_id}", time.monotonic())
    if wait is not None:
        raise GatewayError(ErrorCode.RATE_LIMITED, retry_after_ms=max(1, int(wait * 1000)))
    require(identity, MESSAGE_PERMISSIONS[operation])
    return identity


async def _authorized_body(
    request: Request, kind: type[Command], **path: Any
) -> tuple[Identity, Command]:
    """`authorize` the operation `kind`, then read the body plus the `path` values as `kind`:
    a client learns it may not do this before it learns its body is wrong."""
    identity = await authorize(request, kind)
    return identity, rest.decode_body(request.body, kind, **path)


def json_reply(body: Any, status: int = 200) -> HTTPResponse:
    """A JSON reply (REST, JSON-RPC) from reply structs or a service's dicts, encoded as Sanic
    encodes dicts (non-ASCII escaped), so a struct changes no byte of a reply."""
    return json(msgspec.to_builtins(body), status=status)


def _flag(request: Request, name: str) -> bool:
    return request.args.get(name, "false").lower() in ("1", "true", "yes")


@bp.get("/api/threads")
@documented("List the sessions of your tenant", ok=(200, rest.ThreadList))
async def list_threads(request: Request) -> HTTPResponse:
    identity = await authorize(request, m.ListSessions)
    gateway: Gateway = request.app.ctx.gateway
    threads = await gateway.sessions.list_sessions(identity, _flag(request, "includeArchived"))
    return json_reply(rest.ThreadList(threads=threads))


@bp.post("/api/threads")
@documented("Create a session", body=rest.CreateThread, ok=(201, shapes.SessionMeta))
async def create_thread(request: Request) -> HTTPResponse:
    identity, body = await _authorized_body(request, m.CreateSession)
    gateway: Gateway = request.app.ctx.gateway
    session = await gateway.sessions.create_session(
        identity,
        body.agent_type,
        name=body.name,
        project_id=body.project_id,
        metadata=body.metadata,
    )
    return json_reply(session, status=201)


@bp.get("/api/threads/<session_id>")
@documented("One session", ok=(200, shapes.SessionMeta))
async def get_thread(request: Request, session_id: str) -> HTTPResponse:
    identity = await authorize(request, m.JoinSession)
    target = rest.message(m.JoinSession, sessionId=session_id)
    gateway: Gateway = request.app.ctx.gateway
    return json_reply(await gateway.sessions.get_session(identity, target.session_id))


@bp.patch("/api/threads/<session_id>")
@documented("Rename or (un)archive a session", body=rest.PatchThread, ok=(200, shapes.SessionMeta))
async def patch_thread(request: Request, session_id: str) -> HTTPResponse:
    identity = await authorize(request, m.RenameSession)
    session_id = rest.message(m.ArchiveSession, sessionId=session_id).session_id
    body = rest.decode_body(request.body, rest.PatchThread)
    gateway: Gateway = request.app.ctx.gateway
    session = await gateway.sessions.get_session(identity, session_id)
    if body.name is not None:
        session = await gateway.sessions.rename_session(identity, session_id, body.name)
    if body.archived is not None:
        session = await gateway.sessions.set_archived(identity, session_id, body.archived)
    return json_reply(session)


@bp.delete("/api/threads/<session_id>")
@documented("Delete a session and stop its agent instance", ok=(204, None))
async def delete_thread(request: Request, session_id: str) -> HTTPResponse:
    identity = await authorize(request, m.DeleteSession)
    target = rest.message(m.DeleteSession, sessionId=session_id)
    gateway: Gateway = request.app.ctx.gateway
    await gateway.sessions.delete_session(identity, target.session_id)
    return empty(status=204)


@bp.get("/api/threads/<session_id>/messages")
@documented("The durable transcript", ok=(200, rest.History))
async def thread_messages(request: Request, session_id: str) -> HTTPResponse:
    identity = await authorize(request, m.GetHistory)
    query = rest.message(
        m.GetHistory,
        sessionId=session_id,
        limit=rest.count_param("limit", request.args.get("limit")),
        before=request.args.get("before"),
    )
    gateway: Gateway = request.app.ctx.gateway
    history = await gateway.sessions.history(
        identity, query.session_id, limit=query.limit, before=query.before
    )
    return json_reply(history)


@bp.post("/api/threads/<session_id>/messages")
@documented(
    "Run a turn",
    body=rest.PostMessage,
    ok=(202, rest.TurnAccepted),
    errors=(400, 401, 403, 404, 409, 413, 429, 503),
)
async def post_message(request: Request, session_id: str) -> HTTPResponse:
    identity, body = await _authorized_body(request, m.RunTurn, sessionId=session_id)
    gateway: Gateway = request.app.ctx.gateway
    turn = await gateway.sessions.run_turn(
        identity, body.session_id, body.text, body.client_turn_id
    )
    return json_reply(rest.TurnAccepted(turn_id=turn.turn_id), status=202)


@bp.post("/api/threads/<session_id>/stop")
@documented("Stop the running turn", ok=(202, None))
async def stop(request: Request, session_id: str) -> HTTPResponse:
    identity = await authorize(request, m.StopTurn)
    target = rest.message(m.StopTurn, sessionId=session_id)
    gateway: Gateway = request.app.ctx.gateway
    await gateway.sessions.stop_turn(identity, target.session_id)
    return json({}, status=202)


# What steering or answering the running turn can fail with.
_TURN_INPUT_ERRORS = (400, 401, 403, 404, 409, 429, 503)


@bp.post("/api/threads/<session_id>/steer")
@documented(
    "Steer the running turn",
    body=rest.SteerBody,
    ok=(202, None),
    errors=_TURN_INPUT_ERRORS,
)
async def steer(request: Request, session_id: str) -> HTTPResponse:
    identity, body = await _authorized_body(request, m.Steer, sessionId=session_id)
    gateway: Gateway = request.app.ctx.gateway
    await gateway.sessions.steer(identity, body.session_id, body.content)
    return json({}, status=202)


@bp.post("/api/threads/<session_id>/answer")
@documented(
    "Answer a question or permission request",
    body=rest.AnswerBody,
    ok=(202, None),
    errors=_TURN_INPUT_ERRORS,
)
async def answer(request: Request, session_id: str) -> HTTPResponse:
    identity, body = await _authorized_body(request, m.AnswerQuestion, sessionId=session_id)
    gateway: Gateway = request.app.ctx.gateway
    await gateway.sessions.answer(
        identity,
        body.session_id,
        body.request_id,
        answers=body.answers,
        approved=body.approved,
        dismissed=body.dismissed,
    )
    return json({}, status=202)


@bp.get("/api/models")
@documented("The model catalogue", ok=(200, rest.ModelList), tag="models")
async def models(request: Request) -> HTTPResponse:
    await authorize(request, m.ListSessions)
    gateway: Gateway = request.app.ctx.gateway
    return json_reply(rest.ModelList(models=await gateway.ensemble.models()))


def _stream_request(request: Request, session_id: str) -> m.JoinSession:
    """What an SSE request asks for, as the `join_session` it amounts to: `Last-Event-ID`
    (surrounding blanks are HTTP's, not the value's) or else `afterSeq`, and `epoch`."""
    header = request.headers.get("last-event-id")
    if header is not None:
        after_seq = rest.count_param("Last-Event-ID", header.strip(" \t"))
    else:
        after_seq = rest.count_param("afterSeq", request.args.get("afterSeq"))
    return rest.message(
        m.JoinSession, sessionId=session_id, afterSeq=after_seq, epoch=request.args.get("epoch")
    )


@bp.get("/api/threads/<session_id>/events")
@documented("The session's events as Server-Sent Events (id: is the seq)", ok=(200, None))
async def thread_events(request: Request, session_id: str) -> HTTPResponse | None:
    identity = await authorize(request, m.JoinSession)
    gateway: Gateway = request.app.ctx.gateway
    stream = _stream_request(request, session_id)
    session_id, after_seq, epoch = stream.session_id, stream.after_seq, stream.epoch
    await gateway.sessions.get_session(identity, session_id)  # 404 before the stream opens
    with held_stream(gateway, identity) as ends_at:
        return await _stream_events(
            request, gateway, identity, session_id, after_seq, epoch, ends_at
        )


async def _stream_events(
    request: Request,
    gateway: Gateway,
    identity: Identity,
    session_id: str,
    after_seq: int | None,
    epoch: str | None,
    ends_at: float,
) -> None:
    """The stream itself; it ends when the client goes, the gateway drains, the client falls
    too far behind (`WS_SEND_QUEUE_MAX` chunks or `WS_SEND_BUFFER_BYTES` unsent), or the token
    expires (`exp` + `AUTH_CLOCK_LEEWAY`: SSE cannot be handed a fresh token, so the client
    reconnects with one and `Last-Event-ID`). A replay longer than that goes out in pages as
    the client takes them."""
    subscriber = SseSubscriber(
        gateway.settings.ws_send_queue_max,
        gateway.settings.ws_send_buffer_bytes,
        request.transport.get_protocol(),
    )
    if after_seq is not None:
        gateway.metrics.replays.inc()
    response = await request.respond(
        content_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    try:
        pager = await _join(gateway, identity, subscriber, session_id, after_seq, epoch)
        while not gateway.draining and not subscriber.overflowed and time.time() < ends_at:
            if pager is not None and not pager.attached:
                await subscriber.replay_page_of(pager, response)
            else:
                await subscriber.drain(response)
        if not subscriber.overflowed:  # else the connection is closing under the response
            await response.eof()
    finally:
        gateway.sessions.leave(session_id, subscriber)


async def _join(
    gateway: Gateway,
    identity: Identity,
    subscriber: SseSubscriber,
    session_id: str,
    after_seq: int | None,
    epoch: str | None,
) -> ReplayPager | None:
    """Subscribe: the `state_snapshot` and the first replay page are queued; the pager of a
    longer replay is returned, for the response loop to send its pages as the client drains
    them. A refused join is queued as an `error` event (the stream then ends on its own)."""

    def send(snapshot: dict[str, Any], replay: Replay) -> None:
        # An SSE client resuming after a restart holds a seq from an older epoch, possibly
        # above the new stream's: that is a gap too.
        reply = frames.reply(ev.StateSnapshot, snapshot, None)
        if after_seq is not None and after_seq > replay.last_seq:
            reply = msgspec.structs.replace(reply, gap=True)
        subscriber.push_event("state_snapshot", reply)
        for frame in replay.frames:
            subscriber.deliver(frame)

    pager: ReplayPager | None = None

    async def page_in_the_loop(rest: ReplayPager) -> None:
        nonlocal pager
        pager = rest

    page_frames, page_bytes = subscriber.replay_page
    try:
        await gateway.sessions.join(
            identity,
            subscriber,
            session_id,
            after_seq=after_seq,
            epoch=epoch,
            send=send,
            page_frames=page_frames,
            page_bytes=page_bytes,
            replay_rest=page_in_the_loop,
        )
    except GatewayError as exc:
        subscriber.push_event("error", exc.to_frame())
    return pager
