"""The pure projections of the ACP and A2A edges (diminuendo/edges/acp_mapping.py,
acp_questions.py, a2a_mapping.py), without a network: gateway events in, protocol payloads out."""

from __future__ import annotations

import uuid

import msgspec
import pytest
from a2a.types.a2a_pb2 import Message, Part, Role, TaskState
from acp.helpers import embedded_text_resource, image_block, resource_block, text_block
from google.protobuf.json_format import MessageToDict
from google.protobuf.struct_pb2 import Value

from diminuendo.client import events as ev
from diminuendo.edges import a2a_mapping as a2a
from diminuendo.edges import acp_mapping as acp
from diminuendo.edges import acp_questions
from diminuendo.protocol import messages as m


def events(*frames: dict) -> list[object]:
    return [ev.decode_event(msgspec.json.encode(f)) for f in frames]


# ----- ACP ---------------------------------------------------------------------------------


def test_acp_text_thinking_and_a_tool_call_with_terminal_output_and_a_file_change():
    projection = acp.TurnProjection()
    out = []
    for event in events(
        {"type": "thinking.progress", "text": "hmm", "sessionId": "s", "seq": 1},
        {"type": "tool_call_start", "toolCallId": "c1", "toolName": "bash"},
        {"type": "tool_call", "toolCallId": "c1", "toolName": "bash", "args": {"command": "ls"}},
        {"type": "terminal.stream", "data": "a\n"},
        {"type": "terminal.stream", "data": "b\n"},
        {"type": "terminal.complete", "exitCode": 0},
        {"type": "file_changed", "path": "x.md", "iteration": 2},
        {"type": "tool_result", "toolCallId": "c1", "output": "a\nb", "isError": False},
        {"type": "text_delta", "text": "done"},
        {"type": "usage_update", "inputTokens": 1, "outputTokens": 2},
    ):
        out += projection.project(event)
    kinds = [getattr(u, "session_update", type(u).__name__) for u in out]
    assert kinds == [
        "agent_thought_chunk",
        "tool_call",
        "tool_call_update",
        "tool_call_update",
        "tool_call_update",
        "tool_call_update",
        "FileDiff",
        "tool_call_update",
        "agent_message_chunk",
    ]
    start, call = out[1], out[2]
    assert (start.kind, start.status, call.title, call.raw_input) == (
        "execute",
        "pending",
        "bash ls",
        {"command": "ls"},
    )
    assert out[5].content[0].content.text == "```\na\nb\n[exit 0]\n```"  # the whole output
    assert out[6] == acp.FileDiff("c1", "x.md", 2)
    done = out[7]
    assert done.status == "completed" and done.raw_output == "a\nb"
    assert done.content is None  # the terminal output stays the tool call's content


def test_acp_plan_is_sent_whole_with_each_step():
    projection = acp.TurnProjection()
    steps = [{"id": "s1", "title": "One"}, {"id": "s2", "title": "Two"}]
    (created,) = projection.project(ev.PlanCreated(steps=steps))
    (started,) = projection.project(ev.PlanStepStarted(step_id="s2"))
    (done,) = projection.project(ev.PlanStepCompleted(step_id="s2"))
    assert [e.content for e in created.entries] == ["One", "Two"]
    assert [e.status for e in started.entries] == ["pending", "in_progress"]
    assert [e.status for e in done.entries] == ["pending", "completed"]
    assert projection.project(ev.PlanStepStarted(step_id="nope")) == []


def test_acp_questions_and_permissions_become_permission_requests():
    question = ev.QuestionRequested(
        request_id="r1",
        questions=[ev.Question(id="q1", text="Keep?", options=["keep", "discard"])],
    )
    ask = acp_questions.ask_for(question)
    assert ask.tool_call.title == "Keep?" and not ask.permission
    (choice,) = ask.choices
    assert [(o.option_id, o.name) for o in choice.options] == [("0", "keep"), ("1", "discard")]
    answer = acp_questions.answer_for(ask, ["1"])
    assert (answer.answers, answer.dismissed) == ({"q1": "discard"}, False)
    assert ask.asked_about.tool_call_id == "r1"

    free_text = acp_questions.ask_for(
        ev.QuestionRequested(request_id="r2", questions=[ev.Question(id="q", text="Name?")])
    )
    assert [o.option_id for o in free_text.choices[0].options] == ["skip"]
    assert acp_questions.answer_for(free_text, ["skip"]).dismissed is True

    permission = acp_questions.ask_for(
        ev.PermissionRequested(request_id="r3", tool_name="bash", description="rm -rf /tmp/x")
    )
    assert permission.permission and permission.tool_call.kind == "execute"
    refused = acp_questions.answer_for(permission, ["reject"])
    assert (refused.approved, refused.dismissed, refused.update.status) == (False, False, "failed")
    assert acp_questions.answer_for(permission, ["allow"]).approved is True


def test_acp_history_replay_and_prompt_blocks():
    history = [
        ev.HistoryMessage(id="m1", role="user", text="hi"),
        ev.HistoryMessage(
            id="m2",
            role="assistant",
            text="hello",
            tool_calls=[
                ev.HistoryToolCall(
                    tool_call_id="c", tool_name="read_file", args={"path": "a"}, output="x"
                )
            ],
        ),
    ]
    updates = acp.history_updates(history)
    assert [u.session_update for u in updates] == [
        "user_message_chunk",
        "tool_call",
        "agent_message_chunk",
    ]
    assert (updates[1].kind, updates[1].status, updates[1].title) == (
        "read",
        "completed",
        "read_file a",
    )

    text = acp.prompt_text(
        [text_block("look at"), resource_block(embedded_text_resource("file:///a.py", "x = 1"))]
    )
    assert text == "look at\n\n<file:///a.py>\nx = 1\n</file:///a.py>"
    with pytest.raises(acp.UnsupportedContent):
        acp.prompt_text([image_block("AAAA", "image/png")])
    assert acp.stop_reason("cancelled") == "cancelled" and acp.stop_reason("odd") == "end_turn"


