"""One instance's in-process runtime: turns, the event outbox and the runtime socket it feeds.

Events go through an outbox that survives socket changes: while no gateway is attached they wait
there (bounded), and a reconnecting gateway receives them in order, so a dropped socket loses
nothing. Only one socket owns an instance; a newer one replaces the older.
"""

import asyncio
import json as jsonlib
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import msgspec
from loguru import logger
from sanic import Websocket

from diminuendo.local.pacer import Pacer
from diminuendo.local.podium_store import PodiumStore, Record
from diminuendo.local.textutil import count_tokens, now_ms
from diminuendo.sanic_ws import is_open, wait_writable, writable, write_queued, write_text

BUFFER_LIMIT = 10_000
_encode = msgspec.json.Encoder().encode

Agent = Callable[["Turn"], Awaitable[None]]


@dataclass(frozen=True)
class AgentServices:
    """How agents reach the other stand-ins (the chat agent calls Ensemble with the key from
    its instance's secrets, as a real agent would)."""

    ensemble_url: str
    pacer: Pacer = field(default_factory=Pacer, repr=False, compare=False)


class Turn:
    """An agent's handle on the turn it is running; everything it does becomes runtime events."""

    def __init__(self, runtime: "InstanceRuntime", turn_id: str, text: str, first: bool) -> None:
        self.runtime = runtime
        self.turn_id = turn_id
        self.text = text
        self.first = first  # the instance's first turn: demo provisions its sandbox here
        self.interrupted = False
        self.steers: list[str] = []
        self.tool_calls: list[dict[str, Any]] = []
        self.usage: dict[str, int] | None = None
        self._parts: list[str] = []

    @property
    def config(self) -> dict[str, Any]:
        return self.runtime.config

    @property
    def streamed_text(self) -> str:
        return "".join(self._parts)

    def emit(self, event_type: str, **content: Any) -> None:
        self.runtime.emit(event_type, content, self.turn_id)

    def say(self, text: str) -> None:
        """Stream a piece of the answer; the pieces of a turn make up its final text."""
        if text:
            self._parts.append(text)
            self.emit("stream_update", text=text)

    def take_steers(self) -> list[str]:
        steers, self.steers = self.steers, []
        return steers

    def record_tool_call(
        self, tool_call_id: str, tool_name: str, args: dict[str, Any], output: str
    ) -> None:
        self.tool_calls.append(
            {"tool_call_id": tool_call_id, "tool_name": tool_name, "args": args, "output": output}
        )

    async def ask(self, questions: list[dict[str, Any]]) -> dict[str, Any]:
        """Ask the user and wait, however long, for the gateway's `answer` frame."""
        return await self._await_answer("tool.question_requested", questions=questions)

    async def request_permission(self, tool_name: str, description: str) -> dict[str, Any]:
        """Ask the user to allow a tool call and wait for the gateway's `answer` frame; the
        resolution's `approved` says whether it was allowed."""
        return await self._await_answer(
            "tool.permission_requested", tool_name=tool_name, description=description
        )

    async def _await_answer(self, event_type: str, **content: Any) -> dict[str, Any]:
        request_id = f"req_{secrets.token_hex(6)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.runtime.questions[request_id] = future
        self.emit(event_type, request_id=request_id, **content)
        try:
            resolution = await future
        finally:
            self.runtime.questions.pop(request_id, None)
        self.emit("tool.approval_resolved", request_id=request_id, **resolution)
        return resolution

    def transcript(self, limit: int = 50) -> list[Record]:
        return self.runtime.store.list_messages(self.runtime.instance_id, limit)[0]

    def read_file(self, path: str) -> bytes | None:
        record = self.runtime.store.read_file(self.runtime.instance_id, path)
        return record["content"] if record else None

    def write_file(self, path: str, content: bytes) -> Record:
        return self.runtime.store.write_file(self.runtime.instance_id, path, content)

    def list_files(self) -> list[Record]:
        return self.runtime.store.list_files(self.runtime.instance_id, "", depth=64) or []


