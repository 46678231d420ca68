"""`WORKERS` > 1 under one supervisor (issue 16 item 4), with real gateway processes in dev mode
(`dev --no-stack --no-reload`) against the session's local stack, and `dev --valkey --instances
N` (item 7) as a real process tree.

The supervisor's PIDs come from its own log (`supervisor: started worker-N (pid P)`), so every
"no process left" below is checked by PID, never by name.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from diminuendo.local.ports import consecutive_free_ports, free_port
from diminuendo.supervisor import Child, RestartBudget, Supervisor
from tests.conftest import Gateway, Stack, gateway_argv, gateway_process, stop_process

GRACEFUL_S = 2.0
# The supervisor's bound: DRAIN_DELAY (0) + GRACEFUL_SHUTDOWN_TIMEOUT + its 5 s margin.
STOP_BOUND_S = GRACEFUL_S + 5.0
SLACK_S = 4.0  # a loaded 2-core machine: interpreter exit, joins
STARTED = re.compile(r"supervisor: started (worker-\d+) \(pid (\d+)\)")


def worker_pids(gw: Gateway) -> dict[str, list[int]]:
    """Every PID the supervisor started, per worker, oldest first."""
    pids: dict[str, list[int]] = {}
    for name, pid in STARTED.findall(gw.output()):
        pids.setdefault(name, []).append(int(pid))
    return pids


def all_pids(gw: Gateway) -> list[int]:
    return [pid for pids in worker_pids(gw).values() for pid in pids]


def alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie counts as gone: it has exited)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def instance_ids(gw: Gateway, probes: int = 24) -> set[str]:
    """The `instanceId`s answering `/health`, one fresh TCP connection per probe (SO_REUSEPORT
    spreads connections by their address, so each may land on another worker)."""
    ids = set()
    for _ in range(probes):
        with httpx.Client(timeout=5) as http:
            ids.add(http.get(f"{gw.url}/health").json()["instanceId"])
    return ids


@pytest.fixture
def workers(stack: Stack, tmp_path: Path) -> Iterator[Gateway]:
    gw = gateway_process(stack, tmp_path, WORKERS="2", GRACEFUL_SHUTDOWN_TIMEOUT=str(GRACEFUL_S))
    gw.start()
    yield gw
    if gw.proc is not None and gw.proc.poll() is None:
        stop_process(gw.proc, signal.SIGKILL)
    for pid in all_pids(gw):
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_sigterm_right_after_ready_stops_every_worker_within_the_bound(workers: Gateway) -> None:
    """SIGTERM as soon as the first worker answers /health (the other may still be starting).

    Before the fix (Sanic's worker manager): still running 40 s after SIGTERM, with a worker left
    behind (sanic#2997); this test failed with `TimeoutExpired`. After: exit 0 in about 0.5 s."""
    assert workers.proc is not None
    started = time.monotonic()
    workers.proc.send_signal(signal.SIGTERM)
    assert workers.proc.wait(STOP_BOUND_S + SLACK_S) == 0
    elapsed = time.monotonic() - started
    pids = worker_pids(workers)
    assert sorted(pids) == ["worker-1", "worker-2"], workers.output()[-2000:]
    assert not [pid for pid in all_pids(workers) if alive(pid)]
    assert elapsed < STOP_BOUND_S + SLACK_S


def test_workers_share_the_port_and_a_dead_worker_is_restarted(workers: Gateway) -> None:
    wait_for(lambda: len(instance_ids(workers)) == 2, 30, "both workers answer on one port")
    before = instance_ids(workers)
    first = worker_pids(workers)["worker-1"][0]
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: len(worker_pids(workers)["worker-1"]) == 2, 10, "worker-1 restarted")
    assert "worker-1 exited -9; restart in 0.5 s" in workers.output()
    wait_for(lambda: len(instance_ids(workers) - before) == 1, 30, "the new worker answers")
    assert workers.proc is not None and workers.proc.poll() is None


def test_a_worker_that_ignores_sigterm_is_killed_at_the_bound(workers: Gateway) -> None:
    """A stopped (SIGSTOP) worker cannot drain: the supervisor waits its bound, then SIGKILLs it
    by PID and exits; nothing is left."""
    assert workers.proc is not None
    wait_for(lambda: len(instance_ids(workers)) == 2, 30, "both workers up")
    stuck = worker_pids(workers)["worker-2"][-1]
    os.kill(stuck, signal.SIGSTOP)
    started = time.monotonic()
    workers.proc.send_signal(signal.SIGTERM)
    assert workers.proc.wait(STOP_BOUND_S + SLACK_S) == 0
    assert time.monotonic() - started >= STOP_BOUND_S - 0.5
    assert f"worker-2 (pid {stuck}) still running, SIGKILL" in workers.output()
    assert not alive(stuck)


def test_workers_exit_when_the_supervisor_is_killed(workers: Gateway) -> None:
    """SIGKILL of the supervisor cannot be forwarded: the kernel's parent-death signal sends each
    worker SIGTERM, so none keeps serving the port unsupervised."""
    assert workers.proc is not None
    pids = all_pids(workers)
    workers.proc.kill()
    workers.proc.wait(5)
    wait_for(lambda: not [pid for pid in pids if alive(pid)], STOP_BOUND_S + SLACK_S, "exit")


# --- `diminuendo dev --valkey --instances N` (issue 16 item 7) -----------------------------------

VALKEY_LINE = re.compile(r"Valkey on redis://127\.0\.0\.1:(\d+)/0 \(pid (\d+)\)")
GATEWAY_LINE = re.compile(r"Diminuendo gateway (\d+) on (http://127\.0\.0\.1:\d+)")
ANY_STARTED = re.compile(r"supervisor: started ([\w-]+) \(pid (\d+)\)")


def valkey_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def test_dev_valkey_two_instances_come_up_and_stop_with_nothing_left(tmp_path: Path) -> None:
    port, _ = consecutive_free_ports(2)  # the instances take the first port and the next
    podium, ensemble, unison = (free_port() for _ in range(3))
    log = tmp_path / "dev.log"
    env = {**os.environ, "DATA_DIR": str(tmp_path), "GRACEFUL_SHUTDOWN_TIMEOUT": str(GRACEFUL_S)}
    argv = [sys.executable, "-m", "diminuendo", "dev", "--valkey", "--instances", "2"]
    argv += ["--no-reload", "--port", str(port), "--podium-port", str(podium)]
    argv += ["--ensemble-port", str(ensemble), "--unison-port", str(unison)]
    proc = subprocess.Popen(argv, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    pids: list[int] = []
    try:
        wait_for(lambda: len(GATEWAY_LINE.findall(log.read_text())) == 2, 30, "two gateways")
        output = log.read_text()
        valkey_port, valkey_pid = (int(x) for x in VALKEY_LINE.findall(output)[0])
        urls = [url for _, url in GATEWAY_LINE.findall(output)]
        assert urls == [f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"]

        def healthy() -> bool:
            try:
                return all(httpx.get(f"{u}/health", timeout=2).status_code == 200 for u in urls)
            except httpx.HTTPError:
                return False

        wait_for(healthy, 60, "both instances answer /health")
        ids = {httpx.get(f"{url}/health", timeout=5).json()["instanceId"] for url in urls}
        assert len(ids) == 2
        valkeys = [httpx.get(f"{u}/health", timeout=5).json()["dependencies"] for u in urls]
        assert [(v["valkey"]["ok"], v["valkey"]["mode"]) for v in valkeys] == [(True, "valkey")] * 2
        assert valkey_answers(valkey_port)
        pids = [valkey_pid, *(int(pid) for _, pid in ANY_STARTED.findall(log.read_text()))]
        assert len(pids) == 4  # Valkey, the stand-ins, two gateways
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(STOP_BOUND_S + SLACK_S + 5) == 0  # + Valkey's own stop
        assert time.monotonic() - started < STOP_BOUND_S + SLACK_S + 5
        assert not [pid for pid in pids if alive(pid)], log.read_text()[-2000:]
        assert not valkey_answers(valkey_port)
    finally:
        if proc.poll() is None:
            stop_process(proc, signal.SIGKILL)
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_dev_instances_without_valkey_is_refused(tmp_path: Path) -> None:
    """N gateways without a shared Valkey would be N islands: refused before anything starts."""
    done = subprocess.run(
        [sys.executable, "-m", "diminuendo", "dev", "--instances", "2", "--no-reload"],
        env={**os.environ, "DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--instances" in done.stderr and "--valkey" in done.stderr
    assert "Diminuendo gateway" not in done.stdout


def test_dev_instances_on_a_port_taken_by_another_program_fail_once(tmp_path: Path) -> None:
    """`dev --valkey --instances 2` whose second port another program holds: one line naming it,
    exit 1, no gateway started and the bundled Valkey stopped. Before the fix: gateway 2 died on
    Sanic's bind traceback and was restarted five times while gateway 1 served."""
    port, second = consecutive_free_ports(2)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", second))
        squatter.listen()
        argv = ["dev", "--valkey", "--instances", "2", "--no-reload", "--port", str(port)]
        argv += [f"--{name}-port={free_port()}" for name in ("podium", "ensemble", "unison")]
        done = subprocess.run(
            [sys.executable, "-m", "diminuendo", *argv],
            env={**os.environ, "DATA_DIR": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1, done.stderr
    assert f"error: 127.0.0.1:{second}: Address already in use" in done.stderr
    assert "supervisor: started" not in done.stderr and "Traceback" not in done.stderr
    valkey_port = int(VALKEY_LINE.findall(done.stdout)[0][0])
    assert not valkey_answers(valkey_port)


def test_workers_on_a_port_taken_by_another_program_fail_once(stack: Stack, tmp_path: Path) -> None:
    """The supervisor holds the port before any worker starts: a taken port is one clear error
    (exit 1), not a restart loop of workers that cannot bind."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        gw = gateway_process(stack, tmp_path, WORKERS="2", PORT=str(port))
        done = subprocess.run(
            gateway_argv(gw.env), env=gw.env, capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 1
    assert f"127.0.0.1:{port}" in done.stderr and "in use" in done.stderr
    assert "supervisor: started" not in done.stderr


def exit_with(code: int) -> int:
    """A child that dies at once (module level: spawned children import it by name)."""
    return code


def test_a_crash_loop_ends_the_supervisor_with_status_1() -> None:
    """A child that keeps dying is restarted within its budget, then the supervisor gives up and
    exits 1 instead of spinning (real spawned processes, a tiny budget)."""
    lines: list[str] = []
    supervisor = Supervisor(
        [Child("crasher", exit_with, (3,))],
        stop_timeout_s=5,
        budget=lambda: RestartBudget(limit=2, window_s=60, initial_s=0.05),
        log=lines.append,
    )
    started = time.monotonic()
    assert supervisor.run() == 1
    assert time.monotonic() - started < 30
    assert sum(line.startswith("supervisor: started crasher") for line in lines) == 3
    assert lines[-1] == "supervisor: crasher exited 3; restarted 2 times in 60 s, giving up"
