"""A2A edge (docs/EDGES.md): the gateway's agents for other agents, at `/a2a`.

The wire format is the `a2a-sdk` server side, unchanged: its JSON-RPC dispatcher (the current
method names, and the 0.3 names `message/send`, `message/stream`, `tasks/get`, `tasks/cancel`
through its compatibility adapter) and its request handler, task bookkeeping and SSE, reached
from Sanic through the ASGI bridge. The agent card at `/.well-known/agent-card.json` lists the
agent types as skills and declares streaming.

What the SDK calls the agent is `GatewayExecutor`: a task is one turn of a gateway session, the
task's `contextId` is the session id, and the events are the session's own (`a2a_mapping`
projects them), so the session is visible and joinable on `/ws` with the same `seq`. The route
authenticates and rate-limits exactly as REST does and checks the permission of the JSON-RPC
method before the SDK sees the request; tasks are kept per caller (tenant and user), so another
tenant's task id is "not found".
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import OrderedDict
from typing import Any

import msgspec
from a2a.auth.user import User
from a2a.server.agent_execution import AgentExecutor, RequestContext, RequestContextBuilder
from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue_v2 import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.server.routes import create_jsonrpc_routes
from a2a.server.routes.common import DefaultServerCallContextBuilder
from a2a.server.tasks import InMemoryTaskStore
from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    HTTPAuthSecurityScheme,
    Part,
    SecurityRequirement,
    SecurityScheme,
    SendMessageRequest,
    Task,
    TaskState,
    TaskStatus,
)
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH, PROTOCOL_VERSION_0_3, TransportProtocol
from a2a.utils.errors import InvalidParamsError
from google.protobuf.json_format import MessageToDict
from sanic import Blueprint, Request, Sanic
from sanic.response import HTTPResponse, json
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest

from diminuendo import __version__
from diminuendo.auth.identity import Identity
from diminuendo.auth.policy import MESSAGE_PERMISSIONS, require
from diminuendo.edges.a2a_mapping import (
    Done,
    FileArtifact,
    Pause,
    TaskProjection,
    a2a_error,
    answer_from,
    rpc_call,
    rpc_error,
)
from diminuendo.edges.mcp_asgi import serve_asgi
from diminuendo.gateway.context import Gateway
from diminuendo.gateway.rest import authorize
from diminuendo.gateway.stream_limits import (
    SLOW_CONSUMER,
    held_stream,
    stream_deadline,
    token_expired,
)
from diminuendo.protocol import messages as m
from diminuendo.protocol.errors import ErrorCode, GatewayError
from diminuendo.sessions.stream import Frame, Replay

PATH = "/a2a"
SCOPE_IDENTITY = "diminuendo.identity"
SCOPE_GATEWAY = "diminuendo.gateway"
# Tasks kept per process (the SDK's task bookkeeping: state, artifacts, history), oldest first
# out. A task is one turn; the session and its transcript stay in Unison and Podium regardless.
TASKS_KEPT = 10_000
AGENT_TYPES_CACHE_S = 60.0
STATES_WAITING = (TaskState.TASK_STATE_INPUT_REQUIRED,)


class Caller(User):
    """The gateway identity as the SDK's user; tasks are kept per `tenant/user`."""

    def __init__(self, owner: str, identity: Identity | None = None) -> None:
        self.owner = owner
        self.identity = identity

    @property
    def is_authenticated(self) -> bool:
        return self.identity is not None

    @property
    def user_name(self) -> str:
        return self.owner


def owner_of(identity: Identity) -> str:
    return f"{identity.tenant_id}/{identity.user_id}"


class CallerContextBuilder(DefaultServerCallContextBuilder):
    """The SDK's call context, with the caller the route authenticated (from the ASGI scope)."""

    def build(self, request: StarletteRequest) -> ServerCallContext:
        context = super().build(request)
        context.state[SCOPE_GATEWAY] = request.scope[SCOPE_GATEWAY]
        return context

    def build_user(self, request: StarletteRequest) -> User:
        identity: Identity = request.scope[SCOPE_IDENTITY]
        return Caller(owner_of(identity), identity)


def caller(context: ServerCallContext) -> tuple[Gateway, Identity]:
    user = context.user
    assert isinstance(user, Caller) and user.identity is not None
    return context.state[SCOPE_GATEWAY], user.identity


