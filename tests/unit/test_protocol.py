"""The pure decoder: every input gets a typed message or a documented error, never an exception."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from diminuendo.protocol import DecodeFailure, ErrorCode, decode_client_frame
from diminuendo.protocol import messages as m
from diminuendo.protocol.messages import MESSAGE_TYPES


def test_decodes_camel_case_fields_and_ignores_unknown_ones() -> None:
    msg = decode_client_frame(
        '{"type":"join_session","sessionId":"ses_1","afterSeq":4,"epoch":"e","extra":1,"id":"a"}'
    )
    assert msg == m.JoinSession(session_id="ses_1", after_seq=4, epoch="e", id="a")


def test_defaults() -> None:
    msg = decode_client_frame('{"type":"get_history","sessionId":"s"}')
    assert isinstance(msg, m.GetHistory) and msg.limit == 50 and msg.before is None


def test_every_spec_message_type_is_known() -> None:
    spec = {
        "authenticate",
        "ping",
        "list_sessions",
        "create_session",
        "rename_session",
        "archive_session",
        "unarchive_session",
        "delete_session",
        "join_session",
        "leave_session",
        "run_turn",
        "stop_turn",
        "steer",
        "answer_question",
        "get_history",
        "get_events",
        "list_files",
        "read_file",
        "file_history",
        "file_at_iteration",
        "manage_members",
    }
    assert spec == MESSAGE_TYPES


def test_not_json() -> None:
    assert decode_client_frame("{nope") == DecodeFailure(
        ErrorCode.INVALID_JSON, "Frame is not valid JSON"
    )


def test_unknown_type_keeps_the_id() -> None:
    failure = decode_client_frame('{"type":"fly","id":"q"}')
    assert failure == DecodeFailure(ErrorCode.INVALID_MESSAGE, "Unknown message type `fly`", "q")


def test_wrong_field_type_names_the_field() -> None:
    failure = decode_client_frame('{"type":"get_events","sessionId":"s","afterSeq":"x"}')
    assert isinstance(failure, DecodeFailure) and failure.code == ErrorCode.INVALID_MESSAGE
    assert "afterSeq" in failure.message


def test_overlong_id_is_rejected_and_not_echoed() -> None:
    failure = decode_client_frame(json.dumps({"type": "ping", "id": "i" * 65}))
    assert isinstance(failure, DecodeFailure) and failure.request_id is None
    assert "id" in failure.message


def test_limits() -> None:
    too_long = json.dumps({"type": "run_turn", "sessionId": "s", "text": "é" * 140_000})
    assert isinstance(decode_client_frame(too_long), DecodeFailure)
    ok = json.dumps({"type": "run_turn", "sessionId": "s", "text": "a" * 262_144})
    assert isinstance(decode_client_frame(ok), m.RunTurn)
    big_metadata = json.dumps(
        {"type": "create_session", "agentType": "echo", "metadata": {"k": "v" * 17_000}}
    )
    failure = decode_client_frame(big_metadata)
    assert isinstance(failure, DecodeFailure) and "metadata" in failure.message
    assert isinstance(
        decode_client_frame('{"type":"get_history","sessionId":"s","limit":501}'), DecodeFailure
    )


def test_paths_must_be_safe_and_relative() -> None:
    for path in ("/abs", "a/../b", "..", "a\u0000b", "\\\\server\\share"):
        frame = json.dumps({"type": "read_file", "sessionId": "s", "path": path})
        assert isinstance(decode_client_frame(frame), DecodeFailure), path
    ok = decode_client_frame('{"type":"read_file","sessionId":"s","path":"src/app.py"}')
    assert isinstance(ok, m.ReadFile)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(), st.binary()))
def test_random_bytes_never_raise(data: str | bytes) -> None:
    decode_client_frame(data)


@settings(max_examples=500, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["type", "id", "sessionId", "text", "afterSeq", "path", "limit"]),
        json_values,
    ),
    st.sampled_from(sorted(MESSAGE_TYPES)),
)
def test_random_messages_get_a_message_or_a_documented_error(fields: dict, kind: str) -> None:
    frame = json.dumps({"type": kind, **fields})
    result = decode_client_frame(frame)
    if isinstance(result, DecodeFailure):
        assert result.code in (ErrorCode.INVALID_MESSAGE, ErrorCode.INVALID_JSON)
        assert len(result.message) <= 500
        assert "Traceback" not in result.message
