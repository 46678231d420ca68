"""The embedded local stack: Podium, Ensemble and Unison stand-ins in one process and one loop.

Used by `diminuendo dev` / `diminuendo local-stack` and by tests, which start it on free ports.
"""

import asyncio
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from diminuendo.gc_policy import CollectorPolicy
from diminuendo.local.ensemble import EnsembleStandIn
from diminuendo.local.podium import PodiumStandIn
from diminuendo.local.unison import UnisonStandIn
from diminuendo.settings import LOCAL_STACK_SECRETS_KEY, Settings
from diminuendo.upstreams.sealing import SealingKey

SERVICES = ("podium", "ensemble", "unison")


@dataclass(frozen=True)
class LocalStackConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    podium_port: int = 8002
    ensemble_port: int = 8004
    unison_port: int = 8005
    # Bearer key of every non-health route; kept out of repr like any credential.
    api_key: str = field(default="local-dev-key", repr=False)
    # PODIUM_SECRETS_KEY: the Podium stand-in opens the instance secrets the gateway seals.
    secrets_key: SealingKey = field(
        default_factory=lambda: SealingKey.parse(LOCAL_STACK_SECRETS_KEY), repr=False
    )
    # A subset runs each service in its own process, so fault tests can kill just one.
    services: tuple[str, ...] = SERVICES


class _StandIn(Protocol):
    async def start(self, host: str, port: int) -> None: ...
    async def stop(self) -> None: ...


class LocalStack:
    def __init__(self, config: LocalStackConfig) -> None:
        self.config = config
        self._running: list[_StandIn] = []

    @property
    def podium_url(self) -> str:
        return self._url(self.config.podium_port)

    @property
    def ensemble_url(self) -> str:
        return self._url(self.config.ensemble_port)

    @property
    def unison_url(self) -> str:
        return self._url(self.config.unison_port)

    @property
    def state_dir(self) -> Path:
        return self.config.data_dir / "local-stack"

    def _url(self, port: int) -> str:
        return f"http://{self.config.host}:{port}"

    async def start(self) -> None:
        """Bind all three services, or none: a taken port stops what already started."""
        if self._running:
            raise RuntimeError("the local stack is already running")
        config = self.config
        # Fresh servers each time: a Sanic app cannot serve again once stopped.
        plan: list[tuple[_StandIn, int]] = []
        if "unison" in config.services:
            unison = UnisonStandIn(self.state_dir / "unison.sqlite3", config.api_key)
            plan.append((unison, config.unison_port))
        if "ensemble" in config.services:
            plan.append((EnsembleStandIn(config.api_key), config.ensemble_port))
        if "podium" in config.services:
            podium = PodiumStandIn(
                self.state_dir / "podium.sqlite3",
                config.api_key,
                self.ensemble_url,
                secrets_key=config.secrets_key,
            )
            plan.append((podium, config.podium_port))
        try:
            for stand_in, port in plan:
                await stand_in.start(config.host, port)
                self._running.append(stand_in)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        while self._running:
            await self._running.pop().stop()


def run_local_stack(config: LocalStackConfig) -> int:
    """Blocking: start, print one line per service URL, run until SIGINT/SIGTERM, stop cleanly.

    Returns 0, or 1 (with the reason on stderr) when the stack cannot start, e.g. a port is taken.
    """
    # The gateway runs on uvloop (Sanic's default). The stand-ins share its cores in every
    # benchmark, and on plain asyncio they spent about twice the CPU per event.
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_serve(config))
    return uvloop.run(_serve(config))


async def _serve(config: LocalStackConfig) -> int:
    stack = LocalStack(config)
    try:
        await stack.start()
    except OSError as exc:
        print(f"local stack: {exc.strerror or exc}", file=sys.stderr)
        return 1
    # The gateway's default collector schedule (not configurable here), for the same reason:
    # thousands of runtime sockets and turns in the old generation made full collections pause
    # every stream for 100 ms or more.
    collector = CollectorPolicy(Settings.gc_freeze_interval_s, Settings.gc_full_interval_s)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    try:
        collector.start()
        for signum in signals:
            loop.add_signal_handler(signum, stopping.set)
        urls = {"podium": stack.podium_url, "ensemble": stack.ensemble_url}
        urls["unison"] = stack.unison_url
        for name in config.services:
            print(f"{name:<8} {urls[name]}", flush=True)
        await stopping.wait()
    finally:
        collector.stop()
        for signum in signals:
            loop.remove_signal_handler(signum)  # False, not an error, if it was never added
        await stack.stop()
    return 0
