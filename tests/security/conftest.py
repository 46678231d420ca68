"""Hostile-client tests (PROTOCOL.md §13, docs/SECURITY.md): every one runs against real
processes — a gateway in production mode (`serve`, JWT auth), a local JWKS server that mints
real RS256 tokens, and the local stack — and each was shown failing on the code before its fix.

`prod` starts such a gateway with the settings a test needs; `Prod.token(...)` mints a token
for any user, tenant and role; `Prod.client(...)` opens an authenticated `/ws` client.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Client, Gateway, Stack, client, gateway_process
from tests.integration.jwks_server import ROLE_CLAIM, TENANT_CLAIM, JwksServer, production_env


@dataclass
class Prod:
    """A production-mode gateway and the JWKS server it trusts."""

    jwks: JwksServer
    gw: Gateway

    def token(
        self, user: str = "auth0|alice", tenant: str = "acme", role: str = "developer", **claims
    ) -> str:
        return self.jwks.mint(
            self.jwks.claims(sub=user, **{TENANT_CLAIM: tenant, ROLE_CLAIM: role}, **claims)
        )

    def headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    @contextlib.asynccontextmanager
    async def client(self, token: str, **kwargs: Any) -> AsyncIterator[Client]:
        async with client(self.gw.ws_url, additional_headers=self.headers(token), **kwargs) as c:
            yield c

    def http(self, token: str | None = None) -> httpx.AsyncClient:
        headers = self.headers(token) if token else {}
        return httpx.AsyncClient(base_url=self.gw.url, headers=headers, timeout=10)


@pytest.fixture
def prod(stack: Stack, tmp_path: Path) -> Iterator[Any]:
    """Factory: `prod(**settings)` → a started production gateway with its own JWKS server."""
    started: list[tuple[JwksServer, Gateway]] = []

    def start(**overrides: str) -> Prod:
        server = JwksServer()
        gw = gateway_process(stack, tmp_path, **production_env(server, **overrides))
        started.append((server, gw))
        gw.start()
        return Prod(server, gw)

    yield start
    for server, gw in started:
        if gw.proc is not None:
            gw.stop()
        server.stop()
