"""Shared fixtures: real processes on 127.0.0.1 — the local stack and gateways — and a small
WebSocket client that speaks the protocol for the tests.

Every process started here is bounded: it must be healthy within `START_TIMEOUT_S` and is
terminated (then killed) in teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from diminuendo.local.ports import free_port
from diminuendo.local.valkey import LocalValkey

FLEET_SWITCH = "DIMINUENDO_TEST_FLEET"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
RECV_TIMEOUT_S = 10.0
LOCAL_KEY = "local-dev-key"


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not healthy within {START_TIMEOUT_S}s:\n{log.read_text()[-4000:]}")


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    return stop_processes([proc], sig)[0]


def stop_processes(procs: list[subprocess.Popen[bytes]], sig: int = signal.SIGTERM) -> list[int]:
    """`sig` to every process still running, then wait for each (killed past the bound): N
    gateways that drain for `DRAIN_DELAY` stop in the time of one."""
    running = [proc for proc in procs if proc.poll() is None]
    for proc in running:
        proc.send_signal(sig)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for proc in running:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)
    return [proc.returncode for proc in procs]


@dataclass
class Stack:
    """The local stand-ins as real processes: one process for all three, or (`split`) Podium in
    its own process so a fault test can kill and restart just Podium."""

    data_dir: Path
    podium_port: int
    ensemble_port: int
    unison_port: int
    split: bool = False
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def podium_url(self) -> str:
        return f"http://127.0.0.1:{self.podium_port}"

    @property
    def ensemble_url(self) -> str:
        return f"http://127.0.0.1:{self.ensemble_port}"

    @property
    def unison_url(self) -> str:
        return f"http://127.0.0.1:{self.unison_port}"

    def _groups(self) -> dict[str, str]:
        if self.split:
            return {"podium": "podium", "rest": "ensemble,unison"}
        return {"all": "podium,ensemble,unison"}

    def start(self, group: str | None = None) -> None:
        health = {
            "podium": f"{self.podium_url}/health",
            "ensemble": f"{self.ensemble_url}/api/v1/health",
            "unison": f"{self.unison_url}/api/v1/health",
        }
        for name, services in self._groups().items():
            if group is not None and name != group:
                continue
            log = self.data_dir / f"local-stack-{name}-{self.podium_port}.log"
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "diminuendo",
                    "local-stack",
                    "--only",
                    services,
                    "--podium-port",
                    str(self.podium_port),
                    "--ensemble-port",
                    str(self.ensemble_port),
                    "--unison-port",
                    str(self.unison_port),
                ],
                env={**os.environ, "DATA_DIR": str(self.data_dir)},
                stdout=log.open("ab"),
                stderr=subprocess.STDOUT,
            )
            self.procs[name] = proc
            for service in services.split(","):
                _wait_http(health[service], proc, log)

    def stop(self, group: str | None = None, sig: int = signal.SIGTERM) -> None:
        for name, proc in list(self.procs.items()):
            if group is None or name == group:
                stop_process(proc, sig)
                del self.procs[name]

    def gateway_env(self) -> dict[str, str]:
        return {
            "PODIUM_URL": self.podium_url,
            "ENSEMBLE_URL": self.ensemble_url,
            "UNISON_URL": self.unison_url,
            "PODIUM_API_KEY": LOCAL_KEY,
            "ENSEMBLE_API_KEY": LOCAL_KEY,
            "UNISON_API_KEY": LOCAL_KEY,
        }

    def fault(self, service: str, mode: str) -> None:
        url = {"podium": self.podium_url, "ensemble": self.ensemble_url, "unison": self.unison_url}[
            service
        ]
        httpx.post(
            f"{url}/_local/fault",
            json={"mode": mode},
            headers={"Authorization": f"Bearer {LOCAL_KEY}"},
            timeout=5,
        ).raise_for_status()


def new_stack(data_dir: Path, split: bool = False) -> Stack:
    data_dir.mkdir(parents=True, exist_ok=True)
    return Stack(data_dir, free_port(), free_port(), free_port(), split=split)


@dataclass
class Gateway:
    port: int
    env: dict[str, str]
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> None:
        self.log = self.data_dir / f"gateway-{self.port}.log"
        self.proc = subprocess.Popen(
            gateway_argv(self.env),
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        _wait_http(f"{self.url}/health", self.proc, self.log)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        return stop_process(self.proc, sig)

    def output(self) -> str:
        return self.log.read_text() if self.log else ""


def gateway_argv(env: dict[str, str]) -> list[str]:
    """`serve` refuses dev mode (OPERATIONS.md §3), so a dev-mode gateway against the tests'
    stand-ins is `dev --no-stack` (one process, no reload, URLs from the environment)."""
    if env.get("DEV_MODE", "").strip().lower() in ("1", "true", "yes", "on"):
        return [sys.executable, "-m", "diminuendo", "dev", "--no-reload", "--no-stack"]
    return [sys.executable, "-m", "diminuendo", "serve"]


def gateway_process(stack: Stack, data_dir: Path, **overrides: str | None) -> Gateway:
    """A gateway (not started) on a free port against `stack`, in dev mode unless `overrides`
    say otherwise; an override of None leaves that variable unset.

    No edge adapter unless a test names its own (`EDGE_ADAPTERS`, tests/edges): dev mode would
    mount every installed one, ~0.9 s of imports at each start, for tests that never call them.
    The shared `gateway` passes `EDGE_ADAPTERS=None`, so dev mode's default still runs."""
    port = free_port()
    env: dict[str, str | None] = {
        **os.environ,
        "DEV_MODE": "true",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DATA_DIR": str(data_dir),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "info",
        "EDGE_ADAPTERS": "none",
        **stack.gateway_env(),
        **overrides,
    }
    return Gateway(port, {n: v for n, v in env.items() if v is not None}, data_dir)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = new_stack(tmp_path_factory.mktemp("stack"))
    s.start()
    yield s
    s.stop()


