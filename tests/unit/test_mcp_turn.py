"""The MCP adapter's view of one turn (diminuendo/edges/mcp_turn.py), without a network."""

from __future__ import annotations

from diminuendo.edges.mcp_turn import Progress, TurnWatch, summary

T = "trn_1"


def watch() -> TurnWatch:
    w = TurnWatch("ses_1")
    w.turn_id = T
    return w


def test_text_and_events_become_progress_and_the_end_the_result() -> None:
    w = watch()
    assert not w.observe({"type": "text_delta", "turnId": "trn_other", "text": "x"})
    assert not w.observe({"type": "session_state", "state": "running"})
    w.observe({"type": "thinking.start", "turnId": T})
    w.observe({"type": "text_delta", "turnId": T, "text": "Hel"})
    assert w.take_progress() == Progress(2, "[thinking]Hel")
    assert w.take_progress() is None
    w.observe({"type": "text_delta", "turnId": T, "text": "lo"})
    w.observe({"type": "turn_complete", "turnId": T, "finalText": "Hello", "stopReason": "end_turn",
               "usage": {"inputTokens": 1, "outputTokens": 2}})  # fmt: skip
    assert w.done and w.result == {
        "status": "completed",
        "sessionId": "ses_1",
        "turnId": T,
        "text": "Hello",
        "usage": {"inputTokens": 1, "outputTokens": 2},
    }
    assert summary(w.result) == "Hello"
    assert not w.observe({"type": "text_delta", "turnId": T, "text": "late"})


def test_cancel_error_question_and_permission() -> None:
    cancelled = watch()
    cancelled.observe({"type": "turn_complete", "turnId": T, "stopReason": "cancelled"})
    assert cancelled.result["status"] == "cancelled"
    assert "no text" in summary(cancelled.result)

    failed = watch()
    failed.observe({"type": "turn_error", "turnId": T, "code": "AGENT_ERROR", "message": "boom"})
    assert summary(failed.result) == "AGENT_ERROR: boom"

    asked = watch()
    question = {"id": "q1", "text": "Keep?", "options": ["keep", "discard"]}
    asked.observe(
        {"type": "question_requested", "turnId": T, "requestId": "req_1", "questions": [question]}
    )
    assert asked.result["kind"] == "question" and asked.result["requestId"] == "req_1"
    text = summary(asked.result)
    assert "q1: Keep? (one of: keep, discard)" in text and "request_id='req_1'" in text

    permission = watch()
    permission.observe({"type": "permission_requested", "turnId": T, "requestId": "req_2",
                        "toolName": "bash", "description": "Run rm"})  # fmt: skip
    assert permission.result["kind"] == "permission"
    assert "approved=true or false" in summary(permission.result)


def test_nothing_is_watched_before_the_turn_is_known() -> None:
    w = TurnWatch("ses_1")
    assert not w.observe({"type": "text_delta", "turnId": T, "text": "x"})
