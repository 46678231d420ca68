"""`diminuendo acp` driven as a subprocess over stdio by the ACP SDK's own client side
(`acp.spawn_agent_process` + `ClientSideConnection`), against a real gateway and the local stack.

The editor here is a small `acp.Client`: it records every `session/update` and answers
`session/request_permission` with a scripted choice.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from acp import PROTOCOL_VERSION, RequestError, spawn_agent_process, text_block
from acp.schema import (
    AgentMessageChunk,
    AgentPlanUpdate,
    AgentThoughtChunk,
    AllowedOutcome,
    DeniedOutcome,
    FileEditToolCallContent,
    PermissionOption,
    RequestPermissionResponse,
    ToolCallProgress,
    ToolCallStart,
    UserMessageChunk,
)

from diminuendo.client import DiminuendoClient
from diminuendo.local.agents import DEMO_FILE
from tests.conftest import Gateway

pytestmark = pytest.mark.timeout(90)

Chooser = Callable[[ToolCallStart, list[PermissionOption]], str | None]


def first_option(tool_call: Any, options: list[PermissionOption]) -> str | None:
    return options[0].option_id


class Editor:
    """The editor side: records updates, answers permission requests with `choose` (an option
    id, or None to cancel the prompt turn the way an editor does: session/cancel, then a
    `cancelled` outcome)."""

    def __init__(self, choose: Chooser = first_option) -> None:
        self.choose = choose
        self.updates: list[Any] = []
        self.asked: list[tuple[Any, list[PermissionOption]]] = []
        self.conn: Any = None

    async def session_update(self, session_id: str, update: Any, **_: Any) -> None:
        self.updates.append(update)

    async def request_permission(
        self, session_id: str, tool_call: Any, options: list[PermissionOption], **_: Any
    ) -> RequestPermissionResponse:
        self.asked.append((tool_call, options))
        option_id = self.choose(tool_call, options)
        if option_id is None:
            await self.conn.cancel(session_id=session_id)
            return RequestPermissionResponse(outcome=DeniedOutcome(outcome="cancelled"))
        return RequestPermissionResponse(
            outcome=AllowedOutcome(option_id=option_id, outcome="selected")
        )

    def text(self) -> str:
        return "".join(u.content.text for u in self.updates if isinstance(u, AgentMessageChunk))

    def of(self, kind: type) -> list[Any]:
        return [u for u in self.updates if isinstance(u, kind)]


@contextlib.asynccontextmanager
async def acp_agent(
    gw: Gateway, agent: str, editor: Editor, log: Path, token: str | None = None
) -> AsyncIterator[Any]:
    """`diminuendo acp` for `gw`, initialized; yields the SDK's client-side connection."""
    env = {"DIMINUENDO_TOKEN": token} if token else {}
    argv = ["-m", "diminuendo", "acp", "--url", gw.ws_url, "--agent", agent]
    with log.open("ab") as stderr:
        async with spawn_agent_process(
            lambda _agent: editor,
            sys.executable,
            *argv,
            env=env,
            transport_kwargs={"stderr": stderr},
        ) as (conn, _process):
            editor.conn = conn
            init = await conn.initialize(protocol_version=PROTOCOL_VERSION)
            assert init.agent_capabilities.load_session is True
            yield conn


async def prompt(conn: Any, session_id: str, text: str) -> Any:
    return await conn.prompt(session_id=session_id, prompt=[text_block(text)])


async def test_echo_and_demo_end_to_end_and_the_same_session_on_ws(start_gateway, tmp_path):
    gw = start_gateway()
    echo = Editor()
    async with acp_agent(gw, "echo", echo, tmp_path / "acp.log") as conn:
        session = await conn.new_session(cwd=str(tmp_path), mcp_servers=[])
        done = await prompt(conn, session.session_id, "hello world")
        assert done.stop_reason == "end_turn"
        assert echo.text() == "hello world"

    editor = Editor(lambda call, options: next(o.option_id for o in options if o.name == "keep"))
    async with DiminuendoClient.connect(gw.ws_url) as ws:
        async with acp_agent(gw, "demo", editor, tmp_path / "acp.log") as conn:
            session_id = (await conn.new_session(cwd=str(tmp_path), mcp_servers=[])).session_id
            watcher = await ws.join(session_id)  # a /ws client follows the ACP session live
            done = await prompt(conn, session_id, "hello")
        assert done.stop_reason == "end_turn"
        assert "you answered keep" in editor.text()
        assert editor.of(AgentThoughtChunk)
        plans = editor.of(AgentPlanUpdate)
        assert [e.status for e in plans[-1].entries] == ["completed"] * 3
        started = editor.of(ToolCallStart)
        assert {"bash", "append_file"} <= {s.title for s in started}
        updates = editor.of(ToolCallProgress)
        assert any(
            u.content and "[exit 0]" in u.content[0].content.text
            for u in updates
            if u.content and hasattr(u.content[0], "content")
        )
        diffs = [
            c for u in updates for c in u.content or [] if isinstance(c, FileEditToolCallContent)
        ]
        assert diffs and diffs[0].path == DEMO_FILE and "hello" in diffs[0].new_text
        ((call, options),) = editor.asked
        assert call.title == "Keep the notes file?"
        assert [o.name for o in options] == ["keep", "discard"]

        # The same turn on /ws: contiguous seq from turn_started to turn_complete.
        seqs, final = [], None
        async for event in watcher:
            seqs.append(event.seq)
            if event.type == "turn_complete":
                final = event
                break
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        assert final.final_text == editor.text()

        # And the other way round: a turn run on /ws is replayed by session/load.
        async for event in ws.stream_turn(session_id, "from ws"):
            if event.type == "question_requested":
                await ws.answer_question(session_id, event.request_id, answers={"q1": "keep"})
        later = Editor()
        async with acp_agent(gw, "demo", later, tmp_path / "acp.log") as conn:
            await conn.load_session(cwd=str(tmp_path), session_id=session_id, mcp_servers=[])
            listed = await conn.list_sessions(cwd=str(tmp_path))
        users = [u.content.text for u in later.of(UserMessageChunk)]
        assert users == ["hello", "from ws"]
        assert "you answered keep" in later.text()
        assert {s.title.split()[0] for s in later.of(ToolCallStart)} >= {"bash", "append_file"}
        assert all(s.status == "completed" for s in later.of(ToolCallStart))
        assert session_id in [s.session_id for s in listed.sessions]


