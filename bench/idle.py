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
from typing import Any

import benchlib as bl
import httpx

WARMUP = 200


async def open_many(
    port: int, count: int, *, handshake: bool, concurrency: int, sources: list[str | None]
) -> tuple[list[bl.WS], float, list[str]]:
    semaphore = asyncio.Semaphore(concurrency)
    errors: list[str] = []

    async def one(index: int) -> bl.WS | None:
        async with semaphore:
            try:
                ws = await bl.ws_connect(port, local_ip=sources[index % len(sources)], timeout=30)
                if handshake:
                    await bl.gateway_handshake(ws, timeout=30)
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
    return bl.percentiles(samples)


async def measure(server: bl.Gateway, args: Any, *, handshake: bool, label: str) -> dict[str, Any]:
    sources = bl.source_addresses(args.connections)
    if args.sources:
        sources = [f"127.0.0.{i}" for i in range(2, 2 + args.sources)]
    warm, _, _ = await open_many(
        server.port, WARMUP, handshake=handshake, concurrency=args.concurrency, sources=sources
    )
    if len(warm) < WARMUP:
        raise RuntimeError(f"{label}: warm-up failed ({WARMUP - len(warm)} of {WARMUP})")
    await bl.close_all(warm)
    await asyncio.sleep(args.settle)
    rss_before = bl.rss_bytes(server.pid)
    cpu_before = bl.cpu_seconds(server.pid)
    machine_before = bl.machine_busy_seconds()

    overflows = bl.listen_overflows()
    profile = args.py_spy if label == "gateway" else None
    with bl.py_spy(server.pid, profile, max(2.0, args.connections / 2000)):
        sockets, open_s, errors = await open_many(
            server.port,
            args.connections,
            handshake=handshake,
            concurrency=args.concurrency,
            sources=sources,
        )
    cpu_open = bl.cpu_seconds(server.pid) - cpu_before
    machine_open = bl.machine_busy_seconds() - machine_before
    overflows = bl.listen_overflows() - overflows
    await asyncio.sleep(args.settle)
    rss_open = bl.rss_bytes(server.pid)
    meter = bl.CpuMeter({label: server.pid})
    meter.begin()
    await asyncio.sleep(args.hold)
    idle_cpu = meter.end()
    if args.trace_memory and label == "gateway":
        trace = server.server.log.parent / "gateway-memory.txt"
        os.kill(server.pid, signal.SIGUSR2)
        for _ in range(600):  # the dump blocks the gateway's loop for a while
            await asyncio.sleep(0.5)
            if trace.exists():
                async with httpx.AsyncClient(timeout=120) as client:
                    await client.get(f"{server.url}/health")
                break
    rss_held = bl.rss_bytes(server.pid)
    health = await health_probe(f"{server.url}/health") if handshake else None
    alive = sum(1 for ws in sockets if not ws.closed.done())

    closing = time.perf_counter()
    await bl.close_all(sockets, grace_s=30)
    close_s = time.perf_counter() - closing
    await asyncio.sleep(args.settle)
    rss_after = bl.rss_bytes(server.pid)

    opened = len(sockets)
    delta = rss_open - rss_before
    return {
        "connections_requested": args.connections,
        "connections_opened": opened,
        "connections_alive_after_hold": alive,
        "errors": len(errors),
        "first_errors": errors[:5],
        "source_addresses": [s or "127.0.0.1" for s in sources],
        "open_s": round(open_s, 3),
        "open_per_s": round(opened / open_s, 1) if open_s else None,
        "server_cpu_s_opening": round(cpu_open, 3),
        "server_cpu_us_per_connection": round(cpu_open * 1e6 / max(len(sockets), 1)),
        "machine_cpu_s_opening": round(machine_open, 3),
        "listen_overflows": overflows,
        "rss_before_mb": round(rss_before / 2**20, 1),
        "rss_open_mb": round(rss_open / 2**20, 1),
        "rss_after_hold_mb": round(rss_held / 2**20, 1),
        "rss_after_close_mb": round(rss_after / 2**20, 1),
        "rss_peak_mb": round(bl.hwm_bytes(server.pid) / 2**20, 1),
        "rss_delta_mb": round(delta / 2**20, 1),
        "per_connection_kb": round(delta / max(opened, 1) / 1024, 1),
        "hold_s": args.hold,
        "idle_cpu": idle_cpu[label],
        "health_while_held_ms": health,
        "close_s": round(close_s, 3),
    }


async def run_target(bench: bl.Bench, target: str) -> dict[str, Any]:
    args = bench.args
    if target == "gateway":
        stack = bench.start_stack()
        gateway = bench.start_gateway(
            stack, MAX_CONNECTIONS=str(max(10_000, args.connections + WARMUP + 100))
        )
        bench.wait_health_ok(gateway)
        try:
            return await measure(gateway, args, handshake=True, label="gateway")
        finally:
            bench.stop_all()
    bare = bench.start_bare()
    try:
        return await measure(bare, args, handshake=False, label="bare")
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


async def main_async(bench: bl.Bench) -> dict[str, Any]:
    targets = ["gateway", "bare"] if bench.args.target == "both" else [bench.args.target]
    result: dict[str, Any] = {"params": {k: str(v) for k, v in vars(bench.args).items()}}
    for target in targets:
        result[target] = await run_target(bench, target)
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
    parser = bl.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--target", choices=("gateway", "bare", "both"), default="both")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=100,
        help="handshakes in flight (Sanic's default listen backlog is 100: above it SYNs drop)",
    )
    parser.add_argument("--settle", type=float, default=2.0, help="seconds before RSS reads")
    parser.add_argument("--hold", type=float, default=5.0, help="seconds held idle")
    parser.add_argument("--sources", type=int, default=0, help="force N source addresses")
    parser.add_argument(
        "--trace-memory", action="store_true", help="gateway under tracemalloc (memory profile)"
    )
    args = parser.parse_args()
    bl.raise_nofile(args.connections + WARMUP + 10_000)
    with bl.Bench("idle", args) as bench:
        result = bl.run(main_async(bench))
        if args.trace_memory:
            trace = bench.work / "gateway-memory.txt"
            if trace.exists():
                out = args.results_dir / f"idle-memory-{time.strftime('%Y%m%dT%H%M%S')}.txt"
                args.results_dir.mkdir(parents=True, exist_ok=True)
                out.write_text(trace.read_text())
                result["memory_profile"] = str(out)
    path = bl.write_result("idle", result, args.results_dir)
    bl.summary("idle", f"{describe(result)} [{path.name}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
