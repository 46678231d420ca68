"""baseline: the framework's floor alone — the idle and health loads against bare Sanic
(`bench/bare_sanic.py`: one process, no access log, a text route and a WebSocket echo route).

    .venv/bin/python bench/baseline.py --connections 10000 --duration 10

`idle.py` and `health.py` already run bare Sanic beside the gateway (`--target both`, their
default) and report the gateway's figures as a ratio to it, measured in the same run; this script
is for looking at the floor on its own.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import benchlib as bl
import health
import idle


async def main_async(bench: bl.Bench) -> dict[str, Any]:
    args = bench.args
    idle_args = SimpleNamespace(**vars(args), concurrency=100, settle=2.0, hold=2.0, sources=0)
    idle_args.trace_memory = False
    bench.args = idle_args
    result: dict[str, Any] = {"idle": await idle.run_target(bench, "bare")}
    health_args = SimpleNamespace(
        **{**vars(args), "connections": args.http_connections}, threads=1, generator="auto"
    )
    bench.args = health_args
    bare = bench.start_bare()
    try:
        result["health"] = await health.load(bare, health_args, "bare")
    finally:
        bench.stop_all()
    return result


def main() -> int:
    parser = bl.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--http-connections", type=int, default=32)
    args = parser.parse_args()
    bl.raise_nofile(args.connections + 10_000)
    with bl.Bench("baseline", args) as bench:
        result = bl.run(main_async(bench))
    path = bl.write_result("baseline", result, args.results_dir)
    i, h = result["idle"], result["health"]
    bl.summary(
        "baseline",
        f"bare Sanic: {i['connections_opened']} idle conns {i['per_connection_kb']} KB/conn "
        f"(RSS {i['rss_open_mb']} MB, opened in {i['open_s']} s); /health {h['rps']:.0f} req/s "
        f"p50 {h.get('p50')} p99 {h.get('p99')} ms [{path.name}]",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