async def test_cancel_while_asked_ends_the_prompt_cancelled(start_gateway, tmp_path):
    gw = start_gateway()
    editor = Editor(lambda call, options: None)  # cancel the turn when asked
    async with acp_agent(gw, "demo", editor, tmp_path / "acp.log") as conn:
        session_id = (await conn.new_session(cwd=str(tmp_path), mcp_servers=[])).session_id
        done = await prompt(conn, session_id, "hello")
        assert done.stop_reason == "cancelled"
        assert "you answered" not in editor.text()
        # The session is usable again: the next prompt runs to its end.
        editor.choose = first_option
        assert (await prompt(conn, session_id, "again")).stop_reason == "end_turn"


async def test_permission_refused_and_a_runtime_error(start_gateway, tmp_path):
    gw = start_gateway()
    editor = Editor(lambda call, options: "reject")
    async with acp_agent(gw, "demo", editor, tmp_path / "acp.log") as conn:
        session_id = (await conn.new_session(cwd=str(tmp_path), mcp_servers=[])).session_id
        done = await prompt(conn, session_id, "/permission")
        assert done.stop_reason == "end_turn"
        ((call, options),) = editor.asked
        assert call.title.startswith("bash: Run `rm") and call.kind == "execute"
        assert [o.kind for o in options] == ["allow_once", "reject_once"]
        assert "Permission refused" in editor.text()
        rejected = [u for u in editor.of(ToolCallProgress) if u.tool_call_id == call.tool_call_id]
        assert rejected[-1].status == "failed"

        with pytest.raises(RequestError) as failed:
            await prompt(conn, session_id, "/fail")
        assert failed.value.code == -32603
        assert failed.value.data == {"code": "UPSTREAM_ERROR"}
        assert "failed on request" in str(failed.value)


async def test_tenant_walls_and_viewers(prod, tmp_path):
    p = prod(EDGE_ADAPTERS="")
    alice = p.token(user="auth0|alice", tenant="acme", role="developer")
    mallory = p.token(user="auth0|mallory", tenant="evil", role="developer")
    viewer = p.token(user="auth0|victor", tenant="acme", role="viewer")
    log = tmp_path / "acp.log"

    owner = Editor()
    async with acp_agent(p.gw, "echo", owner, log, alice) as conn:
        session_id = (await conn.new_session(cwd="/src", mcp_servers=[])).session_id
        assert (await prompt(conn, session_id, "secret plans")).stop_reason == "end_turn"

    outsider = Editor()
    async with acp_agent(p.gw, "echo", outsider, log, mallory) as conn:
        for call in (
            conn.load_session(cwd="/src", session_id=session_id, mcp_servers=[]),
            prompt(conn, session_id, "let me in"),
        ):
            with pytest.raises(RequestError) as refused:
                await call
            assert refused.value.code == -32002
            assert refused.value.data == {"code": "SESSION_NOT_FOUND"}
        assert session_id not in [s.session_id for s in (await conn.list_sessions()).sessions]
    assert "secret" not in "".join(str(u) for u in outsider.updates)

    reader = Editor()
    async with acp_agent(p.gw, "echo", reader, log, viewer) as conn:
        await conn.load_session(cwd="/src", session_id=session_id, mcp_servers=[])
        assert [u.content.text for u in reader.of(UserMessageChunk)] == ["secret plans"]
        with pytest.raises(RequestError) as forbidden:
            await prompt(conn, session_id, "viewers only read")
        assert forbidden.value.data == {"code": "FORBIDDEN"}


async def test_a_bad_token_is_an_auth_error_not_a_crash(prod, tmp_path):
    p = prod(EDGE_ADAPTERS="")
    async with acp_agent(p.gw, "echo", Editor(), tmp_path / "acp.log", "not-a-jwt") as conn:
        with pytest.raises(RequestError) as refused:
            await conn.new_session(cwd="/src", mcp_servers=[])
        assert refused.value.code == -32000
        assert "not-a-jwt" not in str(refused.value.to_error_obj())


async def test_the_agent_resumes_across_a_gateway_restart(start_gateway, tmp_path):
    """The client library reconnects by itself: the editor never notices the drop."""
    gw = start_gateway()
    editor = Editor()
    async with acp_agent(gw, "echo", editor, tmp_path / "acp.log") as conn:
        session_id = (await conn.new_session(cwd=str(tmp_path), mcp_servers=[])).session_id
        assert (await prompt(conn, session_id, "before")).stop_reason == "end_turn"
        gw.stop()
        gw.start()  # same port, a new process: the agent's socket dropped meanwhile
        assert (await prompt(conn, session_id, "after")).stop_reason == "end_turn"
    assert editor.text() == "beforeafter"