def fleet_size() -> int:
    """How many gateway instances the shared gateways are: `DIMINUENDO_TEST_FLEET=2` makes them a
    fleet of two on one Valkey (issue 16); unset (or 1) keeps the single in-memory gateway."""
    raw = os.environ.get(FLEET_SWITCH, "").strip() or "1"
    if raw not in ("1", "2"):
        raise pytest.UsageError(f"{FLEET_SWITCH} must be 1 or 2, not {raw!r}")
    return int(raw)


@dataclass
class GatewayFleet:
    """Two gateway instances on one Valkey and one local stack, behind `Gateway`'s interface.

    Every read of `url`, `ws_url` or `port` gives the next instance (A, B, A, …). Alternating per
    read rather than per new TCP connection (a round-robin proxy in front): the tests read the
    URL once per connection they open (`client(gateway.ws_url)`), so per read *is* per
    connection for them, with no proxy process in the path, and it is deterministic — a test
    that opens two connections always has one on each instance, so a session created through
    the first is joined, listed and driven through the other (forwarding, following, tenant
    broadcasts). The price: a test that keeps one HTTP client (`base_url=gateway.url`) stays on
    one instance for its whole life, as it would behind a sticky load balancer.

    `output()` is both logs; `env` is instance A's (B differs only in `PORT`/`DATA_DIR`). There
    is no `proc`, `start` or `stop`: a test that restarts "the" gateway is single-instance.
    """

    instances: list[Gateway]
    _turn: Iterator[Gateway] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._turn = itertools.cycle(self.instances)

    @property
    def url(self) -> str:
        return next(self._turn).url

    @property
    def ws_url(self) -> str:
        return next(self._turn).ws_url

    @property
    def port(self) -> int:
        return next(self._turn).port

    @property
    def env(self) -> dict[str, str]:
        return self.instances[0].env

    def output(self) -> str:
        return "".join(g.output() for g in self.instances)


