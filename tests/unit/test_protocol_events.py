"""`protocol/events.py`: every frame the gateway sends encodes, as a struct, to exactly the bytes
the gateway sent when it built the frame as a dict (key order, `null`s, absent keys, camelCase).

Each `DICTS` entry is the dict as the gateway code built it before the structs (ws.py, hub.py,
context.py, errors.py's `to_frame`, sessions/service.py), with the request `id` appended last
where a reply carries one; each `STRUCTS` entry is the same frame as a struct.
"""

from __future__ import annotations

from typing import Any, get_args

import msgspec
import pytest

from diminuendo.protocol import events as ev
from diminuendo.protocol import shapes
from diminuendo.protocol.codec import encode_frame
from diminuendo.protocol.models import SessionRecord

RECORD = SessionRecord(
    id="ses_1",
    tenant_id="acme",
    owner_id="auth0|abc",
    agent_type="echo",
    name=None,
    created_at=1,
    updated_at=2,
    last_activity_at=3,
    epoch="e1",
    last_seq=4,
    token_usage=shapes.TokenUsage(input=5, output=6),
    instance_id="ins_1",
    deployment_id="dep_1",
)
META_DICT = {
    "id": "ses_1",
    "tenantId": "acme",
    "ownerId": "auth0|abc",
    "agentType": "echo",
    "name": None,
    "projectId": None,
    "status": "inactive",
    "archived": False,
    "createdAt": 1,
    "updatedAt": 2,
    "lastActivityAt": 3,
    "epoch": "e1",
    "lastSeq": 4,
    "tokenUsage": {"input": 5, "output": 6},
    "metadata": None,
}
META = RECORD.meta()
IDENTITY = {"userId": "u1", "email": None, "tenantId": "acme", "role": "owner"}
PENDING = {"type": "question_requested", "turnId": "t1", "requestId": "r1", "questions": []}
RETAINED = b'{"type":"text_delta","sessionId":"ses_1","seq":3,"ts":9,"turnId":"t1","text":"hi"}'
MESSAGE = {"id": "m1", "role": "user", "text": "hi", "turnId": None, "ts": None}
TOOL_CALL = {"toolCallId": "c1", "toolName": "grep", "args": {"q": 1}, "output": None}
ENTRY = {"path": "a.py", "type": "file", "size": None, "modifiedAt": None}
ITERATION = {"iteration": 1, "timestamp": 2, "size": 3, "hash": "h"}
SESSION = {"sessionId": "ses_1"}

