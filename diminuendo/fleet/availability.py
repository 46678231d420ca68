"""Whether this instance uses Valkey right now — and, when not, why — for the session wiring
(which store a new activation gets) and for `/health` (the `valkey` dependency).

A gateway whose Valkey is unreachable still starts and serves: its sessions run with in-memory
replay windows and fresh epochs, as without `REDIS_URL`, and health says `degraded` with the
reason. Once Valkey answers again, new activations use it; a session activated in memory stays
there until it is deactivated (moving a live window into Valkey would change nothing a client
can rely on: its epoch is the in-memory one).

Contract of `FleetAvailability`:

- `start()` probes once and returns within the probe bound (`timeout_s`, 1 s), whatever Valkey
  does — refused, hung or fine — then keeps probing in the background: every `retry_interval_s`
  while degraded, every `probe_interval_s` while healthy. It never raises.
- `use_valkey` is read at each activation: `False` means "in-memory window, fresh epoch".
- `failed(exc)` is called by any caller whose Valkey call raised `FleetUnavailable`: the instance
  is degraded at once (no wait for the next probe); a successful probe restores it.
- `report()` is the health entry, the shape of `HealthMonitor.results()` entries plus `mode`
  (`valkey` | `memory`), `reason` (no credentials: `FleetUnavailable` messages never carry them)
  and `since` (epoch ms of the last change); `version` is bumped on every change, so a cached
  health body knows it is out of date.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress
from typing import Any

from loguru import logger
from redis.asyncio import Redis

from diminuendo.fleet.connection import DEFAULT_TIMEOUT_S, FleetUnavailable, unavailable_as
from diminuendo.settings import without_credentials

NOT_PROBED = "not probed yet"


class FleetAvailability:
    def __init__(
        self,
        client: Redis,
        url: str,
        *,
        probe_interval_s: float = 5.0,
        retry_interval_s: float = 1.0,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._client = client
        self._url = url
        self._probe_interval_s = probe_interval_s
        self._retry_interval_s = retry_interval_s
        self._timeout_s = timeout_s
        self.use_valkey = False
        self.reason: str | None = NOT_PROBED
        self.version = 0
        self._since_ms = int(time.time() * 1000)
        self._latency_ms: float | None = None
        self._checked_at_ms: int | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.probe()
        self._task = asyncio.create_task(self._loop(), name="fleet-availability")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def probe(self) -> bool:
        """One bounded PING; updates the state and returns `use_valkey`."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout_s):  # the client's own bound, and ours
                with unavailable_as(self._url, "PING"):
                    await self._client.ping()
        except FleetUnavailable as exc:
            self._set(None, str(exc))
        except TimeoutError:
            self._set(None, f"Valkey at {without_credentials(self._url)}: PING timed out")
        else:
            self._set((time.perf_counter() - started) * 1000, None)
        return self.use_valkey

    def failed(self, exc: FleetUnavailable) -> None:
        self._set(None, str(exc))

    def report(self) -> dict[str, Any]:
        return {
            "ok": self.use_valkey,
            "mode": "valkey" if self.use_valkey else "memory",
            "reason": self.reason,
            "latencyMs": None if self._latency_ms is None else round(self._latency_ms, 1),
            "checkedAt": self._checked_at_ms,
            "since": self._since_ms,
        }

    def _set(self, latency_ms: float | None, reason: str | None) -> None:
        self._latency_ms = latency_ms
        self._checked_at_ms = int(time.time() * 1000)
        available = reason is None
        if available != self.use_valkey or (not available and self.reason == NOT_PROBED):
            self._since_ms = self._checked_at_ms
            if available:
                logger.info("Valkey reachable: new sessions use it")
            else:
                logger.warning(
                    "Valkey unavailable ({}): new sessions use in-memory windows", reason
                )
        if (available, reason) != (self.use_valkey, self.reason):
            self.version += 1
        self.use_valkey, self.reason = available, reason

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(
                self._probe_interval_s if self.use_valkey else self._retry_interval_s
            )
            await self.probe()
