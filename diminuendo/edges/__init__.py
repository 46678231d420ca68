"""Edge adapters: the gateway's own sessions through AG-UI, MCP and A2A (docs/EDGES.md).

Each adapter is a thin projection of `SessionService` sessions — same identity, tenant walls,
permissions, quotas and `seq` — built on its protocol's official SDK. An adapter lives in
`diminuendo.edges.<name>` and exposes `mount(app: Sanic) -> None`, which adds its routes and reads
the gateway from `request.app.ctx.gateway` at request time. Only enabled adapters are imported
(`EDGE_ADAPTERS`), so a disabled one costs no import time and no memory. ACP is not here: it is a
stdio agent an editor launches (`diminuendo acp`), a client of the gateway like any other.
"""

from __future__ import annotations

import importlib
import importlib.util

from sanic import Sanic

# Adapter name → the import name of its protocol's SDK (the `edges` extra installs all four).
SDKS: dict[str, str] = {"agui": "ag_ui", "mcp": "mcp", "a2a": "a2a"}


def installed(name: str) -> bool:
    """Whether adapter `name` and its SDK can be imported (checked without importing them)."""
    return (
        importlib.util.find_spec(SDKS[name]) is not None
        and importlib.util.find_spec(f"diminuendo.edges.{name}") is not None
    )


def mount_edges(app: Sanic, adapters: tuple[str, ...]) -> None:
    """Import and mount each enabled adapter (settings validated that its SDK is installed)."""
    for name in adapters:
        importlib.import_module(f"diminuendo.edges.{name}").mount(app)
