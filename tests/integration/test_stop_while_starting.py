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
import threading
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

DEAF_S = 1.5  # how long the children below ignore SIGTERM, as a worker in Sanic's window loses it


def ready_after_a_deaf_start(deaf: Path) -> None:
    """Ignores SIGTERM while it starts, then reports ready and waits to be stopped."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    deaf.touch()
    time.sleep(DEAF_S)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    report_ready()
    time.sleep(60)


def exits_during_a_deaf_start(deaf: Path) -> None:
    """Ignores SIGTERM while it starts and dies before it is ready (a failed start-up)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    deaf.touch()
    time.sleep(DEAF_S)
    sys.exit(3)


def waits_to_be_stopped() -> None:
    time.sleep(60)


def test_a_stop_holds_the_sigterm_of_a_child_until_it_reports_ready(tmp_path: Path) -> None:
    """SIGTERM to the supervisor while two of its children ignore it: the one that reports
    ready gets its SIGTERM once it has (a single signal), one that dies first is not waited
    for, and a child that does not report is signalled at once.

    Before the fix (every child signalled at once): "supervisor: deaf (pid …) still running,
    SIGKILL" at the 6 s deadline."""
    deaf = [tmp_path / "deaf", tmp_path / "failing"]

    def stop_once_deaf() -> None:
        wait_for(lambda: all(path.exists() for path in deaf), 30, "both children deaf")
        os.kill(os.getpid(), signal.SIGTERM)  # the supervisor's handler is in place by now

    lines: list[str] = []
    supervisor = Supervisor(
        [
            Child("deaf", ready_after_a_deaf_start, (deaf[0],), reports_ready=True),
            Child("failing", exits_during_a_deaf_start, (deaf[1],), reports_ready=True),
            Child("plain", waits_to_be_stopped),
        ],
        stop_timeout_s=6,
        log=lines.append,
    )
    stopper = threading.Thread(target=stop_once_deaf, daemon=True)
    stopper.start()
    assert supervisor.run() == 0
    stopper.join()
    assert "supervisor: stopping (signal)" in lines, lines
    assert not [line for line in lines if "SIGKILL" in line], lines
    assert not [line for line in lines if "exited" in line], lines  # no restart while held
