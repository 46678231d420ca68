"""N processes under one small supervisor: `WORKERS` > 1, and `dev --instances N`.

Sanic's multi-worker manager can hang on SIGTERM (sanic#2997): a SIGTERM while one worker is
ready and another still starting left the manager looping for more than 40 s and a worker
orphaned (docs/DECISIONS.md "Operations", with the figures). This module replaces it with what
an operator expects of a process supervisor, and nothing else:

- each child is a spawned process (`multiprocessing`'s `spawn`, which also works from the pyz)
  running one plain function; a gateway worker is a single-process Sanic server, so the shutdown
  path is the one the rest of the suite proves (drain, close 1001, exit);
- a child that dies is restarted after a backoff (0.5 s doubling to 8 s), at most
  `RESTART_LIMIT` times in `RESTART_WINDOW_S`; past that the supervisor stops everything and
  exits 1 (a crash loop must surface, not spin);
- SIGTERM/SIGINT are forwarded to every child by PID; the supervisor exits once all have exited,
  and after `stop_timeout_s` it SIGKILLs, by PID, whatever is left. A `reports_ready` child
  that has not yet called `report_ready()` gets its SIGTERM once it does (none if it exits
  first): a gateway worker can lose a SIGTERM while Sanic starts (docs/DECISIONS.md
  "Operations"), so the one signal waits until the worker can act on it;
- children run in their own process group (a terminal's Ctrl-C reaches only the supervisor,
  which forwards one SIGTERM) and get SIGTERM from the kernel if the supervisor itself dies
  (Linux `PR_SET_PDEATHSIG`), so no worker outlives it holding the port.

`RestartBudget` is the pure part (when to restart, and whether to give up), unit-tested in
`tests/unit/test_supervisor.py`; `Supervisor.run` is the thin loop around processes and signals.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

RESTART_LIMIT = 5
RESTART_WINDOW_S = 60.0
BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 8.0
# Beyond the children's own bound (drain delay + GRACEFUL_SHUTDOWN_TIMEOUT): time to run their
# stop listeners and for the interpreter to exit, before the supervisor kills.
STOP_MARGIN_S = 5.0
_PR_SET_PDEATHSIG = 1


@dataclass
class RestartBudget:
    """When a dead child may start again: after a delay that doubles with each restart in the
    window, and never more than `limit` times in `window_s` (None: give up)."""

    limit: int = RESTART_LIMIT
    window_s: float = RESTART_WINDOW_S
    initial_s: float = BACKOFF_INITIAL_S
    max_s: float = BACKOFF_MAX_S
    _restarts: deque[float] = field(default_factory=deque)

    def next_delay(self, now: float) -> float | None:
        """The delay before the next restart, counted as one; None when the budget is spent."""
        while self._restarts and now - self._restarts[0] > self.window_s:
            self._restarts.popleft()
        if len(self._restarts) >= self.limit:
            return None
        delay = min(self.max_s, self.initial_s * 2 ** len(self._restarts))
        self._restarts.append(now + delay)
        return delay


@dataclass(frozen=True)
class Child:
    """One supervised process: a name for the log and a picklable top-level function.
    `reports_ready`: the target calls `report_ready()` once a SIGTERM would stop it cleanly, and
    a stop holds its SIGTERM until then."""

    name: str
    target: Callable[..., Any]
    args: tuple[Any, ...] = ()
    reports_ready: bool = False


_ready_report: Connection | None = None  # in a child that reports ready, until it has


def report_ready() -> None:
    """In a supervised child: tell the supervisor a SIGTERM now stops this process cleanly. Once;
    a no-op outside a `reports_ready` child (one process, tests) and after the first call."""
    global _ready_report
    if _ready_report is not None:
        with contextlib.suppress(OSError):  # the supervisor is gone: nothing to tell
            _ready_report.send_bytes(b"ready")
        _ready_report.close()
        _ready_report = None


def child_entry(
    target: Callable[..., Any],
    args: tuple[Any, ...],
    parent_pid: int,
    ready: Connection | None = None,
) -> None:
    """What each child runs first: its own process group, death with its parent, the target."""
    global _ready_report
    _ready_report = ready
    os.setpgrp()
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # the supervisor died before the line above took effect
        return
    code = target(*args)
    sys.exit(code if isinstance(code, int) else 0)


class Supervisor:
    """Runs `children`, restarts the ones that die, stops them all on SIGTERM/SIGINT."""

    def __init__(
        self,
        children: Sequence[Child],
        *,
        stop_timeout_s: float,
        budget: Callable[[], RestartBudget] = RestartBudget,
        log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
    ) -> None:
        self._children = list(children)
        self._stop_timeout_s = stop_timeout_s
        self._budgets = {child.name: budget() for child in children}
        self._log = log
        self._context = multiprocessing.get_context("spawn")
        self._running: dict[str, BaseProcess] = {}
        self._ready: dict[str, Connection] = {}  # name → readable once that child reported ready
        self._pending: dict[str, float] = {}  # name → monotonic time of its restart

    def run(self) -> int:
        """Blocking. 0 after a requested stop, 1 when a child exhausted its restart budget."""
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_write, False)
        stop_signals = (signal.SIGTERM, signal.SIGINT)
        previous = {sig: signal.signal(sig, _note_signal) for sig in stop_signals}
        previous_fd = signal.set_wakeup_fd(wake_write)
        try:
            for child in self._children:
                self._start(child)
            status = self._watch(wake_read)
            self._stop_all()
            return status
        finally:
            signal.set_wakeup_fd(previous_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(wake_read)
            os.close(wake_write)

    def _start(self, child: Child) -> None:
        reader = writer = None
        if child.reports_ready:
            reader, writer = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=child_entry,
            args=(child.target, child.args, os.getpid(), writer),
            name=child.name,
        )
        process.start()
        if reader is not None and writer is not None:
            writer.close()  # the child's copy is the only one: its exit makes `reader` readable
            self._ready[child.name] = reader
        self._running[child.name] = process
        self._log(f"supervisor: started {child.name} (pid {process.pid})")

    def _watch(self, wake_read: int) -> int:
        by_name = {child.name: child for child in self._children}
        while True:
            now = time.monotonic()
            for name, at in list(self._pending.items()):
                if at <= now:
                    del self._pending[name]
                    self._start(by_name[name])
            timeout = max(0.0, min(self._pending.values()) - now) if self._pending else None
            sentinels = {process.sentinel: name for name, process in self._running.items()}
            ready = wait([wake_read, *sentinels], timeout)
            if wake_read in ready:
                received = os.read(wake_read, 512)
                if signal.SIGTERM in received or signal.SIGINT in received:
                    self._log("supervisor: stopping (signal)")
                    return 0
            for sentinel in ready:
                name = sentinels.get(sentinel)  # type: ignore[call-overload]
                if name is None:
                    continue
                process = self._running.pop(name)
                process.join()
                self._forget_ready(name)
                budget = self._budgets[name]
                delay = budget.next_delay(time.monotonic())
                if delay is None:
                    self._log(
                        f"supervisor: {name} exited {process.exitcode}; restarted "
                        f"{budget.limit} times in {budget.window_s:.0f} s, giving up"
                    )
                    return 1
                self._log(f"supervisor: {name} exited {process.exitcode}; restart in {delay} s")
                self._pending[name] = time.monotonic() + delay

    def _stop_all(self) -> None:
        """SIGTERM to every child by PID, to a child that reports ready once it has (or exited);
        SIGKILL, by PID, to those left at the deadline."""
        self._pending.clear()
        deadline = time.monotonic() + self._stop_timeout_s
        held = {}
        for name, process in self._running.items():
            ready = self._ready.get(name)
            if ready is None or ready.poll():
                _terminate(process)
            else:
                held[ready] = process
        while held and (left := deadline - time.monotonic()) > 0:
            for ready in wait(list(held), left):
                _terminate(held.pop(ready))  # type: ignore[call-overload]
        for name in list(self._ready):
            self._forget_ready(name)
        for process in self._running.values():
            process.join(max(0.0, deadline - time.monotonic()))
        for name, process in self._running.items():
            if process.exitcode is None and process.pid is not None:
                self._log(f"supervisor: {name} (pid {process.pid}) still running, SIGKILL")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                process.join()
        self._running.clear()

    def _forget_ready(self, name: str) -> None:
        ready = self._ready.pop(name, None)
        if ready is not None:
            ready.close()


def _terminate(process: BaseProcess) -> None:
    """SIGTERM by PID, to a process still running."""
    if process.pid is not None and process.exitcode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)


def _note_signal(signum: int, frame: object) -> None:
    """The wakeup fd carries the signal number to the loop; the handler has nothing to do."""
