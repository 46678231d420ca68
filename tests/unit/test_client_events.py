"""The client's event decoder: every server frame of the protocol types, nothing crashes it."""

from __future__ import annotations

import contextlib
import json
from typing import Any, get_args

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from diminuendo import mapping
from diminuendo.client import events as ev
from diminuendo.client.errors import ProtocolError

S = {"sessionId": "ses_1", "seq": 7, "ts": 1764171234567}
T = {**S, "turnId": "trn_1"}
META = {
    "id": "ses_1",
    "tenantId": "acme",
    "ownerId": "auth0|abc",
    "agentType": "echo",
    "name": "Fix login",
    "projectId": None,
    "status": "inactive",
    "archived": False,
    "createdAt": 1,
    "updatedAt": 2,
    "lastActivityAt": 3,
    "epoch": "e1f3",
    "lastSeq": 0,
    "tokenUsage": {"input": 1, "output": 2},
}
QUESTION = {"type": "question_requested", **T, "requestId": "req_1"} | {
    "questions": [{"id": "q1", "text": "Keep?", "options": ["keep", "discard"]}]
}

# One frame per server type, with every field the protocol defines for it.
SAMPLES: dict[str, tuple[type, dict[str, Any]]] = {
    "welcome": (
        ev.Welcome,
        {"protocolVersion": 1, "requiresAuth": True, "serverVersion": "0.3.0"},
    ),
    "connected": (
        ev.Connected,
        {"clientId": "c-1", "heartbeatIntervalMs": 30000, "ts": 1764171234567},
    ),
    "authenticated": (
        ev.Authenticated,
        {
            "identity": {
                "userId": "auth0|abc",
                "email": "a@b.c",
                "tenantId": "acme",
                "role": "developer",
            }
        },
    ),
    "auth_expiring": (ev.AuthExpiring, {"expiresAt": 1764171294000}),
    "heartbeat": (ev.Heartbeat, {"ts": 5}),
    "pong": (ev.Pong, {"id": "r1", "ts": 4, "serverTs": 5}),
    "ack": (ev.Ack, {"id": "r1", "for": "steer"}),
    "error": (
        ev.ErrorEvent,
        {
            "id": "r1",
            "code": "RATE_LIMITED",
            "message": "Too many messages",
            "sessionId": "ses_1",
            "retryAfterMs": 250,
            "details": "x",
        },
    ),
    "session_created": (ev.SessionCreated, {"id": "r1", "session": META}),
    "session_updated": (ev.SessionUpdated, {"session": META}),
    "session_archived": (ev.SessionArchived, {"sessionId": "ses_1"}),
    "session_unarchived": (ev.SessionUnarchived, {"sessionId": "ses_1"}),
    "session_deleted": (ev.SessionDeleted, {"sessionId": "ses_1"}),
    "session_left": (ev.SessionLeft, {"id": "r1", "sessionId": "ses_1"}),
    "session_state": (
        ev.SessionState,
        {**S, "state": "waiting", "previous": "running", "reason": "question"},
    ),
    "state_snapshot": (
        ev.StateSnapshot,
        {
            "id": "r1",
            "sessionId": "ses_1",
            "session": META,
            "epoch": "e1f3",
            "lastSeq": 9,
            "gap": False,
            "currentTurn": {"turnId": "trn_1", "text": "so far", "startedAt": 1},
            "pending": [{k: v for k, v in QUESTION.items() if k not in S}],
        },
    ),
    "turn_started": (ev.TurnStarted, {**T, "clientTurnId": "mine"}),
    "text_delta": (ev.TextDelta, {**T, "text": "Hello"}),
    "turn_complete": (
        ev.TurnComplete,
        {
            **T,
            "finalText": "Hello",
            "stopReason": "end_turn",
            "usage": {"inputTokens": 3, "outputTokens": 4, "cost": 0.001},
        },
    ),
    "turn_error": (ev.TurnError, {**T, "code": "UPSTREAM_ERROR", "message": "boom"}),
    "tool_call_start": (ev.ToolCallStart, {**T, "toolCallId": "call_1", "toolName": "bash"}),
    "tool_call_delta": (ev.ToolCallDelta, {**T, "toolCallId": "call_1", "argsDelta": '{"c'}),
    "tool_call": (
        ev.ToolCall,
        {**T, "toolCallId": "call_1", "toolName": "bash", "args": {"command": "ls"}},
    ),
    "tool_result": (
        ev.ToolResult,
        {**T, "toolCallId": "call_1", "output": "a\nb", "isError": False},
    ),
    "tool_error": (ev.ToolError, {**T, "toolCallId": "call_1", "message": "denied"}),
    "question_requested": (ev.QuestionRequested, QUESTION),
    "permission_requested": (
        ev.PermissionRequested,
        {
            **T,
            "requestId": "req_2",
            "toolName": "bash",
            "description": "run rm",
            "options": ["allow", "deny"],
        },
    ),
    "approval_resolved": (
        ev.ApprovalResolved,
        {
            **T,
            "requestId": "req_1",
            "approved": True,
            "answers": {"q1": "keep"},
            "dismissed": False,
        },
    ),
    "thinking.start": (ev.ThinkingStart, T),
    "thinking.progress": (ev.ThinkingProgress, {**T, "text": "Reading"}),
    "thinking.complete": (ev.ThinkingComplete, T),
    "terminal.stream": (ev.TerminalStream, {**T, "data": "$ ls\n", "terminalId": "term_1"}),
    "terminal.complete": (ev.TerminalComplete, {**T, "exitCode": 0, "terminalId": "term_1"}),
    "sandbox.provisioning": (ev.SandboxProvisioning, T),
    "sandbox.init": (ev.SandboxInit, T),
    "sandbox.removed": (ev.SandboxRemoved, T),
    "plan.created": (ev.PlanCreated, {**T, "steps": [{"id": "s1", "title": "Look"}]}),
    "plan.step_started": (ev.PlanStepStarted, {**T, "stepId": "s1"}),
    "plan.step_completed": (ev.PlanStepCompleted, {**T, "stepId": "s1"}),
    "plan.revised": (ev.PlanRevised, {**T, "steps": [{"id": "s2", "title": "Again"}]}),
    "file_changed": (ev.FileChanged, {**T, "path": "demo/notes.md", "iteration": 2}),
    "usage_update": (
        ev.UsageUpdate,
        {**T, "inputTokens": 3, "outputTokens": 4, "cost": 0.000111},
    ),
    "session_list": (ev.SessionList, {"id": "r1", "sessions": [META]}),
    "history": (
        ev.History,
        {
            "id": "r1",
            "sessionId": "ses_1",
            "messages": [
                {"id": "m1", "role": "user", "text": "hi", "turnId": "trn_1", "ts": 1},
                {
                    "id": "m2",
                    "role": "assistant",
                    "text": "hello",
                    "turnId": "trn_1",
                    "ts": 2,
                    "toolCalls": [
                        {"toolCallId": "c", "toolName": "bash", "args": {}, "output": "ok"}
                    ],
                },
            ],
            "hasMore": False,
        },
    ),
    "events": (
        ev.Events,
        {
            "id": "r1",
            "sessionId": "ses_1",
            "epoch": "e1f3",
            "events": [{"type": "text_delta", **T, "text": "Hello"}],
            "lastSeq": 7,
            "gap": False,
        },
    ),
    "file_list": (
        ev.FileList,
        {
            "sessionId": "ses_1",
            "path": "",
            "entries": [{"path": "demo", "type": "dir", "size": 0, "modifiedAt": 1}],
        },
    ),
    "file_content": (
        ev.FileContent,
        {
            "sessionId": "ses_1",
            "path": "a.txt",
            "content": "aGk=",
            "encoding": "base64",
            "size": 2,
            "iteration": 1,
        },
    ),
    "file_history": (
        ev.FileHistory,
        {
            "sessionId": "ses_1",
            "path": "a.txt",
            "iterations": [{"iteration": 1, "timestamp": 5, "size": 2, "hash": "sha256:ab"}],
        },
    ),
    "member_list": (ev.MemberList, {"members": [{"userId": "u1", "role": "owner"}]}),
}


