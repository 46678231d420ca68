"""A SIGTERM that reaches a `WORKERS` > 1 gateway while its workers are still starting stops
them through the gateway's own shutdown (drain, exit 0) at once, not at the supervisor's
SIGKILL deadline.

Sanic 25.12 installs the loop's SIGTERM handler (`_setup_system_signals`) before its last
start-up steps; a SIGTERM that arrives while the loop is not running is noted by uvloop's
handler and never acted on. `slow_start/sitecustomize.py` holds each worker in that window for
`SLOW_START_S`, and says so on stderr, so the signal lands there every time.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diminuendo.supervisor import STOP_MARGIN_S, Child, Supervisor, report_ready
from tests.conftest import Stack, gateway_argv, gateway_process, stop_process
from tests.integration.test_fleet_ops import alive, wait_for, worker_pids

pytestmark = pytest.mark.timeout(90)

HOOK_DIR = Path(__file__).parent / "slow_start"
SLOW_START_S = 2.0
GRACEFUL_S = 3.0
# The supervisor SIGKILLs at DRAIN_DELAY (0) + GRACEFUL_SHUTDOWN_TIMEOUT + its margin.
KILL_AT_S = GRACEFUL_S + STOP_MARGIN_S
IN_WINDOW = re.compile(r"slow-start: pid (\d+) in the window")


def test_sigterm_while_workers_start_stops_them_by_themselves(stack: Stack, tmp_path: Path) -> None:
    """Both workers are past Sanic's signal set-up and not yet serving when the supervisor gets
    SIGTERM; each must then drain and exit by itself, long before the SIGKILL deadline.

    Before the fix: the supervisor exited 0 only 8.1 s after the signal (its 7 s deadline,
    then the kills), logging "worker-1 (pid …) still running, SIGKILL" and the same for
    worker-2, and neither worker logged "Worker complete": both had swallowed the SIGTERM,
    logged "Worker ready" and served until killed."""
    path = os.pathsep.join(p for p in (str(HOOK_DIR), os.environ.get("PYTHONPATH")) if p)
    gw = gateway_process(
        stack,
        tmp_path,
        WORKERS="2",
        GRACEFUL_SHUTDOWN_TIMEOUT=str(GRACEFUL_S),
        DIMINUENDO_TEST_SLOW_START_S=str(SLOW_START_S),
        PYTHONPATH=path,
    )
    log = tmp_path / "gateway.log"
    proc = subprocess.Popen(
        gateway_argv(gw.env), env=gw.env, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )
    gw.log = log
    try:
        wait_for(lambda: len(IN_WINDOW.findall(log.read_text())) == 2, 60, "both in the window")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(KILL_AT_S + 10)
        took = time.monotonic() - started
        output = log.read_text()
        assert code == 0, output[-3000:]
        assert "SIGKILL" not in output, output[-3000:]
        pids = [pid for pids in worker_pids(gw).values() for pid in pids]
        assert sorted(int(pid) for pid in IN_WINDOW.findall(output)) == sorted(pids)
        for pid in pids:
            assert f"Worker complete [{pid}]" in output, output[-3000:]
        # The rest of the held start-up, then an empty drain: far below the deadline.
        assert took < KILL_AT_S - 2, f"stopped in {took:.1f} s"
    finally:
        if proc.poll() is None:
            stop_process(proc, signal.SIGKILL)
        for pid in worker_pids(gw).get("worker-1", []) + worker_pids(gw).get("worker-2", []):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


# --- the supervisor's part, with plain spawned children (module level: spawn imports them) -----

DEAF_S = 1.0  # how long the children below ignore SIGTERM, as a worker in Sanic's window loses it


def ready_after_a_deaf_start() -> None:
    """Ignores SIGTERM while it starts, then reports ready and waits to be stopped."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(DEAF_S)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    report_ready()
    time.sleep(60)


def exits_during_a_deaf_start() -> None:
    """Ignores SIGTERM while it starts and dies before it is ready (a failed start-up)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(DEAF_S)
    sys.exit(3)


def waits_to_be_stopped() -> None:
    time.sleep(60)


def test_a_stop_holds_the_sigterm_of_a_child_until_it_reports_ready() -> None:
    """SIGTERM to the supervisor while its children start: the one that reports ready gets its
    SIGTERM once it has (a single signal), the one that never reports is signalled at once, and
    one that dies while held is not waited for.

    Before the fix (no `reports_ready`): the deaf child lost the one SIGTERM sent at the stop
    and was SIGKILLed at the deadline, 10 s later."""
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        if len(lines) == 3:  # every child started: stop now, while they are deaf
            os.kill(os.getpid(), signal.SIGTERM)

    supervisor = Supervisor(
        [
            Child("deaf", ready_after_a_deaf_start, reports_ready=True),
            Child("failing", exits_during_a_deaf_start, reports_ready=True),
            Child("plain", waits_to_be_stopped),
        ],
        stop_timeout_s=10,
        log=log,
    )
    started = time.monotonic()
    assert supervisor.run() == 0
    took = time.monotonic() - started
    assert not [line for line in lines if "SIGKILL" in line], lines
    assert DEAF_S <= took < DEAF_S + 5, f"stopped in {took:.1f} s"
