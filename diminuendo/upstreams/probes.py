"""Cached upstream health probes, so `/health` answers in well under a second even when an
upstream hangs: probes run in the background every `interval_s`, each bounded by `timeout_s`,
and the endpoint only ever reads the last results."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from loguru import logger

Probe = Callable[[], Awaitable[bool]]


class HealthMonitor:
    def __init__(
        self, probes: dict[str, Probe], *, interval_s: float = 5.0, timeout_s: float = 0.5
    ) -> None:
        self._probes = probes
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._results: dict[str, dict[str, Any]] = {}
        # Bumped with every probe result, so a cached health body knows it is out of date.
        self.version = 0
        self._task: asyncio.Task[None] | None = None

    async def probe_all(self) -> None:
        await asyncio.gather(*(self._probe(name, probe) for name, probe in self._probes.items()))

    async def _probe(self, name: str, probe: Probe) -> None:
        started = time.perf_counter()
        ok = False
        try:
            async with asyncio.timeout(self.timeout_s):
                ok = await probe()
        except Exception as exc:  # any failure of a probe means "down", never a crash
            logger.debug("health probe {} failed: {}", name, type(exc).__name__)
        if self._results.get(name, {}).get("ok", True) and not ok:
            logger.warning("upstream {} is down", name)
        self._results[name] = {
            "ok": ok,
            "latencyMs": round((time.perf_counter() - started) * 1000, 1),
            "checkedAt": int(time.time() * 1000),
        }
        self.version += 1

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="health-probes")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _loop(self) -> None:
        while True:
            await self.probe_all()
            await asyncio.sleep(self.interval_s)

    def results(self) -> dict[str, dict[str, Any]]:
        """Last known result per upstream; an upstream never probed yet counts as down."""
        return {
            name: self._results.get(name, {"ok": False, "latencyMs": None, "checkedAt": None})
            for name in self._probes
        }
