"""AG-UI interrupts both ways (docs/EDGES.md "Interrupts"). Pure.

A gateway question or permission request ends an AG-UI run as an `Interrupt` whose
`responseSchema` says what the answer looks like; the next run's `resume` entry carries that
answer back, read here as what `answer_question` takes.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ag_ui.core import Interrupt, ResumeEntry

from diminuendo.protocol.errors import ErrorCode, GatewayError

PERMISSION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"approved": {"type": "boolean", "description": "Allow the tool call"}},
    "required": ["approved"],
}


def question_schema(questions: list[Any]) -> dict[str, Any]:
    """The JSON Schema of a question's answer: one property per question id (a choice among
    its options when it has some), which is also the shape `answer_question` takes."""
    properties: dict[str, Any] = {}
    for question in questions:
        if not isinstance(question, dict) or not isinstance(question.get("id"), str):
            continue
        prop: dict[str, Any] = {"type": "string", "description": str(question.get("text", ""))}
        options = question.get("options")
        if isinstance(options, list) and options and all(isinstance(o, str) for o in options):
            prop["enum"] = options
        properties[question["id"]] = prop
    return {"type": "object", "properties": properties, "required": sorted(properties)}


def question_interrupt(event: dict[str, Any]) -> Interrupt:
    """A `question_requested` event as the interrupt a run finishes with."""
    questions = event["questions"]
    text = " ".join(str(q.get("text", "")) for q in questions if isinstance(q, dict))
    return Interrupt(
        id=event["requestId"],
        reason="question",
        message=text or None,
        response_schema=question_schema(questions),
        metadata={"questions": questions},
    )


def permission_interrupt(event: dict[str, Any]) -> Interrupt:
    """A `permission_requested` event as the interrupt a run finishes with."""
    return Interrupt(
        id=event["requestId"],
        reason="permission",
        message=event["description"] or None,
        response_schema=PERMISSION_SCHEMA,
        metadata={"toolName": event["toolName"], "options": event.get("options")},
    )


class ResumeAnswer(NamedTuple):
    """A resume entry as `answer_question` takes it."""

    answers: dict[str, Any] | None
    approved: bool
    dismissed: bool


def resume_answer(asked: dict[str, Any], entry: ResumeEntry) -> ResumeAnswer:
    """The answer a resume entry gives to `asked` (the pending event it names): a question's
    payload is its answers keyed by question id, a permission's is `{"approved": bool}`, and
    `status: "cancelled"` dismisses either."""
    payload = entry.payload if entry.payload is not None else {}
    if not isinstance(payload, dict):
        raise GatewayError(ErrorCode.INVALID_MESSAGE, "A resume payload is a JSON object")
    cancelled = entry.status == "cancelled"
    if asked["type"] == "permission_requested":
        return ResumeAnswer(None, payload.get("approved") is True and not cancelled, cancelled)
    return ResumeAnswer(None if cancelled else payload, not cancelled, cancelled)
