"""The `diminuendo` command: serve | dev | local-stack | check-config | ssm-env | client.

Configuration problems are reported one per line on stderr with exit status 2, before anything
starts (OPERATIONS.md §3). The same commands run as `python -m diminuendo` and from the pyz.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from sanic import Sanic
from sanic.worker.loader import AppLoader

from diminuendo import __version__
from diminuendo.settings import ConfigError, Settings, load_settings
from diminuendo.supervisor import STOP_MARGIN_S, Child, Supervisor, report_ready

EXIT_CONFIG = 2
# Sanic's default of 100 drops SYNs in a reconnect storm after a deploy (measured in bench/).
LISTEN_BACKLOG = 2048
PACKAGE_DIR = Path(__file__).resolve().parent


def _settings_or_exit(environ: dict[str, str] | None = None) -> Settings:
    try:
        return load_settings(environ)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


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


def _serve(settings: Settings, stack_config: object | None = None, reload: bool = False) -> int:
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
    return _supervise(settings, workers, stack_config, held_ports=[settings.port])


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


def _supervise(
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


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings_or_exit()
    if settings.dev_mode:
        # Dev mode bypasses authentication; a production start-up must never inherit it from a
        # stray `.env` or environment variable (OPERATIONS.md §3).
        print(
            "config error: DEV_MODE: dev mode is the `dev` command's; `serve` is the production "
            "gateway (run `diminuendo dev`, or unset DEV_MODE)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    return _serve(settings)


def _stack_config(args: argparse.Namespace, data_dir: Path, secrets_key: object) -> object:
    from diminuendo.local.stack import SERVICES, LocalStackConfig

    return LocalStackConfig(
        data_dir=data_dir,
        secrets_key=secrets_key,  # type: ignore[arg-type]
        podium_port=args.podium_port,
        ensemble_port=args.ensemble_port,
        unison_port=args.unison_port,
        services=tuple(getattr(args, "only", None) or SERVICES),
    )


def cmd_dev(args: argparse.Namespace) -> int:
    """The gateway in dev mode. With the stand-ins in the same process (the default) the ports
    and keys are the flags'; with `--no-stack` it joins stand-ins already running (tests,
    benchmarks, a `local-stack` in another terminal): `PORT` and the `*_URL`/`*_API_KEY`
    variables from the environment win over the flags' defaults."""
    env = dict(os.environ)
    env["DEV_MODE"] = "true"
    env.setdefault("HOST", "127.0.0.1")
    urls = {
        "PODIUM": args.podium_port,
        "ENSEMBLE": args.ensemble_port,
        "UNISON": args.unison_port,
    }
    if args.port is not None or not args.no_stack or "PORT" not in env:
        env["PORT"] = str(args.port or 8001)
    for name, port in urls.items():
        if args.no_stack:
            env.setdefault(f"{name}_URL", f"http://127.0.0.1:{port}")
            env.setdefault(f"{name}_API_KEY", "local-dev-key")
        else:
            env[f"{name}_URL"] = f"http://127.0.0.1:{port}"
            env[f"{name}_API_KEY"] = "local-dev-key"
    if args.instances > 1 and not args.valkey:
        print(
            "config error: --instances: several gateways need --valkey to share their sessions "
            "(without it they are separate islands, not a fleet)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    settings = _settings_or_exit(env)
    stack = None
    if not args.no_stack:
        stack = _stack_config(args, settings.data_dir, settings.podium_secrets_key)
    if args.valkey:
        return _dev_fleet(args, env, settings, stack)
    what = "gateway" if args.no_stack else "dev stack: gateway"
    print(f"Diminuendo {what} on http://{settings.host}:{settings.port} (ws /ws)", flush=True)
    return _serve(settings, stack, reload=not args.no_reload)


# `dev --valkey` gives the gateways Valkey's URL, so its instances share it (issue 16).
DEV_VALKEY_PASSES_REDIS_URL = True


def _dev_fleet(
    args: argparse.Namespace, env: dict[str, str], settings: Settings, stack: object | None
) -> int:
    """`dev --valkey [--instances N]`: a bundled Valkey, the stand-ins and N gateways, each
    gateway a supervised process; Ctrl-C/SIGTERM stops the gateways and stand-ins (bounded, by
    PID), then Valkey (by PID)."""
    from diminuendo.local.valkey import LocalValkey, ValkeyNotFound

    taken = set() if stack is None else {args.podium_port, args.ensemble_port, args.unison_port}
    valkey = LocalValkey(settings.data_dir / "valkey")
    try:
        valkey.start()
    except (ValkeyNotFound, RuntimeError) as exc:
        print(f"error: dev --valkey: {exc}", file=sys.stderr)
        return 1
    try:
        note = "" if DEV_VALKEY_PASSES_REDIS_URL else " (not yet given to the gateways: issue 16)"
        pid = valkey.process.pid if valkey.process else None
        print(f"Valkey on {valkey.url} (pid {pid}){note}", flush=True)
        gateways = []
        ports = instance_ports(settings.port, args.instances, taken)
        for n, port in enumerate(ports, 1):
            instance_env = {**env, "PORT": str(port)}
            if DEV_VALKEY_PASSES_REDIS_URL:
                instance_env["REDIS_URL"] = valkey.url
            instance = _settings_or_exit(instance_env)
            gateways.append(Child(f"gateway-{n}", serve_process, (instance, None, True)))
            print(f"Diminuendo gateway {n} on http://{instance.host}:{port} (ws /ws)", flush=True)
        return _supervise(settings, gateways, stack, held_ports=ports)
    finally:
        valkey.stop()


def instance_ports(first: int, count: int, taken: set[int]) -> list[int]:
    """`count` ports from `first` upward, skipping the stand-ins' (`taken`): by default two
    instances get 8001 and 8003, Podium's stand-in having 8002."""
    ports: list[int] = []
    port = first
    while len(ports) < count:
        if port not in taken:
            ports.append(port)
        port += 1
    return ports


def cmd_local_stack(args: argparse.Namespace) -> int:
    from diminuendo.local.stack import run_local_stack

    data_dir = Path(os.environ.get("DATA_DIR", "./data"))
    config = _stack_config(args, data_dir, _stack_secrets_key())
    return run_local_stack(config)  # type: ignore[arg-type]


def _stack_secrets_key() -> object:
    """The Podium stand-in's PODIUM_SECRETS_KEY, read as the gateway reads it (environment over
    `.env`), else the dev stack's: what a gateway in dev mode seals with."""
    from diminuendo.settings import LOCAL_STACK_SECRETS_KEY, read_environment
    from diminuendo.upstreams.sealing import SealingKey

    configured = (read_environment().get("PODIUM_SECRETS_KEY") or "").strip()
    try:
        return SealingKey.parse(configured or LOCAL_STACK_SECRETS_KEY)
    except ValueError as exc:
        print(f"config error: PODIUM_SECRETS_KEY: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _settings_or_exit()
    print(json.dumps(settings.describe(), indent=2, sort_keys=True))
    return 0


def _service_list(raw: str) -> tuple[str, ...]:
    from diminuendo.local.stack import SERVICES

    names = tuple(name.strip() for name in raw.split(",") if name.strip())
    unknown = [name for name in names if name not in SERVICES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(SERVICES)}")
    return names


def _instance_count(raw: str) -> int:
    try:
        count = int(raw)
    except ValueError:
        count = 0
    if not 1 <= count <= 16:
        raise argparse.ArgumentTypeError("a number of gateways from 1 to 16")
    return count


def _stack_ports(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--podium-port", type=int, default=8002)
    parser.add_argument("--ensemble-port", type=int, default=8004)
    parser.add_argument("--unison-port", type=int, default=8005)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diminuendo", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"diminuendo {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the gateway (configuration from the environment)")
    dev = commands.add_parser("dev", help="gateway in dev mode + local Podium/Ensemble/Unison")
    dev.add_argument("--port", type=int, default=None, help="listen port (default 8001)")
    dev.add_argument("--no-reload", action="store_true", help="one process, no auto-reload")
    dev.add_argument(
        "--no-stack",
        action="store_true",
        help="only the gateway, against stand-ins already running (URLs from the environment)",
    )
    dev.add_argument(
        "--valkey",
        action="store_true",
        help="also start a bundled Valkey, shared by the gateways (implies no auto-reload)",
    )
    dev.add_argument(
        "--instances",
        type=_instance_count,
        default=1,
        help="with --valkey: N gateways on PORT, PORT+1, ... (skipping the stand-ins' ports)",
    )
    _stack_ports(dev)
    stack = commands.add_parser("local-stack", help="only the local stand-ins")
    _stack_ports(stack)
    stack.add_argument(
        "--only",
        type=_service_list,
        help="comma list of services to run in this process (default: all three)",
    )
    commands.add_parser("check-config", help="print the effective configuration, secrets hidden")
    commands.add_parser("ssm-env", help="read SSM Parameter Store (see `ssm-env --help`)")
    commands.add_parser("client", help="small CLI client (see `client --help`)")
    commands.add_parser("acp", help="stdio ACP agent for editors (see `acp --help`)")
    commands.add_parser("mcp", help="stdio MCP server (see `mcp --help`)")
    return parser


HANDLERS = {
    "serve": cmd_serve,
    "dev": cmd_dev,
    "local-stack": cmd_local_stack,
    "check-config": cmd_check_config,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Sub-tools with their own argument parsers get the rest of the line untouched.
    if argv and argv[0] == "ssm-env":
        from diminuendo import ssm

        return ssm.main(argv[1:])
    if argv and argv[0] == "client":
        from diminuendo.client import cli as client_cli

        return client_cli.main(argv[1:])
    if argv and argv[0] == "acp":
        from diminuendo.edges import acp

        return acp.main(argv[1:])
    if argv and argv[0] == "mcp":
        from diminuendo.edges import mcp_stdio

        return mcp_stdio.main(argv[1:])
    args = make_parser().parse_args(argv)
    return HANDLERS[args.command](args)
