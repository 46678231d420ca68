"""A2A edge (docs/EDGES.md): the gateway's agents for other agents, at `/a2a`.

The wire format is the `a2a-sdk` server side, unchanged: its JSON-RPC dispatcher (the current
method names, and the 0.3 names `message/send`, `message/stream`, `tasks/get`, `tasks/cancel`
through its compatibility adapter) and its request handler, task bookkeeping and SSE, reached
from Sanic through the ASGI bridge (`edges/asgi.py`). The agent card (`a2a_card`) is at
`/.well-known/agent-card.json`.

What the SDK calls the agent is `a2a_executor.GatewayExecutor`: a task is one turn of a gateway
session, the task's `contextId` is the session id (`a2a_tasks`), and the events are the
session's own (`a2a_mapping` projects them). This route authenticates and rate-limits exactly
as REST does and checks the permission of the JSON-RPC method before the SDK sees the request.
"""

from __future__ import annotations

from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.server.routes import create_jsonrpc_routes
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH
from sanic import Blueprint, Request, Sanic
from sanic.response import HTTPResponse, json
from starlette.applications import Starlette

from diminuendo.edges.a2a_card import AgentTypes, agent_card
from diminuendo.edges.a2a_executor import GatewayExecutor
from diminuendo.edges.a2a_mapping import TOO_DEEP_RESPONSE, rpc_call, rpc_error
from diminuendo.edges.a2a_tasks import BoundedTaskStore, CallerContextBuilder, SessionContextBuilder
from diminuendo.edges.asgi import SCOPE_GATEWAY, SCOPE_IDENTITY, serve_asgi
from diminuendo.gateway.context import Gateway
from diminuendo.gateway.rest import authorize
from diminuendo.gateway.stream_limits import held_stream
from diminuendo.protocol.codec import too_deep
from diminuendo.protocol.errors import GatewayError

PATH = "/a2a"


class A2AEdge:
    """The SDK objects of one worker: task store, request handler and the JSON-RPC app, and the
    agent types the card lists."""

    def __init__(self) -> None:
        self.store = BoundedTaskStore()
        self.handler = DefaultRequestHandler(
            agent_executor=GatewayExecutor(),
            task_store=self.store,
            agent_card=agent_card(f"http://localhost{PATH}", []),
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
        self.agent_types = AgentTypes()


def _edge(app: Sanic) -> A2AEdge:
    edge = getattr(app.ctx, "a2a", None)
    if edge is None:
        edge = app.ctx.a2a = A2AEdge()
    return edge


def mount(app: Sanic) -> None:
    bp = Blueprint("a2a")

    @bp.get(AGENT_CARD_WELL_KNOWN_PATH, name="a2a_card")
    async def card(request: Request) -> HTTPResponse:
        gateway: Gateway = request.app.ctx.gateway
        types = await _edge(request.app).agent_types.get(gateway)
        url = f"{request.scheme}://{request.host}{PATH}"
        built = agent_card(url, types, bearer=not gateway.settings.dev_mode)
        return json(agent_card_to_dict(built))

    @bp.post(PATH, name="a2a")
    async def rpc(request: Request) -> HTTPResponse | None:
        gateway: Gateway = request.app.ctx.gateway
        if too_deep(request.body or b""):
            return json(TOO_DEEP_RESPONSE)
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
