"""`diminuendo mcp`: the gateway's MCP tools over stdio, for hosts that launch a command (Claude
Desktop, IDE assistants).

It defines no tool of its own: it is the SDK's stdio server in front of the SDK's client of the
gateway's `/mcp` endpoint, forwarding the listings, tool calls (with their progress notifications)
and resource reads as they are, so stdio and HTTP hosts see one tool set, authorised on the gateway
with the same bearer token as REST. The token comes from `--token`, `$DIMINUENDO_TOKEN` or the
output of `--token-command` (run once at start, e.g. a CLI that prints a fresh access token);
in dev mode none is needed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import httpx
import mcp.types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp.shared._httpx_utils import create_mcp_http_client

from diminuendo import __version__
from diminuendo.client.token_command import TokenCommandFailed, run_token_command

DEFAULT_URL = "http://127.0.0.1:8001"
EXIT_USAGE = 2


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="diminuendo mcp",
        description="Serve the gateway's MCP tools over stdio (forwarding to its /mcp endpoint).",
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("DIMINUENDO_HTTP_URL", DEFAULT_URL),
        help="gateway base URL (env DIMINUENDO_HTTP_URL; default %(default)s)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("DIMINUENDO_TOKEN"),
        help="bearer token (env DIMINUENDO_TOKEN)",
    )
    parser.add_argument(
        "--token-command", help="a command whose standard output is the bearer token"
    )
    return parser.parse_args(argv)


def _token(args: argparse.Namespace) -> str | None:
    if args.token_command:
        try:
            return run_token_command(args.token_command)
        except TokenCommandFailed as exc:
            raise SystemExit(str(exc)) from None
    return args.token or None


Page = TypeVar("Page")


def _forward_page(
    list_page: Callable[..., Awaitable[Page]],
) -> Callable[[ServerRequestContext, types.PaginatedRequestParams | None], Awaitable[Page]]:
    """A handler for a paginated listing that asks `list_page` for the host's page (cursor)."""

    async def forward(
        ctx: ServerRequestContext, params: types.PaginatedRequestParams | None
    ) -> Page:
        return await list_page(cursor=params.cursor if params else None)

    return forward


def forwarding_server(upstream: Client) -> Server[Any]:
    """A stdio-facing MCP server whose every request is answered by `upstream`."""

    async def call_tool(
        ctx: ServerRequestContext, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        token = (ctx.meta or {}).get("progress_token")

        async def progress(value: float, total: float | None, message: str | None) -> None:
            if token is not None:
                await ctx.session.send_progress_notification(
                    token, value, total, message, related_request_id=ctx.request_id
                )

        return await upstream.call_tool(
            params.name, params.arguments or {}, progress_callback=progress
        )

    async def read_resource(
        ctx: ServerRequestContext, params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        return await upstream.read_resource(str(params.uri))

    return Server(
        "diminuendo",
        version=__version__,
        on_list_tools=_forward_page(upstream.list_tools),
        on_call_tool=call_tool,
        on_list_resources=_forward_page(upstream.list_resources),
        on_list_resource_templates=_forward_page(upstream.list_resource_templates),
        on_read_resource=read_resource,
    )


class Refused(Exception):
    """The gateway would not accept this command's token."""


async def _check_token(url: str, headers: dict[str, str] | None) -> None:
    """Ask `/api/me` first, so a bad token is one clear line at start rather than an error on
    the host's first tool call."""
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{url}/api/me", headers=headers)
    if response.status_code in (401, 403):
        try:
            code = response.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = str(response.status_code)
        raise Refused(f"the gateway refused the token ({code})")


async def _serve(url: str, token: str | None) -> None:
    url = url.rstrip("/")
    headers = {"Authorization": f"Bearer {token}"} if token else None
    await _check_token(url, headers)
    http = create_mcp_http_client(headers=headers)
    async with Client(streamable_http_client(f"{url}/mcp", http_client=http)) as up:
        server = forwarding_server(up)
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())


def main(argv: Sequence[str]) -> int:
    args = _parse(argv)
    try:
        asyncio.run(_serve(args.url, _token(args)))
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # the SDK's task groups raise exception groups
        print(f"diminuendo mcp: {args.url}: {_first_cause(exc)}", file=sys.stderr)
        return 1
    return 0


def _first_cause(exc: BaseException) -> str:
    """One line for the operator, not a traceback of task groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return str(exc) if isinstance(exc, Refused) else f"{type(exc).__name__}: {exc}"