CASES: list[tuple[str, dict[str, Any], ev.ServerFrame]] = [
    (
        "welcome",
        {"type": "welcome", "protocolVersion": 1, "requiresAuth": False, "serverVersion": "0.3"},
        ev.Welcome(protocol_version=1, requires_auth=False, server_version="0.3"),
    ),
    (
        "connected",
        {"type": "connected", "clientId": "c1", "heartbeatIntervalMs": 30000, "ts": 5},
        ev.Connected(client_id="c1", heartbeat_interval_ms=30000, ts=5),
    ),
    (
        "authenticated",
        {"type": "authenticated", "identity": IDENTITY},
        ev.Authenticated(
            identity=shapes.Identity(user_id="u1", email=None, tenant_id="acme", role="owner")
        ),
    ),
    (
        "authenticated reply",
        {"type": "authenticated", "identity": {**IDENTITY, "email": "a@b.c"}, "id": "r"},
        ev.Authenticated(
            identity=shapes.Identity(user_id="u1", email="a@b.c", tenant_id="acme", role="owner"),
            id="r",
        ),
    ),
    ("heartbeat", {"type": "heartbeat", "ts": 7}, ev.Heartbeat(ts=7)),
    ("auth_expiring", {"type": "auth_expiring", "expiresAt": 8}, ev.AuthExpiring(expires_at=8)),
    ("pong", {"type": "pong", "serverTs": 9}, ev.Pong(server_ts=9)),
    (
        "pong with ts and id",
        {"type": "pong", "serverTs": 9, "ts": 1.5, "id": "r"},
        ev.Pong(server_ts=9, ts=1.5, id="r"),
    ),
    ("ack", {"type": "ack", "for": "steer", "id": "r"}, ev.Ack(for_="steer", id="r")),
    ("ack without id", {"type": "ack", "for": "steer"}, ev.Ack(for_="steer")),
    (
        "error",
        {"type": "error", "code": "RATE_LIMITED", "message": "Slow down"},
        ev.ErrorEvent(code="RATE_LIMITED", message="Slow down"),
    ),
    (
        "error with every field",
        {
            "type": "error",
            "code": "FILE_TOO_LARGE",
            "message": "big",
            "id": "r",
            "sessionId": "ses_1",
            "retryAfterMs": 10,
            "details": {"size": 5},
            "supported": [1],
        },
        ev.ErrorEvent(
            code="FILE_TOO_LARGE",
            message="big",
            id="r",
            session_id="ses_1",
            retry_after_ms=10,
            details={"size": 5},
            supported=[1],
        ),
    ),
    (
        "session_list",
        {"type": "session_list", "sessions": [META_DICT], "id": "r"},
        ev.SessionList(sessions=[META], id="r"),
    ),
    (
        "session_created",
        {"type": "session_created", "session": META_DICT},
        ev.SessionCreated(session=META),
    ),
    (
        "session_updated",
        {"type": "session_updated", "session": META_DICT, "id": "r"},
        ev.SessionUpdated(session=META, id="r"),
    ),
    (
        "session_archived",
        {"type": "session_archived", **SESSION, "id": "r"},
        ev.SessionArchived(session_id="ses_1", id="r"),
    ),
    (
        "session_unarchived",
        {"type": "session_unarchived", **SESSION},
        ev.SessionUnarchived(session_id="ses_1"),
    ),
    (
        "session_deleted",
        {"type": "session_deleted", **SESSION, "id": "r"},
        ev.SessionDeleted(session_id="ses_1", id="r"),
    ),
    ("session_left", {"type": "session_left", **SESSION}, ev.SessionLeft(session_id="ses_1")),
    (
        "turn_started reply",
        {"type": "turn_started", **SESSION, "turnId": "t1", "clientTurnId": "c", "id": "r"},
        ev.TurnStarted(session_id="ses_1", turn_id="t1", client_turn_id="c", id="r"),
    ),
    (
        "turn_started published",
        {"type": "turn_started", "turnId": "t1"},
        ev.TurnStarted(turn_id="t1"),
    ),
    (
        "turn_error published",
        {"type": "turn_error", "turnId": "t1", "code": "RUNTIME_ERROR", "message": "gone"},
        ev.TurnError(turn_id="t1", code="RUNTIME_ERROR", message="gone"),
    ),
    (
        "session_state published",
        {"type": "session_state", "state": "ready", "previous": "running"},
        ev.SessionState(state="ready", previous="running"),
    ),
    (
        "session_state with reason",
        {"type": "session_state", "state": "error", "previous": "running", "reason": "x"},
        ev.SessionState(state="error", previous="running", reason="x"),
    ),
    (
        "state_snapshot",
        {
            "type": "state_snapshot",
            **SESSION,
            "session": META_DICT,
            "epoch": "e1",
            "lastSeq": 4,
            "gap": False,
            "pending": [PENDING],
            "id": "r",
        },
        ev.StateSnapshot(
            session_id="ses_1",
            session=META,
            epoch="e1",
            last_seq=4,
            gap=False,
            pending=[ev.QuestionRequested(turn_id="t1", request_id="r1", questions=[])],
            id="r",
        ),
    ),
    (
        "state_snapshot during a turn",
        {
            "type": "state_snapshot",
            **SESSION,
            "session": META_DICT,
            "epoch": "e1",
            "lastSeq": 4,
            "gap": True,
            "pending": [],
            "currentTurn": {"turnId": "t1", "text": "so far", "startedAt": 3},
        },
        ev.StateSnapshot(
            session_id="ses_1",
            session=META,
            epoch="e1",
            last_seq=4,
            gap=True,
            pending=[],
            current_turn=shapes.CurrentTurn(turn_id="t1", text="so far", started_at=3),
        ),
    ),
    (
        "history",
        {
            "type": "history",
            **SESSION,
            "messages": [
                MESSAGE,
                {**MESSAGE, "turnId": "t1", "ts": 4, "toolCalls": [TOOL_CALL]},
                {**MESSAGE, "text": "", "truncated": True},
            ],
            "hasMore": False,
            "id": "r",
        },
        ev.History(
            session_id="ses_1",
            messages=[
                shapes.HistoryMessage(id="m1", role="user", text="hi", turn_id=None, ts=None),
                shapes.HistoryMessage(
                    id="m1",
                    role="user",
                    text="hi",
                    turn_id="t1",
                    ts=4,
                    tool_calls=[
                        shapes.HistoryToolCall(tool_call_id="c1", tool_name="grep", args={"q": 1})
                    ],
                ),
                shapes.HistoryMessage(
                    id="m1", role="user", text="", turn_id=None, ts=None, truncated=True
                ),
            ],
            has_more=False,
            id="r",
        ),
    ),
    (
        "events",
        {
            "type": "events",
            **SESSION,
            "epoch": "e1",
            "events": [msgspec.Raw(RETAINED)],
            "lastSeq": 3,
            "gap": False,
            "hasMore": True,
            "id": "r",
        },
        ev.Events(
            session_id="ses_1",
            epoch="e1",
            events=[msgspec.Raw(RETAINED)],
            last_seq=3,
            gap=False,
            has_more=True,
            id="r",
        ),
    ),
    (
        "file_list",
        {"type": "file_list", **SESSION, "path": ".", "entries": [ENTRY], "id": "r"},
        ev.FileList(
            session_id="ses_1",
            path=".",
            entries=[shapes.FileEntry(path="a.py", type="file")],
            id="r",
        ),
    ),
    (
        "file_content",
        {
            "type": "file_content",
            **SESSION,
            "path": "a.py",
            "content": "x",
            "encoding": "utf-8",
            "size": 0,
            "id": "r",
        },
        ev.FileContent(
            session_id="ses_1", path="a.py", content="x", encoding="utf-8", size=0, id="r"
        ),
    ),
    (
        "file_content at an iteration",
        {
            "type": "file_content",
            **SESSION,
            "path": "a.py",
            "content": "eA==",
            "encoding": "base64",
            "size": 1,
            "iteration": 2,
        },
        ev.FileContent(
            session_id="ses_1", path="a.py", content="eA==", encoding="base64", size=1, iteration=2
        ),
    ),
    (
        "file_history",
        {"type": "file_history", **SESSION, "path": "a.py", "iterations": [ITERATION], "id": "r"},
        ev.FileHistory(
            session_id="ses_1",
            path="a.py",
            iterations=[shapes.FileIteration(iteration=1, timestamp=2, size=3, hash="h")],
            id="r",
        ),
    ),
    (
        "member_list",
        {"type": "member_list", "members": [{"userId": "u1", "role": "owner"}], "id": "r"},
        ev.MemberList(members=[shapes.Member(user_id="u1", role="owner")], id="r"),
    ),
]


