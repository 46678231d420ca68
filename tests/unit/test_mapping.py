"""Podium frame → client event projection (diminuendo.mapping)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from diminuendo.mapping import Unknown, event_name, map_event


def frame(name: str, **content: Any) -> dict[str, Any]:
    return {"type": "update", "event_type": name, "content": content}


# One case per table row: (Podium name, content, expected client event).
ROWS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("created", {}, {"type": "turn_started"}),
    (
        "stream_start",
        {"turn_id": "t1", "client_turn_id": "c1"},
        {"type": "turn_started", "turnId": "t1", "clientTurnId": "c1"},
    ),
    ("update", {"text": "hel"}, {"type": "text_delta", "text": "hel"}),
    (
        "stream_update",
        {"text": "lo", "turn_id": "t1"},
        {"type": "text_delta", "turnId": "t1", "text": "lo"},
    ),
    (
        "complete",
        {"final_text": "hello", "stop_reason": "max_tokens"},
        {"type": "turn_complete", "finalText": "hello", "stopReason": "max_tokens"},
    ),
    ("stream_end", {}, {"type": "turn_complete", "finalText": "", "stopReason": "end_turn"}),
    (
        "stream_complete",
        {"final_text": "x", "usage": {"input_tokens": 3, "output_tokens": 5}},
        {
            "type": "turn_complete",
            "finalText": "x",
            "stopReason": "end_turn",
            "usage": {"inputTokens": 3, "outputTokens": 5},
        },
    ),
    # A runtime's own code is not one a client can switch on; a §12 code is kept.
    (
        "error",
        {"code": "AGENT_CRASHED", "message": "boom"},
        {"type": "turn_error", "code": "UPSTREAM_ERROR", "message": "boom"},
    ),
    (
        "error",
        {"code": "SESSION_BUSY", "message": "  "},
        {"type": "turn_error", "code": "SESSION_BUSY", "message": ""},
    ),
    ("error", {}, {"type": "turn_error", "code": "UPSTREAM_ERROR", "message": ""}),
    # Runtime text is shown to users: keys, URL credentials and paths are taken out (§12).
    (
        "error",
        {"message": "api_key=abc123 https://u:pw@h/x at /srv/app/agent.py"},
        {
            "type": "turn_error",
            "code": "UPSTREAM_ERROR",
            "message": "api_key=[REDACTED] https://[REDACTED]@h/x at [path]",
        },
    ),
    (
        "tool.call_start",
        {"tool_call_id": "tc1", "tool_name": "bash"},
        {"type": "tool_call_start", "toolCallId": "tc1", "toolName": "bash"},
    ),
    ("tool.call_start", {}, {"type": "tool_call_start", "toolCallId": "", "toolName": ""}),
    (
        "tool.call_delta",
        {"tool_call_id": "tc1", "args_delta": '{"cmd":'},
        {"type": "tool_call_delta", "toolCallId": "tc1", "argsDelta": '{"cmd":'},
    ),
    (
        "tool.call",
        {"tool_call_id": "tc1", "tool_name": "bash", "args": {"cmd": "ls", "env": {"A": [1]}}},
        {
            "type": "tool_call",
            "toolCallId": "tc1",
            "toolName": "bash",
            "args": {"cmd": "ls", "env": {"A": [1]}},
        },
    ),
    ("tool.call", {}, {"type": "tool_call", "toolCallId": "", "toolName": "", "args": {}}),
    (
        "tool.result",
        {"tool_call_id": "tc1", "output": {"stdout": "a\n"}, "is_error": True},
        {"type": "tool_result", "toolCallId": "tc1", "output": {"stdout": "a\n"}, "isError": True},
    ),
    (
        "tool.result",
        {"tool_call_id": "tc1"},
        {"type": "tool_result", "toolCallId": "tc1", "output": "", "isError": False},
    ),
    (
        "tool.error",
        {"tool_call_id": "tc1", "message": "denied"},
        {"type": "tool_error", "toolCallId": "tc1", "message": "denied"},
    ),
    (
        "tool.question_requested",
        {"request_id": "r1", "questions": [{"id": "q1", "text": "Which?", "options": ["a", "b"]}]},
        {
            "type": "question_requested",
            "requestId": "r1",
            "questions": [{"id": "q1", "text": "Which?", "options": ["a", "b"]}],
        },
    ),
    (
        "tool.permission_requested",
        {"request_id": "r2", "tool_name": "bash", "description": "run ls", "options": ["allow"]},
        {
            "type": "permission_requested",
            "requestId": "r2",
            "toolName": "bash",
            "description": "run ls",
            "options": ["allow"],
        },
    ),
    (
        "tool.permission_requested",
        {"request_id": "r2"},
        {"type": "permission_requested", "requestId": "r2", "toolName": "", "description": ""},
    ),
    (
        "tool.approval_resolved",
        {"request_id": "r1", "approved": True, "answers": {"q1": "a"}, "dismissed": False},
        {
            "type": "approval_resolved",
            "requestId": "r1",
            "approved": True,
            "answers": {"q1": "a"},
            "dismissed": False,
        },
    ),
    (
        "tool.approval_resolved",
        {"request_id": "r1"},
        {"type": "approval_resolved", "requestId": "r1"},
    ),
    ("thinking.start", {"turn_id": "t1"}, {"type": "thinking.start", "turnId": "t1"}),
    ("thinking.progress", {"text": "hmm"}, {"type": "thinking.progress", "text": "hmm"}),
    ("thinking_update", {"text": "hmm"}, {"type": "thinking.progress", "text": "hmm"}),
    ("thinking.complete", {}, {"type": "thinking.complete"}),
    ("terminal.stream", {"data": "$ ls\n"}, {"type": "terminal.stream", "data": "$ ls\n"}),
    (
        "terminal.stream",
        {"data": "x", "terminal_id": "term1"},
        {"type": "terminal.stream", "data": "x", "terminalId": "term1"},
    ),
    (
        "terminal.complete",
        {"exit_code": 2, "terminal_id": "term1"},
        {"type": "terminal.complete", "exitCode": 2, "terminalId": "term1"},
    ),
    ("terminal.complete", {}, {"type": "terminal.complete", "exitCode": -1}),
    ("sandbox.provisioning", {}, {"type": "sandbox.provisioning"}),
    ("sandbox.init", {}, {"type": "sandbox.init"}),
    ("sandbox.removed", {}, {"type": "sandbox.removed"}),
    (
        "plan.created",
        {"steps": [{"id": "s1", "title": "Read"}]},
        {"type": "plan.created", "steps": [{"id": "s1", "title": "Read"}]},
    ),
    ("plan.step_started", {"step_id": "s1"}, {"type": "plan.step_started", "stepId": "s1"}),
    ("plan.step_completed", {"step_id": "s1"}, {"type": "plan.step_completed", "stepId": "s1"}),
    ("plan.revised", {}, {"type": "plan.revised", "steps": []}),
    (
        "file.changed",
        {"path": "src/a.py", "iteration": 3},
        {"type": "file_changed", "path": "src/a.py", "iteration": 3},
    ),
    ("file.changed", {"path": "a"}, {"type": "file_changed", "path": "a"}),
    (
        "usage",
        {"input_tokens": 10, "output_tokens": 20, "cost": 0.5},
        {"type": "usage_update", "inputTokens": 10, "outputTokens": 20, "cost": 0.5},
    ),
    ("usage", {}, {"type": "usage_update", "inputTokens": 0, "outputTokens": 0}),
]


@pytest.mark.parametrize(("name", "content", "expected"), ROWS)
def test_row(name: str, content: dict[str, Any], expected: dict[str, Any]) -> None:
    event = map_event(frame(name, **content))
    assert event == expected
    assert isinstance(event, dict)
    assert next(iter(event)) == "type"


def test_every_upstream_name_has_a_row() -> None:
    names = {
        "created", "stream_start", "update", "stream_update", "complete", "stream_end",
        "stream_complete", "error", "tool.call_start", "tool.call_delta", "tool.call",
        "tool.result", "tool.error", "tool.question_requested", "tool.permission_requested",
        "tool.approval_resolved", "thinking.start", "thinking.progress", "thinking_update",
        "thinking.complete", "terminal.stream", "terminal.complete", "sandbox.provisioning",
        "sandbox.init", "sandbox.removed", "plan.created", "plan.step_started",
        "plan.step_completed", "plan.revised", "file.changed", "usage",
    }  # fmt: skip
    assert names <= {row[0] for row in ROWS}
    for name in names:
        assert not isinstance(map_event(frame(name, text="x")), Unknown)


def test_turn_id_follows_type_on_every_row() -> None:
    for name, content, _ in ROWS:
        event = map_event(frame(name, **{**content, "turn_id": "trn_1", "text": "x"}))
        assert isinstance(event, dict)
        assert list(event)[:2] == ["type", "turnId"]
        assert event["turnId"] == "trn_1"


def test_usage_cost_and_token_coercion() -> None:
    event = map_event(
        frame("complete", usage={"input_tokens": 3.0, "output_tokens": "5", "cost": "0.25"})
    )
    assert isinstance(event, dict)
    assert event["usage"] == {"inputTokens": 3, "outputTokens": 0, "cost": 0.25}
    event = map_event(frame("usage", input_tokens=True, output_tokens=1.5, cost="abc"))
    assert event == {"type": "usage_update", "inputTokens": 0, "outputTokens": 0}
    assert map_event(frame("usage", cost=float("inf"))) == {
        "type": "usage_update",
        "inputTokens": 0,
        "outputTokens": 0,
    }
    event = map_event(frame("complete", usage="lots"))
    assert isinstance(event, dict)
    assert "usage" not in event


def test_nested_values_pass_through_unchanged() -> None:
    args = {"deep": [{"x": None, "y": [1, 2.5, "z"]}]}
    event = map_event(frame("tool.call", args=args))
    assert isinstance(event, dict)
    assert event["args"] is args


def test_defaults_are_not_shared_between_events() -> None:
    a = map_event(frame("tool.call"))
    b = map_event(frame("tool.call"))
    assert isinstance(a, dict)
    assert isinstance(b, dict)
    a["args"]["mutated"] = True
    assert b["args"] == {}


# ---- name resolution


def test_name_prefers_top_level_event_type() -> None:
    f = {"type": "update", "event_type": "tool.call", "content": {"event_type": "usage"}}
    assert event_name(f) == "tool.call"


def test_name_falls_back_to_content_event_type() -> None:
    f = {"type": "update", "content": {"event_type": "thinking.start"}}
    assert event_name(f) == "thinking.start"
    assert map_event(f) == {"type": "thinking.start"}


def test_name_falls_back_to_type() -> None:
    assert event_name({"type": "stream_start", "content": {}}) == "stream_start"
    assert map_event({"type": "stream_start"}) == {"type": "turn_started"}


@pytest.mark.parametrize("bad", [None, 7, "", ["tool.call"]])
def test_name_skips_unusable_candidates(bad: Any) -> None:
    f = {"type": "usage", "event_type": bad, "content": {"event_type": bad}}
    assert event_name(f) == "usage"


@pytest.mark.parametrize("f", [{}, {"content": {}}, {"type": 3}, {"event_type": ""}])
def test_no_name_maps_to_none(f: dict[str, Any]) -> None:
    assert event_name(f) is None
    assert map_event(f) is None


def test_unknown_name() -> None:
    assert map_event(frame("memory.extracted", text="x")) == Unknown("memory.extracted")
    assert map_event({"type": "weird"}) == Unknown("weird")


# ---- drop rules and malformed frames


@pytest.mark.parametrize("name", ["thinking.progress", "thinking_update", "update"])
@pytest.mark.parametrize("content", [{}, {"text": ""}, {"text": None}, {"text": 42}])
def test_empty_text_is_dropped(name: str, content: dict[str, Any]) -> None:
    assert map_event(frame(name, **content)) is None


def test_turn_error_messages_are_cut_to_500_characters_without_traceback() -> None:
    text = "it failed " * 100 + '\nTraceback (most recent call last):\n  File "x.py"'
    message = map_event(frame("error", message=text))["message"]
    assert len(message) == 500 and message.startswith("it failed")
    assert "Traceback" not in map_event(frame("error", message="no\n" + text[-60:]))["message"]


def test_internal_fields_never_leak() -> None:
    internal = {"event_id": "ev1", "instance_id": "i1", "event_type": "x", "secret": "s"}
    for name, content, expected in ROWS:
        event = map_event(frame(name, **content, **internal))
        assert event == expected


@pytest.mark.parametrize("content", ["text", 3, ["a"], True])
def test_non_object_content_maps_to_none(content: Any) -> None:
    assert map_event({"event_type": "tool.call", "content": content}) is None


def test_null_content_counts_as_empty() -> None:
    assert map_event({"event_type": "thinking.start", "content": None}) == {
        "type": "thinking.start"
    }


def test_wrong_field_types_fall_back_to_defaults_or_are_omitted() -> None:
    event = map_event(
        frame(
            "tool.permission_requested",
            request_id=5,
            tool_name=["x"],
            description={"a": 1},
            options="allow",
            turn_id=9,
        )
    )
    assert event == {
        "type": "permission_requested",
        "requestId": "",
        "toolName": "",
        "description": "",
    }
    event = map_event(frame("tool.approval_resolved", approved="yes", answers=[1], dismissed=0))
    assert event == {"type": "approval_resolved", "requestId": ""}
    assert map_event(frame("terminal.complete", exit_code="1")) == {
        "type": "terminal.complete",
        "exitCode": -1,
    }
    assert map_event(frame("terminal.complete", exit_code=3.0)) == {
        "type": "terminal.complete",
        "exitCode": 3,
    }
    assert map_event(frame("plan.created", steps={"a": 1})) == {"type": "plan.created", "steps": []}


@pytest.mark.parametrize("f", [None, 3, "update", ["update"]])
def test_non_mapping_frame_maps_to_none(f: Any) -> None:
    assert map_event(f) is None


# A fixed alphabet keeps generation fast on a cold start (no Unicode table to build) while still
# covering the characters that matter: separators of event names and non-ASCII text.
_text = st.text(alphabet="ab_.é☃\x00", max_size=8)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_text, children, max_size=3),
    max_leaves=10,
)
_keys = st.sampled_from(
    ["type", "event_type", "content", "text", "turn_id", "usage", "args", "exit_code", "x"]
)
_names = st.sampled_from([row[0] for row in ROWS] + ["nope"]) | _text
_content = st.dictionaries(_keys | _text, _json | _names, max_size=6)


@given(
    st.dictionaries(
        _keys,
        _json | _names | _content,
        max_size=4,
    )
)
def test_random_frames_never_raise(f: dict[str, Any]) -> None:
    result = map_event(f)
    assert result is None or isinstance(result, Unknown | dict)
    if isinstance(result, dict):
        assert next(iter(result)) == "type"
        assert None not in result.values()
        msgspec.json.encode(result)  # what leaves is always encodable
