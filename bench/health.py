"""health: `/health` requests per second and latency p50/p99 over keep-alive connections, with
the probe cache warm, against the gateway and against bare Sanic (the framework's floor).

    .venv/bin/python bench/health.py --duration 10 --connections 32

Load generator: `wrk` when it is on PATH (`apt-get install -y wrk`), else a built-in asyncio
keep-alive generator (raw sockets, one request in flight per connection). `--generator` forces
one. Either way the generator shares the machine's cores with the server: see the CPU figures.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Literal

from lib.loop import loop_name, run
from lib.options import BenchOptions, option, parse_options
from lib.proc import MACHINE, CpuMeter, rss_bytes
from lib.processes import Bench, Gateway
from lib.profiling import py_spy
from lib.results import summary, write_result
from lib.stats import percentiles

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


@dataclass(frozen=True, kw_only=True)
class HealthOptions(BenchOptions):
    duration: float = option(10.0)
    connections: int = option(32)
    threads: int = option(1, "wrk threads")
    target: Literal["gateway", "bare", "both"] = option("both")
    generator: Literal["auto", "wrk", "builtin"] = option("auto")
    path: str = option(
        "/health",
        "what to request; '/health?via=sanic' measures Sanic's pipeline instead of the "
        "gateway's fast path for plain probes",
    )


def _ms(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", value.strip())
    if not match:
        return float("nan")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(url: str, connections: int, duration: float, threads: int) -> dict[str, Any]:
    exe = shutil.which("wrk")
    assert exe is not None
    argv = [exe, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency"]
    out = subprocess.run(
        [*argv, url], capture_output=True, text=True, timeout=duration + 60, check=True
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    latency = {}
    for pct, value in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M):
        latency[f"p{pct}"] = round(_ms(value), 3)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "generator": f"wrk -t{threads} -c{connections}",
        "requests": total,
        "rps": rps,
        **latency,
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else None,
        "raw": out,
    }


class _Http(asyncio.Protocol):
    """One keep-alive connection: send, wait for one full response, repeat."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.transport: Any = None
        self.buf = bytearray()
        self.done: asyncio.Future[int] | None = None
        self.ready = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.ready.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("closed"))

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buf[:end]).lower()
        start = head.find(b"content-length:")
        length = int(head[start + 15 : head.find(b"\r\n", start)]) if start >= 0 else 0
        if len(buf) < end + 4 + length:
            return
        status = int(head[9:12])
        del buf[: end + 4 + length]
        if self.done is not None and not self.done.done():
            self.done.set_result(status)

    async def get(self) -> int:
        self.done = asyncio.get_running_loop().create_future()
        self.transport.write(self.request)
        return await self.done


async def run_builtin(
    port: int, connections: int, duration: float, path: str = "/health"
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    samples: list[float] = []
    bad = 0
    stop_at = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal bad
        _, proto = await loop.create_connection(lambda: _Http(request), "127.0.0.1", port)
        await proto.ready
        try:
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                status = await proto.get()
                samples.append((time.perf_counter() - started) * 1000)
                if status != 200:
                    bad += 1
        finally:
            proto.transport.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    wall = time.perf_counter() - started
    stats = percentiles(samples)
    return {
        "generator": f"builtin asyncio ({loop_name()}) -c{connections}",
        "requests": len(samples),
        "rps": round(len(samples) / wall, 1),
        "p50": stats.get("p50"),
        "p95": stats.get("p95"),
        "p99": stats.get("p99"),
        "non_2xx": bad,
    }


async def load(server: Gateway, options: HealthOptions, label: str) -> dict[str, Any]:
    url = f"{server.url}{options.path}"
    generator = options.generator
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "builtin"
    # Warm-up: a second of load, so first-use costs do not land in the figures.
    if generator == "wrk":
        await asyncio.to_thread(run_wrk, url, options.connections, 1, 1)
    else:
        await run_builtin(server.port, options.connections, 1, options.path)
    meter = CpuMeter({label: server.pid, "machine": MACHINE})
    meter.begin()
    with py_spy(server.pid, options.py_spy if label == "gateway" else None, options.duration):
        if generator == "wrk":
            result = await asyncio.to_thread(
                run_wrk, url, options.connections, options.duration, options.threads
            )
        else:
            result = await run_builtin(
                server.port, options.connections, options.duration, options.path
            )
    cpu = meter.end()
    result["server_cpu"] = cpu[label]
    result["machine_cpu"] = cpu["machine"]
    result["rss_mb"] = round(rss_bytes(server.pid) / 2**20, 1)
    return result


async def main_async(bench: Bench, options: HealthOptions) -> dict[str, Any]:
    result: dict[str, Any] = {
        "params": {
            "duration_s": options.duration,
            "connections": options.connections,
            "generator": options.generator,
            "path": options.path,
        }
    }
    if options.target in ("gateway", "both"):
        stack = bench.start_stack()
        gateway = bench.start_gateway(stack)
        result["probe"] = bench.wait_health_ok(gateway)["dependencies"]
        result["gateway"] = await load(gateway, options, "gateway")
        bench.stop_all()
    if options.target in ("bare", "both"):
        bare = bench.start_bare()
        result["bare"] = await load(bare, options, "bare")
        bench.stop_all()
    if "gateway" in result and "bare" in result:
        g, b = result["gateway"], result["bare"]
        result["ratio_to_bare"] = {
            "rps": round(g["rps"] / b["rps"], 3) if b["rps"] else None,
            "p50": round(g["p50"] / b["p50"], 2) if g.get("p50") and b.get("p50") else None,
            "p99": round(g["p99"] / b["p99"], 2) if g.get("p99") and b.get("p99") else None,
        }
    return result


def main() -> int:
    options = parse_options(HealthOptions, __doc__.splitlines()[0])
    with Bench("health", options) as bench:
        result = run(main_async(bench, options))
    path = write_result("health", result, options.results_dir)
    parts = []
    for target in ("gateway", "bare"):
        r = result.get(target)
        if r:
            parts.append(
                f"{target} {r['rps']:.0f} req/s p50 {r.get('p50')} p99 {r.get('p99')} ms "
                f"(server CPU {r['server_cpu']['cpu_pct']}%)"
            )
    if "ratio_to_bare" in result:
        parts.append(f"ratio rps {result['ratio_to_bare']['rps']}x")
    gen = (result.get("gateway") or result.get("bare") or {}).get("generator", "")
    summary("health", f"{'; '.join(parts)} [{gen}] [{path.name}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
