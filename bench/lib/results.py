"""What a benchmark leaves behind: its result file (with the machine it ran on) and its one
summary line."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from .loop import loop_name


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def calibration_ms() -> float:
    """A fixed pure-Python workload (best of 5), to compare runs on a machine whose speed
    drifts (shared or throttled hosts): lower is faster."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        total = 0
        for i in range(300_000):
            total += i % 7
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 2)


def machine_info() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError):
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "mem_total_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "uvloop": _version("uvloop"),
        "sanic": _version("sanic"),
        "websockets": _version("websockets"),
        "msgspec": _version("msgspec"),
        "client_loop": loop_name(),
        "cpu_calibration_ms": calibration_ms(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def write_result(name: str, data: dict[str, Any], results_dir: Path) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = results_dir / f"{name}-{stamp}.json"
    suffix = 1
    while path.exists():
        suffix += 1
        path = results_dir / f"{name}-{stamp}-{suffix}.json"
    body = {"benchmark": name, "timestamp": stamp, "machine": machine_info(), **data}
    path.write_text(json.dumps(body, indent=2, sort_keys=False) + "\n")
    return path


def summary(name: str, text: str) -> None:
    print(f"{name}: {text}", flush=True)
