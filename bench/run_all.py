"""Run the whole benchmark set (called by `bench/run-all`).

    bench/run-all            # --quick (default): fits a 2-core machine in under 10 minutes
    bench/run-all --full     # the issue's sizes: 10,000 idle, 5,000 sessions at 20,000 ev/s
    bench/run-all --smoke    # tiny sizes, under a minute: does every benchmark still run?
    bench/run-all --only idle,health --results-dir /tmp/r

Each benchmark runs in its own process (and starts and stops its own servers); its summary line
is printed as it finishes, and a closing table checks the issue's targets (the table of them is
`lib/targets.py`). A `run-all-<ts>.json` lists the result files of the run. A benchmark that
fails or overruns its bound is reported and the rest still run; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from lib.paths import RESULTS_DIR  # noqa: E402
from lib.proc import machine_busy_seconds  # noqa: E402
from lib.results import machine_info, write_result  # noqa: E402
from lib.targets import check_targets  # noqa: E402

# name → (script, arguments) per size; the stream entries may run several configurations.
PLANS: dict[str, list[tuple[str, str, list[str]]]] = {
    "smoke": [
        ("mapping", "mapping.py", ["--events", "5000", "--repeats", "1"]),
        ("connect", "connect.py", ["--connections", "20"]),
        ("create", "create.py", ["--sessions", "20", "--parallel", "2", "--bystanders", "20"]),
        ("health", "health.py", ["--duration", "1", "--connections", "8"]),
        ("idle", "idle.py", ["--connections", "100", "--hold", "0.5", "--settle", "0.3"]),
        (
            "stream",
            "stream.py",
            [
                *["--sessions", "20", "--rate", "10", "--subscribers", "20"],
                *["--fanout-rate", "10", "--warmup", "0.5", "--duration", "1.5"],
            ],
        ),
    ],
    "quick": [
        ("mapping", "mapping.py", ["--events", "200000", "--repeats", "5"]),
        ("connect", "connect.py", ["--connections", "1000"]),
        ("create", "create.py", ["--sessions", "1000", "--parallel", "8"]),
        ("health", "health.py", ["--duration", "10", "--connections", "32"]),
        ("idle", "idle.py", ["--connections", "10000", "--hold", "5"]),
        (
            "stream",
            "stream.py",
            [
                *["--sessions", "2000", "--rate", "5", "--subscribers", "1000"],
                *["--fanout-rate", "10", "--warmup", "5", "--duration", "15"],
            ],
        ),
        (
            "stream",
            "stream.py",
            [
                *["--variant", "stream", "--sessions", "2000", "--rate", "2.5"],
                *["--warmup", "5", "--duration", "15"],
            ],
        ),
    ],
    "full": [
        ("mapping", "mapping.py", ["--events", "500000", "--repeats", "7"]),
        ("connect", "connect.py", ["--connections", "1000"]),
        ("create", "create.py", ["--sessions", "2000", "--parallel", "8"]),
        ("health", "health.py", ["--duration", "30", "--connections", "32"]),
        ("idle", "idle.py", ["--connections", "10000", "--hold", "35"]),
        (
            "stream",
            "stream.py",
            [
                *["--sessions", "5000", "--rate", "4", "--subscribers", "1000"],
                *["--fanout-rate", "20", "--warmup", "5", "--duration", "30"],
            ],
        ),
        (
            "stream",
            "stream.py",
            [
                *["--variant", "stream", "--sessions", "5000", "--rate", "4", "--no-pin"],
                *["--warmup", "10", "--duration", "30"],
            ],
        ),
        (
            "stream",
            "stream.py",
            [
                *["--variant", "stream", "--sessions", "5000", "--rate", "2"],
                *["--warmup", "5", "--duration", "30"],
            ],
        ),
    ],
}
BOUNDS_S = {"smoke": 120, "quick": 300, "full": 900}


def run_one(
    script: str, argv: list[str], results_dir: Path, bound_s: int
) -> tuple[int, list[str], str]:
    """Run one benchmark in its own process group; kill the group if it overruns."""
    cmd = [sys.executable, str(BENCH_DIR / script), "--results-dir", str(results_dir)]
    cmd += ["--timeout", str(bound_s), *argv]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=bound_s + 30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        return 124, out.splitlines(), err
    return proc.returncode, out.splitlines(), err


def _latest(results_dir: Path, name: str, since: float) -> dict[str, Any] | None:
    files = sorted(
        (p for p in results_dir.glob(f"{name}-*.json") if p.stat().st_mtime >= since),
        key=lambda p: p.stat().st_mtime,
    )
    return json.loads(files[-1].read_text()) if files else None


@dataclass(frozen=True)
class RunAllOptions:
    size: Literal["smoke", "quick", "full"]
    only: frozenset[str]  # benchmark names; empty: all of them
    results_dir: Path


def parse_options() -> RunAllOptions:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="size", action="store_const", const="quick")
    size.add_argument("--full", dest="size", action="store_const", const="full")
    size.add_argument("--smoke", dest="size", action="store_const", const="smoke")
    parser.set_defaults(size="quick")
    parser.add_argument("--only", default="", help="comma list of benchmark names")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    only = frozenset(name for name in args.only.split(",") if name)
    return RunAllOptions(size=args.size, only=only, results_dir=args.results_dir)


def run_step(name: str, script: str, argv: list[str], options: RunAllOptions) -> Any:
    """One benchmark: its summary line (or its failure) printed; its result, or None."""
    step_started = time.time()
    busy_before = machine_busy_seconds()
    code, out, err = run_one(script, argv, options.results_dir, BOUNDS_S[options.size])
    busy = machine_busy_seconds() - busy_before
    wall = time.time() - step_started
    print(
        f"  ({name}: {wall:.0f} s, machine busy {100 * busy / wall:.0f}% of "
        f"{100 * (os.cpu_count() or 1)}%, load average {os.getloadavg()[0]:.2f})",
        flush=True,
    )
    for line in out:
        print(line, flush=True)
    result = _latest(options.results_dir, name, step_started)
    if code != 0 or result is None:
        print(f"{name}: FAILED (exit {code})\n{err[-3000:]}", flush=True)
        return None
    return result


def print_targets(rows: list[tuple[str, str, str]]) -> None:
    width = max((len(r[0]) for r in rows), default=10)
    print("\ntargets:")
    for target, measured, verdict in rows:
        print(f"  {target:<{width}}  {verdict:<18}  {measured}")


def main() -> int:
    options = parse_options()
    plan = [step for step in PLANS[options.size] if not options.only or step[0] in options.only]
    options.results_dir.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    print(
        f"run-all --{options.size}: {machine['nproc']} cores ({machine['cpu_model']}), "
        f"{machine['mem_total_gib']} GiB, Python {machine['python']}, "
        f"uvloop {machine['uvloop']}, calibration {machine['cpu_calibration_ms']} ms; "
        f"results in {options.results_dir}",
        flush=True,
    )
    started = time.time()
    results: dict[str, list[dict[str, Any]]] = {}
    files: list[str] = []
    for name, script, argv in plan:
        result = run_step(name, script, argv, options)
        if result is not None:
            results.setdefault(name, []).append(result)
            files.append(f"{name}-{result['timestamp']}")
    failures = len(plan) - len(files)
    rows = check_targets(results)
    print_targets(rows)
    elapsed = time.time() - started
    summary = {
        "size": options.size,
        "elapsed_s": round(elapsed, 1),
        "failures": failures,
        "results": files,
        "targets": [{"target": t, "measured": m, "verdict": v} for t, m, v in rows],
    }
    path = write_result("run-all", summary, options.results_dir)
    print(f"\nrun-all: {len(plan) - failures}/{len(plan)} ran in {elapsed:.0f} s [{path.name}]")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
