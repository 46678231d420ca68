"""`diminuendo ssm-env`: secrets from AWS SSM Parameter Store (OPERATIONS §4).

Production keeps its secrets in Parameter Store; `scripts/start.sh` turns them into environment
variables before `serve` starts and `scripts/setup.sh` writes a developer's `.env` from them. Both
go through this module so the rules live in one place: page until AWS stops sending a
`NextToken` (pages can be short or even empty while more remain), always decrypt, map the last
path segment to an UPPER_SNAKE name, refuse ambiguous mappings, let the caller's environment win,
and never let a value reach stderr, logs or a `repr()`: values go only to the requested output.

Only names the gateway knows leave (OPERATIONS §3): its settings (`settings.SETTING_NAMES`, the
one list) and the AWS SDK's and OpenTelemetry's `AWS_*` / `OTEL_*`. A parameter that maps to
anything else (`LD_PRELOAD`, `PYTHONPATH`, `PATH`…) would change what the process runs rather than
how the gateway is configured, so whoever can write the parameter store could run code in the
gateway: it is skipped with a warning that names it, never its value. `DEV_MODE` and
`DEV_MODE_ALLOW_REMOTE` are settings but never come from SSM: dev mode turns authentication off,
and it is a developer's own choice (`diminuendo dev` sets it), never a shared store's.

`AWS_ENDPOINT_URL` (standard boto3 configuration) points the client at a local server, which is
how the tests run offline against moto.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import secrets
import shlex
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
)
from botocore.exceptions import ConnectionError as EndpointUnreachable

from diminuendo.settings import SETTING_NAMES

# Fleets starting at once share ~40 TPS per account and region: back off instead of failing.
# In botocore's Config, `max_attempts` counts retries: 10 retries, 11 attempts in all.
RETRIES: Mapping[str, Any] = {"mode": "adaptive", "max_attempts": 10}
# A black-holed endpoint must not stall start-up for 11 attempts x botocore's 60 s default.
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 15
PAGE_SIZE = 10  # GetParametersByPath maximum

_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*\Z")
_SEPARATORS = re.compile(r"[-./]")
FORMATS = ("dotenv", "export", "json")
EXPORTED_PREFIXES = ("AWS_", "OTEL_")
NEVER_FROM_SSM = frozenset({"DEV_MODE", "DEV_MODE_ALLOW_REMOTE"})


class SsmError(Exception):
    """A failure reported to the user as one line, with the exit code the command returns.

    Exit code 2 means the request or the stored parameters are wrong (bad path, nothing found,
    a name collision); 1 means AWS could not be asked or refused (credentials, permissions,
    throttling, network). Messages name parameters and variables, never values.
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(" ".join(message.split()))
        self.exit_code = exit_code


class Parameters(dict[str, str]):
    """Variable name → secret value; `repr()` shows the names only.

    Tracebacks, debuggers and test-failure output print `repr()`; a plain dict would put
    every secret there.
    """

    def __repr__(self) -> str:
        return f"Parameters({', '.join(sorted(self))}; values redacted)"


def make_client(region: str | None = None) -> Any:
    """An SSM client with adaptive retries and bounded timeouts.

    A fresh boto3 session per call, so credentials and `AWS_*` variables are read now rather
    than cached from whenever the default session was first used.
    """
    config = Config(
        retries=dict(RETRIES),
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
    )
    try:
        return boto3.session.Session().client("ssm", region_name=region, config=config)
    except NoRegionError:
        raise SsmError(
            "no AWS region configured: pass --region or set AWS_REGION / AWS_DEFAULT_REGION",
            exit_code=1,
        ) from None


