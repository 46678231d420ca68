"""How gateway processes run: one Sanic single-process server (`serve_process`), N of them
sharing a port under `diminuendo.supervisor` (`WORKERS` > 1, `dev --instances N`), or Sanic's
reloading manager (dev, one worker, a source checkout).

Each gateway process binds its own socket before its app loads, and a supervisor holds every
gateway port before any child starts: a port another program holds is one line on stderr and
exit 1 in every mode, never Sanic's bind traceback or a restart loop (docs/DECISIONS.md
"Operations").
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from sanic import Sanic
from sanic.worker.loader import AppLoader

from diminuendo.settings import Settings
from diminuendo.supervisor import STOP_MARGIN_S, Child, Supervisor, report_ready

__all__ = ["build_app", "serve", "serve_process", "supervise"]

# Sanic's default of 100 drops SYNs in a reconnect storm after a deploy (measured in bench/).
LISTEN_BACKLOG = 2048
PACKAGE_DIR = Path(__file__).resolve().parent


def _configure_logging(settings: Settings) -> None:
    from diminuendo.observability.logging import configure_logging

    configure_logging(level=settings.log_level, fmt=settings.log_format, data_dir=settings.data_dir)


def build_app(settings: Settings, stack_config: object | None = None) -> Sanic:
    """App factory for Sanic's loader (re-run in each spawned worker). With `stack_config`, the
    local stand-ins run in the same loop and start before the gateway does."""
    from diminuendo.app import create_app

    _configure_logging(settings)
    app = create_app(settings)
    if stack_config is not None:
        from diminuendo.local.stack import LocalStack

        stack = LocalStack(stack_config)  # type: ignore[arg-type]

        async def start_stack(app: Sanic) -> None:
            await stack.start()

        async def stop_stack(app: Sanic) -> None:
            await stack.stop()

        app.register_listener(start_stack, "before_server_start", priority=100)
        app.register_listener(stop_stack, "after_server_stop", priority=-100)
    return app


def serve(settings: Settings, stack_config: object | None = None, reload: bool = False) -> int:
    """One process when possible; `WORKERS` > 1 as N single-process workers sharing the port
    under `supervisor` (Sanic's worker manager can hang on SIGTERM, sanic#2997); Sanic's manager
    only for auto-reload (dev, one worker, a source checkout — never the pyz)."""
    reload = reload and settings.dev_mode and PACKAGE_DIR.is_dir() and settings.workers == 1
    if reload:
        probe = _bound_socket_or_explain(settings.host, settings.port, reuse_port=False)
        if probe is None:
            return 1
        probe.close()  # Sanic's reloading manager binds its own socket
        loader = AppLoader(factory=partial(build_app, settings, stack_config))
        app = loader.load()
        app.prepare(
            host=settings.host,
            port=settings.port,
            auto_reload=True,
            reload_dir=str(PACKAGE_DIR),
            motd=False,
            backlog=LISTEN_BACKLOG,
        )
        Sanic.serve(primary=app, app_loader=loader)
        return 0
    if settings.workers == 1:
        return serve_process(settings, stack_config)
    workers = [
        Child(f"worker-{n}", serve_process, (settings, None, True), reports_ready=True)
        for n in range(1, settings.workers + 1)
    ]
    return supervise(settings, workers, stack_config, held_ports=[settings.port])


def serve_process(
    settings: Settings, stack_config: object | None = None, reuse_port: bool = False
) -> int:
    """One gateway process, Sanic's single-process server. `reuse_port`: bind with SO_REUSEPORT,
    so the workers of one supervisor share the port and the kernel spreads connections. The
    socket is bound here, before the app loads: a port taken by another program is one line
    on stderr and exit 1, not Sanic's traceback."""
    sock = _bound_socket_or_explain(settings.host, settings.port, reuse_port=reuse_port)
    if sock is None:
        return 1
    loader = AppLoader(factory=partial(build_app, settings, stack_config))
    app = loader.load()
    app.register_listener(_report_ready_when_serving, "after_server_start")
    app.prepare(
        host=settings.host,
        port=settings.port,
        sock=sock,
        single_process=True,
        motd=False,
        backlog=LISTEN_BACKLOG,
    )
    Sanic.serve_single(app)
    return 0


async def _report_ready_when_serving(app: Sanic) -> None:
    """`report_ready()` (to a supervisor, if any) from inside Sanic's `run_forever`, the first
    moment a SIGTERM is sure to stop the server through its shutdown (drain, close 1001, exit).

    Sanic 25.12 installs its SIGTERM handler (`_setup_system_signals`) before its last start-up
    steps, and uvloop acts on a signal only while the loop runs: one that arrives between two
    `run_until_complete` calls is noted and never acted on, and the worker serves on until
    SIGKILLed (tests/integration/test_stop_while_starting.py). This listener runs inside such a
    call, so the report waits for `app.state.is_running`, which Sanic sets just before
    `run_forever`; a callback still queued when a `run_until_complete` ends runs in the next."""
    loop = asyncio.get_running_loop()

    def report_once_serving() -> None:
        if app.state.is_running:
            report_ready()
        else:
            loop.call_soon(report_once_serving)

    report_once_serving()


def _bound_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A socket bound (SO_REUSEADDR, as Sanic binds; SO_REUSEPORT when asked) and not listening
    (asyncio calls `listen`)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def _bound_socket_or_explain(host: str, port: int, *, reuse_port: bool) -> socket.socket | None:
    """`_bound_socket`, or None after one line on stderr saying which address and why."""
    try:
        return _bound_socket(host, port, reuse_port=reuse_port)
    except OSError as exc:
        print(f"error: {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return None


def supervise(
    settings: Settings,
    children: list[Child],
    stack_config: object | None,
    *,
    held_ports: Sequence[int] = (),
) -> int:
    """Run `children` (and the local stand-ins, in a process of their own) under one
    supervisor, bounded on stop by the drain delay + GRACEFUL_SHUTDOWN_TIMEOUT + a margin.
    `held_ports`: the gateways' ports (`WORKERS` > 1: one, shared; `dev --instances N`: one
    each). The supervisor holds a bound, non-listening SO_REUSEPORT socket on each before any
    child starts, so a port taken by another program fails here, once, and nothing else can
    take it while a gateway restarts."""
    held: list[socket.socket] = []
    try:
        for port in held_ports:
            sock = _bound_socket_or_explain(settings.host, port, reuse_port=True)
            if sock is None:
                return 1
            held.append(sock)
        if stack_config is not None:
            from diminuendo.local.stack import run_local_stack

            children = [Child("local-stack", run_local_stack, (stack_config,)), *children]
        stop_timeout_s = (
            settings.drain_delay_s + settings.graceful_shutdown_timeout_s + STOP_MARGIN_S
        )
        return Supervisor(children, stop_timeout_s=stop_timeout_s).run()
    finally:
        for sock in held:
            sock.close()
