"""The AG-UI projection (diminuendo/edges/agui_projection.py) without a network: gateway events in,
SDK-validated AG-UI events out, lifecycle rules kept."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("ag_ui")

from ag_ui.core import EventType

from diminuendo.edges.agui_projection import RunProjection, messages_snapshot
from tests.edges.agui_client import EVENT, Run, verify_run

SNAPSHOT = {
    "sessionId": "ses_1",
    "epoch": "e1",
    "lastSeq": 4,
    "pending": [],
    "session": {"agentType": "demo", "status": "ready", "tokenUsage": {"input": 3, "output": 5}},
}
T = "trn_1"


def demo_until_question() -> list[dict[str, Any]]:
    return [
        {"type": "session_state", "state": "running", "previous": "ready"},
        {"type": "turn_started", "turnId": T},
        {"type": "thinking.start", "turnId": T},
        {"type": "thinking.progress", "turnId": T, "text": "Reading."},
        {"type": "thinking.complete", "turnId": T},
        {"type": "plan.created", "turnId": T, "steps": [{"id": "s1", "title": "Look"}]},
        {"type": "plan.step_started", "turnId": T, "stepId": "s1"},
        {"type": "tool_call_start", "turnId": T, "toolCallId": "c1", "toolName": "bash"},
        {"type": "tool_call_delta", "turnId": T, "toolCallId": "c1", "argsDelta": '{"a":'},
        {"type": "tool_call_delta", "turnId": T, "toolCallId": "c1", "argsDelta": "1}"},
        {"type": "tool_call", "turnId": T, "toolCallId": "c1", "toolName": "bash",
         "args": {"a": 1}},
        {"type": "terminal.stream", "turnId": T, "data": "$ ls\n", "terminalId": "t1"},
        {"type": "tool_result", "turnId": T, "toolCallId": "c1", "output": "ok", "isError": False},
        {"type": "text_delta", "turnId": T, "text": "Hello "},
        {"type": "question_requested", "turnId": T, "requestId": "req_1",
         "questions": [{"id": "q1", "text": "Keep?", "options": ["keep", "discard"]}]},
    ]  # fmt: skip


def project_all(projection: RunProjection, events: list[dict[str, Any]]) -> Run:
    run = Run()
    projected = projection.start(SNAPSHOT)
    for event in events:
        projected += projection.project(event)
    for out in projected:
        run.events.append(EVENT.validate_json(out.model_dump_json(by_alias=True)))
    return run


def test_a_turn_up_to_a_question_is_one_interrupted_run() -> None:
    projection = RunProjection("thread-a", "run-1")
    projection.turn_id = T
    run = project_all(projection, demo_until_question())
    verify_run(run)
    assert run.types()[:2] == ["RUN_STARTED", "STATE_SNAPSHOT"]
    assert run.events[1].snapshot["usage"] == {"input": 3, "output": 5}
    assert "REASONING_MESSAGE_CONTENT" in run.types()
    assert [e.delta for e in run.of(EventType.TOOL_CALL_ARGS)] == ['{"a":', "1}"]
    assert run.of(EventType.STEP_STARTED)[0].step_name == "Look"
    assert run.of(EventType.CUSTOM)[0].name == "terminal.stream"
    assert run.of(EventType.TOOL_CALL_RESULT)[0].content == "ok"
    assert run.text == "Hello "
    end = run.last
    assert end.outcome.type == "interrupt"
    (interrupt,) = end.outcome.interrupts
    assert (interrupt.id, interrupt.reason, interrupt.message) == ("req_1", "question", "Keep?")
    assert interrupt.response_schema["properties"]["q1"]["enum"] == ["keep", "discard"]
    assert projection.finished and projection.project({"type": "text_delta", "turnId": T}) == []


def test_the_resumed_run_continues_the_turn_and_finishes_with_the_transcript() -> None:
    projection = RunProjection("thread-a", "run-2")
    projection.turn_id = T
    rest = [
        {"type": "approval_resolved", "turnId": T, "requestId": "req_1", "answers": {"q1": "keep"}},
        {"type": "plan.step_completed", "turnId": T, "stepId": "s3"},  # started in run 1
        {"type": "text_delta", "turnId": T, "text": "Done."},
        {"type": "usage_update", "turnId": T, "inputTokens": 2, "outputTokens": 4},
        {"type": "turn_complete", "turnId": T, "finalText": "Done.", "stopReason": "end_turn",
         "usage": {"inputTokens": 2, "outputTokens": 4}},
        {"type": "session_state", "state": "ready", "previous": "running"},
    ]  # fmt: skip
    run = project_all(projection, rest)
    assert projection.pending_end is not None and not projection.finished
    history = {
        "messages": [
            {"id": "m1", "role": "user", "text": "go"},
            {"id": "m2", "role": "assistant", "text": "Done.",
             "toolCalls": [{"toolCallId": "c1", "toolName": "bash", "args": {}, "output": "ok"}]},
        ]
    }  # fmt: skip
    for event in projection.finish(history):
        run.events.append(EVENT.validate_json(event.model_dump_json(by_alias=True)))
    verify_run(run)
    assert "STEP_FINISHED" not in run.types()
    assert run.of(EventType.STATE_DELTA)[-1].delta[0].value == {"input": 5, "output": 9}
    snapshot = run.of(EventType.MESSAGES_SNAPSHOT)[0]
    assert [m.role for m in snapshot.messages] == ["user", "assistant", "tool"]
    assert snapshot.messages[1].tool_calls[0].function.name == "bash"
    assert run.last.outcome is None
    assert (run.last.usage[0].input_tokens, run.last.usage[0].total_tokens) == (2, 6)


def test_cancel_error_permission_and_foreign_turns() -> None:
    cancelled = RunProjection("t", "r")
    cancelled.turn_id = T
    cancelled.project({"type": "text_delta", "turnId": T, "text": "par"})
    cancelled.project({"type": "turn_complete", "turnId": T, "stopReason": "cancelled"})
    assert cancelled.finish(None)[-1].outcome.type == "cancelled"

    failed = RunProjection("t", "r")
    failed.turn_id = T
    events = failed.project({"type": "text_delta", "turnId": T, "text": "x"})
    events += failed.project({"type": "turn_error", "turnId": T, "code": "AGENT_ERROR",
                              "message": "boom"})  # fmt: skip
    assert [e.type.value for e in events][-2:] == ["TEXT_MESSAGE_END", "RUN_ERROR"]
    assert (events[-1].code, events[-1].message) == ("AGENT_ERROR", "boom")

    asked = RunProjection("t", "r")
    asked.turn_id = T
    (end,) = asked.project({"type": "permission_requested", "turnId": T, "requestId": "req_2",
                            "toolName": "bash", "description": "Run rm"})  # fmt: skip
    interrupt = end.outcome.interrupts[0]
    assert (interrupt.reason, interrupt.message) == ("permission", "Run rm")
    assert interrupt.response_schema["required"] == ["approved"]

    other = RunProjection("t", "r")
    other.turn_id = T
    assert other.project({"type": "text_delta", "turnId": "trn_other", "text": "x"}) == []


def test_a_tool_call_seen_only_whole_is_restated() -> None:
    projection = RunProjection("t", "r")
    projection.turn_id = T
    events = projection.project(
        {"type": "tool_call", "turnId": T, "toolCallId": "c9", "toolName": "x", "args": {"k": 2}}
    )
    assert [e.type.value for e in events] == ["TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_END"]
    assert events[1].delta == '{"k": 2}'


def test_messages_snapshot_of_an_empty_transcript() -> None:
    assert messages_snapshot({"messages": []}).messages == []
