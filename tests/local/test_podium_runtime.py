"""Podium runtime sockets and the local agents, over real WebSockets: UPSTREAMS.md §1, §4."""

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from diminuendo.local.agents import DEMO_FAIL, DEMO_FILE, DEMO_PERMISSION

pytestmark = pytest.mark.timeout(15)

# In order of first appearance in a demo turn.
EVERY_DEMO_EVENT = [
    "stream_start",
    "sandbox.provisioning",
    "sandbox.init",
    "thinking.start",
    "thinking.progress",
    "thinking.complete",
    "plan.created",
    "plan.step_started",
    "tool.call_start",
    "tool.call_delta",
    "tool.call",
    "terminal.stream",
    "terminal.complete",
    "tool.result",
    "plan.step_completed",
    "file.changed",
    "tool.question_requested",
    "tool.approval_resolved",
    "stream_update",
    "usage",
    "stream_end",
]


def names(events: list[dict[str, Any]]) -> list[str]:
    return [event["event_type"] for event in events]


def event_ids(events: list[dict[str, Any]]) -> list[int]:
    return [event["content"]["event_id"] for event in events]


async def drain_until_closed(runtime) -> tuple[list[dict[str, Any]], ConnectionClosed]:
    received = []
    while True:
        try:
            received.append(await runtime.next_event())
        except ConnectionClosed as closed:
            return received, closed


async def test_socket_requires_the_key(podium) -> None:
    instance_id = await podium.create_instance("echo")
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(podium.ws_url(instance_id), additional_headers=headers):
                pass
        assert refused.value.response.status_code == 401


async def test_socket_to_unknown_instance_is_refused(podium) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with podium.runtime("inst_missing"):
            pass
    assert refused.value.response.status_code == 404


async def test_echo_turn_streams_the_text_back(podium) -> None:
    instance_id = await podium.create_instance("echo", {"delay_ms": 1})
    text = "  Hello,   brave\tnew\nworld!  "
    async with podium.runtime(instance_id) as runtime:
        await runtime.send("process_message", text=text, turn_id="trn_echo", messages=[])
        events = await runtime.until("stream_end")

    assert names(events)[0] == "stream_start"
    assert set(names(events)[1:-1]) == {"stream_update"}
    assert len(events) - 2 == 5
    end = events[-1]["content"]
    assert podium.streamed_text(events) == end["final_text"] == text
    assert end["stop_reason"] == "end_turn"
    assert end["usage"] == {"input_tokens": 4, "output_tokens": 4}
    assert event_ids(events) == list(range(1, len(events) + 1))
    assert all(event["content"]["turn_id"] == "trn_echo" for event in events)
    stamps = [event["content"]["ts"] for event in events]
    assert stamps == sorted(stamps) and stamps[0] > 1_600_000_000_000

    transcript = (await podium.messages(instance_id))["messages"]
    assert [(m["role"], m["text"], m["turn_id"]) for m in transcript] == [
        ("user", text, "trn_echo"),
        ("assistant", text, "trn_echo"),
    ]
    assert transcript[0]["id"].startswith("msg_")


async def test_slow_deltas_from_config_and_per_turn_override(podium) -> None:
    instance_id = await podium.create_instance("slow", {"deltas": 3, "interval_ms": 1})
    async with podium.runtime(instance_id) as runtime:
        await runtime.send("process_message", text="go", turn_id="trn_1")
        first = await runtime.until("stream_end")
        await runtime.send(
            "process_message", text='{"deltas": 20, "interval_ms": 1}', turn_id="trn_2"
        )
        second = await runtime.until("stream_end")
    assert first[-1]["content"]["final_text"] == "d1 d2 d3 "
    pieces = [e["content"]["text"] for e in second if e["event_type"] == "stream_update"]
    assert len(pieces) == 20 and pieces[16] == "d17 "
    assert "".join(pieces) == second[-1]["content"]["final_text"]


async def test_busy_session_rejects_a_second_turn(podium) -> None:
    instance_id = await podium.create_instance("slow", {"deltas": 500, "interval_ms": 5})
    async with podium.runtime(instance_id) as runtime:
        await runtime.send("process_message", text="go", turn_id="trn_a")
        await runtime.until("stream_update")
        await runtime.send("process_message", text="again", turn_id="trn_b")
        error = (await runtime.until("error"))[-1]["content"]
        assert error["code"] == "SESSION_BUSY"
        assert error["turn_id"] == "trn_b"
        await runtime.send("interrupt", turn_id="trn_a")
        end = (await runtime.until("stream_end"))[-1]["content"]
    assert end["turn_id"] == "trn_a"


