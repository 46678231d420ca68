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

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Any

import benchlib as bl
import idle

from diminuendo.edges import SDKS, installed

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
            env={**os.environ, "PYTHONPATH": str(bl.ROOT)},
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


async def memory_cost(bench: bl.Bench, adapters: str) -> dict[str, Any]:
    args = bench.args
    stack = bench.start_stack()
    try:
        gateway = bench.start_gateway(
            stack,
            name=f"gateway-{adapters.replace(',', '-')}",
            EDGE_ADAPTERS=adapters,
            MAX_CONNECTIONS=str(max(10_000, args.connections + idle.WARMUP + 100)),
        )
        bench.wait_health_ok(gateway)
        measured = await idle.measure(gateway, args, handshake=True, label="gateway")
    finally:
        bench.stop_all()
    keys = ("connections_opened", "rss_before_mb", "rss_open_mb", "per_connection_kb", "errors")
    return {"adapters": adapters, **{k: measured[k] for k in keys}}


async def main_async(bench: bl.Bench) -> dict[str, Any]:
    enabled = ",".join(name for name in SDKS if installed(name))
    if not enabled:
        raise SystemExit("no adapter is installed: pip install -e '.[edges]'")
    result: dict[str, Any] = {"params": {k: str(v) for k, v in vars(bench.args).items()}}
    for label, adapters in (("disabled", "none"), ("enabled", enabled)):
        result[label] = {
            "import": import_cost(adapters, bench.args.imports),
            "memory": await memory_cost(bench, adapters),
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
    parser = bl.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--imports", type=int, default=5, help="fresh-interpreter import runs")
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument("--hold", type=float, default=2.0)
    parser.set_defaults(sources=0, trace_memory=False)
    args: argparse.Namespace = parser.parse_args()
    bl.raise_nofile(args.connections * 2 + 1000)
    with bl.Bench("edges_cost", args) as bench:
        result = bl.run(main_async(bench))
    bl.write_result("edges_cost", result, args.results_dir)
    bl.summary("edges_cost", describe(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