def parameter_env_name(path_prefix: str, parameter_name: str) -> str:
    """The environment variable a parameter becomes: its last path segment in UPPER_SNAKE.

    `/diminuendo/prod/podium-api-key` → `PODIUM_API_KEY` (OPERATIONS §4). A parameter outside
    `path_prefix` or a segment that cannot be a shell variable name (`1st-key`) is an error
    rather than something silently renamed, since start.sh `eval`s the names.
    """
    prefix = path_prefix if path_prefix.endswith("/") else path_prefix + "/"
    if not parameter_name.startswith(prefix):
        raise SsmError(f"parameter {parameter_name} is not under {path_prefix}")
    segment = parameter_name.rsplit("/", 1)[-1]
    name = _SEPARATORS.sub("_", segment).upper()
    if not _ENV_NAME.match(name):
        raise SsmError(
            f"parameter {parameter_name} maps to {name!r}, which is not a valid "
            "environment variable name; rename the parameter"
        )
    return name


def skip_reason(name: str) -> str | None:
    """Why the variable `name` must not be exported, or None when it may be."""
    if name in NEVER_FROM_SSM:
        return "dev mode turns authentication off and never comes from SSM"
    if name in SETTING_NAMES or name.startswith(EXPORTED_PREFIXES):
        return None
    return "not a Diminuendo setting, nor an AWS_* or OTEL_* name"


def load_parameters(path: str, *, client: Any = None) -> dict[str, str]:
    """Every parameter under `path` (recursive, decrypted), keyed by its variable name.

    Loops until no `NextToken` instead of stopping on a short page: AWS may return fewer than
    `MaxResults` (even none) while more remain, the classic "only 10 parameters" bug. Two
    parameters mapping to one name is an error naming both, because which one wins would
    otherwise depend on listing order. Returns a `Parameters` (a dict that hides its values).
    """
    if not path.startswith("/"):
        raise SsmError(f"--path must start with '/': got {path!r}")
    ssm = client if client is not None else make_client()
    request: dict[str, Any] = {
        "Path": path,
        "Recursive": True,
        "WithDecryption": True,
        "MaxResults": PAGE_SIZE,
    }
    values = Parameters()
    sources: dict[str, str] = {}
    with _botocore_bodies_unlogged():
        while True:
            try:
                page = ssm.get_parameters_by_path(**request)
            except (BotoCoreError, ClientError) as exc:
                raise _aws_error(exc, path) from None
            for parameter in page.get("Parameters", []):
                name = parameter_env_name(path, parameter["Name"])
                if name in sources:
                    raise SsmError(
                        f"parameters {sources[name]} and {parameter['Name']} both map to "
                        f"{name}; rename one of them"
                    )
                sources[name] = parameter["Name"]
                values[name] = parameter["Value"]
            token = page.get("NextToken")
            if not token:
                return values
            request["NextToken"] = token


