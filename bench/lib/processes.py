"""Server processes and one benchmark run.

Every server started here binds 127.0.0.1, runs in its own process group, dies with the
benchmark (PR_SET_PDEATHSIG) and is stopped in a `finally` (SIGTERM to the group, then SIGKILL).
A benchmark is also bounded in time: `Bench` raises `BenchTimeout` from a SIGALRM, which unwinds
through those `finally`s.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from diminuendo.local.ports import free_port

from .host import cpu_plan, describe_plan
from .options import BenchOptions
from .paths import BENCH_DIR, ROOT

LOCAL_KEY = "local-dev-key"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0

# Gateway settings every benchmark uses: quiet logs, and a per-connection message rate limit
# that a benchmark client sending requests back to back does not trip (the limiter still runs).
BENCH_GATEWAY_ENV = {
    "LOG_LEVEL": "warning",
    "LOG_FORMAT": "json",
    "WS_RATE_LIMIT": "1000000/10s",
    # Every benchmark client is the one dev-mode tenant, so its quota must not be the limit
    # (PROTOCOL §13's per-tenant default of 1,000 is below the 2,000-5,000 sessions measured).
    "MAX_ACTIVE_SESSIONS_PER_TENANT": "1000000",
}


class BenchTimeout(Exception):
    """The benchmark ran past its time bound."""


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the benchmark dies, however it dies."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int | None:
        """SIGTERM to the process group, SIGKILL after STOP_TIMEOUT_S."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(STOP_TIMEOUT_S)
        else:  # the leader is gone; make sure nothing of its group lingers
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.returncode

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def spawn(name: str, argv: list[str], env: dict[str, str], log: Path) -> Server:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(log.parent),
            start_new_session=True,
            preexec_fn=_die_with_parent,  # the benchmark is single-threaded when it spawns
        )
    return Server(name, proc, log)


