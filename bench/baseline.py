"""baseline: the framework's floor alone — the idle and health loads against bare Sanic
(`bench/bare_sanic.py`: one process, no access log, a text route and a WebSocket echo route).

    .venv/bin/python bench/baseline.py --connections 10000 --duration 10

`idle.py` and `health.py` already run bare Sanic beside the gateway (`--target both`, their
default) and report the gateway's figures as a ratio to it, measured in the same run; this script
is for looking at the floor on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import health
import idle
from lib.host import raise_nofile
from lib.loop import run
from lib.options import BenchOptions, common, option, parse_options
from lib.processes import Bench
from lib.results import summary, write_result


@dataclass(frozen=True, kw_only=True)
class BaselineOptions(BenchOptions):
    connections: int = option(10_000)
    duration: float = option(10.0)
    http_connections: int = option(32)


async def main_async(bench: Bench, options: BaselineOptions) -> dict[str, Any]:
    idle_options = idle.IdleOptions(**common(options), connections=options.connections, hold=2.0)
    result: dict[str, Any] = {"idle": await idle.run_target(bench, idle_options, "bare")}
    health_options = health.HealthOptions(
        **common(options), duration=options.duration, connections=options.http_connections
    )
    bare = bench.start_bare()
    try:
        result["health"] = await health.load(bare, health_options, "bare")
    finally:
        bench.stop_all()
    return result


def main() -> int:
    options = parse_options(BaselineOptions, __doc__.splitlines()[0])
    raise_nofile(options.connections + 10_000)
    with Bench("baseline", options) as bench:
        result = run(main_async(bench, options))
    path = write_result("baseline", result, options.results_dir)
    i, h = result["idle"], result["health"]
    summary(
        "baseline",
        f"bare Sanic: {i['connections_opened']} idle conns {i['per_connection_kb']} KB/conn "
        f"(RSS {i['rss_open_mb']} MB, opened in {i['open_s']} s); /health {h['rps']:.0f} req/s "
        f"p50 {h.get('p50')} p99 {h.get('p99')} ms [{path.name}]",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
