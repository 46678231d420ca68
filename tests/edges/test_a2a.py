"""The A2A edge driven by the `a2a-sdk` client side (its `ClientFactory`, card resolver and
JSON-RPC transports, current and 0.3), against a real gateway and the local stack."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from a2a.client import A2ACardResolver, A2AClientError, ClientConfig, ClientFactory
from a2a.types.a2a_pb2 import (
    AgentCard,
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    Task,
    TaskState,
)
from a2a.utils.constants import PROTOCOL_VERSION_0_3
from a2a.utils.errors import A2AError, InvalidParamsError, TaskNotFoundError
from google.protobuf.json_format import MessageToDict
from google.protobuf.struct_pb2 import Struct

from diminuendo.client import DiminuendoClient
from diminuendo.local.agents import DEMO_FILE

pytestmark = pytest.mark.timeout(90)

COMPLETED = TaskState.TASK_STATE_COMPLETED
INPUT_REQUIRED = TaskState.TASK_STATE_INPUT_REQUIRED


class A2A:
    """One A2A client of the gateway (the SDK's client, made from the served card)."""

    def __init__(self, base_url: str, token: str | None = None, version: str = "1.0") -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.methods: list[str] = []  # the JSON-RPC methods sent, to see which names were used

        async def record(request: httpx.Request) -> None:
            if request.method == "POST":
                self.methods.append(json.loads(request.content)["method"])

        hooks = {"request": [record]}
        self.http = httpx.AsyncClient(headers=headers, timeout=30, event_hooks=hooks)
        self.base_url = base_url
        self.version = version
        self.card: AgentCard | None = None

    async def client(self, streaming: bool = True) -> Any:
        self.card = await A2ACardResolver(self.http, self.base_url).get_agent_card()
        card = AgentCard()
        card.CopyFrom(self.card)
        del card.supported_interfaces[:]
        card.supported_interfaces.extend(
            i for i in self.card.supported_interfaces if i.protocol_version == self.version
        )
        config = ClientConfig(streaming=streaming, httpx_client=self.http)
        return ClientFactory(config).create(card)

    async def aclose(self) -> None:
        await self.http.aclose()


@pytest.fixture
async def a2a(start_gateway) -> AsyncIterator[tuple[Any, A2A]]:
    gw = start_gateway(EDGE_ADAPTERS="a2a")
    edge = A2A(gw.url)
    yield gw, edge
    await edge.aclose()


def message(text: str, *, agent: str | None = None, task: Task | None = None) -> SendMessageRequest:
    msg = Message(role=Role.ROLE_USER, message_id=str(uuid.uuid4()), parts=[Part(text=text)])
    if agent:
        meta = Struct()
        meta.update({"agentType": agent})
        msg.metadata.CopyFrom(meta)
    if task is not None:
        msg.task_id, msg.context_id = task.id, task.context_id
    return SendMessageRequest(message=msg)


async def run(client: Any, request: SendMessageRequest) -> tuple[list[StreamResponse], Task]:
    """Send a message; every streamed event, and the task as tasks/get has it afterwards."""
    events = [event async for event in client.send_message(request)]
    task_id = next(
        e.task.id if e.HasField("task") else e.status_update.task_id
        for e in events
        if e.HasField("task") or e.HasField("status_update")
    )
    return events, await client.get_task(GetTaskRequest(id=task_id))


def streamed(events: list[StreamResponse]) -> str:
    """The response as it streamed: the chunks before the whole text (`lastChunk`)."""
    chunks = [e.artifact_update for e in events if e.HasField("artifact_update")]
    return "".join(
        c.artifact.parts[0].text
        for c in chunks
        if c.artifact.artifact_id == "response" and not c.last_chunk
    )


def artifact(task: Task, artifact_id: str) -> str:
    return next(a.parts[0].text for a in task.artifacts if a.artifact_id == artifact_id)


async def test_card_lists_the_agent_types_as_skills_and_streams(a2a):
    _gw, edge = a2a
    await edge.client()
    card = edge.card
    assert {"echo", "demo", "slow", "chat"} <= {s.id for s in card.skills}
    assert card.capabilities.streaming is True
    assert {i.protocol_version for i in card.supported_interfaces} == {"1.0", "0.3"}
    assert all(i.url.endswith("/a2a") for i in card.supported_interfaces)


async def test_echo_streams_and_is_the_same_session_on_ws(a2a):
    gw, edge = a2a
    client = await edge.client()
    events, task = await run(client, message("hello world", agent="echo"))
    assert task.status.state == COMPLETED
    assert artifact(task, "response") == "hello world"
    assert streamed(events) == "hello world"
    assert edge.methods == ["SendStreamingMessage", "GetTask"]  # the current method names
    assert task.context_id.startswith("ses_")

    # The task's session on /ws: its stream holds the same turn at the seqs the task names.
    async with DiminuendoClient.connect(gw.ws_url) as ws:
        stream = await ws.get_events(task.context_id, after_seq=0)
    done = [e for e in stream.events if e.type == "turn_complete"]
    assert done and done[-1].final_text == "hello world"
    assert MessageToDict(task.metadata)["turnId"] == done[-1].turn_id
    seqs = [
        MessageToDict(e.status_update.metadata)["seq"]
        for e in events
        if e.HasField("status_update")
    ]
    assert seqs[-1] == done[-1].seq

    # And a turn started on /ws is the context of the next task.
    async with DiminuendoClient.connect(gw.ws_url) as ws:
        async for _event in ws.stream_turn(task.context_id, "from ws"):
            pass
    next_request = message("again")
    next_request.message.context_id = task.context_id
    _events, again = await run(client, next_request)
    assert again.context_id == task.context_id and artifact(again, "response") == "again"


async def test_demo_question_answered_in_the_same_task(a2a):
    _gw, edge = a2a
    client = await edge.client()
    events, task = await run(client, message("hello", agent="demo"))
    assert task.status.state == INPUT_REQUIRED
    asked = task.status.message
    assert "Keep the notes file? [keep / discard]" in asked.parts[0].text
    assert MessageToDict(asked.parts[1].data)["type"] == "question_requested"
    progress = [
        e.status_update.status.message.parts[0].text
        for e in events
        if e.HasField("status_update") and e.status_update.status.message.parts
    ]
    assert any(p.startswith("Thinking:") for p in progress)
    assert any(p.startswith("Running bash") for p in progress)

    events, done = await run(client, message("Keep", task=task))
    assert done.id == task.id and done.status.state == COMPLETED
    assert "you answered keep" in artifact(done, "response")
    assert "hello" in artifact(done, f"file:{DEMO_FILE}")


async def test_permission_refused_and_a_runtime_error(a2a):
    _gw, edge = a2a
    client = await edge.client()
    _events, task = await run(client, message("/permission", agent="demo"))
    assert task.status.state == INPUT_REQUIRED
    assert task.status.message.parts[0].text.startswith("Allow bash?")
    _events, again = await run(client, message("maybe later", task=task))
    assert again.status.state == INPUT_REQUIRED  # not an answer: asked again
    assert again.status.message.parts[0].text.startswith("Please answer yes or no.")
    _events, done = await run(client, message("no", task=task))
    assert done.status.state == COMPLETED
    assert "Permission refused" in artifact(done, "response")

    request = message("/fail")
    request.message.context_id = task.context_id
    _events, failed = await run(client, request)
    assert failed.status.state == TaskState.TASK_STATE_FAILED
    assert MessageToDict(failed.status.message.parts[1].data)["code"] == "UPSTREAM_ERROR"


async def test_cancel_stops_the_turn(a2a):
    gw, edge = a2a
    client = await edge.client()
    stream = client.send_message(message('{"deltas": 500, "interval_ms": 20}', agent="slow"))
    task_id = context_id = None
    async for event in stream:
        if event.HasField("artifact_update"):
            task_id = event.artifact_update.task_id
            context_id = event.artifact_update.context_id
            break
    canceled = await client.cancel_task(CancelTaskRequest(id=task_id))
    assert canceled.status.state == TaskState.TASK_STATE_CANCELED
    await stream.aclose()
    async with DiminuendoClient.connect(gw.ws_url) as ws:
        for _ in range(50):
            events = (await ws.get_events(context_id, after_seq=0)).events
            ends = [e for e in events if e.type == "turn_complete"]
            if ends:
                break
            await asyncio.sleep(0.1)
    assert ends[-1].stop_reason == "cancelled"


async def test_the_0_3_methods_of_older_clients(a2a):
    _gw, edge = a2a
    edge.version = PROTOCOL_VERSION_0_3
    blocking = await edge.client(streaming=False)  # message/send, tasks/get
    _events, task = await run(blocking, message("old client", agent="echo"))
    assert task.status.state == COMPLETED and artifact(task, "response") == "old client"
    streaming = await edge.client(streaming=True)  # message/stream
    _events, task = await run(streaming, message("hello", agent="demo"))
    assert task.status.state == INPUT_REQUIRED
    canceled = await streaming.cancel_task(CancelTaskRequest(id=task.id))  # tasks/cancel
    assert canceled.status.state == TaskState.TASK_STATE_CANCELED
    assert edge.methods == [
        "message/send",
        "tasks/get",
        "message/stream",
        "tasks/get",
        "tasks/cancel",
    ]


async def test_tenant_walls_viewers_and_tokens(prod):
    p = prod(EDGE_ADAPTERS="a2a")
    alice = A2A(p.gw.url, p.token(user="auth0|alice", tenant="acme"))
    mallory = A2A(p.gw.url, p.token(user="auth0|mallory", tenant="evil"))
    viewer = A2A(p.gw.url, p.token(user="auth0|victor", tenant="acme", role="viewer"))
    nobody = A2A(p.gw.url)
    try:
        owner = await alice.client()
        assert owner is not None and alice.card.security_requirements
        _events, task = await run(owner, message("secret plans", agent="echo"))
        assert task.status.state == COMPLETED

        outsider = await mallory.client()
        with pytest.raises(TaskNotFoundError):
            await outsider.get_task(GetTaskRequest(id=task.id))
        with pytest.raises(TaskNotFoundError):
            await outsider.cancel_task(CancelTaskRequest(id=task.id))
        intrusion = message("let me in")
        intrusion.message.context_id = task.context_id
        with pytest.raises(A2AError) as refused:
            await run(outsider, intrusion)
        assert "secret" not in str(refused.value)
        assert "SESSION_NOT_FOUND" in str(refused.value) or (
            getattr(refused.value, "data", None) == {"code": "SESSION_NOT_FOUND"}
        )

        reader = await viewer.client()
        with pytest.raises(A2AClientError, match="403"):
            await run(reader, message("viewers only read", agent="echo"))

        anonymous = await nobody.client()
        with pytest.raises(A2AClientError, match="401"):
            await run(anonymous, message("who am i", agent="echo"))
    finally:
        for edge in (alice, mallory, viewer, nobody):
            await edge.aclose()


async def test_bad_input_gets_a_clear_error(a2a):
    gw, edge = a2a
    client = await edge.client()
    with pytest.raises(InvalidParamsError, match="agentType"):
        await run(client, message("no agent named"))
    with pytest.raises(InvalidParamsError, match="Unknown agent type"):
        await run(client, message("hi", agent="no-such-agent"))
    async with DiminuendoClient.connect(gw.ws_url) as ws:  # a turn running elsewhere
        session = await ws.create_session("slow")
        await ws.run_turn(session.id, '{"deltas": 100, "interval_ms": 50}')
        busy = message("me too")
        busy.message.context_id = session.id
        _events, refused = await run(client, busy)
        assert refused.status.state == TaskState.TASK_STATE_FAILED
        assert MessageToDict(refused.status.message.parts[1].data)["code"] == "SESSION_BUSY"
        await ws.stop_turn(session.id)
    async with httpx.AsyncClient(base_url=gw.url) as http:
        garbage = await http.post("/a2a", content=b"{not json", headers={"A2A-Version": "1.0"})
        assert garbage.status_code == 200 and garbage.json()["error"]["code"] == -32700
        # Before the fix: 1,000 levels of nesting made the route's own peek at the method raise
        # RecursionError, answered 500 with an ERROR traceback in the log, token or not.
        deep = b'{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":%s}' % (
            b"[" * 1000 + b"]" * 1000
        )
        nested = await http.post("/a2a", content=deep, headers={"A2A-Version": "1.0"})
        assert nested.status_code == 200 and nested.json()["error"]["code"] == -32700