# ----- A2A ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "operation"),
    [
        (b'{"jsonrpc":"2.0","id":1,"method":"SendStreamingMessage"}', m.RunTurn),
        (b'{"method":"message/send"}', m.RunTurn),
        (b'{"method":"tasks/cancel"}', m.StopTurn),
        (b'{"method":"GetTask"}', m.JoinSession),
        (b'{"method":"CreateTaskPushNotificationConfig"}', m.ListSessions),
        (b'{"method":7}', m.ListSessions),
        (b"{not json", m.ListSessions),
        (b"[]", m.ListSessions),
    ],
)
def test_a2a_permission_of_each_method(body, operation):
    assert a2a.rpc_call(body).operation is operation


@pytest.mark.parametrize(
    ("body", "streams"),
    [
        (b'{"jsonrpc":"2.0","id":1,"method":"SendStreamingMessage"}', True),
        (b'{"method":"message/stream"}', True),
        (b'{"method":"tasks/resubscribe"}', True),
        (b'{"method":"message/send"}', False),
        (b'{"method":["message/stream"]}', False),
        (b"{not json", False),
    ],
)
def test_a2a_streaming_methods_are_classified_as_streams(body, streams):
    assert a2a.rpc_call(body).streams is streams


def test_a2a_turn_projection():
    projection = a2a.TaskProjection("t1", "ses_1", "ep")
    out = []
    frames = [
        {"type": "turn_started", "turnId": "trn_1"},
        {"type": "text_delta", "turnId": "trn_1", "text": "a"},
        {"type": "text_delta", "turnId": "trn_other", "text": "not ours"},
        {"type": "tool_call", "turnId": "trn_1", "toolCallId": "c", "toolName": "bash", "args": {}},
        {"type": "text_delta", "turnId": "trn_1", "text": "b"},
        {"type": "file_changed", "turnId": "trn_1", "path": "x.md", "iteration": 1},
        {"type": "session_state", "state": "ready"},
        {"type": "turn_complete", "turnId": "trn_1", "finalText": "ab", "stopReason": "end_turn"},
    ]
    for seq, frame in enumerate(frames, 1):
        out += projection.project(frame, seq)
    working, first, progress, second, file, final, completed, done = out
    assert working.status.state == TaskState.TASK_STATE_WORKING
    assert MessageToDict(working.metadata) == {"seq": 1, "turnId": "trn_1"}
    assert (first.append, first.last_chunk, second.append) == (False, False, True)
    assert progress.status.message.parts[0].text == "Running bash"
    assert MessageToDict(progress.status.message.parts[1].data)["toolCallId"] == "c"
    assert file == a2a.FileArtifact("x.md", 1, 6)
    assert (final.append, final.last_chunk, final.artifact.parts[0].text) == (False, True, "ab")
    assert completed.status.state == TaskState.TASK_STATE_COMPLETED
    assert isinstance(done, a2a.Done)

    cancelled = a2a.TaskProjection("t", "s", "e").project(
        {"type": "turn_complete", "finalText": "", "stopReason": "cancelled"}, 1
    )
    assert cancelled[1].status.state == TaskState.TASK_STATE_CANCELED
    failed = a2a.TaskProjection("t", "s", "e").project(
        {"type": "turn_error", "code": "AGENT_ERROR", "message": "boom"}, 3
    )
    assert failed[0].status.state == TaskState.TASK_STATE_FAILED
    assert failed[0].status.message.parts[0].text == "AGENT_ERROR: boom"


def _message(text: str | None = None, data: dict | None = None) -> Message:
    parts = []
    if text is not None:
        parts.append(Part(text=text))
    if data is not None:
        value = Value()
        value.struct_value.update(data)
        parts.append(Part(data=value))
    return Message(role=Role.ROLE_USER, message_id=str(uuid.uuid4()), parts=parts)


def test_a2a_questions_pause_and_answers_are_read_from_text_or_data():
    question = {
        "type": "question_requested",
        "requestId": "r1",
        "questions": [{"id": "q1", "text": "Keep?", "options": ["keep", "discard"]}],
    }
    status, pause = a2a.TaskProjection("t", "s", "ep").project(question, 9)
    assert status.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    meta = MessageToDict(status.metadata)
    assert (meta["epoch"], meta["lastSeq"], meta["requestId"]) == ("ep", 9, "r1")
    assert pause == a2a.Pause("r1")
    assert status.status.message.parts[0].text == "Keep? [keep / discard]"

    assert a2a.answer_from(question, _message("KEEP")) == a2a.Answer({"q1": "keep"}, None, None)
    assert a2a.answer_from(question, _message("something else")).answers == {"q1": "something else"}
    assert a2a.answer_from(question, _message("")) == "Keep? [keep / discard]"
    assert a2a.answer_from(question, _message(data={"dismissed": True})) == a2a.Answer(
        None, None, True
    )
    two = {**question, "questions": [{"id": "a", "text": "A?"}, {"id": "b", "text": "B?"}]}
    assert a2a.answer_from(two, _message("x\ny")).answers == {"a": "x", "b": "y"}
    assert "own line" in a2a.answer_from(two, _message("only one"))

    permission = {"type": "permission_requested", "requestId": "r", "toolName": "bash"}
    assert a2a.answer_from(permission, _message("Yes.")).approved is True
    assert a2a.answer_from(permission, _message("no")).approved is False
    assert a2a.answer_from(permission, _message("perhaps")).startswith("Please answer yes or no")