class BoundedTaskStore(InMemoryTaskStore):
    """The SDK's in-memory task store, forgetting the least recently saved task beyond
    `TASKS_KEPT` (the SDK's own store never forgets, so it would grow with every turn)."""

    def __init__(self, limit: int = TASKS_KEPT) -> None:
        super().__init__(owner_resolver=lambda context: context.user.user_name)
        self.limit = limit
        self._order: OrderedDict[tuple[str, str], None] = OrderedDict()

    async def save(self, task: Task, context: ServerCallContext) -> None:
        await super().save(task, context)
        key = (context.user.user_name, task.id)
        self._order[key] = None
        self._order.move_to_end(key)
        while len(self._order) > self.limit:
            (owner, task_id), _ = self._order.popitem(last=False)
            await super().delete(task_id, ServerCallContext(user=Caller(owner)))

    async def delete(self, task_id: str, context: ServerCallContext) -> None:
        self._order.pop((context.user.user_name, task_id), None)
        await super().delete(task_id, context)


class SessionContextBuilder(RequestContextBuilder):
    """A task's context is a gateway session: a message without `contextId` (and not continuing
    a task) creates one, of the agent type in its metadata (`agentType`); a given `contextId`
    must be a session the caller can see."""

    def __init__(self, store: BoundedTaskStore) -> None:
        self.store = store

    async def build(
        self,
        context: ServerCallContext,
        params: SendMessageRequest | None = None,
        task_id: str | None = None,
        context_id: str | None = None,
        task: Task | None = None,
    ) -> RequestContext:
        gateway, identity = caller(context)
        try:
            if task_id:
                stored = await self.store.get(task_id, context)
                context_id = stored.context_id if stored is not None else context_id
            elif context_id:
                await gateway.sessions.get_session(identity, context_id)
            else:
                context_id = await _new_session(gateway, identity, params)
        except GatewayError as exc:
            raise a2a_error(exc) from None
        return RequestContext(
            call_context=context, request=params, task_id=task_id, context_id=context_id, task=task
        )


async def _new_session(
    gateway: Gateway, identity: Identity, params: SendMessageRequest | None
) -> str:
    require(identity, MESSAGE_PERMISSIONS[m.CreateSession])
    metadata: dict[str, Any] = {}
    if params is not None:
        metadata = {**MessageToDict(params.metadata), **MessageToDict(params.message.metadata)}
    agent_type = metadata.get("agentType")
    if not isinstance(agent_type, str) or not agent_type:
        raise InvalidParamsError(
            message='A new conversation names its agent: message metadata {"agentType": …} '
            "(one of the agent card's skills)"
        )
    session = await gateway.sessions.create_session(identity, agent_type, metadata={"via": "a2a"})
    return session["id"]


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
        resume = MessageToDict(task.metadata) if waiting and task is not None else {}
        subscriber = FrameQueue(gateway.settings.ws_send_buffer_bytes)
        joined: dict[str, Any] = {}

        def send(snapshot: dict[str, Any], replay: Replay) -> None:
            joined.update(snapshot)
            for frame in replay.frames:
                subscriber.deliver(frame)

        after_seq = resume.get("lastSeq")
        projection = TaskProjection(context.task_id or "", session_id, "")
        if task is None:  # the SDK wants the task before any event about it, a failure too
            await event_queue.enqueue_event(new_task(context))
        try:
            await gateway.sessions.join(
                identity,
                subscriber,
                session_id,
                after_seq=int(after_seq) if isinstance(after_seq, int | float) else None,
                epoch=resume.get("epoch"),
                send=send,
            )
            projection.epoch = joined.get("epoch", "")
            if waiting:
                projection.turn_id = resume.get("turnId")
                if not await self._answer(context, event_queue, projection, joined, resume):
                    return
            else:
                text = context.get_user_input()
                if not text.strip():
                    raise GatewayError(ErrorCode.INVALID_MESSAGE, "The message has no text part")
                turn = await gateway.sessions.run_turn(identity, session_id, text)
                projection.turn_id = turn.turn_id
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
        finally:
            gateway.sessions.leave(session_id, subscriber)

    async def _answer(
        self,
        context: RequestContext,
        event_queue: EventQueue,
        projection: TaskProjection,
        joined: dict[str, Any],
        resume: dict[str, Any],
    ) -> bool:
        """Send the message as the answer to the pending request; False when it is no answer
        (the task asks again, still `input-required`)."""
        gateway, identity = caller(context.call_context)
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
        await gateway.sessions.answer(
            identity,
            projection.context_id,
            request_id,
            answers=answer.answers,
            approved=answer.approved,
            dismissed=answer.dismissed,
        )
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
            for item in projection.project(msgspec.json.decode(frame.data), frame.seq):
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


