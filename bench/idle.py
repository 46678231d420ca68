"""idle: N authenticated, idle WebSocket connections → the server's RSS in total and per
connection, and the time to open them all; the same against bare Sanic for the ratio.

    .venv/bin/python bench/idle.py --connections 10000            # gateway and bare Sanic
    .venv/bin/python bench/idle.py --connections 2000 --target gateway

Per connection = (VmRSS with N open - VmRSS before) ÷ N, read from /proc/<pid>/status of the
server. "Before" is taken after a warm-up of a few hundred connections opened and closed, so
one-time costs (lazy imports, first-use caches) are not charged to the N. Dev mode: every
connection is authenticated on open (welcome, connected, authenticated are read by the client).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from benchlib import WS, close_all, gateway_handshake, ws_connect
from lib.host import raise_nofile, source_addresses
from lib.loop import run
from lib.options import BenchOptions, option, params, parse_options
from lib.proc import (
    CpuMeter,
    cpu_seconds,
    hwm_bytes,
    listen_overflows,
    machine_busy_seconds,
    rss_bytes,
)
from lib.processes import Bench, Gateway
from lib.profiling import py_spy
from lib.results import summary, write_result
from lib.stats import percentiles

WARMUP = 200


@dataclass(frozen=True, kw_only=True)
class IdleOptions(BenchOptions):
    connections: int = option(10_000)
    target: Literal["gateway", "bare", "both"] = option("both")
    concurrency: int = option(
        100, "handshakes in flight (Sanic's default listen backlog is 100: above it SYNs drop)"
    )
    settle: float = option(2.0, "seconds before RSS reads")
    hold: float = option(5.0, "seconds held idle")
    sources: int = option(0, "force N source addresses")
    trace_memory: bool = option(False, "gateway under tracemalloc (memory profile)")


async def open_many(
    port: int, count: int, *, handshake: bool, concurrency: int, sources: list[str | None]
) -> tuple[list[WS], float, list[str]]:
    semaphore = asyncio.Semaphore(concurrency)
    errors: list[str] = []

    async def one(index: int) -> WS | None:
        async with semaphore:
            try:
                ws = await ws_connect(port, local_ip=sources[index % len(sources)], timeout=30)
                if handshake:
                    await gateway_handshake(ws, timeout=30)
                return ws
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return None

    started = time.perf_counter()
    opened = await asyncio.gather(*(one(i) for i in range(count)))
    elapsed = time.perf_counter() - started
    return [ws for ws in opened if ws is not None], elapsed, errors


async def health_probe(url: str, requests: int = 20) -> dict[str, Any]:
    """Sequential /health latency while the connections are held (it walks them for counts)."""
    samples = []
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(requests):
            started = time.perf_counter()
            (await client.get(url)).raise_for_status()
            samples.append((time.perf_counter() - started) * 1000)
    return percentiles(samples)


async def warm_up(
    server: Gateway, options: IdleOptions, sources: list[str | None], *, handshake: bool, label: str
) -> None:
    """WARMUP connections opened and closed, so one-time costs are not charged to the N."""
    warm, _, _ = await open_many(
        server.port, WARMUP, handshake=handshake, concurrency=options.concurrency, sources=sources
    )
    if len(warm) < WARMUP:
        raise RuntimeError(f"{label}: warm-up failed ({WARMUP - len(warm)} of {WARMUP})")
    await close_all(warm)
    await asyncio.sleep(options.settle)


async def dump_memory(server: Gateway) -> None:
    """SIGUSR2 to a gateway under tools/serve_traced.py; wait until its dump is written and it
    answers again."""
    trace = server.server.log.parent / "gateway-memory.txt"
    os.kill(server.pid, signal.SIGUSR2)
    for _ in range(600):  # the dump blocks the gateway's loop for a while
        await asyncio.sleep(0.5)
        if trace.exists():
            async with httpx.AsyncClient(timeout=120) as client:
                await client.get(f"{server.url}/health")
            break


@dataclass
class Opening:
    """The N connections, and what opening them cost."""

    sockets: list[WS]
    errors: list[str]
    open_s: float
    server_cpu_s: float
    machine_cpu_s: float
    listen_overflows: int
    rss_before: int  # the server's RSS before the first of them


async def open_measured(
    server: Gateway,
    options: IdleOptions,
    sources: list[str | None],
    *,
    handshake: bool,
    label: str,
) -> Opening:
    """Open the N connections (profiled with `--py-spy` on the gateway), measuring the cost."""
    rss_before = rss_bytes(server.pid)
    cpu_before = cpu_seconds(server.pid)
    machine_before = machine_busy_seconds()
    overflows = listen_overflows()
    profile = options.py_spy if label == "gateway" else None
    with py_spy(server.pid, profile, max(2.0, options.connections / 2000)):
        sockets, open_s, errors = await open_many(
            server.port,
            options.connections,
            handshake=handshake,
            concurrency=options.concurrency,
            sources=sources,
        )
    return Opening(
        sockets=sockets,
        errors=errors,
        open_s=open_s,
        server_cpu_s=cpu_seconds(server.pid) - cpu_before,
        machine_cpu_s=machine_busy_seconds() - machine_before,
        listen_overflows=listen_overflows() - overflows,
        rss_before=rss_before,
    )


async def measure(
    server: Gateway, options: IdleOptions, *, handshake: bool, label: str
) -> dict[str, Any]:
    sources = source_addresses(options.connections)
    if options.sources:
        sources = [f"127.0.0.{i}" for i in range(2, 2 + options.sources)]
    await warm_up(server, options, sources, handshake=handshake, label=label)
    opening = await open_measured(server, options, sources, handshake=handshake, label=label)
    sockets = opening.sockets
    await asyncio.sleep(options.settle)
    rss_open = rss_bytes(server.pid)
    meter = CpuMeter({label: server.pid})
    meter.begin()
    await asyncio.sleep(options.hold)
    idle_cpu = meter.end()
    if options.trace_memory and label == "gateway":
        await dump_memory(server)
    rss_held = rss_bytes(server.pid)
    health = await health_probe(f"{server.url}/health") if handshake else None
    alive = sum(1 for ws in sockets if not ws.closed.done())

    closing = time.perf_counter()
    await close_all(sockets, grace_s=30)
    close_s = time.perf_counter() - closing
    await asyncio.sleep(options.settle)
    rss_after = rss_bytes(server.pid)

    opened = len(sockets)
    open_s, cpu_open = opening.open_s, opening.server_cpu_s
    delta = rss_open - opening.rss_before
    return {
        "connections_requested": options.connections,
        "connections_opened": opened,
        "connections_alive_after_hold": alive,
        "errors": len(opening.errors),
        "first_errors": opening.errors[:5],
        "source_addresses": [s or "127.0.0.1" for s in sources],
        "open_s": round(open_s, 3),
        "open_per_s": round(opened / open_s, 1) if open_s else None,
        "server_cpu_s_opening": round(cpu_open, 3),
        "server_cpu_us_per_connection": round(cpu_open * 1e6 / max(len(sockets), 1)),
        "machine_cpu_s_opening": round(opening.machine_cpu_s, 3),
        "listen_overflows": opening.listen_overflows,
        "rss_before_mb": round(opening.rss_before / 2**20, 1),
        "rss_open_mb": round(rss_open / 2**20, 1),
        "rss_after_hold_mb": round(rss_held / 2**20, 1),
        "rss_after_close_mb": round(rss_after / 2**20, 1),
        "rss_peak_mb": round(hwm_bytes(server.pid) / 2**20, 1),
        "rss_delta_mb": round(delta / 2**20, 1),
        "per_connection_kb": round(delta / max(opened, 1) / 1024, 1),
        "hold_s": options.hold,
        "idle_cpu": idle_cpu[label],
        "health_while_held_ms": health,
        "close_s": round(close_s, 3),
    }


async def run_target(bench: Bench, options: IdleOptions, target: str) -> dict[str, Any]:
    if target == "gateway":
        stack = bench.start_stack()
        gateway = bench.start_gateway(
            stack,
            trace_memory=options.trace_memory,
            MAX_CONNECTIONS=str(max(10_000, options.connections + WARMUP + 100)),
        )
        bench.wait_health_ok(gateway)
        try:
            return await measure(gateway, options, handshake=True, label="gateway")
        finally:
            bench.stop_all()
    bare = bench.start_bare()
    try:
        return await measure(bare, options, handshake=False, label="bare")
    finally:
        bench.stop_all()


def ratios(gateway: dict[str, Any], bare: dict[str, Any]) -> dict[str, Any]:
    def ratio(key: str) -> float | None:
        g, b = gateway.get(key), bare.get(key)
        return round(g / b, 2) if g and b else None

    return {
        "per_connection_kb": ratio("per_connection_kb"),
        "rss_open_mb": ratio("rss_open_mb"),
        "open_s": ratio("open_s"),
    }


async def main_async(bench: Bench, options: IdleOptions) -> dict[str, Any]:
    targets = ["gateway", "bare"] if options.target == "both" else [options.target]
    result: dict[str, Any] = {"params": params(options)}
    for target in targets:
        result[target] = await run_target(bench, options, target)
    if "gateway" in result and "bare" in result:
        result["ratio_to_bare"] = ratios(result["gateway"], result["bare"])
    return result


def describe(result: dict[str, Any]) -> str:
    parts = []
    for target in ("gateway", "bare"):
        r = result.get(target)
        if r:
            parts.append(
                f"{target} {r['connections_opened']}/{r['connections_requested']} conns "
                f"RSS {r['rss_open_mb']} MB (+{r['rss_delta_mb']} MB, "
                f"{r['per_connection_kb']} KB/conn), opened in {r['open_s']} s"
            )
    if "ratio_to_bare" in result:
        parts.append(f"ratio KB/conn {result['ratio_to_bare']['per_connection_kb']}x")
    return "; ".join(parts)


def main() -> int:
    options = parse_options(IdleOptions, __doc__.splitlines()[0])
    raise_nofile(options.connections + WARMUP + 10_000)
    with Bench("idle", options) as bench:
        result = run(main_async(bench, options))
        if options.trace_memory:
            trace = bench.work / "gateway-memory.txt"
            if trace.exists():
                out = options.results_dir / f"idle-memory-{time.strftime('%Y%m%dT%H%M%S')}.txt"
                options.results_dir.mkdir(parents=True, exist_ok=True)
                out.write_text(trace.read_text())
                result["memory_profile"] = str(out)
    path = write_result("idle", result, options.results_dir)
    summary("idle", f"{describe(result)} [{path.name}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
