"""The asyncio driver of one `LiveSession`: it owns the runtime socket and the delta timer, nothing
else. Runtime frames are mapped (`mapping.map_event`) and fed to the live session with the loop's
clock; the deadline it answers arms or cancels the one timer; the runtime's hello and loss become
live-session commands; the gateway's control messages to the runtime are written here.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from loguru import logger

from diminuendo.mapping import Unknown, map_event
from diminuendo.protocol.errors import ErrorCode
from diminuendo.sessions.live import LiveSession, Turn
from diminuendo.sessions.state import SessionStatus
from diminuendo.upstreams.podium import PodiumClient
from diminuendo.upstreams.podium_runtime import RuntimeConnection

__all__ = ["RuntimeDriver"]


class Command(msgspec.Struct, tag_field="type"):
    """A control message from the gateway to the instance's runtime (UPSTREAMS.md §1)."""


class _Run(msgspec.Struct):
    text: str
    turn_id: str
    messages: list[Any] = msgspec.field(default_factory=list)


class _TurnRef(msgspec.Struct):
    turn_id: str


class _Text(msgspec.Struct):
    text: str


class _Answer(msgspec.Struct):
    request_id: str
    answers: dict[str, Any]
    approved: bool
    dismissed: bool


class ProcessMessage(Command, tag="process_message"):
    content: _Run


class Interrupt(Command, tag="interrupt"):
    content: _TurnRef


class Steer(Command, tag="steer"):
    content: _Text


class Answer(Command, tag="answer"):
    content: _Answer


class RuntimeDriver:
    __slots__ = ("_loop", "_timer", "_unknown", "live", "runtime")

    def __init__(self, live: LiveSession, unknown_events: set[str]) -> None:
        self.live = live
        self.runtime: RuntimeConnection | None = None
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._unknown = unknown_events  # names logged once per process, shared by every driver

    def __repr__(self) -> str:
        return f"RuntimeDriver({self.live!r}, runtime={self.runtime is not None})"

    async def connect(self, podium: PodiumClient, instance_id: str) -> None:
        """Open the instance's runtime socket (raises `GatewayError` if Podium refuses)."""
        runtime = podium.runtime(
            instance_id,
            on_frame=self._on_runtime_frame,
            on_lost=self._lost,
            on_attached=self._attached,
        )
        await runtime.open()
        self.runtime = runtime

    async def close(self) -> None:
        """Cancel the timer and close the runtime socket (the instance and its turns stay)."""
        self._cancel_timer()
        runtime, self.runtime = self.runtime, None
        if runtime is not None:
            await runtime.close()

    # ----- from the runtime -------------------------------------------------------------------

    def _on_runtime_frame(self, frame: dict[str, Any]) -> None:
        """Hot path: one runtime frame → at most one client event on the session's stream."""
        event = map_event(frame)
        if event is None:
            return
        if isinstance(event, Unknown):
            if event.name not in self._unknown:
                self._unknown.add(event.name)
                logger.debug("ignoring runtime event {!r}", event.name)
            return
        deadline = self.live.receive(event, self._loop.time())
        if (deadline is None) is not (self._timer is None):  # else the timer is as it should be
            self._follow(deadline)

    def _attached(self, running_turn_id: str | None, reconnected: bool) -> None:
        self.live.runtime_attached(running_turn_id, reconnected)
        self._follow(self.live.deadline)

    async def _lost(self, reason: str) -> None:
        logger.warning("runtime of session {} lost: {}", self.live.stream.session_id, reason)
        self.runtime = None
        self.live.end_turn_with_error(ErrorCode.UPSTREAM_UNAVAILABLE, reason, SessionStatus.ERROR)
        self._follow(self.live.deadline)

    # ----- the timer --------------------------------------------------------------------------

    def _follow(self, deadline: float | None) -> None:
        """Keep the one timer armed exactly while the live session holds text."""
        if deadline is None:
            if self._timer is not None:
                self._cancel_timer()
        elif self._timer is None:
            self._timer = self._loop.call_at(deadline, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._follow(self.live.tick(self._loop.time()))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # ----- to the runtime ---------------------------------------------------------------------

    async def run(self, turn: Turn) -> None:
        await self._send(ProcessMessage(content=_Run(text=turn.text, turn_id=turn.turn_id)))

    async def interrupt(self, turn_id: str) -> None:
        await self._send(Interrupt(content=_TurnRef(turn_id=turn_id)))

    async def steer(self, text: str) -> None:
        await self._send(Steer(content=_Text(text=text)))

    async def answer(
        self, request_id: str, answers: dict[str, Any] | None, approved: bool, dismissed: bool
    ) -> None:
        content = _Answer(
            request_id=request_id,
            answers=answers or {},
            # Only an explicit true approves: a permission request fails closed.
            approved=approved is True,
            dismissed=dismissed is True,
        )
        await self._send(Answer(content=content))

    async def _send(self, command: Command) -> None:
        assert self.runtime is not None
        await self.runtime.send(command)  # type: ignore[arg-type]  # the socket encodes any struct
