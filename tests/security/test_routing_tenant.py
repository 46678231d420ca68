"""The routing header a load balancer hashes on (`X-Diminuendo-Tenant`, config/haproxy.cfg.example)
is the client's to set, so the gateway checks it against the verified token (issue 16 item 5).

A client that names another tenant there would be routed to that tenant's instance: its sessions
would then be activated on an instance that does not own them (two instances holding one
session's runtime socket, without Valkey), and it could aim its load at another tenant's
instance. Every edge that verifies a token refuses the mismatch with `FORBIDDEN`.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from tests.conftest import client

HEADER = "X-Diminuendo-Tenant"


async def test_upgrade_whose_routing_tenant_is_not_the_tokens_is_refused(prod: Any) -> None:
    """Before the fix: the upgrade was accepted and authenticated as `acme` although the load
    balancer had routed it as `globex` (the test failed: DID NOT RAISE InvalidStatus)."""
    p = prod()
    token = p.token(tenant="acme")
    with pytest.raises(InvalidStatus) as refused:
        async with client(p.gw.ws_url, additional_headers={**p.headers(token), HEADER: "globex"}):
            pass
    response = refused.value.response
    assert response.status_code == 403
    assert b"FORBIDDEN" in response.body and b"X-Diminuendo-Tenant" in response.body
    assert token.encode() not in response.body
    async with client(p.gw.ws_url, additional_headers={**p.headers(token), HEADER: "acme"}) as c:
        assert c.received[-1]["identity"]["tenantId"] == "acme"


async def test_authenticate_message_checks_the_upgrades_routing_tenant(prod: Any) -> None:
    """First-message authentication (browsers): the header came with the upgrade, the token
    with `authenticate`. Before the fix: `authenticated` as `acme` on a socket routed as
    `globex`."""
    p = prod()
    async with client(p.gw.ws_url, handshake=False, additional_headers={HEADER: "globex"}) as c:
        await c.recv_until("connected")
        reply = await c.request({"type": "authenticate", "token": p.token(tenant="acme")})
        assert reply["type"] == "error" and reply["code"] == "FORBIDDEN", reply
        assert "X-Diminuendo-Tenant" in reply["message"]
        listing = await c.request({"type": "list_sessions"})
        assert listing["type"] == "error" and listing["code"] == "NOT_AUTHENTICATED", listing


async def test_rest_and_rpc_refuse_a_mismatched_routing_tenant(prod: Any) -> None:
    """Before the fix: `/api/me` answered 200 with tenant `acme` to a request routed as
    `globex`."""
    p = prod()
    token = p.token(tenant="acme")
    async with httpx.AsyncClient(base_url=p.gw.url, timeout=10) as http:
        wrong = await http.get("/api/me", headers={**p.headers(token), HEADER: "globex"})
        assert wrong.status_code == 403, wrong.text
        assert wrong.json()["error"]["code"] == "FORBIDDEN"
        right = await http.get("/api/me", headers={**p.headers(token), HEADER: "acme"})
        assert right.status_code == 200 and right.json()["tenantId"] == "acme"
        absent = await http.get("/api/me", headers=p.headers(token))
        assert absent.status_code == 200
        rpc = await http.post(
            "/rpc",
            json={"jsonrpc": "2.0", "id": 1, "method": "conversation/list", "params": {}},
            headers={**p.headers(token), HEADER: "globex"},
        )
        assert "error" in rpc.json() and "result" not in rpc.json(), rpc.text
