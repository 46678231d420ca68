"""The client side's event loop: uvloop when it is installed (Sanic installs it on Linux)."""

from __future__ import annotations

import asyncio
from typing import Any


def run(coro: Any) -> Any:
    """Run the client side on uvloop when it is installed (Sanic installs it on Linux)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def loop_name() -> str:
    try:
        import uvloop

        return f"uvloop {uvloop.__version__}"
    except ImportError:
        return "asyncio"
