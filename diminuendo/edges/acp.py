"""`diminuendo acp`: a stdio Agent Client Protocol agent that editors launch (Zed, JetBrains,
Neovim plug-ins), speaking to the gateway as an ordinary client.

The editor talks ACP on stdin/stdout through the `agent-client-protocol` SDK; this process talks
to the gateway's `/ws` with the project's client library (`diminuendo.client`), which
authenticates, resumes across drops with `afterSeq` and never loses a `seq`. So the gateway
applies the same identity, tenant walls, permissions and quotas as to any client, and an ACP
session is a gateway session: visible and joinable on `/ws`, and the other way round.

ACP session ids are gateway session ids. What the projection does is in `acp_mapping` and
`acp_questions`; this module is the I/O: `session/new` creates a session (of `--agent`),
`session/load` replays the transcript, `session/prompt` runs a turn and streams it as
`session/update`, `session/cancel` stops it, and a question or permission request of the runtime
becomes `session/request_permission` to the editor, whose answer goes back as `answer_question`.
stdout carries the protocol, so every log line goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import stat
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from acp import PROTOCOL_VERSION, RequestError, run_agent
from acp.interfaces import Client
from acp.schema import (
    AgentCapabilities,
    AllowedOutcome,
    Implementation,
    InitializeResponse,
    ListSessionsResponse,
    LoadSessionResponse,
    NewSessionResponse,
    PromptCapabilities,
    PromptResponse,
    SessionCapabilities,
    SessionInfo,
    SessionListCapabilities,
)

from diminuendo import __version__
from diminuendo.client import DiminuendoClient, ServerError
from diminuendo.client import events as ev
from diminuendo.client.errors import ClientError
from diminuendo.client.token_command import TokenCommandFailed, run_token_command
from diminuendo.edges.acp_mapping import (
    FileDiff,
    TurnProjection,
    UnsupportedContent,
    diff_update,
    history_updates,
    prompt_text,
    stop_reason,
)
from diminuendo.edges.acp_questions import Ask, answer_for, ask_for, cancelled_update

DEFAULT_URL = "ws://127.0.0.1:8001/ws"
HISTORY_PAGE = 500
HISTORY_MAX_PAGES = 20  # a session/load replays at most 10,000 messages

# Gateway error codes (PROTOCOL §12) → JSON-RPC error codes the editor understands: ACP's
# "auth required" (-32000), "resource not found" (-32002) and invalid params (-32602). Every
# other code is an internal error (-32603); the gateway code is always in `data.code`.
JSONRPC_CODES: dict[str, int] = {
    "NOT_AUTHENTICATED": -32000,
    "AUTH_FAILED": -32000,
    "TOKEN_EXPIRED": -32000,
    "SESSION_NOT_FOUND": -32002,
    "FILE_NOT_FOUND": -32002,
    "INVALID_MESSAGE": -32602,
    "MESSAGE_TOO_LARGE": -32602,
}


def request_error(exc: ClientError) -> RequestError:
    """A client-library failure as the JSON-RPC error the editor shows (never a traceback)."""
    if isinstance(exc, ServerError):
        data: dict[str, Any] = {"code": exc.code}
        if exc.retry_after_ms is not None:
            data["retryAfterMs"] = exc.retry_after_ms
        return RequestError(JSONRPC_CODES.get(exc.code, -32603), exc.message, data)
    return RequestError(-32603, str(exc), {"code": "UPSTREAM_UNAVAILABLE"})


class GatewayAgent:
    """The ACP agent: every method is one or a few client-library calls."""

    def __init__(self, url: str, token_command: str | None, token: str | None, agent: str) -> None:
        self.url = url
        self.agent_type = agent
        self._token = token
        self._token_command = token_command
        self._client: DiminuendoClient | None = None
        self._opening = asyncio.Lock()
        self._editor: Client | None = None

    def on_connect(self, conn: Client) -> None:
        self._editor = conn

    async def gateway(self) -> DiminuendoClient:
        """The one gateway connection, opened on first use (and again if the last one gave up)."""
        async with self._opening:
            if self._client is None:
                token = self._token
                if self._token_command:
                    token = await asyncio.to_thread(_run_token_command, self._token_command)
                client = DiminuendoClient.connect(self.url, token=token)
                try:
                    await client.open()
                except ClientError as exc:
                    raise request_error(exc) from None
                self._client = client
            return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except ClientError as exc:
            raise request_error(exc) from None

    # ----- ACP agent methods ----------------------------------------------------------------

    async def initialize(self, protocol_version: int, **_: Any) -> InitializeResponse:
        return InitializeResponse(
            protocol_version=PROTOCOL_VERSION,
            agent_capabilities=AgentCapabilities(
                load_session=True,
                prompt_capabilities=PromptCapabilities(
                    image=False, audio=False, embedded_context=True
                ),
                session_capabilities=SessionCapabilities(list=SessionListCapabilities()),
            ),
            agent_info=Implementation(name="diminuendo", title="Diminuendo", version=__version__),
            auth_methods=[],
        )

    async def authenticate(self, method_id: str, **_: Any) -> None:
        """No ACP auth methods: the token comes from `--token-command` (or the environment)."""
        return None

    async def new_session(self, cwd: str, **_: Any) -> NewSessionResponse:
        client = await self.gateway()
        session = await self._call(
            client.create_session(self.agent_type, metadata={"cwd": cwd, "via": "acp"})
        )
        return NewSessionResponse(session_id=session.id)

    async def load_session(self, cwd: str, session_id: str, **_: Any) -> LoadSessionResponse:
        client = await self.gateway()
        messages: list[ev.HistoryMessage] = []
        before = None
        for _page in range(HISTORY_MAX_PAGES):
            page = await self._call(
                client.get_history(session_id, limit=HISTORY_PAGE, before=before)
            )
            messages[:0] = page.messages
            if not page.has_more or not page.messages:
                break
            before = page.messages[0].id
        for update in history_updates(messages):
            await self._notify(session_id, update)
        return LoadSessionResponse()

    async def list_sessions(
        self, cwd: str | None = None, cursor: str | None = None, **_: Any
    ) -> ListSessionsResponse:
        client = await self.gateway()
        sessions = await self._call(client.list_sessions())
        infos = []
        for session in sessions:
            session_cwd = (session.metadata or {}).get("cwd")
            if session.agent_type != self.agent_type or not isinstance(session_cwd, str):
                continue
            if cwd is not None and session_cwd != cwd:
                continue
            updated = datetime.fromtimestamp(session.last_activity_at / 1000, UTC)
            infos.append(
                SessionInfo(
                    session_id=session.id,
                    cwd=session_cwd,
                    title=session.name,
                    updated_at=updated.isoformat(),
                )
            )
        return ListSessionsResponse(sessions=infos)

    async def prompt(self, prompt: list[Any], session_id: str, **_: Any) -> PromptResponse:
        try:
            text = prompt_text(prompt)
        except UnsupportedContent as exc:
            raise RequestError.invalid_params({"details": str(exc)}) from None
        client = await self.gateway()
        projection = TurnProjection()
        try:
            async for event in client.stream_turn(session_id, text):
                if isinstance(event, ev.TurnComplete):
                    return PromptResponse(stop_reason=stop_reason(event.stop_reason))
                if isinstance(event, ev.TurnError):
                    raise RequestError(
                        JSONRPC_CODES.get(event.code, -32603), event.message, {"code": event.code}
                    )
                if isinstance(event, ev.QuestionRequested | ev.PermissionRequested):
                    await self._ask(client, session_id, ask_for(event))
                    continue
                for item in projection.project(event):
                    if isinstance(item, FileDiff):
                        item = await self._diff(client, session_id, item)
                        if item is None:
                            continue
                    await self._notify(session_id, item)
        except ClientError as exc:
            raise request_error(exc) from None
        # The stream ended without the turn's end (a gap past it): it is over, as far as we know.
        return PromptResponse(stop_reason="end_turn")

    async def cancel(self, session_id: str, **_: Any) -> None:
        client = await self.gateway()
        # A notification has no reply: the running prompt reports what happened.
        with contextlib.suppress(ClientError):
            await client.stop_turn(session_id)

    # ----- I/O helpers ----------------------------------------------------------------------

    async def _notify(self, session_id: str, update: Any) -> None:
        assert self._editor is not None
        await self._editor.session_update(session_id=session_id, update=update)

    async def _ask(self, client: DiminuendoClient, session_id: str, ask: Ask) -> None:
        """Ask the editor each question in turn, then answer the gateway once. A `cancelled`
        outcome means the editor cancelled the whole prompt turn (ACP): the turn is stopped,
        not the question dismissed, so the prompt ends with `cancelled`."""
        assert self._editor is not None
        await self._notify(session_id, ask.tool_call)
        selected: list[str] = []
        for choice in ask.choices:
            response = await self._editor.request_permission(
                session_id=session_id, tool_call=ask.asked_about, options=choice.options
            )
            if not isinstance(response.outcome, AllowedOutcome):
                await client.stop_turn(session_id)
                await self._notify(session_id, cancelled_update(ask))
                return
            selected.append(response.outcome.option_id)
        answer = answer_for(ask, selected)
        try:
            await client.answer_question(
                session_id,
                ask.request_id,
                answers=answer.answers,
                approved=answer.approved,
                dismissed=answer.dismissed or None,
            )
        except ServerError as exc:
            if exc.code != "INVALID_STATE":  # the turn ended meanwhile (stopped elsewhere)
                raise
        await self._notify(session_id, answer.update)

    async def _diff(self, client: DiminuendoClient, session_id: str, change: FileDiff) -> Any:
        """The diff of a file change: the iteration before it (if any) against it; None when
        the file cannot be read (gone again, or binary): the turn goes on without it."""
        try:
            return await self._read_diff(client, session_id, change)
        except ServerError:
            return None

    async def _read_diff(self, client: DiminuendoClient, session_id: str, change: FileDiff) -> Any:
        if change.iteration is None:
            new = _text(await client.read_file(session_id, change.path))
        else:
            new = _text(await client.file_at_iteration(session_id, change.path, change.iteration))
        if new is None:
            return None
        old_text = None
        if change.iteration is not None and change.iteration > 1:
            old = await client.file_at_iteration(session_id, change.path, change.iteration - 1)
            old_text = _text(old)
        return diff_update(change.tool_call_id, change.path, old_text, new)


def _text(content: ev.FileContent) -> str | None:
    return content.content if content.encoding == "utf-8" else None


def _run_token_command(command: str) -> str:
    try:
        return run_token_command(command)
    except TokenCommandFailed as exc:
        raise RequestError(-32000, str(exc), {"code": "NOT_AUTHENTICATED"}) from None


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diminuendo acp",
        description="Agent Client Protocol over stdio, for editors (Zed, JetBrains, Neovim); "
        "sessions live in the gateway at --url.",
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("DIMINUENDO_URL", DEFAULT_URL),
        help=f"the gateway's WebSocket URL (default $DIMINUENDO_URL, else {DEFAULT_URL})",
    )
    parser.add_argument(
        "--token-command",
        help="a command that prints a bearer token (run when connecting; no shell)",
    )
    parser.add_argument(
        "--agent",
        default=os.environ.get("DIMINUENDO_AGENT", "chat"),
        help="the agent type of new sessions (default $DIMINUENDO_AGENT, else chat)",
    )
    return parser


async def serve(args: argparse.Namespace) -> None:
    agent = GatewayAgent(
        args.url, args.token_command, os.environ.get("DIMINUENDO_TOKEN"), args.agent
    )
    try:
        await run_agent(agent)
    finally:
        await agent.close()


def main(argv: Sequence[str]) -> int:
    args = make_parser().parse_args(list(argv))
    if any(stat.S_ISREG(os.fstat(fd).st_mode) for fd in (0, 1)):
        # The SDK's stdio streams need pipes (or a terminal): an editor launches this command.
        print(
            "error: diminuendo acp speaks ACP over pipes; stdin/stdout is a file", file=sys.stderr
        )
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))
    sys.stderr.flush()
    return 0