def _frame(kind: str) -> dict[str, Any]:
    return {"type": kind, **SAMPLES[kind][1]}


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def test_every_event_type_has_a_sample() -> None:
    union = {
        kind.__struct_config__.tag for kind in get_args(ev.Event) if kind is not ev.UnknownEvent
    }
    assert union == set(SAMPLES)


def test_every_event_the_gateway_maps_is_typed() -> None:
    """The gateway's runtime → client table must not emit a type this client cannot type."""
    assert {row.type for row in mapping._TABLE} <= set(SAMPLES)


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_decodes_every_event_type(kind: str) -> None:
    expected, _ = SAMPLES[kind]
    frame = _frame(kind)
    event = ev.decode_event(json.dumps(frame))
    assert type(event) is expected
    assert event.type == kind
    # camelCase on the wire, snake_case here: the struct encodes back to the same frame.
    assert _without_nulls(msgspec.to_builtins(event)) == _without_nulls(frame)


def test_fields_are_snake_case_and_nested_objects_are_typed() -> None:
    snapshot = ev.decode_event(json.dumps(_frame("state_snapshot")))
    assert isinstance(snapshot, ev.StateSnapshot)
    assert snapshot.last_seq == 9 and snapshot.session.token_usage.output == 2
    assert snapshot.current_turn == ev.CurrentTurn(turn_id="trn_1", text="so far", started_at=1)
    (pending,) = snapshot.pending
    assert isinstance(pending, ev.QuestionRequested) and pending.questions[0].options == [
        "keep",
        "discard",
    ]
    ack = ev.decode_event('{"type":"ack","id":"r1","for":"steer"}')
    assert isinstance(ack, ev.Ack) and ack.for_ == "steer"


