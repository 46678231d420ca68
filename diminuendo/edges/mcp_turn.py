"""One gateway turn as an MCP tool call sees it: the pure half of the MCP adapter (docs/EDGES.md).

A tool call that runs (or continues) a turn subscribes to the session's stream and hands every
event here. `TurnWatch` keeps only what the call returns — the streamed text, the end, or the
question the turn is waiting on — and what the next progress notification says, so a slow MCP
client costs a few counters, never a queue of events. No asyncio, no SDK types.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["Progress", "TurnWatch", "summary"]

# Gateway events that stop the tool call, with the `status` its result reports.
_INPUT_REQUIRED = ("question_requested", "permission_requested")


class Progress(NamedTuple):
    """One MCP progress notification: a count that only grows, and what happened since."""

    progress: int
    message: str


def _describe(event: dict[str, Any]) -> str | None:
    """A short progress line for events other than text (text is reported as itself)."""
    kind = event["type"]
    if kind == "tool_call":
        return f"[tool {event.get('toolName', '')}]"
    if kind == "thinking.start":
        return "[thinking]"
    if kind == "plan.step_started":
        return f"[step {event.get('stepId', '')}]"
    if kind == "file_changed":
        return f"[changed {event.get('path', '')}]"
    return None


class TurnWatch:
    """Follows one turn of one session (`turn_id`, set once the turn is known)."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.turn_id: str | None = None
        self.result: dict[str, Any] | None = None  # set when the tool call can return
        self._events = 0
        self._text: list[str] = []
        self._unreported: list[str] = []

    @property
    def done(self) -> bool:
        return self.result is not None

    def observe(self, event: dict[str, Any]) -> bool:
        """Take one event of the session's stream; True when it concerned the watched turn."""
        if self.result is not None or self.turn_id is None or event.get("turnId") != self.turn_id:
            return False
        self._events += 1
        kind = event["type"]
        if kind == "text_delta":
            self._text.append(event["text"])
            self._unreported.append(event["text"])
        elif kind == "turn_complete":
            cancelled = event.get("stopReason") == "cancelled"
            self.result = self._base("cancelled" if cancelled else "completed")
            self.result["text"] = event.get("finalText") or "".join(self._text)
            self.result["usage"] = event.get("usage") or {}
        elif kind == "turn_error":
            self.result = self._base("error")
            self.result.update(code=event["code"], message=event["message"])
        elif kind in _INPUT_REQUIRED:
            self.result = self.input_required(event)
        elif (line := _describe(event)) is not None:
            self._unreported.append(line)
        return True

    def input_required(self, asked: dict[str, Any]) -> dict[str, Any]:
        """The result that hands a question or permission request to the MCP client, which
        answers it with the `answer_question` tool."""
        result = self._base("input_required")
        result["requestId"] = asked["requestId"]
        result["text"] = "".join(self._text)
        if asked["type"] == "permission_requested":
            result.update(
                kind="permission", toolName=asked["toolName"], description=asked["description"]
            )
        else:
            result.update(kind="question", questions=asked["questions"])
        return result

    def take_progress(self) -> Progress | None:
        """What happened since the last call, or None when nothing did."""
        if not self._unreported:
            return None
        message = "".join(self._unreported)
        self._unreported.clear()
        return Progress(self._events, message)

    def _base(self, status: str) -> dict[str, Any]:
        return {"status": status, "sessionId": self.session_id, "turnId": self.turn_id}


def summary(result: dict[str, Any]) -> str:
    """The text content of a tool result: what a model reads."""
    status = result["status"]
    if status == "error":
        return f"{result['code']}: {result['message']}"
    if status != "input_required":
        return result.get("text") or f"(the turn ended with no text: {status})"
    ask = f"session_id={result['sessionId']!r}, request_id={result['requestId']!r}"
    if result["kind"] == "permission":
        return (
            f"The agent asks permission to use {result['toolName']}: {result['description']}. "
            f"Call answer_question with {ask} and approved=true or false."
        )
    lines = []
    for question in result["questions"]:
        if isinstance(question, dict):
            options = question.get("options")
            choices = f" (one of: {', '.join(map(str, options))})" if options else ""
            lines.append(f"- {question.get('id')}: {question.get('text')}{choices}")
    return (
        "The agent asks:\n" + "\n".join(lines) + f"\nCall answer_question with {ask} and "
        "answers={question id: answer}."
    )
