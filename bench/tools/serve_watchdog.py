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
from typing import TextIO

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


class Watchdog:
    """The beat in the loop, the thread that reports stalls, and the collector callback; all
    write to `out`. Built in the loop thread, so that thread is the one it watches."""

    def __init__(self, out: TextIO, threshold_s: float, census: int) -> None:
        self.out = out
        self.threshold_s = threshold_s
        self.census_left = census
        self.loop_thread = threading.get_ident()
        self.task_dir = f"/proc/self/task/{threading.get_native_id()}"
        self.beat_at = time.monotonic()
        self.sched = schedstat(self.task_dir)
        self.next_report = threshold_s
        self.gc_since = 0.0

    async def beat(self) -> None:
        while True:
            self.beat_at = time.monotonic()
            self.sched = schedstat(self.task_dir)
            self.next_report = self.threshold_s
            await asyncio.sleep(BEAT_S)

    def watch(self) -> None:
        while True:
            time.sleep(BEAT_S)
            lag = time.monotonic() - self.beat_at
            if lag >= self.next_report:
                frame = sys._current_frames().get(self.loop_thread)
                stack = "".join(traceback.format_stack(frame)[-12:]) if frame else "?"
                self.out.write(
                    f"{time.time():.3f} (monotonic {time.monotonic():.3f}) loop stalled "
                    f"{lag * 1000:.0f} ms; "
                    f"{kernel_view(self.task_dir, self.sched)}\n{stack}\n"
                )
                self.out.flush()
                self.next_report = lag + self.threshold_s

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.gc_since = time.perf_counter()
            return
        took = (time.perf_counter() - self.gc_since) * 1000
        if took > 10:
            self.out.write(f"{time.time():.3f} gc gen {info['generation']}: {took:.0f} ms\n")
            if info["generation"] == 2 and took > 50 and self.census_left > 0:
                self.write_census()

    def write_census(self) -> None:
        """What the oldest generation holds, by type: what a slow full collection walked. Taken
        in the collection's own callback, before the gateway's policy freezes the survivors."""
        self.census_left -= 1
        counts = Counter(type(o).__qualname__ for o in gc.get_objects(2))
        top = ", ".join(f"{name} {n}" for name, n in counts.most_common(20))
        self.out.write(f"{time.time():.3f} gen 2 holds {sum(counts.values())}: {top}\n")


def main() -> int:
    import diminuendo.app as app_module

    watchdog = Watchdog(
        open(os.environ.get("BENCH_WATCHDOG_OUT", "serve-watchdog.txt"), "w"),  # noqa: SIM115
        float(os.environ.get("BENCH_STALL_MS", "50")) / 1000,
        int(os.environ.get("BENCH_GC_CENSUS", "0")),
    )
    gc.callbacks.append(watchdog.on_gc)
    create_app = app_module.create_app

    def create_watched_app(settings):  # type: ignore[no-untyped-def]
        app = create_app(settings)

        @app.after_server_start
        async def start_watchdog(app) -> None:  # type: ignore[no-untyped-def]
            app.ctx.watchdog_beat = asyncio.create_task(watchdog.beat())
            threading.Thread(target=watchdog.watch, daemon=True).start()

        return app

    app_module.create_app = create_watched_app
    from diminuendo.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