@pytest.mark.parametrize(("name", "as_dict", "frame"), CASES, ids=[c[0] for c in CASES])
def test_struct_encodes_to_the_bytes_of_the_dict(
    name: str, as_dict: dict[str, Any], frame: ev.ServerFrame
) -> None:
    assert encode_frame(frame) == encode_frame(as_dict)


def test_every_reply_type_is_covered() -> None:
    """A frame type the gateway builds (everything but the runtime events `mapping.py` types
    and the stream stamps) has a case above, so a new one cannot skip this check."""
    built_by_gateway = {
        kind.__struct_config__.tag
        for kind in get_args(ev.AnyFrame)
        if "id" in kind.__struct_fields__
        or kind in (ev.Welcome, ev.Connected, ev.Heartbeat, ev.AuthExpiring, ev.SessionState)
    }
    assert built_by_gateway <= {frame.type for _, _, frame in CASES}


def test_a_frame_that_answers_no_request_reports_no_id() -> None:
    assert ev.Heartbeat(ts=1).id is None
    assert ev.Ack(for_="steer").id is None
    assert ev.Ack(for_="steer", id="r").id == "r"


def test_the_session_record_is_its_wire_meta_plus_storage_fields() -> None:
    """`meta()` leaves out what Unison keeps for the gateway only, and applies live changes."""
    assert msgspec.to_builtins(META) == META_DICT
    live = RECORD.meta(status="ready", last_seq=9)
    assert type(live) is shapes.SessionMeta
    assert (live.status, live.last_seq, live.id) == ("ready", 9, "ses_1")
    assert b"instanceId" in encode_frame(RECORD)


def test_a_field_always_sent_has_a_default_only_for_decoding() -> None:
    """An older server's `history` without `hasMore` still decodes; ours always carries it."""
    history = msgspec.json.decode(b'{"type":"history","messages":[]}', type=ev.AnyFrame)
    assert isinstance(history, ev.History) and history.has_more is False
    assert encode_frame(history) == b'{"type":"history","messages":[],"hasMore":false}'
