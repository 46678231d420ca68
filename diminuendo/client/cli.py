"""`diminuendo client …`: talk to a gateway from a terminal, on top of `DiminuendoClient`.

Streams are printed as they arrive: text inline, everything else on its own tagged line, so a
turn reads like a transcript. Errors are one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import msgspec

from diminuendo.client.client import DiminuendoClient
from diminuendo.client.errors import ClientError
from diminuendo.client.events import (
    ApprovalResolved,
    Event,
    FileChanged,
    Gap,
    PermissionRequested,
    PlanCreated,
    PlanRevised,
    PlanStepCompleted,
    PlanStepStarted,
    QuestionRequested,
    TerminalComplete,
    TerminalStream,
    TextDelta,
    ThinkingComplete,
    ThinkingProgress,
    ThinkingStart,
    ToolCall,
    ToolError,
    ToolResult,
    TurnComplete,
    TurnError,
    UnknownEvent,
    UsageUpdate,
)
from diminuendo.client.tokens import TokenSource

DEFAULT_URL = "ws://127.0.0.1:8001/ws"
MAX_OUTPUT_CHARS = 2000  # tool output beyond this is cut: the transcript stays readable


class TurnFailed(ClientError):
    """The turn ended with `turn_error`."""


class Printer:
    """Renders events as a readable transcript. Text deltas (and thinking) are written inline
    and flushed at once; any other event first ends the open line. Thinking is dimmed on a
    terminal and prefixed either way, so it can never be mistaken for the answer."""

    def __init__(self, out: TextIO, color: bool) -> None:
        self.out = out
        self.color = color
        self.mid_line = False  # the last write left the cursor after text

    def _dim(self, text: str) -> str:
        return f"\x1b[2m{text}\x1b[0m" if self.color else text

    def inline(self, text: str, dim: bool = False) -> None:
        self.out.write(self._dim(text) if dim else text)
        self.out.flush()
        self.mid_line = not text.endswith("\n")

    def end_line(self) -> None:
        if self.mid_line:
            self.inline("\n")

    def line(self, tag: str, text: str, dim: bool = False) -> None:
        self.end_line()
        body = f"[{tag}] {text}"
        self.inline((self._dim(body) if dim else body) + "\n")

    def begin(self, text: str, dim: bool = False) -> None:
        """Start a new line with inline text (thinking, terminal output)."""
        self.end_line()
        self.inline(text, dim)

    def event(self, event: Event | Gap) -> None:
        """Print one event as `RENDERERS` says; those it leaves out (turn_started, sandbox.*,
        tool call deltas, other state changes) are bookkeeping the transcript does not need."""
        render = RENDERERS.get(type(event))
        if render is not None:
            render(self, event)


def _questions(printer: Printer, event: QuestionRequested) -> None:
    for question in event.questions:
        options = f" [{' / '.join(map(str, question.options))}]" if question.options else ""
        printer.line("question", question.text + options)


def _outcome(event: ApprovalResolved) -> str:
    if event.dismissed:
        return "dismissed"
    if event.answers:
        return json.dumps(event.answers)
    return "approved" if event.approved else "denied"


def _file_change(event: FileChanged) -> str:
    iteration = f" (iteration {event.iteration})" if event.iteration is not None else ""
    return f"{event.path} changed{iteration}"


def _usage(event: UsageUpdate) -> str:
    cost = f", cost {event.cost}" if event.cost is not None else ""
    return f"{event.input_tokens} in, {event.output_tokens} out{cost}"


# How each event reads in the transcript: text inline, everything else a tagged line.
RENDERERS: dict[type[Any], Callable[[Printer, Any], None]] = {
    TextDelta: lambda p, e: p.inline(e.text),
    ThinkingStart: lambda p, e: p.begin("[thinking] ", dim=True),
    ThinkingProgress: lambda p, e: p.inline(e.text, dim=True),
    ThinkingComplete: lambda p, e: p.end_line(),
    PlanCreated: lambda p, e: p.line("plan", _steps(e.steps)),
    PlanRevised: lambda p, e: p.line("plan revised", _steps(e.steps)),
    PlanStepStarted: lambda p, e: p.line("step", f"{e.step_id} started"),
    PlanStepCompleted: lambda p, e: p.line("step", f"{e.step_id} done"),
    ToolCall: lambda p, e: p.line(
        "tool", f"{e.tool_name} {json.dumps(e.args, ensure_ascii=False)}"
    ),
    ToolResult: lambda p, e: p.line("tool error" if e.is_error else "tool result", _clip(e.output)),
    ToolError: lambda p, e: p.line("tool error", e.message),
    TerminalStream: lambda p, e: p.begin(e.data),
    TerminalComplete: lambda p, e: p.line("terminal", f"exit {e.exit_code}"),
    FileChanged: lambda p, e: p.line("file", _file_change(e)),
    UsageUpdate: lambda p, e: p.line("usage", _usage(e)),
    QuestionRequested: _questions,
    PermissionRequested: lambda p, e: p.line("permission", f"{e.tool_name}: {e.description}"),
    ApprovalResolved: lambda p, e: p.line("resolved", _outcome(e)),
    TurnComplete: lambda p, e: p.line("done", e.stop_reason),
    TurnError: lambda p, e: p.line("turn error", f"{e.code}: {e.message}"),
    Gap: lambda p, e: p.line("gap", "missed events; `history` has the full transcript", dim=True),
}


def _steps(steps: list[Any]) -> str:
    return "  ".join(_step(i, s) for i, s in enumerate(steps, 1))


def _step(index: int, step: Any) -> str:
    title = step.get("title", step.get("id")) if isinstance(step, dict) else step
    return f"{index}. {title}"


def _clip(output: Any) -> str:
    text = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
    return text if len(text) <= MAX_OUTPUT_CHARS else text[:MAX_OUTPUT_CHARS] + "…"


async def _ask(prompt: str) -> str | None:
    """One line from stdin without blocking the event loop; None at end of input."""
    sys.stderr.write(prompt)
    sys.stderr.flush()
    line = await asyncio.to_thread(sys.stdin.readline)
    return line.strip() if line else None


async def _answer(
    client: DiminuendoClient, session_id: str, event: Event, mode: str, printer: Printer
) -> None:
    """Auto mode takes the first option of every question and approves permissions; prompt
    mode asks on stdin (an empty line takes the first option; end of input dismisses)."""
    if isinstance(event, QuestionRequested):
        answers: dict[str, Any] = {}
        for question in event.questions:
            first = question.options[0] if question.options else ""
            choice: Any = first
            if mode == "prompt":
                reply = await _ask(f"{question.text} > ")
                if reply is None:
                    await client.answer_question(session_id, event.request_id, dismissed=True)
                    return
                choice = reply or first
            else:
                printer.line("answer", str(choice))
            answers[question.id] = choice
        await client.answer_question(session_id, event.request_id, answers=answers)
    elif isinstance(event, PermissionRequested):
        approved = True
        if mode == "prompt":
            reply = await _ask(f"allow {event.tool_name}? [y/N] > ")
            approved = (reply or "").lower() in ("y", "yes")
        else:
            printer.line("answer", "approved")
        await client.answer_question(session_id, event.request_id, approved=approved)


async def _stream(
    client: DiminuendoClient, session_id: str, text: str, args: argparse.Namespace
) -> int:
    printer = Printer(sys.stdout, color=sys.stdout.isatty())
    async for event in client.stream_turn(session_id, text):
        printer.event(event)
        if isinstance(event, QuestionRequested | PermissionRequested):
            await _answer(client, session_id, event, args.answer, printer)
        elif isinstance(event, TurnError):
            raise TurnFailed(f"turn failed: {event.code}: {event.message}")
        elif isinstance(event, TurnComplete):
            return 0
    raise TurnFailed("the stream ended before the turn did (see `history`)")


async def cmd_list(client: DiminuendoClient, args: argparse.Namespace) -> int:
    for session in await client.list_sessions(include_archived=args.all):
        archived = " (archived)" if session.archived else ""
        line = f"{session.id}  {session.agent_type:<8} {session.status:<12} {session.name or ''}"
        print(line.rstrip() + archived)
    return 0


async def cmd_create(client: DiminuendoClient, args: argparse.Namespace) -> int:
    session = await client.create_session(args.agent, name=args.name)
    print(session.id)
    return 0


async def cmd_run(client: DiminuendoClient, args: argparse.Namespace) -> int:
    return await _stream(client, args.session_id, args.text, args)


async def cmd_chat(client: DiminuendoClient, args: argparse.Namespace) -> int:
    session = await client.create_session(args.agent, name=args.name)
    print(f"[session] {session.id} ({session.agent_type})", flush=True)
    return await _stream(client, session.id, args.text, args)


async def cmd_history(client: DiminuendoClient, args: argparse.Namespace) -> int:
    history = await client.get_history(args.session_id, limit=args.limit)
    for message in history.messages:
        for call in message.tool_calls or ():
            print(f"[tool] {call.tool_name} {json.dumps(call.args)} → {_clip(call.output)}")
        print(f"{message.role}: {message.text}")
    if history.has_more:
        print("[more] older messages exist: raise --limit")
    return 0


async def cmd_events(client: DiminuendoClient, args: argparse.Namespace) -> int:
    """One JSON object per line, as the server sent it: for `jq`, and for debugging replay."""
    page = await client.get_events(args.session_id, args.after, epoch=args.epoch, limit=args.limit)
    if page.gap:
        print(f"gap: events after {args.after} are gone; see `history`", file=sys.stderr)
    for event in page.events:
        if isinstance(event, UnknownEvent):
            data = event.data
        else:  # the typed event without the optional fields the server left out
            data = {k: v for k, v in msgspec.to_builtins(event).items() if v is not None}
        print(msgspec.json.encode(data).decode())
    if page.has_more and page.events:
        print(f"more: continue with --after {page.events[-1].seq}", file=sys.stderr)
    return 0


COMMANDS = {
    "list": cmd_list,
    "create": cmd_create,
    "run": cmd_run,
    "chat": cmd_chat,
    "history": cmd_history,
    "events": cmd_events,
}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diminuendo client", description="Talk to a Diminuendo gateway over its WebSocket."
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("DIMINUENDO_URL", DEFAULT_URL),
        help="gateway WebSocket URL (env DIMINUENDO_URL; default %(default)s)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("DIMINUENDO_TOKEN"),
        help="bearer token when the gateway requires one (env DIMINUENDO_TOKEN)",
    )
    parser.add_argument(
        "--token-file",
        default=os.environ.get("DIMINUENDO_TOKEN_FILE"),
        help="read the token from this file whenever the gateway needs a fresh one, so a "
        "refresher can replace it while a long command runs (env DIMINUENDO_TOKEN_FILE; "
        "wins over --token)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="sessions, newest activity first")
    listing.add_argument("--all", action="store_true", help="include archived sessions")
    create = commands.add_parser("create", help="create a session and print its id")
    create.add_argument("agent", help="agent type, e.g. echo, demo, slow")
    create.add_argument("--name")
    answer_mode = "auto" if not sys.stdin.isatty() else "prompt"
    for name, help_text in (
        ("run", "run a turn in a session and print its stream"),
        ("chat", "create a session, run one turn and print its stream"),
    ):
        command = commands.add_parser(name, help=help_text)
        if name == "run":
            command.add_argument("session_id")
        else:
            command.add_argument("agent")
            command.add_argument("--name")
        command.add_argument("text")
        command.add_argument(
            "--answer",
            choices=("auto", "prompt"),
            default=answer_mode,
            help="questions: take the first option, or ask on stdin (default: %(default)s)",
        )
    history = commands.add_parser("history", help="print a session's transcript")
    history.add_argument("session_id")
    history.add_argument("--limit", type=int, default=50)
    events = commands.add_parser("events", help="print retained events as JSON lines")
    events.add_argument("session_id")
    events.add_argument("--after", type=int, default=0, help="print events after this seq")
    events.add_argument("--epoch", help="the epoch `--after` belongs to")
    events.add_argument("--limit", type=int)
    return parser


def token_source(args: argparse.Namespace) -> TokenSource | None:
    """`--token-file` as a callable that reads the file at every (re)authentication and on
    `auth_expiring`; else the `--token` string."""
    if args.token_file:
        path = Path(args.token_file)
        return lambda: path.read_text().strip()
    return args.token


async def _main(args: argparse.Namespace) -> int:
    async with DiminuendoClient.connect(args.url, token=token_source(args)) as client:
        return await COMMANDS[args.command](client, args)


def main(argv: Sequence[str]) -> int:
    args = make_parser().parse_args(list(argv))
    try:
        return asyncio.run(_main(args))
    except ClientError as exc:
        sys.stdout.flush()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except TimeoutError:
        print("error: the gateway did not answer in time", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
