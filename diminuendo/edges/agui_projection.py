"""Gateway session events → AG-UI events: the pure half of the AG-UI adapter (docs/EDGES.md).

No Sanic, no sockets, no clock: `RunProjection` is handed the gateway's own events (the dicts the
session stream publishes, with `seq`) and returns the AG-UI events of one run, built from the
`ag-ui-protocol` SDK's models so the SDK validates every field. `_HANDLERS` is the one table of
which gateway event becomes what; an event with no row is carried as a `CUSTOM` event named after
it, so nothing the gateway says is lost to an AG-UI client.

One AG-UI run is one stretch of one gateway turn: a run ends at `turn_complete` (RUN_FINISHED),
`turn_error` (RUN_ERROR), or a question or permission request (RUN_FINISHED with the interrupt
outcome); the next run, carrying the answer in `resume`, continues the same turn. The AG-UI
lifecycle rules (a message or tool call is closed before the run ends; a step is finished only if
it was started in this run) are kept here, so a strict client's verifier accepts the stream.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ag_ui.core import (
    AssistantMessage,
    BaseEvent,
    CustomEvent,
    FunctionCall,
    Interrupt,
    Message,
    MessagesSnapshotEvent,
    ReasoningEndEvent,
    ReasoningMessageContentEvent,
    ReasoningMessageEndEvent,
    ReasoningMessageStartEvent,
    ReasoningStartEvent,
    RunErrorEvent,
    RunFinishedCancelledOutcome,
    RunFinishedEvent,
    RunFinishedInterruptOutcome,
    RunStartedEvent,
    StateDeltaEvent,
    StateSnapshotEvent,
    StepFinishedEvent,
    StepStartedEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    TokenUsage,
    ToolCall,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
    ToolMessage,
    UserMessage,
)

from diminuendo.edges.agui_interrupts import permission_interrupt, question_interrupt
from diminuendo.edges.text import as_text

__all__ = ["RunProjection", "messages_snapshot"]


class RunProjection:
    """One AG-UI run over one gateway session. Call `start` with the join snapshot, then
    `project` with every event of the stream in seq order; `finished` turns true when the run
    has ended, after which `project` returns nothing. `pending_end` is the turn_complete event
    that ends the run once the caller has fetched the history for `finish`."""

    def __init__(self, thread_id: str, run_id: str) -> None:
        self.thread_id = thread_id
        self.run_id = run_id
        self.turn_id: str | None = None
        self.finished = False
        self.pending_end: dict[str, Any] | None = None
        self._usage = {"input": 0, "output": 0}
        self._text_id: str | None = None
        self._reasoning_id: str | None = None
        self._segments = 0
        self._open_calls: set[str] = set()
        self._open_steps: list[str] = []
        self._step_names: dict[str, str] = {}

    # ----- run boundaries -------------------------------------------------------------------

    def start(self, snapshot: dict[str, Any]) -> list[BaseEvent]:
        """RUN_STARTED and the session state as STATE_SNAPSHOT, from the join snapshot."""
        session = snapshot.get("session") or {}
        usage = session.get("tokenUsage") or {}
        self._usage = {"input": usage.get("input", 0), "output": usage.get("output", 0)}
        state = {
            "sessionId": snapshot.get("sessionId"),
            "agentType": session.get("agentType"),
            "status": session.get("status"),
            "epoch": snapshot.get("epoch"),
            "lastSeq": snapshot.get("lastSeq"),
            "usage": dict(self._usage),
            "plan": [],
        }
        return [
            RunStartedEvent(thread_id=self.thread_id, run_id=self.run_id),
            StateSnapshotEvent(snapshot=state),
        ]

    def finish(self, history: dict[str, Any] | None) -> list[BaseEvent]:
        """End the run that `pending_end` (a turn_complete) closed: the durable transcript as
        MESSAGES_SNAPSHOT (when the caller could read it), then RUN_FINISHED."""
        end = self.pending_end or {}
        self.pending_end = None
        self.finished = True
        events: list[BaseEvent] = []
        if history is not None:
            events.append(messages_snapshot(history))
        usage = end.get("usage") or {}
        inputs, outputs = usage.get("inputTokens", 0), usage.get("outputTokens", 0)
        cancelled = end.get("stopReason") == "cancelled"
        events.append(
            RunFinishedEvent(
                thread_id=self.thread_id,
                run_id=self.run_id,
                outcome=RunFinishedCancelledOutcome() if cancelled else None,
                usage=[
                    TokenUsage(
                        input_tokens=inputs, output_tokens=outputs, total_tokens=inputs + outputs
                    )
                ],
            )
        )
        return events

    def error(self, code: str, message: str) -> list[BaseEvent]:
        """End the run with RUN_ERROR (a runtime error, or the gateway refusing the run)."""
        events = self._close_open()
        events.append(RunErrorEvent(code=code, message=message))
        self.finished = True
        return events

    # ----- the stream -----------------------------------------------------------------------

    def project(self, event: dict[str, Any]) -> list[BaseEvent]:
        """The AG-UI events for one gateway event of the session's stream."""
        if self.finished or self.pending_end is not None:
            return []
        turn_id = event.get("turnId")
        if turn_id is not None and turn_id != self.turn_id:
            return []  # another turn's event (one started elsewhere before ours)
        handler = _HANDLERS.get(event["type"], RunProjection._custom)
        return handler(self, event)

    def _ignore(self, event: dict[str, Any]) -> list[BaseEvent]:
        return []

    def _custom(self, event: dict[str, Any]) -> list[BaseEvent]:
        value = {k: v for k, v in event.items() if k not in ("type", "sessionId")}
        return [*self._close_text(), CustomEvent(name=event["type"], value=value)]

    def _text_delta(self, event: dict[str, Any]) -> list[BaseEvent]:
        events = self._close_reasoning()
        if self._text_id is None:
            self._segments += 1
            self._text_id = f"msg_{self.turn_id}_{self._segments}"
            events.append(TextMessageStartEvent(message_id=self._text_id, role="assistant"))
        events.append(TextMessageContentEvent(message_id=self._text_id, delta=event["text"]))
        return events

    def _thinking_start(self, event: dict[str, Any]) -> list[BaseEvent]:
        events = [*self._close_text(), *self._close_reasoning()]
        self._segments += 1
        self._reasoning_id = f"rsn_{self.turn_id}_{self._segments}"
        events.append(ReasoningStartEvent(message_id=self._reasoning_id))
        events.append(ReasoningMessageStartEvent(message_id=self._reasoning_id, role="reasoning"))
        return events

    def _thinking_progress(self, event: dict[str, Any]) -> list[BaseEvent]:
        events: list[BaseEvent] = []
        if self._reasoning_id is None:
            events = self._thinking_start(event)
        assert self._reasoning_id is not None
        events.append(
            ReasoningMessageContentEvent(message_id=self._reasoning_id, delta=event["text"])
        )
        return events

    def _thinking_complete(self, event: dict[str, Any]) -> list[BaseEvent]:
        return self._close_reasoning()

    def _tool_call_start(self, event: dict[str, Any]) -> list[BaseEvent]:
        call_id = event["toolCallId"]
        self._open_calls.add(call_id)
        return [
            *self._close_text(),
            ToolCallStartEvent(tool_call_id=call_id, tool_call_name=event["toolName"]),
        ]

    def _tool_call_delta(self, event: dict[str, Any]) -> list[BaseEvent]:
        if event["toolCallId"] not in self._open_calls:
            return []  # its start was in an earlier run; TOOL_CALL_END will restate it whole
        return [ToolCallArgsEvent(tool_call_id=event["toolCallId"], delta=event["argsDelta"])]

    def _tool_call(self, event: dict[str, Any]) -> list[BaseEvent]:
        call_id = event["toolCallId"]
        events: list[BaseEvent] = []
        if call_id not in self._open_calls:
            # A runtime that sends only the whole call (or a call started in an earlier run).
            events += self._close_text()
            events.append(
                ToolCallStartEvent(tool_call_id=call_id, tool_call_name=event["toolName"])
            )
            events.append(ToolCallArgsEvent(tool_call_id=call_id, delta=json.dumps(event["args"])))
        self._open_calls.discard(call_id)
        events.append(ToolCallEndEvent(tool_call_id=call_id))
        return events

    def _tool_result(self, event: dict[str, Any]) -> list[BaseEvent]:
        return self._call_result(event["toolCallId"], as_text(event["output"]))

    def _tool_error(self, event: dict[str, Any]) -> list[BaseEvent]:
        return self._call_result(event["toolCallId"], event["message"], {"isError": True})

    def _call_result(
        self, call_id: str, content: str, metadata: dict[str, Any] | None = None
    ) -> list[BaseEvent]:
        """TOOL_CALL_RESULT of `call_id`, its call ended first if it is still open."""
        events = self._end_call(call_id)
        events.append(
            ToolCallResultEvent(
                message_id=f"{call_id}-result",
                tool_call_id=call_id,
                content=content,
                metadata=metadata,
            )
        )
        return events

    def _plan(self, event: dict[str, Any]) -> list[BaseEvent]:
        steps = event["steps"]
        for step in steps:
            if isinstance(step, dict) and isinstance(step.get("id"), str):
                self._step_names[step["id"]] = str(step.get("title") or step["id"])
        return [StateDeltaEvent(delta=[{"op": "replace", "path": "/plan", "value": steps}])]

    def _step_started(self, event: dict[str, Any]) -> list[BaseEvent]:
        name = self._step_names.get(event["stepId"], event["stepId"])
        self._open_steps.append(name)
        return [*self._close_text(), StepStartedEvent(step_name=name)]

    def _step_completed(self, event: dict[str, Any]) -> list[BaseEvent]:
        name = self._step_names.get(event["stepId"], event["stepId"])
        if name not in self._open_steps:
            return []  # started in an earlier run, which finished it when it ended
        self._open_steps.remove(name)
        return [*self._close_text(), StepFinishedEvent(step_name=name)]

    def _session_state(self, event: dict[str, Any]) -> list[BaseEvent]:
        return [
            StateDeltaEvent(delta=[{"op": "replace", "path": "/status", "value": event["state"]}])
        ]

    def _usage_update(self, event: dict[str, Any]) -> list[BaseEvent]:
        self._usage["input"] += event.get("inputTokens", 0)
        self._usage["output"] += event.get("outputTokens", 0)
        return [
            StateDeltaEvent(delta=[{"op": "replace", "path": "/usage", "value": dict(self._usage)}])
        ]

    def _question(self, event: dict[str, Any]) -> list[BaseEvent]:
        return self._interrupt(question_interrupt(event))

    def _permission(self, event: dict[str, Any]) -> list[BaseEvent]:
        return self._interrupt(permission_interrupt(event))

    def _interrupt(self, interrupt: Interrupt) -> list[BaseEvent]:
        events = self._close_open()
        events.append(
            RunFinishedEvent(
                thread_id=self.thread_id,
                run_id=self.run_id,
                outcome=RunFinishedInterruptOutcome(interrupts=[interrupt]),
            )
        )
        self.finished = True
        return events

    def _turn_complete(self, event: dict[str, Any]) -> list[BaseEvent]:
        self.pending_end = event
        return self._close_open()

    def _turn_error(self, event: dict[str, Any]) -> list[BaseEvent]:
        return self.error(event["code"], event["message"])

    # ----- closing what is open -------------------------------------------------------------

    def _close_text(self) -> list[BaseEvent]:
        if self._text_id is None:
            return []
        message_id, self._text_id = self._text_id, None
        return [TextMessageEndEvent(message_id=message_id)]

    def _close_reasoning(self) -> list[BaseEvent]:
        if self._reasoning_id is None:
            return []
        message_id, self._reasoning_id = self._reasoning_id, None
        return [
            ReasoningMessageEndEvent(message_id=message_id),
            ReasoningEndEvent(message_id=message_id),
        ]

    def _end_call(self, call_id: str) -> list[BaseEvent]:
        if call_id not in self._open_calls:
            return []
        self._open_calls.discard(call_id)
        return [ToolCallEndEvent(tool_call_id=call_id)]

    def _close_open(self) -> list[BaseEvent]:
        events = [*self._close_text(), *self._close_reasoning()]
        for call_id in sorted(self._open_calls):
            events.append(ToolCallEndEvent(tool_call_id=call_id))
        self._open_calls.clear()
        events += [StepFinishedEvent(step_name=name) for name in reversed(self._open_steps)]
        self._open_steps.clear()
        return events


