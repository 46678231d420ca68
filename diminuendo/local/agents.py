"""The agent types local Podium ships (UPSTREAMS.md §4).

Each agent is an async function of its `Turn`. The runtime wraps it with `stream_start` /
`stream_end` and the transcript, so an agent only streams text and emits its own events.
"""

import asyncio
import json as jsonlib
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx

from diminuendo.local.pacer import Beat
from diminuendo.local.runtime import Agent, Turn
from diminuendo.local.textutil import count_tokens, word_pieces

DEMO_FILE = "demo/notes.md"
_MAX_DELAY_MS = 10_000
_MAX_PAD = 64 * 1024
_MAX_DELTAS = 100_000


def _bounded_int(value: Any, name: str, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= high:
        raise ValueError(f"{name} must be a number between 0 and {high}")
    return int(value)


def _delay_s(turn: Turn, default_ms: int = 5) -> float:
    return _bounded_int(turn.config.get("delay_ms", default_ms), "delay_ms", _MAX_DELAY_MS) / 1000


async def echo(turn: Turn) -> None:
    """Streams the user's text back word by word."""
    delay = _delay_s(turn)
    for index, piece in enumerate(word_pieces(turn.text)):
        if index:
            await asyncio.sleep(delay)
        turn.say(piece)


def _slow_params(turn: Turn) -> tuple[int, float, int, bool]:
    """Instance config sets the defaults; a JSON-object message overrides them for one turn.
    `pad` adds that many characters to each piece (backpressure tests); `stamp` embeds the emit
    time in Unix ms (`d7@1764171234567 `) so a benchmark can measure end-to-end latency."""
    params = {
        "deltas": turn.config.get("deltas", 50),
        "interval_ms": turn.config.get("interval_ms", 20),
        "pad": turn.config.get("pad", 0),
        "stamp": turn.config.get("stamp", False),
    }
    try:
        override = jsonlib.loads(turn.text)
    except ValueError:
        override = None
    if isinstance(override, dict):
        params.update({k: v for k, v in override.items() if k in params})
    deltas = _bounded_int(params["deltas"], "deltas", _MAX_DELTAS)
    interval_ms = _bounded_int(params["interval_ms"], "interval_ms", _MAX_DELAY_MS)
    pad = _bounded_int(params["pad"], "pad", _MAX_PAD)
    return deltas, interval_ms / 1000, pad, params["stamp"] is True


async def slow(turn: Turn) -> None:
    """Emits numbered deltas (`d1 `, `d2 `…) at a fixed rate, for load and fault tests.

    Delta i is due `i - 1` intervals after the first, on the shared `Pacer` (one loop timer for
    every slow turn: the stream benchmark runs thousands of them beside the gateway on the same
    cores). Due times are absolute, so a late delta does not push back the ones after it: the
    offered rate is the configured one however busy the machine is."""
    deltas, interval, pad, stamp = _slow_params(turn)
    padding = "." * pad
    pacer = turn.runtime.services.pacer
    finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    beat: Beat | None = None
    started = pacer.time()

    def emit(index: int) -> None:
        nonlocal beat
        try:
            for steer in turn.take_steers():
                turn.say(f"[steer: {steer}] ")
            mark = f"@{int(time.time() * 1000)}" if stamp else ""
            turn.say(f"d{index}{mark}{padding} ")
        except Exception as exc:
            if not finished.done():
                finished.set_exception(exc)
            return
        if index < deltas:
            beat = pacer.call_at(started + index * interval, emit, index + 1)
        elif not finished.done():
            finished.set_result(None)

    if deltas == 0:
        return
    emit(1)
    try:
        await finished
    finally:
        if beat is not None:
            beat.cancel()


async def _start_tool(turn: Turn, tool_name: str, args: dict[str, Any], pause: float) -> str:
    """Announce a tool call with its arguments streamed in a few deltas, as real models do."""
    tool_call_id = f"call_{secrets.token_hex(6)}"
    turn.emit("tool.call_start", tool_call_id=tool_call_id, tool_name=tool_name)
    encoded = jsonlib.dumps(args)
    size = math.ceil(len(encoded) / 4)
    for start in range(0, len(encoded), size):
        await asyncio.sleep(pause)
        turn.emit(
            "tool.call_delta", tool_call_id=tool_call_id, args_delta=encoded[start : start + size]
        )
    turn.emit("tool.call", tool_call_id=tool_call_id, tool_name=tool_name, args=args)
    return tool_call_id


def _finish_tool(
    turn: Turn, tool_call_id: str, tool_name: str, args: dict[str, Any], output: str
) -> None:
    turn.emit("tool.result", tool_call_id=tool_call_id, output=output, is_error=False)
    turn.record_tool_call(tool_call_id, tool_name, args, output)


# Deterministic triggers for the demo agent, so every client surface can be tested against a
# runtime error and a permission request (the edge adapters' tests use them).
DEMO_FAIL = "/fail"
DEMO_PERMISSION = "/permission"


async def _demo_permission(turn: Turn) -> None:
    """Ask to run a destructive command and report whether it was allowed."""
    command = f"rm {DEMO_FILE}"
    resolution = await turn.request_permission("bash", f"Run `{command}` in the workspace")
    if resolution["approved"] and not resolution["dismissed"]:
        text = f"Permission granted: I would now run `{command}`."
    else:
        text = f"Permission refused: I did not run `{command}`."
    for piece in word_pieces(text):
        turn.say(piece)


async def demo(turn: Turn) -> None:
    """A scripted turn touching every event family, pausing on a question until answered.
    The text `/fail` makes it fail (an `error` event); `/permission` asks for a permission.
    The script is `_DEMO_PLAN`: one function per step of the plan the turn announces."""
    command = turn.text.strip()
    if command == DEMO_FAIL:
        raise RuntimeError("the demo agent failed on request")
    if command == DEMO_PERMISSION:
        await _demo_permission(turn)
        return
    run = _DemoRun(turn, _delay_s(turn))
    if turn.first:
        await run.provision_sandbox()
    await run.think(_DEMO_THOUGHTS)
    turn.emit("plan.created", steps=[{"id": step, "title": title} for step, title, _ in _DEMO_PLAN])
    for step_id, _title, act in _DEMO_PLAN:
        turn.emit("plan.step_started", step_id=step_id)
        await act(run)
        turn.emit("plan.step_completed", step_id=step_id)
    await run.conclude()


class _DemoRun:
    """One demo turn: the steps of its script and what they learn for the closing answer."""

    def __init__(self, turn: Turn, pause: float) -> None:
        self.turn = turn
        self.pause = pause
        self.iteration = 0  # of DEMO_FILE, once written
        self.choice = ""  # the answer to the closing question, as the answer text says it

    async def provision_sandbox(self) -> None:
        turn = self.turn
        sandbox_id = f"sbx_{turn.runtime.instance_id.removeprefix('inst_')[:8]}"
        turn.emit("sandbox.provisioning", sandbox_id=sandbox_id)
        await asyncio.sleep(self.pause)
        turn.emit("sandbox.init", sandbox_id=sandbox_id, workspace="/workspace")

    async def think(self, thoughts: tuple[str, ...]) -> None:
        self.turn.emit("thinking.start")
        for thought in thoughts:
            await asyncio.sleep(self.pause)
            self.turn.emit("thinking.progress", text=thought)
        self.turn.emit("thinking.complete")

    async def look_around(self) -> None:
        """List the workspace in a terminal, as a `bash` tool call."""
        turn = self.turn
        args: dict[str, Any] = {"command": "ls -R /workspace"}
        call_id = await _start_tool(turn, "bash", args, self.pause)
        listing = "\n".join(entry["path"] for entry in turn.list_files()) or "(empty)"
        terminal_id = f"term_{call_id.removeprefix('call_')}"
        turn.emit("terminal.stream", terminal_id=terminal_id, data=f"$ {args['command']}\n")
        await asyncio.sleep(self.pause)
        turn.emit("terminal.stream", terminal_id=terminal_id, data=listing + "\n")
        turn.emit("terminal.complete", terminal_id=terminal_id, exit_code=0)
        _finish_tool(turn, call_id, "bash", args, listing)

    async def update_notes(self) -> None:
        """Append a line naming this turn to DEMO_FILE, as an `append_file` tool call."""
        turn = self.turn
        line = f"- {turn.turn_id}: {turn.text}\n"
        args = {"path": DEMO_FILE, "content": line}
        call_id = await _start_tool(turn, "append_file", args, self.pause)
        previous = turn.read_file(DEMO_FILE) or b"# Demo notes\n"
        self.iteration = turn.write_file(DEMO_FILE, previous + line.encode())["iteration"]
        turn.emit("file.changed", path=DEMO_FILE, iteration=self.iteration)
        result = f"{DEMO_FILE} is at iteration {self.iteration}"
        _finish_tool(turn, call_id, "append_file", args, result)

    async def check_with_user(self) -> None:
        """Ask whether to keep the notes, and wait for the answer."""
        resolution = await self.turn.ask([_DEMO_QUESTION])
        if resolution["dismissed"]:
            self.choice = "you dismissed my question"
        else:
            self.choice = f"you answered {resolution['answers'].get('q1', 'nothing')!s}"

    async def conclude(self) -> None:
        """The closing answer (with any steering taken along the way) and the turn's usage."""
        turn = self.turn
        text = (
            f"Done: I looked around, updated {DEMO_FILE} (iteration {self.iteration}) "
            f"and {self.choice}."
        )
        steers = turn.take_steers()
        if steers:
            text += f" Noted along the way: {'; '.join(steers)}."
        for piece in word_pieces(text):
            await asyncio.sleep(self.pause)
            turn.say(piece)
        turn.usage = {"input_tokens": count_tokens(turn.text), "output_tokens": count_tokens(text)}
        turn.emit("usage", **turn.usage, cost=round(turn.usage["output_tokens"] * 0.00001, 6))


_DEMO_THOUGHTS = ("Reading the request.", " Three small steps will do.")
_DEMO_QUESTION = {"id": "q1", "text": "Keep the notes file?", "options": ["keep", "discard"]}
# The demo's plan: step id, title, and what the step does.
_DEMO_PLAN: tuple[tuple[str, str, Callable[[_DemoRun], Awaitable[None]]], ...] = (
    ("s1", "Look around the workspace", _DemoRun.look_around),
    ("s2", f"Update {DEMO_FILE}", _DemoRun.update_notes),
    ("s3", "Check with you", _DemoRun.check_with_user),
)


async def _sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    event, data = "message", []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield event, jsonlib.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith("event:"):
            event = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").lstrip())


async def chat(turn: Turn) -> None:
    """Answers through Ensemble (streaming) with the instance transcript as the conversation."""
    services = turn.runtime.services
    api_key = turn.runtime.secrets.get("ensemble_api_key")
    if not api_key:  # Podium holds no key of its own for an agent's inference
        raise RuntimeError("the instance has no ensemble_api_key secret")
    messages = [{"role": m["role"], "content": m["text"]} for m in turn.transcript()]
    call = {
        "jsonrpc": "2.0",
        "id": turn.turn_id,
        "method": "inference/generate",
        "params": {"model": turn.config.get("model", "mock"), "messages": messages, "stream": True},
    }
    headers = {"Authorization": f"Bearer {api_key}"}
    timeout = httpx.Timeout(60.0, connect=2.0)
    async with (
        httpx.AsyncClient(timeout=timeout) as client,
        client.stream(
            "POST", f"{services.ensemble_url}/rpc", json=call, headers=headers
        ) as response,
    ):
        if response.status_code != 200:
            raise RuntimeError(f"ensemble answered HTTP {response.status_code}")
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            error = jsonlib.loads(await response.aread()).get("error") or {}
            raise RuntimeError(f"ensemble refused: {error.get('message', 'no stream')}")
        async for event, data in _sse_events(response):
            if event == "delta":
                turn.say(data.get("text", ""))
            elif event == "completed":
                usage = data.get("usage") or {}
                turn.usage = {
                    "input_tokens": usage.get("inputTokens", 0),
                    "output_tokens": usage.get("outputTokens", 0),
                }
            elif event in ("failed", "cancelled"):
                raise RuntimeError(f"ensemble generation {event}: {data.get('message', '')}")


AGENTS: dict[str, Agent] = {"echo": echo, "demo": demo, "slow": slow, "chat": chat}
