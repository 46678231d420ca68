"""The `diminuendo` command: serve | dev | local-stack | check-config | ssm-env | client.

Configuration problems are reported one per line on stderr with exit status 2, before anything
starts (OPERATIONS.md §3). The same commands run as `python -m diminuendo` and from the pyz.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from diminuendo import __version__
from diminuendo.serving import serve, serve_process, supervise
from diminuendo.settings import ConfigError, Settings, load_settings
from diminuendo.supervisor import Child

EXIT_CONFIG = 2


def _settings_or_exit(environ: dict[str, str] | None = None) -> Settings:
    try:
        return load_settings(environ)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


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
    return serve(settings)


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
    return serve(settings, stack, reload=not args.no_reload)


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
        pid = valkey.process.pid if valkey.process else None
        print(f"Valkey on {valkey.url} (pid {pid})", flush=True)
        gateways = []
        ports = instance_ports(settings.port, args.instances, taken)
        for n, port in enumerate(ports, 1):
            instance = _settings_or_exit({**env, "PORT": str(port), "REDIS_URL": valkey.url})
            gateway = Child(
                f"gateway-{n}", serve_process, (instance, None, True), reports_ready=True
            )
            gateways.append(gateway)
            print(f"Diminuendo gateway {n} on http://{instance.host}:{port} (ws /ws)", flush=True)
        return supervise(settings, gateways, stack, held_ports=ports)
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