async def test_interrupt_cancels_with_the_partial_text(podium) -> None:
    instance_id = await podium.create_instance("slow", {"deltas": 1000, "interval_ms": 5})
    async with podium.runtime(instance_id) as runtime:
        await runtime.send("process_message", text="go", turn_id="trn_1")
        events = [await runtime.next_event() for _ in range(4)]
        await runtime.send("interrupt", turn_id="trn_1")
        events += await runtime.until("stream_end")
        end = events[-1]["content"]
        assert end["stop_reason"] == "cancelled"
        assert end["final_text"] == podium.streamed_text(events)
        assert end["final_text"].startswith("d1 d2 d3 ")

        await runtime.send("process_message", text='{"deltas": 2}', turn_id="trn_2")
        after = await runtime.until("stream_end")
    assert after[-1]["content"]["final_text"] == "d1 d2 "
    assert after[-1]["content"]["stop_reason"] == "end_turn"
    transcript = (await podium.messages(instance_id))["messages"]
    assert [(m["role"], m["turn_id"]) for m in transcript] == [
        ("user", "trn_1"),
        ("assistant", "trn_1"),
        ("user", "trn_2"),
        ("assistant", "trn_2"),
    ]
    assert transcript[1]["text"] == end["final_text"]


async def test_interrupt_for_another_turn_is_ignored(podium) -> None:
    instance_id = await podium.create_instance("slow", {"deltas": 5, "interval_ms": 10})
    async with podium.runtime(instance_id) as runtime:
        await runtime.send("process_message", text="go", turn_id="trn_1")
        await runtime.send("interrupt", turn_id="trn_other")
        events = await runtime.until("stream_end")
    assert events[-1]["content"]["stop_reason"] == "end_turn"


async def test_steer_is_recorded_and_acknowledged(podium) -> None:
    instance_id = await podium.create_instance("slow", {"deltas": 30, "interval_ms": 10})
    async with podium.runtime(instance_id) as runtime:
        await runtime.send("process_message", text="go", turn_id="trn_1")
        await runtime.until("stream_update")
        await runtime.send("steer", text="be brief")
        events = await runtime.until("stream_end")
    final_text = events[-1]["content"]["final_text"]
    assert "[steer: be brief] " in final_text
    transcript = (await podium.messages(instance_id))["messages"]
    assert [(m["role"], m["text"]) for m in transcript[:2]] == [
        ("user", "go"),
        ("user", "be brief"),
    ]
    assert transcript[1]["turn_id"] == "trn_1"


async def test_demo_turn_exercises_every_family_and_waits_for_answer(podium) -> None:
    instance_id = await podium.create_instance("demo", {"delay_ms": 1})
    async with podium.runtime(instance_id) as runtime:
        await runtime.send("process_message", text="first", turn_id="trn_1")
        events = await runtime.until("tool.question_requested")
        question = events[-1]["content"]
        assert question["questions"][0]["id"] == "q1"
        with pytest.raises(TimeoutError):
            await runtime.next_event(wait_s=0.3)
        await runtime.send(
            "answer",
            request_id=question["request_id"],
            answers={"q1": "keep"},
            approved=True,
            dismissed=False,
        )
        events += await runtime.until("stream_end")

        await runtime.send("process_message", text="second", turn_id="trn_2")
        second = await runtime.until("tool.question_requested")
        await runtime.send(
            "answer",
            request_id=second[-1]["content"]["request_id"],
            answers={},
            approved=False,
            dismissed=True,
        )
        second += await runtime.until("stream_end")

    seen = names(events)
    assert set(EVERY_DEMO_EVENT) <= set(seen)
    positions = [seen.index(name) for name in EVERY_DEMO_EVENT]
    assert positions == sorted(positions)
    by_name = {event["event_type"]: event["content"] for event in events}
    assert by_name["file.changed"] == {**by_name["file.changed"], "path": DEMO_FILE, "iteration": 1}
    assert by_name["tool.approval_resolved"]["answers"] == {"q1": "keep"}
    assert by_name["tool.result"]["is_error"] is False
    assert by_name["terminal.complete"]["exit_code"] == 0
    assert len(by_name["plan.created"]["steps"]) == 3
    assert set(by_name["usage"]) >= {"input_tokens", "output_tokens", "cost"}
    deltas = "".join(
        e["content"]["args_delta"] for e in events if e["event_type"] == "tool.call_delta"
    )
    calls = [e["content"]["args"] for e in events if e["event_type"] == "tool.call"]
    assert deltas == "".join(json.dumps(args) for args in calls)
    assert podium.streamed_text(events) == by_name["stream_end"]["final_text"]
    assert "you answered keep" in by_name["stream_end"]["final_text"]
    assert event_ids(events + second) == list(range(1, len(events) + len(second) + 1))

    second_by_name = {event["event_type"]: event["content"] for event in second}
    assert "sandbox.provisioning" not in second_by_name
    assert second_by_name["file.changed"]["iteration"] == 2
    assert second_by_name["tool.approval_resolved"]["dismissed"] is True
    assert "dismissed" in second_by_name["stream_end"]["final_text"]

    files = f"{podium.url}/api/v1/instances/{instance_id}/files/{DEMO_FILE}"
    history = (await podium.http.get(f"{files}/history")).json()["iterations"]
    assert [h["iteration"] for h in history] == [1, 2]
    content = (await podium.http.get(files)).json()["content"]
    assert "trn_1: first" in content and "trn_2: second" in content
    assistant = (await podium.messages(instance_id))["messages"][1]
    assert [call["tool_name"] for call in assistant["tool_calls"]] == ["bash", "append_file"]