_Handler = Callable[[RunProjection, dict[str, Any]], list[BaseEvent]]

# Gateway event type (PROTOCOL.md §6) → its projection. A type not listed becomes CUSTOM.
_HANDLERS: dict[str, _Handler] = {
    "turn_started": RunProjection._ignore,  # RUN_STARTED opened the run already
    "text_delta": RunProjection._text_delta,
    "thinking.start": RunProjection._thinking_start,
    "thinking.progress": RunProjection._thinking_progress,
    "thinking.complete": RunProjection._thinking_complete,
    "tool_call_start": RunProjection._tool_call_start,
    "tool_call_delta": RunProjection._tool_call_delta,
    "tool_call": RunProjection._tool_call,
    "tool_result": RunProjection._tool_result,
    "tool_error": RunProjection._tool_error,
    "plan.created": RunProjection._plan,
    "plan.revised": RunProjection._plan,
    "plan.step_started": RunProjection._step_started,
    "plan.step_completed": RunProjection._step_completed,
    "session_state": RunProjection._session_state,
    "usage_update": RunProjection._usage_update,
    "question_requested": RunProjection._question,
    "permission_requested": RunProjection._permission,
    "approval_resolved": RunProjection._ignore,  # the resume that caused it is the client's own
    "turn_complete": RunProjection._turn_complete,
    "turn_error": RunProjection._turn_error,
}


def messages_snapshot(history: dict[str, Any]) -> MessagesSnapshotEvent:
    """The durable transcript (`SessionService.history`) as AG-UI messages: a user message, an
    assistant message with its tool calls, and one tool message per tool call's output."""
    messages: list[Message] = []
    for raw in history.get("messages", []):
        message_id, text = str(raw.get("id")), raw.get("text") or ""
        if raw.get("role") == "user":
            messages.append(UserMessage(id=message_id, content=text))
            continue
        calls = raw.get("toolCalls") or []
        messages.append(
            AssistantMessage(
                id=message_id,
                content=text or None,
                tool_calls=[
                    ToolCall(
                        id=call["toolCallId"],
                        function=FunctionCall(
                            name=call["toolName"], arguments=json.dumps(call.get("args") or {})
                        ),
                    )
                    for call in calls
                ]
                or None,
            )
        )
        messages += [
            ToolMessage(
                id=f"{call['toolCallId']}-result",
                tool_call_id=call["toolCallId"],
                content=as_text(call.get("output")),
            )
            for call in calls
            if call.get("output") is not None
        ]
    return MessagesSnapshotEvent(messages=messages)
