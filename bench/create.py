"""create: `create_session` latency (request → `session_created`), which includes the Podium
deployment lookup (cached) and the Unison write of the new record.

    .venv/bin/python bench/create.py --sessions 1000

`sequential`: one dev-mode connection, one request at a time (the latency figure).
`parallel`: `--parallel` connections each creating back to back (throughput, latency under it).
`bystanders`: sequential again, with `--bystanders` other idle connections of the same tenant
open; each of them receives the `session_created` broadcast (PROTOCOL.md §6).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from benchlib import close_all, gateway_handshake, ws_connect
from lib.loop import run
from lib.options import BenchOptions, option, parse_options
from lib.proc import CpuMeter
from lib.processes import Bench, Gateway, Stack
from lib.profiling import py_spy
from lib.results import summary, write_result
from lib.stats import percentiles

WARMUP = 20


@dataclass(frozen=True, kw_only=True)
class CreateOptions(BenchOptions):
    sessions: int = option(1000)
    parallel: int = option(8)
    bystanders: int = option(1000, "idle same-tenant conns")


async def creator(port: int, count: int, samples: list[float], errors: list[str]) -> None:
    ws = await ws_connect(port)
    try:
        await gateway_handshake(ws)
        for index in range(count):
            request_id = f"c{index}"
            started = time.perf_counter()
            ws.send_json({"type": "create_session", "agentType": "slow", "id": request_id})
            frame = await ws.recv_until(lambda f, rid=request_id: f.get("id") == rid, 10)
            elapsed = (time.perf_counter() - started) * 1000
            if frame.get("type") != "session_created":
                errors.append(str(frame)[:200])
            else:
                samples.append(elapsed)
    finally:
        ws.close()


async def run_variant(
    gateway: Gateway, stack: Stack, clients: int, per_client: int
) -> dict[str, Any]:
    samples: list[float] = []
    errors: list[str] = []
    meter = CpuMeter({"gateway": gateway.pid, "local_stack": stack.server.pid})
    meter.begin()
    started = time.perf_counter()
    await asyncio.gather(
        *(creator(gateway.port, per_client, samples, errors) for _ in range(clients))
    )
    wall = time.perf_counter() - started
    cpu = meter.end()
    stats = percentiles(samples)
    stats.update(
        clients=clients,
        errors=len(errors),
        first_errors=errors[:3],
        creates_per_s=round(len(samples) / wall, 1),
        cpu=cpu,
        gateway_cpu_ms_per_create=round(cpu["gateway"]["cpu_s"] * 1000 / max(len(samples), 1), 3),
        stack_cpu_ms_per_create=round(cpu["local_stack"]["cpu_s"] * 1000 / max(len(samples), 1), 3),
    )
    return stats


async def main_async(bench: Bench, options: CreateOptions) -> dict[str, Any]:
    stack = bench.start_stack()
    gateway = bench.start_gateway(stack)
    bench.wait_health_ok(gateway)
    await run_variant(gateway, stack, 1, WARMUP)  # warm-up: deployment cache, connections
    result: dict[str, Any] = {
        "params": {"sessions": options.sessions, "parallel": options.parallel}
    }
    with py_spy(gateway.pid, options.py_spy, options.sessions * 0.0015 + 1):
        result["sequential"] = await run_variant(gateway, stack, 1, options.sessions)
    if options.parallel > 1:
        per_client = max(1, options.sessions // options.parallel)
        result["parallel"] = await run_variant(gateway, stack, options.parallel, per_client)
    if options.bystanders:
        received = [0]

        def count(payload: bytes) -> None:
            received[0] += 1

        idle = []
        for _ in range(options.bystanders):
            ws = await ws_connect(gateway.port)
            await gateway_handshake(ws)
            ws.on_text = count
            idle.append(ws)
        count_before = received[0]
        variant = await run_variant(gateway, stack, 1, max(20, options.sessions // 5))
        variant["bystanders"] = options.bystanders
        variant["broadcast_frames_received"] = received[0] - count_before
        result["bystanders"] = variant
        await close_all(idle)
    bench.stop_all()
    return result


def main() -> int:
    options = parse_options(CreateOptions, __doc__.splitlines()[0])
    with Bench("create", options) as bench:
        result = run(main_async(bench, options))
    path = write_result("create", result, options.results_dir)
    seq = result["sequential"]
    text = f"sequential p50 {seq.get('p50')} p95 {seq.get('p95')} p99 {seq.get('p99')} ms"
    if "parallel" in result:
        par = result["parallel"]
        text += (
            f"; {par['clients']} parallel: {par['creates_per_s']} creates/s, "
            f"p50 {par.get('p50')} p99 {par.get('p99')} ms"
        )
    if "bystanders" in result:
        by = result["bystanders"]
        text += (
            f"; with {by['bystanders']} same-tenant connections: p50 {by.get('p50')} "
            f"p99 {by.get('p99')} ms"
        )
    summary("create", f"{text} [{path.name}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
