"""`diminuendo serve` with an event-loop stall watchdog, for finding what blocks the loop.

Not gateway code: a harness. A task in the gateway's loop stamps the time every 5 ms; a thread
checks the stamp, and whenever the loop has not run for `BENCH_STALL_MS` (default 50) it writes
to $BENCH_WATCHDOG_OUT (then again every further 50 ms of the same stall):

- the kernel's view of the loop thread (`/proc/self/task/<tid>`): its state, and how the stall
  splits into time on a CPU and time runnable but waiting for one (a starved loop versus a busy
  one);
- the loop thread's Python stack. Beware: the watchdog thread runs only when the loop thread lets
  go of the GIL, which under uvloop is inside libuv, so a loop busy with Python callbacks shows
  as `run_forever` too. `perf record -t <tid> -k CLOCK_MONOTONIC` against the monotonic stamps
  shows what it really ran;
- cycle-collector passes over 10 ms (`gc gen N: M ms`), since a collection started from C code
  shows no Python frame of its own; with BENCH_GC_CENSUS=N, the first N oldest-generation passes
  over 50 ms are followed by a count of what that generation holds, by type.

Run a benchmark with `--watchdog FILE` to use it.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
import time
import traceback
from collections import Counter

BEAT_S = 0.005


def schedstat(task_dir: str) -> tuple[int, int]:
    """(ns on a CPU, ns runnable but waiting for one) of the loop thread so far; zeros where
    the kernel keeps no schedstat."""
    try:
        with open(f"{task_dir}/schedstat") as f:
            on_cpu, waiting, _ = f.read().split()
    except (OSError, ValueError):
        return 0, 0
    return int(on_cpu), int(waiting)


def kernel_view(task_dir: str, since: tuple[int, int]) -> str:
    """What the kernel says the loop thread is doing: its state, the system call it is in, and
    how the stall splits into running, waiting for a CPU, and sleeping."""
    try:
        with open(f"{task_dir}/stat") as f:
            task_state = f.read().rsplit(")", 1)[1].split()[0]
        with open(f"{task_dir}/syscall") as f:
            syscall = f.read().split()[0]
        with open(f"{task_dir}/wchan") as f:
            wchan = f.read().strip()
        on_cpu, waiting = schedstat(task_dir)
    except OSError as exc:
        return f"(no /proc view: {exc})"
    return (
        f"state {task_state}, syscall {syscall}, wchan {wchan or '-'}, since last beat "
        f"{(on_cpu - since[0]) / 1e6:.0f} ms on CPU, {(waiting - since[1]) / 1e6:.0f} ms "
        "waiting for a CPU"
    )


def main() -> int:
    import diminuendo.app as app_module

    threshold = float(os.environ.get("BENCH_STALL_MS", "50")) / 1000
    out = open(os.environ.get("BENCH_WATCHDOG_OUT", "serve-watchdog.txt"), "w")  # noqa: SIM115
    state = {"beat": time.monotonic(), "next_report": threshold}
    loop_thread = threading.get_ident()
    task_dir = f"/proc/self/task/{threading.get_native_id()}"
    state["sched"] = schedstat(task_dir)

    def watch() -> None:
        while True:
            time.sleep(BEAT_S)
            lag = time.monotonic() - state["beat"]
            if lag >= state["next_report"]:
                frame = sys._current_frames().get(loop_thread)
                stack = "".join(traceback.format_stack(frame)[-12:]) if frame else "?"
                out.write(
                    f"{time.time():.3f} (monotonic {time.monotonic():.3f}) loop stalled "
                    f"{lag * 1000:.0f} ms; "
                    f"{kernel_view(task_dir, state['sched'])}\n{stack}\n"
                )
                out.flush()
                state["next_report"] = lag + threshold

    collecting = {"since": 0.0}
    census_left = {"n": int(os.environ.get("BENCH_GC_CENSUS", "0"))}

    def write_census() -> None:
        """What the oldest generation holds, by type: what a slow full collection walked. Taken
        in the collection's own callback, before the gateway's policy freezes the survivors."""
        census_left["n"] -= 1
        counts = Counter(type(o).__qualname__ for o in gc.get_objects(2))
        top = ", ".join(f"{name} {n}" for name, n in counts.most_common(20))
        out.write(f"{time.time():.3f} gen 2 holds {sum(counts.values())}: {top}\n")

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            collecting["since"] = time.perf_counter()
            return
        took = (time.perf_counter() - collecting["since"]) * 1000
        if took > 10:
            out.write(f"{time.time():.3f} gc gen {info['generation']}: {took:.0f} ms\n")
            if info["generation"] == 2 and took > 50 and census_left["n"] > 0:
                write_census()

    gc.callbacks.append(on_gc)

    async def beat() -> None:
        while True:
            state["beat"] = time.monotonic()
            state["sched"] = schedstat(task_dir)
            state["next_report"] = threshold
            await asyncio.sleep(BEAT_S)

    create_app = app_module.create_app

    def create_watched_app(settings):  # type: ignore[no-untyped-def]
        app = create_app(settings)

        @app.after_server_start
        async def start_watchdog(app) -> None:  # type: ignore[no-untyped-def]
            app.ctx.watchdog_beat = asyncio.create_task(beat())
            threading.Thread(target=watch, daemon=True).start()

        return app

    app_module.create_app = create_watched_app
    from diminuendo.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
