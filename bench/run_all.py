"""Run the whole benchmark set (called by `bench/run-all`).

    bench/run-all            # --quick (default): fits a 2-core machine in under 10 minutes
    bench/run-all --full     # the issue's sizes: 10,000 idle, 5,000 sessions at 20,000 ev/s
    bench/run-all --smoke    # tiny sizes, under a minute: does every benchmark still run?
    bench/run-all --only idle,health --results-dir /tmp/r

Each benchmark runs in its own process (and starts and stops its own servers); its summary line
is printed as it finishes, and a closing table checks the issue's targets. A `run-all-<ts>.json`
lists the result files of the run. A benchmark that fails or overruns its bound is reported and
the rest still run; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import benchlib as bl  # noqa: E402

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


def check_targets(results: dict[str, list[dict[str, Any]]]) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) rows; a figure at a smaller size than the target's is
    reported but not judged."""
    rows: list[tuple[str, str, str]] = []

    def verdict(ok: bool, full_size: bool = True) -> str:
        if not full_size:
            return "n/a (smaller size)"
        return "HOLDS" if ok else "MISSES"

    for idle in results.get("idle", []):
        g = idle.get("gateway", {})
        n = g.get("connections_opened", 0)
        size = n >= 10_000
        rows.append(
            (
                "10,000 idle connections < 600 MB RSS",
                f"{n} conns, {g.get('rss_open_mb')} MB",
                verdict(g.get("rss_open_mb", 1e9) < 600, size),
            )
        )
        rows.append(
            (
                "idle ≤ 60 KB per connection",
                f"{g.get('per_connection_kb')} KB",
                verdict(g.get("per_connection_kb", 1e9) <= 60, n >= 1000),
            )
        )
    for stream in results.get("stream", []):
        s = stream.get("stream")
        if s:
            sessions = s.get("turns", 0)
            lat = s.get("latency_ms", {})
            rate = s.get("delivered_pieces_per_s", 0)
            pinned = s.get("pinned", False)
            judged = verdict(
                rate >= 19_000 and lat.get("p99", 1e9) < 50,
                sessions >= 5000 and s.get("offered_pieces_per_s", 0) >= 20_000,
            )
            rows.append(
                (
                    "5,000 sessions, 20,000 ev/s, p99 < 50 ms",
                    f"{sessions} sessions, {rate:,} ev/s, p99 {lat.get('p99')} ms"
                    + ("" if pinned else " (shared cores)"),
                    judged if pinned else "info",
                )
            )
        f = stream.get("fanout")
        if f:
            lat = f.get("latency_ms", {})
            rows.append(
                (
                    "fan-out (no target; p99 < 50 ms for reference)",
                    f"{f.get('subscribers')} subs, {f.get('delivered_pieces_per_s'):,} ev/s, "
                    f"p99 {lat.get('p99')} ms",
                    "info",
                )
            )
    for connect in results.get("connect", []):
        v = connect.get("variants", {})
        n = connect.get("params", {}).get("connections", 0)
        if "dev" in v:
            rows.append(
                (
                    "connect+auth p50 < 2 ms (dev)",
                    f"{v['dev'].get('p50')} ms",
                    verdict(v["dev"].get("p50", 1e9) < 2, n >= 1000),
                )
            )
        if "jwt-warm" in v:
            rows.append(
                (
                    "connect+auth p50 < 3 ms (JWT warm)",
                    f"{v['jwt-warm'].get('p50')} ms",
                    verdict(v["jwt-warm"].get("p50", 1e9) < 3, n >= 1000),
                )
            )
    for create in results.get("create", []):
        seq = create.get("sequential", {})
        rows.append(
            (
                "create_session p50 < 5 ms",
                f"{seq.get('p50')} ms",
                verdict(seq.get("p50", 1e9) < 5, seq.get("n", 0) >= 500),
            )
        )
    for health in results.get("health", []):
        g = health.get("gateway", {})
        b = health.get("bare", {})
        rows.append(
            (
                "/health ≥ 10,000 req/s (one worker)",
                f"{g.get('rps', 0):,.0f} req/s (bare Sanic {b.get('rps', 0):,.0f})",
                verdict(g.get("rps", 0) >= 10_000, health["params"]["duration_s"] >= 5),
            )
        )
    for mapping in results.get("mapping", []):
        t = mapping.get("text_delta", {}).get("pipeline", {})
        rows.append(
            (
                "mapping ≥ 200,000 ev/s on one core",
                f"{t.get('events_per_s_best', 0):,} ev/s",
                verdict(
                    t.get("events_per_s_best", 0) >= 200_000, mapping["params"]["events"] >= 1e5
                ),
            )
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="size", action="store_const", const="quick")
    size.add_argument("--full", dest="size", action="store_const", const="full")
    size.add_argument("--smoke", dest="size", action="store_const", const="smoke")
    parser.set_defaults(size="quick")
    parser.add_argument("--only", default="", help="comma list of benchmark names")
    parser.add_argument("--results-dir", type=Path, default=bl.RESULTS_DIR)
    args = parser.parse_args()

    only = {name for name in args.only.split(",") if name}
    plan = [step for step in PLANS[args.size] if not only or step[0] in only]
    args.results_dir.mkdir(parents=True, exist_ok=True)
    machine = bl.machine_info()
    print(
        f"run-all --{args.size}: {machine['nproc']} cores ({machine['cpu_model']}), "
        f"{machine['mem_total_gib']} GiB, Python {machine['python']}, "
        f"uvloop {machine['uvloop']}, calibration {machine['cpu_calibration_ms']} ms; "
        f"results in {args.results_dir}",
        flush=True,
    )
    started = time.time()
    failures = 0
    results: dict[str, list[dict[str, Any]]] = {}
    files: list[str] = []
    for name, script, argv in plan:
        step_started = time.time()
        busy_before = bl.machine_busy_seconds()
        code, out, err = run_one(script, argv, args.results_dir, BOUNDS_S[args.size])
        busy = bl.machine_busy_seconds() - busy_before
        wall = time.time() - step_started
        print(
            f"  ({name}: {wall:.0f} s, machine busy {100 * busy / wall:.0f}% of "
            f"{100 * (os.cpu_count() or 1)}%, load average {os.getloadavg()[0]:.2f})",
            flush=True,
        )
        for line in out:
            print(line, flush=True)
        result = _latest(args.results_dir, name, step_started)
        if code != 0 or result is None:
            failures += 1
            print(f"{name}: FAILED (exit {code})\n{err[-3000:]}", flush=True)
            continue
        results.setdefault(name, []).append(result)
        files.append(f"{name}-{result['timestamp']}")
    rows = check_targets(results)
    width = max((len(r[0]) for r in rows), default=10)
    print("\ntargets:")
    for target, measured, verdict in rows:
        print(f"  {target:<{width}}  {verdict:<18}  {measured}")
    elapsed = time.time() - started
    summary = {
        "size": args.size,
        "elapsed_s": round(elapsed, 1),
        "failures": failures,
        "results": files,
        "targets": [{"target": t, "measured": m, "verdict": v} for t, m, v in rows],
    }
    path = bl.write_result("run-all", summary, args.results_dir)
    print(f"\nrun-all: {len(plan) - failures}/{len(plan)} ran in {elapsed:.0f} s [{path.name}]")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
