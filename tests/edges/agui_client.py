"""The AG-UI client side for the tests. The Python `ag-ui-protocol` SDK has no client (its HttpAgent
is TypeScript only), so this reads the SSE stream with httpx and validates every event with the
SDK's own discriminated `Event` union; `verify_run` checks the lifecycle rules the TypeScript
client's verifier enforces (one run, balanced messages, tool calls and steps, nothing after the
end)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
import pydantic
from ag_ui.core import BaseEvent, Event, EventType, RunAgentInput, UserMessage

EVENT = pydantic.TypeAdapter(Event)


@dataclass
class Run:
    events: list[BaseEvent] = field(default_factory=list)
    seqs: list[int | None] = field(default_factory=list)

    def types(self) -> list[str]:
        return [event.type.value for event in self.events]

    def of(self, kind: EventType) -> list[Any]:
        return [event for event in self.events if event.type == kind]

    @property
    def text(self) -> str:
        return "".join(e.delta for e in self.of(EventType.TEXT_MESSAGE_CONTENT))

    @property
    def last(self) -> Any:
        return self.events[-1]


def run_input(thread_id: str, run_id: str, text: str | None = None, **extra: Any) -> dict:
    messages = [UserMessage(id=f"u-{run_id}", content=text)] if text is not None else []
    body = RunAgentInput(thread_id=thread_id, run_id=run_id, messages=messages, **extra)
    return body.model_dump(mode="json", by_alias=True)


async def run(
    http: httpx.AsyncClient, path: str, body: dict, *, stop_after: int | None = None
) -> Run:
    """POST a RunAgentInput and read the run's events (all, or the first `stop_after`)."""
    result = Run()
    async with http.stream("POST", path, json=body, headers={"Accept": "text/event-stream"}) as r:
        if r.status_code != 200:
            await r.aread()
            raise httpx.HTTPStatusError(f"{r.status_code}: {r.text}", request=r.request, response=r)
        assert r.headers["content-type"].startswith("text/event-stream")
        seq: int | None = None
        async for line in r.aiter_lines():
            if line.startswith("id:"):
                seq = int(line[3:].strip())
            elif line.startswith("data:"):
                result.events.append(EVENT.validate_json(line[5:].strip()))
                result.seqs.append(seq)
            elif not line:
                seq = None
            if stop_after is not None and len(result.events) >= stop_after:
                break
    return result


def verify_run(run: Run) -> None:
    """The AG-UI lifecycle: RUN_STARTED first, one terminal event last, and every message,
    reasoning message, tool call and step opened in the run closed before it ends."""
    types = run.types()
    assert types[0] == "RUN_STARTED", types
    assert types[-1] in ("RUN_FINISHED", "RUN_ERROR"), types
    assert (
        types.count("RUN_STARTED") == 1
        and sum(t in ("RUN_FINISHED", "RUN_ERROR") for t in types) == 1
    ), types
    open_items: set[tuple[str, str]] = set()
    for event in run.events:
        kind = event.type.value
        if kind in ("TEXT_MESSAGE_START", "REASONING_MESSAGE_START"):
            open_items.add(("message", event.message_id))
        elif kind in ("TEXT_MESSAGE_CONTENT", "REASONING_MESSAGE_CONTENT"):
            assert ("message", event.message_id) in open_items, kind
        elif kind in ("TEXT_MESSAGE_END", "REASONING_MESSAGE_END"):
            open_items.remove(("message", event.message_id))
        elif kind == "TOOL_CALL_START":
            open_items.add(("tool", event.tool_call_id))
        elif kind == "TOOL_CALL_ARGS":
            assert ("tool", event.tool_call_id) in open_items, kind
        elif kind == "TOOL_CALL_END":
            open_items.remove(("tool", event.tool_call_id))
        elif kind == "STEP_STARTED":
            open_items.add(("step", event.step_name))
        elif kind == "STEP_FINISHED":
            open_items.remove(("step", event.step_name))
        elif kind in ("RUN_FINISHED", "RUN_ERROR"):
            assert not open_items, open_items