def main(argv: list[str], *, client: Any = None) -> int:
    """`diminuendo ssm-env …` (argv is what follows `ssm-env`); returns the exit code.

    `client` lets tests hand in a stubbed boto3 client; the command line never sets it.
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help or a usage error: argparse already printed why
        return exc.code if isinstance(exc.code, int) else 2
    try:
        found = load_parameters(
            args.path, client=client if client is not None else make_client(args.region)
        )
        if not found and not args.allow_empty:
            raise SsmError(
                f"no parameters found under {args.path} (wrong path or region? "
                "--allow-empty accepts an empty result)"
            )
        skipped = {name: reason for name in sorted(found) if (reason := skip_reason(name))}
        for name, reason in skipped.items():
            print(f"ssm-env: skipped {name} from {args.path}: {reason}", file=sys.stderr)
        if found and len(skipped) == len(found) and not args.allow_empty:
            raise SsmError(
                f"none of the {len(found)} parameter(s) under {args.path} is a setting "
                "(--allow-empty accepts that)"
            )
        usable = [name for name in found if name not in skipped]
        kept = [] if args.overwrite else sorted(name for name in usable if name in os.environ)
        chosen = Parameters((n, found[n]) for n in sorted(usable) if n not in kept)
        text = _render(chosen, args.format)
        if args.output:
            _write_private(args.output, text)
        else:
            sys.stdout.write(text)
            sys.stdout.flush()
    except SsmError as exc:
        print(f"ssm-env: {exc}", file=sys.stderr)
        return exc.exit_code
    if kept:
        print(
            f"ssm-env: kept {len(kept)} variable(s) already set in the environment "
            f"(--overwrite replaces them): {', '.join(kept)}",
            file=sys.stderr,
        )
    where = f" to {args.output}" if args.output else ""
    print(f"ssm-env: {len(chosen)} variable(s) from {args.path}{where}", file=sys.stderr)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diminuendo ssm-env",
        description="Read SSM parameters under a path as environment variables. Values go only "
        "to stdout or --output, never to stderr.",
    )
    parser.add_argument("--path", required=True, help="parameter path, e.g. /diminuendo/prod/")
    parser.add_argument("--format", choices=FORMATS, default="dotenv", help="default: dotenv")
    parser.add_argument("--output", metavar="FILE", help="write here (mode 0600) not to stdout")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace variables already in the environment"
    )
    parser.add_argument(
        "--allow-empty", action="store_true", help="exit 0 when no parameters are found"
    )
    parser.add_argument("--region", help="AWS region (default: the usual AWS configuration)")
    return parser


def _render(values: Mapping[str, str], fmt: str) -> str:
    """Text for one output format; each must give back the exact values, whatever they hold."""
    if fmt == "json":
        return json.dumps(values, indent=2, sort_keys=True) + "\n"
    if fmt == "export":
        # For `eval` in start.sh: single-quoted, so `$`, backquotes and newlines stay literal.
        return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in values.items())
    return "".join(f"{name}={_dotenv_quote(value)}\n" for name, value in values.items())


def _dotenv_quote(value: str) -> str:
    """python-dotenv single quotes: literal and multi-line; only `\\` and `\'` are escapes."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _write_private(target: str, text: str) -> None:
    """Replace `target` atomically with a file that is mode 0600 from the moment it exists.

    Created with `os.open(..., 0o600)` beside the target and renamed over it, so there is no
    world-readable window and a reader never sees half a file.
    """
    directory = os.path.dirname(os.path.abspath(target))
    temporary = os.path.join(directory, f".{os.path.basename(target)}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise SsmError(f"cannot write {target}: {exc.strerror}", exit_code=1) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o600)  # exactly 0600 whatever the umask
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except OSError as exc:
        with suppress(OSError):
            os.unlink(temporary)
        raise SsmError(f"cannot write {target}: {exc.strerror}", exit_code=1) from None


@contextmanager
def _botocore_bodies_unlogged() -> Iterator[None]:
    """Keep `botocore.parsers` from logging response bodies (decrypted values) at DEBUG."""
    logger = logging.getLogger("botocore.parsers")
    previous = logger.level
    if logger.getEffectiveLevel() < logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _aws_error(exc: BotoCoreError | ClientError, path: str) -> SsmError:
    """One line an operator can act on; botocore's own text never carries parameter values."""
    if isinstance(exc, NoCredentialsError):
        return SsmError(
            "no AWS credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY, or run with an instance or task role",
            exit_code=1,
        )
    if isinstance(exc, EndpointUnreachable | HTTPClientError):  # refused, timeouts, TLS, proxy
        return SsmError(f"cannot reach the SSM endpoint: {exc}", exit_code=1)
    if isinstance(exc, BotoCoreError):
        return SsmError(f"AWS error reading {path}: {exc}", exit_code=1)
    error = exc.response.get("Error", {})
    code = error.get("Code", "Unknown")
    message = error.get("Message", "")
    if code == "AccessDeniedException":  # SSM's, and KMS's for SecureStrings
        return SsmError(
            f"access denied reading {path} (needs ssm:GetParametersByPath on it, and "
            f"kms:Decrypt for SecureStrings): {message}",
            exit_code=1,
        )
    if code == "ThrottlingException":
        return SsmError(
            f"AWS is throttling GetParametersByPath on {path} even after "
            f"{RETRIES['max_attempts']} retries; try again shortly",
            exit_code=1,
        )
    if code == "ValidationException":
        return SsmError(f"AWS rejected the path {path}: {message}")
    return SsmError(f"{code} reading {path}: {message}", exit_code=1)
