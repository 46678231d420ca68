"""loguru set-up: pretty lines in dev, JSON lines otherwise, to stderr and to `DATA_DIR/logs/`.

Every record is redacted and carries the request, connection, tenant and session ids of the task
that logged it (from `observability.context`). Sanic's and other libraries' stdlib loggers are
routed into loguru, so there is one format and one redaction for everything.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import msgspec
from loguru import logger

from diminuendo.observability import context
from diminuendo.observability.tracing import current_trace_id
from diminuendo.redaction import redact

_encoder = msgspec.json.Encoder()
PRETTY = (
    "<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
    "<cyan>{extra[client_id]}</cyan> {message}"
)


def _patch(record: Any) -> None:
    record["message"] = redact(record["message"])
    extra = record["extra"]
    for name, var in context.ALL.items():
        extra.setdefault(name, var.get())
    extra["trace_id"] = current_trace_id()
    if extra.get("client_id") is None:
        extra["client_id"] = "-"


def _json_line(record: Any) -> str:
    extra = record["extra"]
    line = {
        "ts": record["time"].isoformat(),
        "level": record["level"].name.lower(),
        "msg": record["message"],
        "logger": record["name"],
    }
    for name in (*context.ALL, "trace_id"):
        value = extra.get(name)
        if value not in (None, "-"):
            line[name] = value
    if record["exception"] is not None:
        exc_type = record["exception"].type
        line["exception"] = exc_type.__name__ if exc_type else "Exception"
    record["extra"]["_json"] = _encoder.encode(line).decode()
    return "{extra[_json]}\n"


class _InterceptHandler(logging.Handler):
    """Stdlib logging → loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(depth=6, exception=record.exc_info).log(level, record.getMessage())


def configure_logging(*, level: str, fmt: str, data_dir: Path | None) -> None:
    """Install the sinks. A log directory that cannot be written degrades to stderr only, with
    one warning, rather than stopping the gateway."""
    logger.remove()
    logger.configure(patcher=_patch)
    level = level.upper()
    sink_format = PRETTY if fmt == "pretty" else _json_line
    logger.add(sys.stderr, level=level, format=sink_format, backtrace=False, diagnose=False)
    if data_dir is not None:
        log_dir = data_dir / "logs"
        try:
            log_dir.mkdir(parents=True, exist_ok=True)
            logger.add(
                log_dir / "diminuendo.log",
                level=level,
                format=_json_line,
                rotation="50 MB",
                retention=5,
                compression="gz",
                backtrace=False,
                diagnose=False,
                enqueue=False,
                catch=True,
            )
        except OSError as exc:
            logger.warning("logging to stderr only: cannot write {} ({})", log_dir, exc.strerror)
    std_level = 5 if level == "TRACE" else level  # stdlib logging has no TRACE
    logging.basicConfig(handlers=[_InterceptHandler()], level=std_level, force=True)
    for name in ("sanic.root", "sanic.error", "sanic.server", "sanic.websockets"):
        std = logging.getLogger(name)
        std.handlers = [_InterceptHandler()]
        std.propagate = False
    logging.getLogger("sanic.access").disabled = True
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("websockets").setLevel(logging.WARNING)