@pytest.fixture(scope="session")
def fleet_valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalValkey | None]:
    """The Valkey of the shared gateways under the fleet switch (None without it). Its own
    server, not the cluster tests' `valkey_server`, which they empty between tests."""
    if fleet_size() == 1:
        yield None
        return
    server = LocalValkey(tmp_path_factory.mktemp("fleet-valkey"))
    server.start()
    yield server
    server.stop()


_fleets = itertools.count(1)


@contextlib.contextmanager
def serving(
    stack: Stack, data_dir: Path, valkey: LocalValkey | None, **overrides: str | None
) -> Iterator[Gateway | GatewayFleet]:
    """A started gateway with `overrides`: one process, or with `valkey` (the fleet switch) two
    sharing it as a `GatewayFleet`, under a key prefix of their own (fleets on one Valkey stay
    apart, as deployments do). Every process started is stopped on the way out."""
    if valkey is None:
        names, env = [""], overrides
    else:
        prefix = f"fleet{next(_fleets)}"
        names, env = ["a", "b"], {"REDIS_KEY_PREFIX": prefix, **overrides, "REDIS_URL": valkey.url}
    started: list[Gateway] = []
    try:
        for name in names:
            g = gateway_process(stack, data_dir / name, **env)
            g.data_dir.mkdir(parents=True, exist_ok=True)
            started.append(g)
            g.start()
        yield started[0] if valkey is None else GatewayFleet(started)
    finally:
        stop_processes([g.proc for g in started if g.proc is not None])


@pytest.fixture(scope="session")
def gateway(
    stack: Stack, fleet_valkey: LocalValkey | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway | GatewayFleet]:
    with serving(stack, tmp_path_factory.mktemp("gateway"), fleet_valkey, EDGE_ADAPTERS=None) as g:
        yield g


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under the fleet switch, run only what it changes: the tests on the fleet's gateways
    (those that use `fleet_valkey`, through `gateway` or their own `serving`). The others start
    gateways of their own, the same with or without the switch, and are deselected."""
    if fleet_size() == 1:
        return
    on_fleet = [item for item in items if "fleet_valkey" in getattr(item, "fixturenames", ())]
    config.hook.pytest_deselected(items=[item for item in items if item not in on_fleet])
    items[:] = on_fleet


@pytest.fixture
def start_gateway(stack: Stack, tmp_path: Path) -> Iterator[Any]:
    """Factory for a gateway with its own settings (e.g. a tiny rate limit)."""
    started: list[Gateway] = []

    def start(**overrides: str) -> Gateway:
        g = gateway_process(stack, tmp_path, **overrides)
        g.start()
        started.append(g)
        return g

    yield start
    for g in started:
        g.stop()


_ids = itertools.count(1)


@dataclass
class Client:
    """A protocol-aware test client over a real `websockets` connection."""

    ws: ClientConnection
    received: list[dict[str, Any]] = field(default_factory=list)

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def recv(self, timeout: float = RECV_TIMEOUT_S) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            raw = await self.ws.recv()
        frame = json.loads(raw)
        self.received.append(frame)
        return frame

    async def recv_until(self, predicate: Any, timeout: float = RECV_TIMEOUT_S) -> list[dict]:
        """Frames up to and including the first one matching `predicate` (or type name)."""
        match = (lambda f: f.get("type") == predicate) if isinstance(predicate, str) else predicate
        frames = []
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv(timeout)
                frames.append(frame)
                if match(frame):
                    return frames

    async def request(self, message: dict[str, Any], timeout: float = RECV_TIMEOUT_S) -> dict:
        """Send with a fresh `id` and return the reply (or error) carrying that id."""
        request_id = f"r{next(_ids)}"
        await self.send({**message, "id": request_id})
        frames = await self.recv_until(lambda f: f.get("id") == request_id, timeout)
        return frames[-1]


@contextlib.asynccontextmanager
async def client(url: str, *, handshake: bool = True, **kwargs: Any) -> Any:
    async with connect(url, open_timeout=10, **kwargs) as ws:
        c = Client(ws)
        if handshake:
            types = [(await c.recv())["type"] for _ in range(3)]
            assert types == ["welcome", "connected", "authenticated"], types
        yield c
