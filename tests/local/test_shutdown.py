"""Stopping the stand-ins with work in flight: bounded in time, on every Python and both loops.

Since Python 3.12, `asyncio.Server.wait_closed()` waits for every open connection (CPython
gh-79033); uvloop's returns at once. A stop that awaited it before closing the connections hung
on 3.12/3.13 as long as any client kept one alive. Each scenario runs in a loop of its own
(asyncio, then uvloop — the loop `diminuendo dev` and `local-stack` use).
"""

import asyncio
import json
import time
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import pytest
import uvloop
from websockets.exceptions import ConnectionClosed

from diminuendo.local.service import STOP_BOUND_S
from diminuendo.local.stack import LocalStack, LocalStackConfig
from tests.local.conftest import AUTH, Podium

pytestmark = pytest.mark.timeout(60)

# The bound `stop()` promises, plus slack for a machine shared by several test runs.
BOUND_S = STOP_BOUND_S + 1.0
# Long enough to outlast the stop's grace: about 60 pieces, 50 ms apart.
LONG_TEXT = " ".join(f"word{i}" for i in range(50))

Runner = Callable[[Coroutine[Any, Any, Any]], Any]
LOOPS: dict[str, Runner] = {"asyncio": asyncio.run, "uvloop": uvloop.run}


def run(runner: Runner, scenario: Coroutine[Any, Any, Any]) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(30):  # a hang fails the test instead of blocking the suite
            return await scenario

    return runner(bounded())


async def stop_with_work_in_flight(config: LocalStackConfig) -> dict[str, Any]:
    """An idle keep-alive connection, a request hung by the fault switch, a stream that lasts
    longer than the stop's grace and an open runtime socket; then `stop()`, timed."""
    stack = LocalStack(config)
    await stack.start()
    seen: dict[str, Any] = {}
    async with (
        httpx.AsyncClient(headers=AUTH, timeout=10) as idle,
        httpx.AsyncClient(headers=AUTH, timeout=10) as client,
    ):
        podium = Podium(stack, client)
        instance_id = await podium.create_instance("echo")
        assert (await idle.get(f"{stack.unison_url}/api/v1/health")).status_code == 200
        await client.post(f"{stack.unison_url}/_local/fault", json={"mode": "hang"})
        hung = asyncio.create_task(client.get(f"{stack.unison_url}/api/v1/kv/ns/key"))
        stream = asyncio.create_task(read_stream(client, stack.ensemble_url))
        async with podium.runtime(instance_id) as runtime:
            await asyncio.sleep(0.3)  # everything is in flight
            assert not hung.done() and not stream.done()
            started = time.monotonic()
            await stack.stop()
            seen["stop_s"] = time.monotonic() - started
            try:
                async with asyncio.timeout(5):
                    while True:  # the attach hello, then the close
                        await runtime.ws.recv()
            except ConnectionClosed as closed:
                seen["runtime_close"] = (closed.rcvd.code, closed.rcvd.reason)
        seen["hung"] = await hung
        seen["stream"] = await stream
        with pytest.raises(httpx.ConnectError):
            await idle.get(f"{stack.unison_url}/api/v1/health")
    return seen


async def read_stream(client: httpx.AsyncClient, ensemble_url: str) -> list[tuple[str, Any]]:
    """A streamed `mock-slow` generation: every SSE event as (name, data)."""
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "inference/generate",
        "params": {
            "model": "mock-slow",
            "messages": [{"role": "user", "content": LONG_TEXT}],
            "stream": True,
        },
    }
    events: list[tuple[str, Any]] = []
    async with client.stream("POST", f"{ensemble_url}/rpc", json=call) as response:
        name = ""
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                name = line.removeprefix("event:").strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line.removeprefix("data:"))))
    return events


@pytest.mark.parametrize("loop", LOOPS)
def test_a_stop_with_work_in_flight_ends_it_with_clear_errors_in_bounded_time(
    config: LocalStackConfig, loop: str
) -> None:
    """Before the fix: on 3.13 under asyncio `stop()` never returned (the 30 s bound fired);
    on 3.11, and under uvloop, the stream was cut mid-body (httpx.RemoteProtocolError:
    incomplete chunked read) instead of ending with `failed`, and the released request was
    answered "unavailable (fault switch)"."""
    seen = run(LOOPS[loop], stop_with_work_in_flight(config))

    assert seen["stop_s"] < BOUND_S, f"stop took {seen['stop_s']:.2f}s"
    hung: httpx.Response = seen["hung"]
    assert hung.status_code == 503
    assert hung.json()["error"] == {"code": "UNAVAILABLE", "message": "unison is stopping"}
    names = [name for name, _ in seen["stream"]]
    assert names[0] == "started" and "delta" in names, names
    assert seen["stream"][-1] == (
        "failed",
        {"code": "UNAVAILABLE", "message": "ensemble is stopping"},
    )
    assert seen["runtime_close"] == (1001, "podium is stopping")


async def stop_with_a_body_that_never_arrives(config: LocalStackConfig) -> tuple[float, bytes]:
    """A request whose body never comes keeps its connection busy: it is cut after the grace."""
    stack = LocalStack(config)
    await stack.start()
    reader, writer = await asyncio.open_connection(config.host, config.unison_port)
    writer.write(
        b"PUT /api/v1/kv/ns/key HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-key\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    )
    await writer.drain()
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await stack.stop()
    took = time.monotonic() - started
    try:
        rest = await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:
        rest = b""
    writer.close()
    return took, rest


@pytest.mark.parametrize("loop", LOOPS)
def test_a_request_that_never_completes_is_cut_after_the_grace(
    config: LocalStackConfig, loop: str
) -> None:
    """Before the fix: on 3.13 under asyncio `stop()` never returned (the test timed out)."""
    took, rest = run(LOOPS[loop], stop_with_a_body_that_never_arrives(config))
    assert took < BOUND_S, f"stop took {took:.2f}s"
    assert rest == b""  # the connection was closed, with nothing half-written on it