def wait_http(url: str, server: Server, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(
                f"{server.name} exited with {server.proc.returncode}:\n{server.tail()}"
            )
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{server.name}: {url} not up within {timeout}s:\n{server.tail()}")


@dataclass
class Stack:
    server: Server
    podium_port: int
    ensemble_port: int
    unison_port: int

    def gateway_env(self) -> dict[str, str]:
        return {
            "PODIUM_URL": f"http://127.0.0.1:{self.podium_port}",
            "ENSEMBLE_URL": f"http://127.0.0.1:{self.ensemble_port}",
            "UNISON_URL": f"http://127.0.0.1:{self.unison_port}",
            "PODIUM_API_KEY": LOCAL_KEY,
            "ENSEMBLE_API_KEY": LOCAL_KEY,
            "UNISON_API_KEY": LOCAL_KEY,
        }


@dataclass
class Gateway:
    server: Server
    port: int

    @property
    def pid(self) -> int:
        return self.server.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Bench:
    """One benchmark run: its work directory, its servers (always stopped) and its deadline."""

    def __init__(self, name: str, options: BenchOptions) -> None:
        self.name = name
        self.options = options
        self.servers: list[Server] = []
        self.work = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        self.allowed_cpus = sorted(os.sched_getaffinity(0))
        self.gateway_cpus: list[int] = []  # set by --pin (`pin`)
        # What `pin` did, as printed; unpinned until `--pin` is applied in __enter__.
        self.pinning = "" if options.pin else describe_plan([], self.allowed_cpus)

    def __enter__(self) -> Bench:
        timeout = self.options.timeout
        if timeout:

            def expired(signum: int, frame: Any) -> None:
                raise BenchTimeout(f"{self.name}: over its {timeout}s bound")

            signal.signal(signal.SIGALRM, expired)
            signal.alarm(timeout)

        def terminated(signum: int, frame: Any) -> None:
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, terminated)
        if self.options.pin:
            self.pin(1)
        return self

    @property
    def gateway_cpu(self) -> int | None:
        """The first gateway's CPU, None when not pinned."""
        return self.gateway_cpus[0] if self.gateway_cpus else None

    def pin(self, gateways: int) -> str:
        """With `--pin`, a CPU for each of `gateways` gateways started from now on and this
        process (and what it starts from now on: the local stack, Valkey, wrk, py-spy) on the
        others (`host.cpu_plan`); prints the plan and returns it. Without `--pin`, nothing."""
        if not self.options.pin:
            return self.pinning
        self.gateway_cpus, rest = cpu_plan(self.allowed_cpus, gateways)
        os.sched_setaffinity(0, rest)
        plan = describe_plan(self.gateway_cpus, rest)
        if plan != self.pinning:  # printed once per change
            print(f"[{self.name}] {plan}", file=sys.stderr)
        self.pinning = plan
        return plan

    def __exit__(self, *exc: Any) -> None:
        signal.alarm(0)
        self.stop_all()
        if self.options.keep_logs:
            print(f"[{self.name}] logs kept in {self.work}", file=sys.stderr)
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    def stop_all(self) -> None:
        while self.servers:
            self.servers.pop().stop()

    def stop(self, server: Server) -> None:
        if server in self.servers:
            self.servers.remove(server)
        server.stop()

    def spawn(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        *,
        under_test: bool = False,
        instance: int = 0,
    ) -> Server:
        """Start a server; with `--pin`, the one `under_test` gets the core of gateway
        `instance` and any other (the local stack) inherits the load generator's."""
        server = spawn(name, argv, env, self.work / f"{name}.log")
        self.servers.append(server)
        if under_test and self.gateway_cpus:
            os.sched_setaffinity(server.pid, {self.gateway_cpus[instance % len(self.gateway_cpus)]})
        return server

    def start_stack(self) -> Stack:
        ports = free_port(), free_port(), free_port()
        data = self.work / "stack"
        data.mkdir(exist_ok=True)
        argv = [sys.executable, "-m", "diminuendo", "local-stack"]
        argv += ["--podium-port", str(ports[0]), "--ensemble-port", str(ports[1])]
        argv += ["--unison-port", str(ports[2])]
        env = {**os.environ, "DATA_DIR": str(data), "LOG_LEVEL": "warning"}
        env["PYTHONPATH"] = str(ROOT)
        server = self.spawn("local-stack", argv, env)
        wait_http(f"http://127.0.0.1:{ports[0]}/health", server)
        wait_http(f"http://127.0.0.1:{ports[1]}/api/v1/health", server)
        wait_http(f"http://127.0.0.1:{ports[2]}/api/v1/health", server)
        return Stack(server, *ports)

    def start_gateway(
        self,
        stack: Stack,
        *,
        name: str = "gateway",
        dev: bool = True,
        trace_memory: bool = False,
        instance: int = 0,
        **overrides: str,
    ) -> Gateway:
        """A gateway on the stack (`instance`: which of `pin`'s gateway CPUs it gets);
        `trace_memory` runs it under tools/serve_traced.py, else `--watchdog` under
        tools/serve_watchdog.py. `overrides` are settings (environment)."""
        port = free_port()
        data = self.work / name
        data.mkdir(exist_ok=True)
        env = {
            **os.environ,
            "DEV_MODE": "true" if dev else "false",
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "DATA_DIR": str(data),
            "PYTHONPATH": str(ROOT),
            **BENCH_GATEWAY_ENV,
            **stack.gateway_env(),
            **overrides,
        }
        command = ["dev", "--no-reload", "--no-stack"] if dev else ["serve"]
        argv = [sys.executable, "-m", "diminuendo", *command]
        if trace_memory:
            argv = [sys.executable, str(BENCH_DIR / "tools" / "serve_traced.py"), *command]
            env["BENCH_TRACE_OUT"] = str(self.work / f"{name}-memory.txt")
        elif self.options.watchdog:
            argv = [sys.executable, str(BENCH_DIR / "tools" / "serve_watchdog.py"), *command]
            env["BENCH_WATCHDOG_OUT"] = str(self.options.watchdog)
        server = self.spawn(name, argv, env, under_test=True, instance=instance)
        gateway = Gateway(server, port)
        wait_http(f"{gateway.url}/health", server)
        return gateway

    def start_bare(self) -> Gateway:
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        argv = [sys.executable, str(BENCH_DIR / "bare_sanic.py"), "--port", str(port)]
        server = self.spawn("bare-sanic", argv, env, under_test=True)
        bare = Gateway(server, port)
        wait_http(f"{bare.url}/health", server)
        return bare

    def wait_health_ok(self, gateway: Gateway, timeout: float = 15.0) -> dict[str, Any]:
        """Until every dependency probe has answered ok (the probe cache is warm)."""
        deadline = time.monotonic() + timeout
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            body = httpx.get(f"{gateway.url}/health", timeout=2).json()
            deps = body.get("dependencies", {})
            if deps and all(d.get("ok") for d in deps.values()):
                return body
            time.sleep(0.1)
        raise RuntimeError(f"gateway health never became ok: {body}")
