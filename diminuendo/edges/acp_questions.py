"""ACP questions: a runtime question or permission request as the editor is asked it
(`session/request_permission`, one per question), and the editor's choices as the gateway's
`answer_question`. Pure; `diminuendo acp` (diminuendo/edges/acp.py) does the asking.

ACP has no free-text answer: a question with options offers each as an option, one without
offers only "Skip", which dismisses the request. A permission request offers Allow and Reject.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from acp.helpers import start_tool_call, text_block, tool_content, update_tool_call
from acp.schema import PermissionOption, ToolCallProgress, ToolCallStart, ToolCallUpdate

from diminuendo.client import events as ev
from diminuendo.edges.acp_mapping import tool_kind
from diminuendo.edges.text import as_text


class Choice(NamedTuple):
    """One `session/request_permission`: the options offered and what each one answers."""

    question_id: str | None  # None for a permission request
    options: list[PermissionOption]
    values: dict[str, Any]  # optionId → the answer (an option value, or approved True/False)


class Ask(NamedTuple):
    """A question or permission request of the runtime, as the editor is asked it."""

    request_id: str
    tool_call: ToolCallStart  # announced first, so the editor has something to attach to
    choices: list[Choice]
    permission: bool

    @property
    def asked_about(self) -> ToolCallUpdate:
        """The tool call as `session/request_permission` names it."""
        call = self.tool_call
        return ToolCallUpdate(
            tool_call_id=call.tool_call_id, title=call.title, kind=call.kind, status=call.status
        )


class Answer(NamedTuple):
    """What goes back to the gateway (`answer_question`), and the tool call's last update."""

    answers: dict[str, Any] | None
    approved: bool | None
    dismissed: bool
    update: ToolCallProgress


def ask_for(event: ev.QuestionRequested | ev.PermissionRequested) -> Ask:
    """The editor-side form of a question or permission request."""
    if isinstance(event, ev.PermissionRequested):
        title = f"{event.tool_name}: {event.description}" if event.description else event.tool_name
        options = [
            PermissionOption(option_id="allow", name="Allow", kind="allow_once"),
            PermissionOption(option_id="reject", name="Reject", kind="reject_once"),
        ]
        start = start_tool_call(
            event.request_id, title, kind=tool_kind(event.tool_name), status="pending"
        )
        choice = Choice(None, options, {"allow": True, "reject": False})
        return Ask(event.request_id, start, [choice], permission=True)
    choices = []
    for question in event.questions:
        values = {str(i): value for i, value in enumerate(question.options or [])}
        options = [
            PermissionOption(option_id=key, name=as_text(value), kind="allow_once")
            for key, value in values.items()
        ]
        if not options:  # ACP has no free-text answer: the question can only be skipped
            options = [PermissionOption(option_id="skip", name="Skip", kind="reject_once")]
        choices.append(Choice(question.id, options, values))
    title = " / ".join(q.text for q in event.questions) or "Question"
    start = start_tool_call(event.request_id, title, kind="think", status="pending")
    return Ask(event.request_id, start, choices, permission=False)


def answer_for(ask: Ask, selected: Sequence[str]) -> Answer:
    """The gateway answer for the option the editor picked for each of `ask.choices`. An option
    that answers nothing (a question's "Skip") dismisses the request."""
    picked = [
        choice.values.get(option) for choice, option in zip(ask.choices, selected, strict=True)
    ]
    if ask.permission:
        approved = picked[0] is True
        summary = "Allowed" if approved else "Rejected"
        update = update_tool_call(
            ask.request_id,
            status="completed" if approved else "failed",
            content=[tool_content(text_block(summary))],
        )
        return Answer(None, approved, False, update)
    if any(value is None for value in picked):
        update = update_tool_call(
            ask.request_id, status="failed", content=[tool_content(text_block("Dismissed"))]
        )
        return Answer(None, None, True, update)
    answers = {choice.question_id: value for choice, value in zip(ask.choices, picked, strict=True)}
    summary = ", ".join(as_text(value) for value in answers.values())
    update = update_tool_call(
        ask.request_id, status="completed", content=[tool_content(text_block(summary))]
    )
    return Answer(answers, None, False, update)


def cancelled_update(ask: Ask) -> ToolCallProgress:
    """The request's tool call once the editor cancelled the prompt turn while asked."""
    return update_tool_call(
        ask.request_id, status="failed", content=[tool_content(text_block("Cancelled"))]
    )
