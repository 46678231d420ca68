"""edges_cost: what the edge adapters cost, disabled (EDGE_ADAPTERS=none) and enabled (every
installed adapter): the import + app-build time, and the idle memory per /ws connection.

    .venv/bin/python bench/edges_cost.py                      # 5 import runs, 2,000 connections
    .venv/bin/python bench/edges_cost.py --imports 9 --connections 5000

Import: a fresh interpreter imports `diminuendo.app` and builds the app (`create_app`, which
mounts the enabled adapters and so imports their SDKs), timed from the first import; median of
`--imports` runs, with the modules loaded, the adapters' SDK modules among them, and the RSS after.
Memory: `idle.py`'s measurement (warm-up, then N authenticated idle connections, RSS delta ÷ N)
against a dev gateway of each configuration. "Disabled costs nothing" holds when the disabled
run loads none of the SDKs and its figures match a gateway built before the adapters existed.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import idle
from lib.host import raise_nofile
from lib.loop import run
from lib.options import BenchOptions, common, option, params, parse_options
from lib.paths import ROOT
from lib.processes import Bench
from lib.results import summary, write_result

from diminuendo.edges import SDKS, installed


@dataclass(frozen=True, kw_only=True)
class EdgesCostOptions(BenchOptions):
    imports: int = option(5, "fresh-interpreter import runs")
    connections: int = option(2000)
    concurrency: int = option(100)
    settle: float = option(2.0)
    hold: float = option(2.0)


_PROBE = """
import json, sys, time
started = time.perf_counter()
from diminuendo.app import create_app
from diminuendo.settings import load_settings
create_app(load_settings({"DEV_MODE": "true", "EDGE_ADAPTERS": sys.argv[1]}))
elapsed = time.perf_counter() - started
sdks = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[2].split(",")))
rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:"))
print(json.dumps({"s": elapsed, "modules": len(sys.modules), "sdks": sdks, "rss_kb": rss}))
"""


def import_cost(adapters: str, runs: int) -> dict[str, Any]:
    sdk_names = ",".join(SDKS.values())
    samples = []
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, adapters, sdk_names],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            timeout=120,
        )
        samples.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {
        "adapters": adapters,
        "import_and_build_ms": round(statistics.median(s["s"] for s in samples) * 1000, 1),
        "runs_ms": [round(s["s"] * 1000, 1) for s in samples],
        "modules": samples[-1]["modules"],
        "sdk_modules_loaded": samples[-1]["sdks"],
        "rss_mb": round(statistics.median(s["rss_kb"] for s in samples) / 1024, 1),
    }


async def memory_cost(bench: Bench, options: EdgesCostOptions, adapters: str) -> dict[str, Any]:
    idle_options = idle.IdleOptions(
        **common(options),
        connections=options.connections,
        concurrency=options.concurrency,
        settle=options.settle,
        hold=options.hold,
    )
    stack = bench.start_stack()
    try:
        gateway = bench.start_gateway(
            stack,
            name=f"gateway-{adapters.replace(',', '-')}",
            EDGE_ADAPTERS=adapters,
            MAX_CONNECTIONS=str(max(10_000, options.connections + idle.WARMUP + 100)),
        )
        bench.wait_health_ok(gateway)
        measured = await idle.measure(gateway, idle_options, handshake=True, label="gateway")
    finally:
        bench.stop_all()
    keys = ("connections_opened", "rss_before_mb", "rss_open_mb", "per_connection_kb", "errors")
    return {"adapters": adapters, **{k: measured[k] for k in keys}}


async def main_async(bench: Bench, options: EdgesCostOptions) -> dict[str, Any]:
    enabled = ",".join(name for name in SDKS if installed(name))
    if not enabled:
        raise SystemExit("no adapter is installed: pip install -e '.[edges]'")
    result: dict[str, Any] = {"params": params(options)}
    for label, adapters in (("disabled", "none"), ("enabled", enabled)):
        result[label] = {
            "import": import_cost(adapters, options.imports),
            "memory": await memory_cost(bench, options, adapters),
        }
    return result


def describe(result: dict[str, Any]) -> str:
    parts = []
    for label in ("disabled", "enabled"):
        imp, mem = result[label]["import"], result[label]["memory"]
        parts.append(
            f"{label} ({imp['adapters']}): import+build {imp['import_and_build_ms']} ms, "
            f"{imp['modules']} modules, SDKs loaded {imp['sdk_modules_loaded'] or 'none'}, "
            f"idle RSS {mem['rss_before_mb']} MB, {mem['per_connection_kb']} KB/conn "
            f"({mem['connections_opened']} conns)"
        )
    return "; ".join(parts)


def main() -> int:
    options = parse_options(EdgesCostOptions, __doc__.splitlines()[0])
    raise_nofile(options.connections * 2 + 1000)
    with Bench("edges_cost", options) as bench:
        result = run(main_async(bench, options))
    write_result("edges_cost", result, options.results_dir)
    summary("edges_cost", describe(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