class InstanceRuntime:
    def __init__(
        self,
        instance: Record,
        store: PodiumStore,
        agent: Agent,
        services: AgentServices,
        opened_secrets: dict[str, str] | None = None,
    ) -> None:
        self.instance_id: str = instance["instance_id"]
        self.config: dict[str, Any] = instance["config"]
        # The instance's opened secrets (e.g. `ensemble_api_key`); only agents read them.
        self.secrets: dict[str, str] = opened_secrets or {}
        self.store = store
        self.services = services
        self.questions: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._agent = agent
        self._outbox: deque[bytes] = deque(maxlen=BUFFER_LIMIT)
        self._wake = asyncio.Event()
        self._socket: Websocket | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._closers: set[asyncio.Task[None]] = set()
        self._event_id = 0
        self._turn: Turn | None = None
        self._turn_task: asyncio.Task[None] | None = None
        self._overflowed = False

    # socket ownership

    def attach(self, ws: Websocket) -> None:
        """Own the socket; its first frame says which turn (if any) this runtime is running, so a
        gateway reconnecting after a Podium restart learns its turn was lost."""
        hello = {
            "type": "update",
            "event_type": "runtime.attached",
            "content": {
                "instance_id": self.instance_id,
                "running_turn_id": self._turn.turn_id if self._turn is not None else None,
                "ts": now_ms(),
            },
        }
        self._outbox.appendleft(_encode(hello))
        previous, self._socket = self._socket, ws
        if previous is not None:
            closer = asyncio.create_task(previous.close(4000, "replaced by a newer runtime socket"))
            self._closers.add(closer)
            closer.add_done_callback(self._closers.discard)
        if self._pump_task is None:
            self._pump_task = asyncio.create_task(self._pump(), name=f"pump-{self.instance_id}")
        self._wake.set()

    def detach(self, ws: Websocket) -> None:
        if self._socket is ws:
            self._socket = None

    def drop_socket(self) -> bool:
        """Kill the socket without a close frame, as a network failure would."""
        ws, self._socket = self._socket, None
        if ws is None:
            return False
        ws.fail_connection(1006)
        return True

    async def close(self, code: int, reason: str) -> None:
        """Stop the runtime: a running turn is abandoned, not finished, like a crashed host's."""
        tasks = [t for t in (self._turn_task, self._pump_task, *self._closers) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        ws, self._socket = self._socket, None
        if ws is not None:
            with suppress(Exception):
                await ws.close(code, reason)

    # events

    def emit(self, event_type: str, content: dict[str, Any], turn_id: str | None) -> None:
        self._event_id += 1
        frame = {
            "type": "update",
            "event_type": event_type,
            "content": {**content, "turn_id": turn_id, "event_id": self._event_id, "ts": now_ms()},
        }
        if len(self._outbox) == BUFFER_LIMIT and not self._overflowed:
            self._overflowed = True
            logger.warning("instance {} outbox full: dropping its oldest events", self.instance_id)
        outbox = self._outbox
        outbox.append(_encode(frame))
        ws = self._socket
        if ws is not None and len(outbox) == 1 and writable(ws):
            write_text(ws, outbox.popleft())  # nothing ahead of it: no trip through the pump
        else:
            self._wake.set()

    async def _pump(self) -> None:
        # A frame leaves the outbox only once a socket took it, so frames that a dying socket
        # could not take go out on the next one.
        outbox = self._outbox
        while True:
            ws = self._socket
            if ws is None or not outbox:
                self._wake.clear()
                await self._wake.wait()
            elif writable(ws):
                write_queued(ws, outbox)
            elif is_open(ws):
                await wait_writable(ws)
            else:
                self.detach(ws)

    # gateway frames

    def handle_frame(self, raw: str | bytes) -> None:
        try:
            frame = jsonlib.loads(raw)
        except ValueError:
            frame = None
        if not isinstance(frame, dict) or not isinstance(frame.get("content", {}), dict):
            self._reject("a frame is a JSON object with an object `content`", None)
            return
        content = frame.get("content", {})
        match frame.get("type"):
            case "process_message":
                self._process_message(content)
            case "interrupt":
                self._interrupt(content)
            case "steer":
                self._steer(content)
            case "answer":
                self._answer(content)
            case other:
                self._reject(f"unknown frame type {other!r}", None)

    def _reject(self, message: str, turn_id: str | None) -> None:
        self.emit("error", {"code": "INVALID_MESSAGE", "message": message}, turn_id)

    def _process_message(self, content: dict[str, Any]) -> None:
        text = content.get("text")
        turn_id = content.get("turn_id") or f"trn_{secrets.token_hex(8)}"
        if not isinstance(turn_id, str):
            self._reject("turn_id must be a string", None)
            return
        if not isinstance(text, str):
            self._reject("text must be a string", turn_id)
            return
        if self._turn is not None:
            busy = f"turn {self._turn.turn_id} is still running"
            self.emit("error", {"code": "SESSION_BUSY", "message": busy}, turn_id)
            return
        first = not self.store.has_messages(self.instance_id)
        self.store.add_message(self.instance_id, "user", text, turn_id)
        turn = Turn(self, turn_id, text, first)
        self._turn = turn
        self.emit("stream_start", {}, turn_id)
        self._turn_task = asyncio.create_task(self._run(turn), name=f"turn-{turn_id}")

    def _interrupt(self, content: dict[str, Any]) -> None:
        turn = self._turn
        if turn is None or content.get("turn_id") not in (None, turn.turn_id):
            logger.debug("instance {}: interrupt ignored, not the running turn", self.instance_id)
            return
        turn.interrupted = True
        if self._turn_task is not None:
            self._turn_task.cancel()

    def _steer(self, content: dict[str, Any]) -> None:
        text = content.get("text")
        if not isinstance(text, str):
            self._reject("steer text must be a string", None)
            return
        turn = self._turn
        self.store.add_message(self.instance_id, "user", text, turn.turn_id if turn else None)
        if turn is not None:
            turn.steers.append(text)

    def _answer(self, content: dict[str, Any]) -> None:
        request_id = content.get("request_id")
        future = self.questions.get(request_id) if isinstance(request_id, str) else None
        if future is None or future.done():
            logger.debug("instance {}: answer for no pending question", self.instance_id)
            return
        dismissed = bool(content.get("dismissed", False))
        future.set_result(
            {
                "answers": content.get("answers") or {},
                "approved": bool(content.get("approved", not dismissed)),
                "dismissed": dismissed,
            }
        )

    # turns

    async def _run(self, turn: Turn) -> None:
        try:
            await self._agent(turn)
        except asyncio.CancelledError:
            if not turn.interrupted:
                raise
            self._finish(turn, "cancelled")
        except Exception as exc:
            logger.warning("instance {} agent failed: {!r}", self.instance_id, exc)
            self._turn = None
            self.emit("error", {"code": "AGENT_ERROR", "message": str(exc)}, turn.turn_id)
        else:
            self._finish(turn, "end_turn")

    def _finish(self, turn: Turn, stop_reason: str) -> None:
        self._turn = None
        final_text = turn.streamed_text
        usage = turn.usage or {
            "input_tokens": count_tokens(turn.text),
            "output_tokens": count_tokens(final_text),
        }
        self.store.add_message(
            self.instance_id, "assistant", final_text, turn.turn_id, turn.tool_calls or None
        )
        self.emit(
            "stream_end",
            {"final_text": final_text, "stop_reason": stop_reason, "usage": usage},
            turn.turn_id,
        )