def test_optional_fields_default() -> None:
    delta = ev.decode_event('{"type":"turn_started","sessionId":"s","turnId":"t","id":"r"}')
    assert isinstance(delta, ev.TurnStarted)
    assert delta.seq is None and delta.ts is None and delta.client_turn_id is None


def test_unknown_type_is_kept_not_fatal() -> None:
    raw = {"type": "sparkle.new", "sessionId": "ses_1", "seq": 3, "id": "r9", "x": [1]}
    event = ev.decode_event(json.dumps(raw))
    assert isinstance(event, ev.UnknownEvent)
    assert event.type == "sparkle.new" and event.data == raw
    assert (event.session_id, event.seq, event.id) == ("ses_1", 3, "r9")


def test_known_type_with_fields_of_another_schema_is_unknown() -> None:
    """A server that changed a field's type must not cost a subscriber its `seq`."""
    event = ev.decode_event('{"type":"text_delta","sessionId":"s","seq":4,"text":5}')
    assert isinstance(event, ev.UnknownEvent)
    assert event.type == "text_delta" and event.seq == 4


def test_unknown_fields_are_ignored() -> None:
    event = ev.decode_event('{"type":"heartbeat","ts":1,"brandNew":{"a":1}}')
    assert event == ev.Heartbeat(ts=1)


def test_an_unknown_event_inside_an_events_page_spoils_nothing() -> None:
    frame = _frame("events")
    frame["events"] = [
        {"type": "text_delta", **T, "text": "a"},
        {"type": "sparkle.new", **S, "seq": 8},
        {"type": "text_delta", **T, "seq": 9, "text": "b"},
    ]
    page = ev.decode_event(json.dumps(frame))
    assert isinstance(page, ev.Events)
    assert [type(e) for e in page.events] == [ev.TextDelta, ev.UnknownEvent, ev.TextDelta]


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b"not json", b'{"type": "x"', "\ud800", b"\xff\xfe"],
)
def test_malformed_json_is_a_protocol_error(data: Any) -> None:
    with pytest.raises(ProtocolError, match="not valid JSON"):
        ev.decode_event(data)


@pytest.mark.parametrize("data", ["[]", "3", "null", '"welcome"', "{}", '{"type": 5}'])
def test_json_that_is_no_frame_is_a_protocol_error(data: str) -> None:
    with pytest.raises(ProtocolError, match="string `type`"):
        ev.decode_event(data)


@given(st.one_of(st.binary(max_size=200), st.text(max_size=200)))
def test_arbitrary_input_never_raises_anything_but_protocol_error(data: Any) -> None:
    with contextlib.suppress(ProtocolError):
        ev.decode_event(data)


@given(
    st.dictionaries(
        st.text(max_size=12),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=8),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner),
            max_leaves=6,
        ),
        max_size=5,
    ),
    st.sampled_from(sorted(SAMPLES)),
)
def test_any_object_with_a_type_decodes(fields: dict[str, Any], kind: str) -> None:
    event = ev.decode_event(json.dumps({**fields, "type": kind}))
    assert event.type == kind
