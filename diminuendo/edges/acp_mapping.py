"""ACP projection: the gateway's session events → Agent Client Protocol payloads. Pure.

`diminuendo acp` (diminuendo/edges/acp.py) streams a turn with the project's client library and
hands every event to a `TurnProjection`, which answers the `session/update` payloads to send
(the SDK's own pydantic types). What needs I/O is returned as a request for the adapter to carry
out: a `FileDiff` (read two iterations of a file and send the diff). A question or permission
request is `acp_questions`' (an `Ask`: ask the editor with `session/request_permission`, then
answer the gateway with `answer_question`).

The mapping, one row per gateway event (docs/EDGES.md has the table for users):

* `text_delta` → `agent_message_chunk`; `thinking.progress` → `agent_thought_chunk`;
* `tool_call_start` → `tool_call` (pending); `tool_call` → `tool_call_update` (in progress, with
  its arguments as `rawInput`, a title naming the command or path, and the path as a location);
  `tool_result` / `tool_error` → `tool_call_update` (completed / failed, output as `rawOutput`);
* `terminal.stream` / `terminal.complete` → `tool_call_update` of the tool call that is running,
  its content the terminal output so far (ACP replaces a tool call's content on every update);
* `file_changed` → a diff on the running tool call (or a completed `edit` tool call of its own);
* `plan.created` / `plan.revised` / `plan.step_*` → `plan` (the whole plan every time, as ACP
  wants it);
* `question_requested` / `permission_requested` → a `tool_call` the editor can show, then one
  `session/request_permission` per question; the choice goes back as `answer_question`.

Everything else (session state, usage, sandbox events) has no ACP counterpart and is dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from acp.helpers import (
    plan_entry,
    start_tool_call,
    text_block,
    tool_content,
    tool_diff_content,
    update_agent_message_text,
    update_agent_thought_text,
    update_plan,
    update_tool_call,
    update_user_message_text,
)
from acp.schema import (
    AgentMessageChunk,
    AgentPlanUpdate,
    AgentThoughtChunk,
    EmbeddedResourceContentBlock,
    PlanEntry,
    ResourceContentBlock,
    StopReason,
    TextContentBlock,
    TextResourceContents,
    ToolCallLocation,
    ToolCallProgress,
    ToolCallStart,
    ToolKind,
    UserMessageChunk,
)

from diminuendo.client import events as ev
from diminuendo.edges.text import as_text

Update = (
    AgentMessageChunk
    | AgentThoughtChunk
    | UserMessageChunk
    | ToolCallStart
    | ToolCallProgress
    | AgentPlanUpdate
)

# Terminal output kept per tool call: its tail, since ACP resends the whole content each time.
TERMINAL_KEEP_CHARS = 64 * 1024

# Tool names the runtime uses → ACP's tool kinds (the editor's icon and grouping).
TOOL_KINDS: dict[str, ToolKind] = {
    "bash": "execute",
    "shell": "execute",
    "run_command": "execute",
    "read_file": "read",
    "list_files": "read",
    "write_file": "edit",
    "append_file": "edit",
    "edit_file": "edit",
    "delete_file": "delete",
    "move_file": "move",
    "search": "search",
    "grep": "search",
    "fetch": "fetch",
    "web_fetch": "fetch",
}

# A turn's `stopReason` → ACP's; anything else ended normally.
STOP_REASONS: dict[str, StopReason] = {
    "end_turn": "end_turn",
    "cancelled": "cancelled",
    "max_tokens": "max_tokens",
    "max_turn_requests": "max_turn_requests",
    "refusal": "refusal",
}


def tool_kind(tool_name: str) -> ToolKind:
    return TOOL_KINDS.get(tool_name, "other")


def stop_reason(reason: str) -> StopReason:
    return STOP_REASONS.get(reason, "end_turn")


class FileDiff(NamedTuple):
    """Read `path` at `iteration` and the one before, and send the diff on `tool_call_id` (a
    tool call of its own when None)."""

    tool_call_id: str | None
    path: str
    iteration: int | None


class _Tool:
    __slots__ = ("name", "terminal")

    def __init__(self, name: str) -> None:
        self.name = name
        self.terminal = ""


class TurnProjection:
    """The state one turn needs (running tool calls, their terminal output, the plan) and the
    event → updates table. `project(event)` never raises; an event with no row gives []."""

    def __init__(self) -> None:
        self._tools: dict[str, _Tool] = {}
        self._running: list[str] = []  # tool calls started and not finished, newest last
        self._plan: list[PlanEntry] = []
        self._plan_ids: list[str] = []

    def project(self, event: object) -> list[Update | FileDiff]:
        row = _ROWS.get(type(event))
        return row(self, event) if row is not None else []

    @property
    def _current(self) -> str | None:
        return self._running[-1] if self._running else None

    def _text(self, event: ev.TextDelta) -> list[Update | FileDiff]:
        return [update_agent_message_text(event.text)]

    def _thought(self, event: ev.ThinkingProgress) -> list[Update | FileDiff]:
        return [update_agent_thought_text(event.text)]

    def _tool_start(self, event: ev.ToolCallStart) -> list[Update | FileDiff]:
        self._tools[event.tool_call_id] = _Tool(event.tool_name)
        self._running.append(event.tool_call_id)
        return [
            start_tool_call(
                event.tool_call_id,
                event.tool_name,
                kind=tool_kind(event.tool_name),
                status="pending",
            )
        ]

    def _tool_call(self, event: ev.ToolCall) -> list[Update | FileDiff]:
        out: list[Update | FileDiff] = []
        if event.tool_call_id not in self._tools:  # no start seen (e.g. joined mid-call)
            out += self._tool_start(
                ev.ToolCallStart(tool_call_id=event.tool_call_id, tool_name=event.tool_name)
            )
        args = event.args if isinstance(event.args, dict) else {}
        subject = _subject(args)
        path = args.get("path")
        out.append(
            update_tool_call(
                event.tool_call_id,
                title=f"{event.tool_name} {subject}".strip(),
                status="in_progress",
                raw_input=event.args,
                locations=[ToolCallLocation(path=path)] if isinstance(path, str) else None,
            )
        )
        return out

    def _finish(self, tool_call_id: str, failed: bool, output: Any) -> list[Update | FileDiff]:
        tool = self._tools.pop(tool_call_id, None)
        if tool_call_id in self._running:
            self._running.remove(tool_call_id)
        content = None
        if tool is None or not tool.terminal:  # terminal output already is the content
            text = as_text(output)
            content = [tool_content(text_block(text))] if text else None
        return [
            update_tool_call(
                tool_call_id,
                status="failed" if failed else "completed",
                raw_output=output,
                content=content,
            )
        ]

    def _tool_result(self, event: ev.ToolResult) -> list[Update | FileDiff]:
        return self._finish(event.tool_call_id, event.is_error, event.output)

    def _tool_error(self, event: ev.ToolError) -> list[Update | FileDiff]:
        return self._finish(event.tool_call_id, True, event.message)

    def _terminal(self, text: str) -> list[Update | FileDiff]:
        current = self._current
        if current is None:
            return []
        tool = self._tools[current]
        tool.terminal = (tool.terminal + text)[-TERMINAL_KEEP_CHARS:]
        block = text_block(f"```\n{tool.terminal.rstrip(chr(10))}\n```")
        return [update_tool_call(current, content=[tool_content(block)])]

    def _terminal_stream(self, event: ev.TerminalStream) -> list[Update | FileDiff]:
        return self._terminal(event.data)

    def _terminal_complete(self, event: ev.TerminalComplete) -> list[Update | FileDiff]:
        return self._terminal(f"[exit {event.exit_code}]\n")

    def _file(self, event: ev.FileChanged) -> list[Update | FileDiff]:
        return [FileDiff(self._current, event.path, event.iteration)]

    def _set_plan(self, event: ev.PlanCreated | ev.PlanRevised) -> list[Update | FileDiff]:
        steps = [s for s in event.steps if isinstance(s, dict)]
        self._plan_ids = [str(s.get("id", i)) for i, s in enumerate(steps)]
        self._plan = [plan_entry(str(s.get("title", s.get("id", "")))) for s in steps]
        return [update_plan(self._plan)]

    def _step(self, step_id: str, status: str) -> list[Update | FileDiff]:
        if step_id not in self._plan_ids:
            return []
        index = self._plan_ids.index(step_id)
        self._plan[index] = self._plan[index].model_copy(update={"status": status})
        return [update_plan(self._plan)]

    def _step_started(self, event: ev.PlanStepStarted) -> list[Update | FileDiff]:
        return self._step(event.step_id, "in_progress")

    def _step_completed(self, event: ev.PlanStepCompleted) -> list[Update | FileDiff]:
        return self._step(event.step_id, "completed")


_ROWS: dict[type, Callable[[TurnProjection, Any], list[Update | FileDiff]]] = {
    ev.TextDelta: TurnProjection._text,
    ev.ThinkingProgress: TurnProjection._thought,
    ev.ToolCallStart: TurnProjection._tool_start,
    ev.ToolCall: TurnProjection._tool_call,
    ev.ToolResult: TurnProjection._tool_result,
    ev.ToolError: TurnProjection._tool_error,
    ev.TerminalStream: TurnProjection._terminal_stream,
    ev.TerminalComplete: TurnProjection._terminal_complete,
    ev.FileChanged: TurnProjection._file,
    ev.PlanCreated: TurnProjection._set_plan,
    ev.PlanRevised: TurnProjection._set_plan,
    ev.PlanStepStarted: TurnProjection._step_started,
    ev.PlanStepCompleted: TurnProjection._step_completed,
}


def diff_update(
    tool_call_id: str | None, path: str, old_text: str | None, new_text: str
) -> ToolCallStart | ToolCallProgress:
    """A file change as an ACP diff: on the running tool call, or as an edit of its own."""
    diff = tool_diff_content(path, new_text, old_text)
    location = [ToolCallLocation(path=path)]
    if tool_call_id is None:
        return start_tool_call(
            f"file:{path}",
            f"Edit {path}",
            kind="edit",
            status="completed",
            content=[diff],
            locations=location,
        )
    return update_tool_call(tool_call_id, content=[diff], locations=location)


def history_updates(messages: Sequence[ev.HistoryMessage]) -> list[Update]:
    """A transcript as `session/load` replays it: user and agent messages, tool calls done."""
    updates: list[Update] = []
    for message in messages:
        if message.role == "user":
            updates.append(update_user_message_text(message.text))
            continue
        for call in message.tool_calls or []:
            name = call.tool_name or "tool"
            output = as_text(call.output)
            updates.append(
                start_tool_call(
                    call.tool_call_id or f"{message.id}:{name}",
                    f"{name} {_subject(call.args if isinstance(call.args, dict) else {})}".strip(),
                    kind=tool_kind(name),
                    status="completed",
                    raw_input=call.args,
                    raw_output=call.output,
                    content=[tool_content(text_block(output))] if output else None,
                )
            )
        if message.text:
            updates.append(update_agent_message_text(message.text))
    return updates


class UnsupportedContent(ValueError):
    """A prompt block this gateway's agents cannot take (images, audio)."""


def prompt_text(blocks: Sequence[object]) -> str:
    """The turn's text from ACP prompt blocks: text as is, embedded text resources and resource
    links appended with their URI (the editor's @-mentions)."""
    parts: list[str] = []
    for block in blocks:
        if isinstance(block, TextContentBlock):
            parts.append(block.text)
        elif isinstance(block, EmbeddedResourceContentBlock):
            resource = block.resource
            if not isinstance(resource, TextResourceContents):
                raise UnsupportedContent("binary resources are not supported")
            parts.append(f"\n<{resource.uri}>\n{resource.text}\n</{resource.uri}>")
        elif isinstance(block, ResourceContentBlock):
            parts.append(f"<{block.uri}>")
        else:
            kind = getattr(block, "type", type(block).__name__)
            raise UnsupportedContent(f"{kind} content is not supported by this agent")
    return "\n".join(part for part in parts if part)


def _subject(args: dict[str, Any]) -> str:
    """What a tool call works on, for its title: its command or path."""
    for key in ("command", "path", "query", "url"):
        value = args.get(key)
        if isinstance(value, str):
            return value if len(value) <= 80 else value[:77] + "..."
    return ""
