"""The transcript `diminuendo client run/chat` prints (`client/cli.py` `Printer`), event by event:
exactly what a user reads in a terminal, pinned so the printer's table can change shape without
the transcript changing. The end-to-end run is `tests/integration/test_client.py::test_cli_*`."""

from __future__ import annotations

import io
import json

import pytest

from diminuendo.client.cli import MAX_OUTPUT_CHARS, Printer
from diminuendo.client.events import (
    Event,
    Gap,
    StateSnapshot,
    UnknownEvent,
    decode_event,
)

FUTURE_EVENT = "some.future_event"  # a type this client does not know yet

SNAPSHOT = decode_event(
    '{"type":"state_snapshot","sessionId":"s1","epoch":"e2","lastSeq":9,"gap":true,"session":'
    '{"id":"s1","tenantId":"t","ownerId":"u","agentType":"demo","status":"ready","createdAt":1,'
    '"updatedAt":1,"lastActivityAt":1}}'
)
assert isinstance(SNAPSHOT, StateSnapshot)
GAP = Gap(
    session_id="s1",
    epoch="e2",
    last_seq=9,
    previous_epoch="e1",
    previous_seq=4,
    snapshot=SNAPSHOT,
)


def event(kind: str, **fields: object) -> Event:
    """A frame as the server sends it (camelCase JSON), decoded as the client decodes it; a
    known type must decode as its struct (a missing field would make it an `UnknownEvent`)."""
    decoded = decode_event(json.dumps({"type": kind, "sessionId": "s1", "seq": 1, **fields}))
    assert isinstance(decoded, UnknownEvent) == (kind == FUTURE_EVENT), decoded
    return decoded


CASES = [
    ("text_delta", {"text": "Hello"}, "Hello"),
    ("thinking.start", {}, "[thinking] "),
    ("thinking.progress", {"text": "hmm"}, "hmm"),
    ("thinking.complete", {}, ""),
    (
        "plan.created",
        {"steps": [{"id": "a", "title": "Look"}, {"id": "b"}, "plain"]},
        "[plan] 1. Look  2. b  3. plain\n",
    ),
    ("plan.revised", {"steps": ["x"]}, "[plan revised] 1. x\n"),
    ("plan.step_started", {"stepId": "a"}, "[step] a started\n"),
    ("plan.step_completed", {"stepId": "a"}, "[step] a done\n"),
    (
        "tool_call",
        {"toolCallId": "c", "toolName": "bash", "args": {"command": "ls é"}},
        '[tool] bash {"command": "ls é"}\n',
    ),
    ("tool_result", {"toolCallId": "c", "output": "ok"}, "[tool result] ok\n"),
    (
        "tool_result",
        {"toolCallId": "c", "output": {"code": 2}, "isError": True},
        '[tool error] {"code": 2}\n',
    ),
    ("tool_error", {"toolCallId": "c", "message": "boom"}, "[tool error] boom\n"),
    ("terminal.stream", {"data": "$ ls\n"}, "$ ls\n"),
    ("terminal.complete", {"exitCode": 0}, "[terminal] exit 0\n"),
    ("file_changed", {"path": "a.md", "iteration": 2}, "[file] a.md changed (iteration 2)\n"),
    ("file_changed", {"path": "a.md"}, "[file] a.md changed\n"),
    ("usage_update", {"inputTokens": 3, "outputTokens": 4}, "[usage] 3 in, 4 out\n"),
    (
        "usage_update",
        {"inputTokens": 3, "outputTokens": 4, "cost": 0.5},
        "[usage] 3 in, 4 out, cost 0.5\n",
    ),
    # A question without options (PROTOCOL allows it). Before the fix: TypeError ('NoneType'
    # object is not iterable) out of `diminuendo client run`, the turn left unanswered.
    (
        "question_requested",
        {
            "requestId": "r",
            "questions": [
                {"id": "q1", "text": "Keep?", "options": ["keep", "discard"]},
                {"id": "q2", "text": "Why?"},
            ],
        },
        "[question] Keep? [keep / discard]\n[question] Why?\n",
    ),
    (
        "permission_requested",
        {"requestId": "r", "toolName": "bash", "description": "run ls"},
        "[permission] bash: run ls\n",
    ),
    ("approval_resolved", {"requestId": "r", "approved": True}, "[resolved] approved\n"),
    ("approval_resolved", {"requestId": "r", "approved": False}, "[resolved] denied\n"),
    ("approval_resolved", {"requestId": "r", "dismissed": True}, "[resolved] dismissed\n"),
    (
        "approval_resolved",
        {"requestId": "r", "answers": {"q1": "keep"}},
        '[resolved] {"q1": "keep"}\n',
    ),
    ("turn_complete", {"finalText": "Hi", "stopReason": "end_turn"}, "[done] end_turn\n"),
    ("turn_error", {"code": "X", "message": "broke"}, "[turn error] X: broke\n"),
    # Bookkeeping the transcript leaves out.
    ("turn_started", {"turnId": "t1"}, ""),
    ("sandbox.init", {}, ""),
    ("tool_call_delta", {"toolCallId": "c", "argsDelta": "{"}, ""),
    ("session_state", {"state": "ready", "previous": "running"}, ""),
    (FUTURE_EVENT, {"anything": 1}, ""),
]


@pytest.mark.parametrize(("kind", "fields", "printed"), CASES)
def test_each_event_prints_as_the_transcript_shows_it(
    kind: str, fields: dict[str, object], printed: str
) -> None:
    out = io.StringIO()
    Printer(out, color=False).event(event(kind, **fields))
    assert out.getvalue() == printed


def test_a_tagged_line_first_ends_the_text_it_follows() -> None:
    out = io.StringIO()
    printer = Printer(out, color=False)
    for item in (
        event("text_delta", text="Hel"),
        event("text_delta", text="lo"),
        event("tool_error", toolCallId="c", message="boom"),
        event("thinking.start"),
        event("thinking.progress", text="hmm"),
        event("thinking.complete"),
        event("terminal.stream", data="partial"),
        event("terminal.complete", exitCode=1),
    ):
        printer.event(item)
    assert out.getvalue() == (
        "Hello\n[tool error] boom\n[thinking] hmm\npartial\n[terminal] exit 1\n"
    )


def test_thinking_and_gaps_are_dimmed_on_a_terminal() -> None:
    out = io.StringIO()
    printer = Printer(out, color=True)
    printer.event(event("thinking.start"))
    printer.event(event("thinking.progress", text="hmm"))
    printer.event(GAP)
    assert out.getvalue() == (
        "\x1b[2m[thinking] \x1b[0m\x1b[2mhmm\x1b[0m\n"
        "\x1b[2m[gap] missed events; `history` has the full transcript\x1b[0m\n"
    )


def test_long_tool_output_is_cut() -> None:
    out = io.StringIO()
    Printer(out, color=False).event(
        event("tool_result", toolCallId="c", output="x" * (MAX_OUTPUT_CHARS + 10))
    )
    assert out.getvalue() == f"[tool result] {'x' * MAX_OUTPUT_CHARS}…\n"
