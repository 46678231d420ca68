"""When the cycle collector walks the whole heap: rarely, and on a schedule, not on growth.

A full (oldest-generation) collection walks every tracked object and stops the event loop while
it does: the gateway holds about 240 tracked objects per active session with its sockets, and a
full collection took 450 ms at 2,000 sessions and 1.3 s at 5,000 on the bench machine. CPython
starts one whenever the old generation has grown by a quarter, so while connections and
sessions ramp up (a deploy, a reconnect storm, a busy hour) full collections come one after
another, each longer than the last, and every socket of the process waits.

So every `freeze_interval_s` (10 s) the young generations are collected and the survivors are
moved out of the collector's sight (`gc.freeze()`): young collections still run as usual and free
short-lived cycles, and the old generation holds at most the last interval's survivors, so a
ramp never triggers a walk of the whole heap (at 5,000 sessions a 60 s interval still let the
old generation grow to 500 ms collections during the ramp). Within one interval a ramp can still
bring automatic full collections (5,000 joins put 200,000 objects into the old generation in
under 10 s, and CPython walked it four times on the way, up to 250 ms each), so the survivors of
every full collection are frozen as soon as it ends and the next one walks only what came after.

Cycles among frozen objects (a connection that closed after its objects were frozen) are
reclaimed by one deliberate full collection every `full_interval_s`: unfreeze, collect, freeze —
a pause of the size above, once per interval instead of several during every ramp. Objects
without cycles are freed by reference counting whether frozen or not, so the memory held back is
only cyclic garbage, and only until the next full collection.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable

from loguru import logger


class CollectorPolicy:
    def __init__(
        self,
        freeze_interval_s: float,
        full_interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.freeze_interval_s = freeze_interval_s
        self.full_interval_s = full_interval_s
        self._clock = clock
        self._next_full = clock() + full_interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Freeze what start-up built (it lives as long as the process), then keep to the
        schedule. A freeze interval of 0 leaves CPython's own policy in place. Starting a
        started policy does nothing."""
        if self._task is not None:
            return
        gc.collect()
        gc.freeze()
        if self.freeze_interval_s > 0:
            self._task = asyncio.create_task(self._run(), name="gc-policy")
            gc.callbacks.append(self._after_collection)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
            gc.callbacks.remove(self._after_collection)

    @staticmethod
    def _after_collection(phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and info["generation"] == 2:
            gc.freeze()  # what survived a full walk is old: keep it out of the next one

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.freeze_interval_s)
            self.tick()

    def tick(self) -> bool:
        """One round: freeze the survivors, preceded by a full collection when one is due.
        Returns whether a full collection ran."""
        full = self.full_interval_s > 0 and self._clock() >= self._next_full
        if full:
            started = time.perf_counter()
            gc.unfreeze()
            collected = gc.collect()
            logger.info(
                "full garbage collection: {} objects freed in {:.0f} ms",
                collected,
                (time.perf_counter() - started) * 1000,
            )
            self._next_full = self._clock() + self.full_interval_s
        else:
            gc.collect(1)  # the young generations first: only survivors are frozen
        gc.freeze()
        return full