class A2AEdge:
    """The SDK objects of one worker: task store, request handler and the JSON-RPC app."""

    def __init__(self) -> None:
        self.store = BoundedTaskStore()
        self.handler = DefaultRequestHandler(
            agent_executor=GatewayExecutor(),
            task_store=self.store,
            agent_card=agent_card("http://localhost", []),
            request_context_builder=SessionContextBuilder(self.store),
        )
        self.app = Starlette(
            routes=create_jsonrpc_routes(
                self.handler,
                PATH,
                context_builder=CallerContextBuilder(),
                enable_v0_3_compat=True,
            )
        )
        self.agent_types: tuple[float, list[str]] = (0.0, [])


def agent_card(base_url: str, agent_types: list[str], bearer: bool = False) -> AgentCard:
    """The card: one skill per agent type, streaming, JSON-RPC in the current and 0.3 versions
    at the same URL, and (outside dev mode) the bearer token REST takes."""
    url = f"{base_url}{PATH}"
    card = AgentCard(
        name="Diminuendo",
        description="The platform's agents. A new conversation names its agent type in the "
        'message metadata ({"agentType": …}); contextId is the gateway session id.',
        version=__version__,
        supported_interfaces=[
            AgentInterface(
                url=url, protocol_binding=TransportProtocol.JSONRPC, protocol_version="1.0"
            ),
            AgentInterface(
                url=url,
                protocol_binding=TransportProtocol.JSONRPC,
                protocol_version=PROTOCOL_VERSION_0_3,
            ),
        ],
        capabilities=AgentCapabilities(streaming=True, push_notifications=False),
        default_input_modes=["text/plain", "application/json"],
        default_output_modes=["text/plain", "application/json"],
        skills=[
            AgentSkill(
                id=agent_type,
                name=agent_type,
                description=f"A turn of the `{agent_type}` agent",
                tags=["diminuendo", agent_type],
            )
            for agent_type in agent_types
        ],
    )
    if bearer:
        card.security_schemes["bearer"].CopyFrom(
            SecurityScheme(
                http_auth_security_scheme=HTTPAuthSecurityScheme(
                    scheme="bearer", bearer_format="JWT"
                )
            )
        )
        requirement = SecurityRequirement()
        requirement.schemes["bearer"].SetInParent()
        card.security_requirements.append(requirement)
    return card


def _edge(app: Sanic) -> A2AEdge:
    edge = getattr(app.ctx, "a2a", None)
    if edge is None:
        edge = app.ctx.a2a = A2AEdge()
    return edge


async def _agent_types(edge: A2AEdge, gateway: Gateway) -> list[str]:
    fetched_at, types = edge.agent_types
    if time.monotonic() - fetched_at > AGENT_TYPES_CACHE_S or not types:
        types = await gateway.podium.agent_types()
        edge.agent_types = (time.monotonic(), types)
    return types


def mount(app: Sanic) -> None:
    bp = Blueprint("a2a")

    @bp.get(AGENT_CARD_WELL_KNOWN_PATH, name="a2a_card")
    async def card(request: Request) -> HTTPResponse:
        gateway: Gateway = request.app.ctx.gateway
        types = await _agent_types(_edge(request.app), gateway)
        base = f"{request.scheme}://{request.host}"
        built = agent_card(base, types, bearer=not gateway.settings.dev_mode)
        return json(agent_card_to_dict(built))

    @bp.post(PATH, name="a2a")
    async def rpc(request: Request) -> HTTPResponse | None:
        gateway: Gateway = request.app.ctx.gateway
        call = rpc_call(request.body or b"")
        identity = await authorize(request, call.operation)
        extra = {SCOPE_GATEWAY: gateway, SCOPE_IDENTITY: identity}
        app = _edge(request.app).app
        if not call.streams:
            return await serve_asgi(request, app, extra)
        try:
            with held_stream(gateway, identity):  # the task's own stream ends at expiry
                return await serve_asgi(request, app, extra)
        except GatewayError as exc:  # over a connection limit: refused before the SDK runs
            return json(rpc_error(call, exc))

    app.blueprint(bp)