async def test_interrupt_while_waiting_for_an_answer(podium) -> None:
    instance_id = await podium.create_instance("demo", {"delay_ms": 1})
    async with podium.runtime(instance_id) as runtime:
        await runtime.send("process_message", text="first", turn_id="trn_1")
        events = await runtime.until("tool.question_requested")
        await runtime.send("interrupt", turn_id="trn_1")
        end = (await runtime.until("stream_end"))[-1]["content"]
        assert end["stop_reason"] == "cancelled" and end["final_text"] == ""
        request_id = events[-1]["content"]["request_id"]
        await runtime.send("answer", request_id=request_id, answers={}, approved=True)
        await runtime.send("process_message", text="second", turn_id="trn_2")
        assert (await runtime.next_event())["event_type"] == "stream_start"
        assert (await runtime.next_event())["event_type"] == "thinking.start"


async def test_dropped_socket_buffers_until_reconnect(podium) -> None:
    instance_id = await podium.create_instance("slow", {"deltas": 60, "interval_ms": 5})
    async with podium.runtime(instance_id) as runtime:
        await runtime.send("process_message", text="go", turn_id="trn_1")
        received = [await runtime.next_event() for _ in range(5)]
        dropped = await podium.http.post(f"{podium.url}/_local/drop-runtime-sockets")
        assert dropped.json() == {"dropped": 1}
        rest, closed = await drain_until_closed(runtime)
        received += rest
        assert closed.rcvd is None  # abrupt: no close frame
    await asyncio.sleep(0.1)  # the turn goes on while nobody listens
    again = await podium.http.post(f"{podium.url}/_local/drop-runtime-sockets")
    assert again.json() == {"dropped": 0}
    async with podium.runtime(instance_id) as runtime:
        received += await runtime.until("stream_end")
        assert runtime.attached[0]["running_turn_id"] == "trn_1", "the hello names the live turn"

    assert event_ids(received) == list(range(1, len(received) + 1))
    assert podium.streamed_text(received) == received[-1]["content"]["final_text"]
    assert received[-1]["content"]["final_text"].endswith("d60 ")


async def test_attach_hello_comes_first_and_names_no_turn_when_idle(podium) -> None:
    instance_id = await podium.create_instance("echo")
    async with podium.runtime(instance_id) as runtime:
        await runtime.send("process_message", text="hi", turn_id="trn_1")
        await runtime.until("stream_end")
        assert runtime.attached == [
            {"instance_id": instance_id, "running_turn_id": None, "ts": runtime.attached[0]["ts"]}
        ]


async def test_a_second_socket_replaces_the_first(podium) -> None:
    instance_id = await podium.create_instance("echo", {"delay_ms": 1})
    async with podium.runtime(instance_id) as first, podium.runtime(instance_id) as second:
        _, closed = await drain_until_closed(first)
        assert closed.rcvd is not None and closed.rcvd.code == 4000
        await second.send("process_message", text="still here", turn_id="trn_1")
        events = await second.until("stream_end")
    assert events[-1]["content"]["final_text"] == "still here"


