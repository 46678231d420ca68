"""`diminuendo serve` with an event-loop stall watchdog, for finding what blocks the loop.

Not gateway code: a harness. A task in the gateway's loop stamps the time every 5 ms; a thread
checks the stamp, and whenever the loop has not run for `BENCH_STALL_MS` (default 50) it writes
the loop thread's Python stack to $BENCH_WATCHDOG_OUT (then again every further 50 ms of the
same stall). Cycle-collector passes over 10 ms are written there too (`gc gen N: M ms`), since a
collection started from C code shows no Python frame of its own. Run a benchmark with
`--watchdog FILE` to use it.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
import time
import traceback

BEAT_S = 0.005


def main() -> int:
    import diminuendo.app as app_module

    threshold = float(os.environ.get("BENCH_STALL_MS", "50")) / 1000
    out = open(os.environ.get("BENCH_WATCHDOG_OUT", "serve-watchdog.txt"), "w")  # noqa: SIM115
    state = {"beat": time.monotonic(), "next_report": threshold}
    loop_thread = threading.get_ident()

    def watch() -> None:
        while True:
            time.sleep(BEAT_S)
            lag = time.monotonic() - state["beat"]
            if lag >= state["next_report"]:
                frame = sys._current_frames().get(loop_thread)
                stack = "".join(traceback.format_stack(frame)[-12:]) if frame else "?"
                out.write(f"{time.time():.3f} loop stalled {lag * 1000:.0f} ms\n{stack}\n")
                out.flush()
                state["next_report"] = lag + threshold

    collecting = {"since": 0.0}

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            collecting["since"] = time.perf_counter()
            return
        took = (time.perf_counter() - collecting["since"]) * 1000
        if took > 10:
            out.write(f"{time.time():.3f} gc gen {info['generation']}: {took:.0f} ms\n")

    gc.callbacks.append(on_gc)

    async def beat() -> None:
        while True:
            state["beat"] = time.monotonic()
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

    return cli_main(["serve", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
