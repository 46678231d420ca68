"""Who calls the A2A edge and where its tasks live: the `a2a-sdk` hooks for both.

The `/a2a` route authenticated the caller exactly as REST does and put it into the ASGI scope;
`CallerContextBuilder` makes it the SDK's user, so the task store keeps tasks per caller (tenant
and user) and another tenant's task id is "not found". `BoundedTaskStore` forgets the oldest
tasks beyond `TASKS_KEPT`. `SessionContextBuilder` gives every task its gateway session (the
task's `contextId`): the task's own, the caller's session named by `contextId`, or a new one.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from a2a.auth.user import User
from a2a.server.agent_execution import RequestContext, RequestContextBuilder
from a2a.server.context import ServerCallContext
from a2a.server.routes.common import DefaultServerCallContextBuilder
from a2a.server.tasks import InMemoryTaskStore
from a2a.types.a2a_pb2 import SendMessageRequest, Task
from a2a.utils.errors import InvalidParamsError
from google.protobuf.json_format import MessageToDict
from starlette.requests import Request as StarletteRequest

from diminuendo.auth.identity import Identity
from diminuendo.auth.policy import MESSAGE_PERMISSIONS, require
from diminuendo.edges.a2a_mapping import a2a_error
from diminuendo.edges.asgi import SCOPE_GATEWAY, SCOPE_IDENTITY
from diminuendo.gateway.context import Gateway
from diminuendo.protocol import messages as m
from diminuendo.protocol.codec import convert_message
from diminuendo.protocol.errors import GatewayError

# Tasks kept per process (the SDK's task bookkeeping: state, artifacts, history), oldest first
# out. A task is one turn; the session and its transcript stay in Unison and Podium regardless.
TASKS_KEPT = 10_000


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
                joined = convert_message({"sessionId": context_id}, m.JoinSession)
                await gateway.sessions.get_session(identity, joined.session_id)
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
    create = convert_message({"agentType": agent_type}, m.CreateSession)
    session = await gateway.sessions.create_session(
        identity, create.agent_type, metadata={"via": "a2a"}
    )
    return session["id"]