async def test_invalid_frames_are_reported(podium) -> None:
    instance_id = await podium.create_instance("echo")
    async with podium.runtime(instance_id) as runtime:
        await runtime.ws.send("not json")
        await runtime.send("bogus")
        await runtime.send("process_message", text=5, turn_id="trn_bad")
        errors = [(await runtime.next_event())["content"] for _ in range(3)]
    assert [e["code"] for e in errors] == ["INVALID_MESSAGE"] * 3
    assert [e["turn_id"] for e in errors] == [None, None, "trn_bad"]


async def test_deleting_the_instance_closes_its_socket(podium) -> None:
    instance_id = await podium.create_instance("slow", {"deltas": 1000, "interval_ms": 5})
    async with podium.runtime(instance_id) as runtime:
        await runtime.send("process_message", text="go", turn_id="trn_1")
        await runtime.until("stream_update")
        deleted = await podium.http.delete(f"{podium.url}/api/v1/instances/{instance_id}")
        assert deleted.status_code == 204
        _, closed = await drain_until_closed(runtime)
    assert closed.rcvd is not None and closed.rcvd.code == 4004


async def test_chat_agent_answers_through_ensemble(podium) -> None:
    instance_id = await podium.create_instance("chat")
    async with podium.runtime(instance_id) as runtime:
        await runtime.send("process_message", text="hello", turn_id="trn_1")
        first = await runtime.until("stream_end")
        await runtime.send("process_message", text="again", turn_id="trn_2")
        second = await runtime.until("stream_end")
    end = first[-1]["content"]
    assert end["final_text"] == "You said: hello. This is the mock model."
    assert podium.streamed_text(first) == end["final_text"]
    assert end["usage"] == {"input_tokens": 1, "output_tokens": 8}
    # The whole transcript goes to the model: hello + the first answer + again.
    assert second[-1]["content"]["usage"]["input_tokens"] == 10


async def test_chat_agent_failure_is_an_error_event(podium) -> None:
    instance_id = await podium.create_instance("chat", {"model": "no-such-model"})
    async with podium.runtime(instance_id) as runtime:
        await runtime.send("process_message", text="hello", turn_id="trn_1")
        error = (await runtime.until("error"))[-1]["content"]
        assert error["code"] == "AGENT_ERROR" and error["turn_id"] == "trn_1"
        await runtime.send("process_message", text="retry", turn_id="trn_2")
        assert (await runtime.next_event())["event_type"] == "stream_start"


async def test_demo_triggers_a_runtime_error_and_a_permission_request(podium) -> None:
    """The deterministic triggers the edge adapters' tests rely on."""
    instance_id = await podium.create_instance("demo", {"delay_ms": 1})
    async with podium.runtime(instance_id) as runtime:
        await runtime.send("process_message", text=DEMO_FAIL, turn_id="trn_1")
        error = (await runtime.until("error"))[-1]["content"]
        assert error["code"] == "AGENT_ERROR" and error["turn_id"] == "trn_1"

        for turn_id, approved, outcome in (("trn_2", False, "refused"), ("trn_3", True, "granted")):
            await runtime.send("process_message", text=DEMO_PERMISSION, turn_id=turn_id)
            asked = (await runtime.until("tool.permission_requested"))[-1]["content"]
            assert asked["tool_name"] == "bash" and DEMO_FILE in asked["description"]
            await runtime.send("answer", request_id=asked["request_id"], approved=approved)
            events = await runtime.until("stream_end")
            resolved = next(e for e in events if e["event_type"] == "tool.approval_resolved")
            assert resolved["content"]["approved"] is approved
            assert f"Permission {outcome}" in events[-1]["content"]["final_text"]


@pytest.mark.parametrize(
    ("secrets", "cause"),
    [({"ensemble_api_key": "not-the-key"}, "HTTP 401"), ({}, "no ensemble_api_key")],
)
async def test_chat_agent_calls_ensemble_with_its_instance_secret(
    podium, secrets: dict[str, str], cause: str
) -> None:
    """The key comes from the secrets the instance was created with, not from the stand-in."""
    instance_id = await podium.create_instance("chat", secrets=secrets)
    async with podium.runtime(instance_id) as runtime:
        await runtime.send("process_message", text="hello", turn_id="trn_1")
        error = (await runtime.until("error"))[-1]["content"]
    assert error["code"] == "AGENT_ERROR" and cause in error["message"]
