"""The shared validation of PROTOCOL §13, pure: the nesting limit, the conversion of REST and
RPC input into the WebSocket message structs, integer parameters, and the schema fields."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diminuendo.protocol import DecodeFailure, ErrorCode, GatewayError, decode_client_frame, rest
from diminuendo.protocol import messages as m
from diminuendo.protocol.codec import MAX_DEPTH, convert_message, decode_json, too_deep


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_depth_limit_is_exact() -> None:
    assert not too_deep(nested(MAX_DEPTH))
    assert too_deep(nested(MAX_DEPTH + 1))
    assert too_deep(nested(MAX_DEPTH + 1).encode())
    assert not too_deep('{"a":' + nested(MAX_DEPTH - 1) + "}")
    assert too_deep('{"a":' + nested(MAX_DEPTH) + "}")
    assert too_deep("[" + ",".join(['{"k":' + nested(MAX_DEPTH - 1) + "}"] * 3) + "]")


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"type": "ping", "a": "[" * 500, "b": 'say \\"[{"' * 50})
    assert not too_deep(text)
    assert not too_deep(text.encode())


def test_unbalanced_text_is_left_to_the_decoder() -> None:
    assert not too_deep("[" * 500)
    failure = decode_client_frame("[" * 500)
    assert isinstance(failure, DecodeFailure) and failure.code is ErrorCode.INVALID_JSON


def test_a_deep_frame_is_invalid_json_not_an_exception() -> None:
    frame = '{"type":"create_session","agentType":"echo","metadata":{"a":' + nested(5000) + "}}"
    failure = decode_client_frame(frame)
    assert isinstance(failure, DecodeFailure) and failure.code is ErrorCode.INVALID_JSON
    with pytest.raises(msgspec.DecodeError):
        decode_json(frame.encode())


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    st.recursive(
        st.none() | st.integers() | st.text(),
        lambda x: st.lists(x) | st.dictionaries(st.text(), x),
        max_leaves=40,
    )
)
def test_depth_agrees_with_a_walk(value: object) -> None:
    def depth(v: object) -> int:
        if isinstance(v, list):
            return 1 + max(map(depth, v), default=0)
        if isinstance(v, dict):
            return 1 + max(map(depth, v.values()), default=0)
        return 0

    text = json.dumps(value)
    for wrap in range(0, 70, 7):
        document = "[" * wrap + text + "]" * wrap
        assert too_deep(document) == (depth(value) + wrap > MAX_DEPTH), (wrap, text[:80])


def test_convert_message_applies_the_websocket_rules() -> None:
    turn = convert_message({"sessionId": "s", "text": "hi", "type": "junk", "id": 5}, m.RunTurn)
    assert turn == m.RunTurn(session_id="s", text="hi")
    for fields, kind in (
        ({"agentType": "echo", "name": ""}, m.CreateSession),
        ({"agentType": "echo", "name": "n" * 201}, m.CreateSession),
        ({"sessionId": "s" * 129}, m.StopTurn),
        ({"sessionId": "s", "before": "b" * 129}, m.GetHistory),
        ({"sessionId": "s", "text": "x" * (m.MAX_TEXT_BYTES + 1)}, m.RunTurn),
        (
            {"sessionId": "s", "requestId": "r", "approved": True, "dismissed": True},
            m.AnswerQuestion,
        ),
    ):
        with pytest.raises(GatewayError) as raised:
            convert_message(fields, kind)
        assert raised.value.code is ErrorCode.INVALID_MESSAGE
        assert len(raised.value.message) <= 200


def test_answer_fails_closed() -> None:
    answer = decode_client_frame('{"type":"answer_question","sessionId":"s","requestId":"r"}')
    assert isinstance(answer, m.AnswerQuestion)
    assert answer.approved is False and answer.dismissed is False


def test_strings_reaching_upstream_urls_are_bounded() -> None:
    """Every string field of every message has a maximum length, except free text whose size
    is checked in bytes (`text`, `content`) and the token (never part of a URL)."""
    unbounded = []
    for kind in m.AnyClientMessage.__args__:  # type: ignore[attr-defined]
        schema = msgspec.json.schema(kind)["$defs"][kind.__name__]
        for name, prop in schema["properties"].items():
            options = prop.get("anyOf", [prop])
            for option in options:
                if option.get("type") == "string" and "maxLength" not in option:
                    unbounded.append(f"{kind.__name__}.{name}")
    assert unbounded == ["Authenticate.token", "RunTurn.text"]


@pytest.mark.parametrize("raw", ["0", "7", "0042", "9" * 16])
def test_count_param_takes_ascii_digits(raw: str) -> None:
    assert rest.count_param("n", raw) == int(raw)


@pytest.mark.parametrize(
    "raw", ["", "²", "٣", "+5", "-1", " 5", "5 ", "1_0", "0x1", "1e3", "9" * 17]
)
def test_count_param_refuses_everything_else(raw: str) -> None:
    with pytest.raises(GatewayError) as raised:
        rest.count_param("afterSeq", raw)
    assert raised.value.code is ErrorCode.INVALID_MESSAGE and raised.value.http_status == 400


def test_rest_body_schemas_are_the_message_fields() -> None:
    for body, message, path in (
        (rest.CreateThread, m.CreateSession, ()),
        (rest.PostMessage, m.RunTurn, ("sessionId",)),
        (rest.SteerBody, m.Steer, ("sessionId",)),
        (rest.AnswerBody, m.AnswerQuestion, ("sessionId",)),
    ):
        documented = msgspec.json.schema(body)["$defs"][body.__name__]
        validated = msgspec.json.schema(message)["$defs"][message.__name__]
        for name in ("type", "id", *path):
            validated["properties"].pop(name)
            if name in validated.get("required", []):
                validated["required"].remove(name)
        assert documented["properties"] == validated["properties"], body.__name__
        assert documented.get("required", []) == validated.get("required", []), body.__name__


def test_decode_body_adds_path_values_and_refuses_non_objects() -> None:
    turn = rest.decode_body(b'{"text":"hi","sessionId":"other"}', m.RunTurn, sessionId="s")
    assert turn.session_id == "s" and turn.text == "hi"
    for body, code in ((b"[1]", ErrorCode.INVALID_MESSAGE), (b"{", ErrorCode.INVALID_JSON)):
        with pytest.raises(GatewayError) as raised:
            rest.decode_body(body, m.RunTurn, sessionId="s")
        assert raised.value.code is code
    assert rest.message(m.GetHistory, sessionId="s", limit=None, before=None).limit == 50


def test_a_too_deep_frame_still_echoes_its_id() -> None:
    failure = decode_client_frame('{"id":"deep","type":"ping","x":' + nested(100) + "}")
    assert isinstance(failure, DecodeFailure) and failure.request_id == "deep"
    failure = decode_client_frame('{"type":"ping","x":' + nested(5000) + ',"id":"lost"}')
    assert isinstance(failure, DecodeFailure) and failure.code is ErrorCode.INVALID_JSON
