"""Authentication out of dev mode, end to end (PROTOCOL.md §2, §3, §8, §12; OPERATIONS.md §3).

Real gateway processes verify real RS256 tokens against a real JWKS server on 127.0.0.1
(`jwks_server.py`): the three WebSocket token paths and `GET /api/me` accept good tokens and
refuse every kind of bad one the same way; keys rotate and survive a JWKS outage; failed
attempts are limited per client IP; unauthenticated sockets time out with 4001; the Origin
check, security headers and the CSRF double-submit hold.

The gateways of this module start once, together, so the 30 s JWKS refetch cooldown of the
rotation and outage gateways runs down while the other tests run (those tests come last).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import Client, Gateway, Stack, client, gateway_process
from tests.integration.jwks_server import (
    JwksServer,
    b64json,
    new_key,
    production_env,
)

ORIGIN = "https://app.example.com"
TENANT_CLAIM = "https://diminuendo/tenant_id"
ROLE_CLAIM = "https://diminuendo/role"
LEAK = re.compile(r"Traceback|File \"|\.py\b|site-packages|/work/|/usr/|/tmp/")
STEP_S = 10.0  # bound on any single exchange with a gateway
PROMPT_S = 8.0  # a new kid while the JWKS server is unreachable must fail within this
DEVELOPER_PERMISSIONS = ["threads.create", "threads.read", "threads.write"]
ALL_PERMISSIONS = sorted(
    [
        "threads.read",
        "threads.create",
        "threads.write",
        "threads.delete",
        "members.manage",
        "config.manage",
    ]
)


# ----- fixtures ---------------------------------------------------------------------------------


@dataclass
class Prod:
    """A production-mode gateway and the JWKS server it trusts."""

    jwks: JwksServer
    gw: Gateway


@pytest.fixture(scope="module")
def fleet(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Prod]]:
    """Four production gateways, each with its own JWKS server: `main` for most tests, and
    `rotate`, `down`, `hang` whose key caches the last tests of the module manipulate."""
    servers: list[JwksServer] = []
    gateways: list[Gateway] = []
    fleet: dict[str, Prod] = {}
    try:
        for name in ("main", "rotate", "down", "hang"):
            server = JwksServer()
            servers.append(server)
            gw = gateway_process(
                stack,
                tmp_path_factory.mktemp(f"auth-{name}"),
                **production_env(server, AUTH_FAILURE_LIMIT="100000/60s"),
            )
            gateways.append(gw)
            fleet[name] = Prod(server, gw)
        with ThreadPoolExecutor(len(gateways)) as pool:  # in parallel: start-up is mostly waiting
            for started in [pool.submit(gw.start) for gw in gateways]:
                started.result()
        for prod in fleet.values():
            assert prod.jwks.wait_for_requests(1), "the gateway prefetches the JWKS at start-up"
        yield fleet
    finally:
        for gw in gateways:
            if gw.proc is not None:
                gw.stop()
        for server in servers:
            server.stop()


@pytest.fixture(scope="module")
def main(fleet: dict[str, Prod]) -> Prod:
    return fleet["main"]


@pytest.fixture
def own_jwks() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.stop()


# ----- helpers ----------------------------------------------------------------------------------


def can_bind(address: str) -> bool:
    """Whether this host routes `address` to loopback (Linux does for all of 127/8)."""
    with socket.socket() as sock:
        try:
            sock.bind((address, 0))
        except OSError:
            return False
    return True


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_clean(text: str, token: str | None = None) -> None:
    """No traceback or internal path; not the token, nor any sizeable piece of it."""
    assert not LEAK.search(text), text
    if token:
        assert token not in text, "the token is echoed"
        for part in token.split("."):
            if len(part) >= 12:
                assert part not in text, "a segment of the token is echoed"


async def refused_upgrade(url: str, **kwargs: Any) -> Any:
    """Open `/ws` expecting an HTTP refusal instead of the 101: returns the response."""
    async with asyncio.timeout(STEP_S):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, open_timeout=STEP_S, **kwargs):
                pass
    return refused.value.response


def error_body(body: bytes | bytearray) -> dict[str, Any]:
    parsed = json.loads(bytes(body))
    assert set(parsed) == {"error"} and {"code", "message"} <= set(parsed["error"]), parsed
    return parsed["error"]


@contextlib.asynccontextmanager
async def unauthenticated(url: str, **kwargs: Any) -> AsyncIterator[Client]:
    """A socket opened without a token: welcome says `requiresAuth`, then `connected`."""
    async with client(url, handshake=False, **kwargs) as c:
        welcome = await c.recv()
        assert welcome["type"] == "welcome" and welcome["requiresAuth"] is True, welcome
        assert (await c.recv())["type"] == "connected"
        yield c


async def me(gw: Gateway, token: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=STEP_S, **kwargs) as http:
        return await http.get(f"{gw.url}/api/me", headers=bearer(token))


async def assert_healthy(gw: Gateway) -> None:
    assert gw.proc is not None and gw.proc.poll() is None, "the gateway process died"
    async with httpx.AsyncClient(timeout=STEP_S) as http:
        assert (await http.get(f"{gw.url}/health")).status_code == 200


def expected_identity(claims: dict[str, Any], role: str = "developer") -> dict[str, Any]:
    return {
        "userId": claims["sub"],
        "email": claims.get("email"),
        "tenantId": claims.get(TENANT_CLAIM) or claims.get("org_id"),
        "role": role,
    }


# ----- 1. accepted on every path ----------------------------------------------------------------


async def test_bearer_header_on_the_upgrade_authenticates_at_once(main: Prod) -> None:
    claims = main.jwks.claims()
    token = main.jwks.mint(claims)
    async with client(main.gw.ws_url, handshake=False, additional_headers=bearer(token)) as c:
        welcome, connected, authenticated = [await c.recv() for _ in range(3)]
        assert welcome["type"] == "welcome" and welcome["requiresAuth"] is False
        assert connected["type"] == "connected" and connected["clientId"]
        assert authenticated == {"type": "authenticated", "identity": expected_identity(claims)}
        listing = await c.request({"type": "list_sessions"})
        assert listing["type"] == "session_list", listing


async def test_bearer_subprotocol_selects_v1_and_never_echoes_the_token(main: Prod) -> None:
    claims = main.jwks.claims()
    token = main.jwks.mint(claims)
    async with client(
        main.gw.ws_url, handshake=False, subprotocols=["diminuendo.v1", f"bearer.{token}"]
    ) as c:
        assert c.ws.subprotocol == "diminuendo.v1"
        headers = c.ws.response.headers
        assert headers["Sec-WebSocket-Protocol"] == "diminuendo.v1"
        assert_clean(str(headers), token)
        welcome, _, authenticated = [await c.recv() for _ in range(3)]
        assert welcome["requiresAuth"] is False
        assert authenticated["identity"] == expected_identity(claims)


async def test_authenticate_message_after_open(main: Prod) -> None:
    claims = main.jwks.claims(**{ROLE_CLAIM: "admin"})
    async with unauthenticated(main.gw.ws_url) as c:
        before = await c.request({"type": "list_sessions"})
        assert before["code"] == "NOT_AUTHENTICATED"
        reply = await c.request({"type": "authenticate", "token": main.jwks.mint(claims)})
        assert reply["type"] == "authenticated", reply
        assert reply["identity"] == expected_identity(claims, "admin")
        after = await c.request({"type": "list_sessions"})
        assert after["type"] == "session_list", after


@pytest.mark.parametrize(
    ("overrides", "role", "permissions"),
    [
        ({}, "developer", DEVELOPER_PERMISSIONS),
        ({ROLE_CLAIM: "owner"}, "owner", ALL_PERMISSIONS),
        # No role claim → AUTH_DEFAULT_ROLE (viewer); no tenant claim → Auth0's `org_id`.
        ({ROLE_CLAIM: None, TENANT_CLAIM: None, "org_id": "org_fallback"}, "viewer", None),
    ],
    ids=["developer", "owner", "org_id-and-default-role"],
)
async def test_rest_me_with_bearer(
    main: Prod, overrides: dict[str, Any], role: str, permissions: list[str] | None
) -> None:
    claims = main.jwks.claims(**overrides)
    response = await me(main.gw, main.jwks.mint(claims))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {
        **expected_identity(claims, role),
        "permissions": permissions or ["threads.read"],
    }


async def test_rest_me_without_a_token_is_401(main: Prod) -> None:
    async with httpx.AsyncClient(timeout=STEP_S) as http:
        for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"}):
            response = await http.get(f"{main.gw.url}/api/me", headers=headers)
            assert response.status_code == 401
            assert error_body(response.content)["code"] == "NOT_AUTHENTICATED"


async def test_header_token_is_checked_before_the_subprotocol(main: Prod) -> None:
    good, bad = main.jwks.mint(), "this-is-not-a-jwt"
    async with client(
        main.gw.ws_url,
        additional_headers=bearer(good),
        subprotocols=["diminuendo.v1", f"bearer.{bad}"],
    ) as c:
        assert c.ws.subprotocol == "diminuendo.v1"
    refused = await refused_upgrade(
        main.gw.ws_url,
        additional_headers=bearer(bad),
        subprotocols=["diminuendo.v1", f"bearer.{good}"],
    )
    assert refused.status_code == 401


async def test_a_token_in_the_query_string_is_not_a_token_path(main: Prod) -> None:
    token = main.jwks.mint()
    for query in (f"token={token}", f"access_token={token}"):
        async with unauthenticated(f"{main.gw.ws_url}?{query}") as c:
            assert (await c.request({"type": "list_sessions"}))["code"] == "NOT_AUTHENTICATED"


# ----- 2. rejected the same way on every path ---------------------------------------------------


def _bad_tokens(server: JwksServer) -> dict[str, str]:
    now = int(time.time())
    stranger = new_key()
    good = server.mint()
    header, _, signature = good.split(".")
    as_owner = b64json(server.claims(**{ROLE_CLAIM: "owner", TENANT_CLAIM: "someone-else"}))
    return {
        "alg-none": server.mint(alg="none"),
        "alg-none-with-signature": server.mint(alg="none") + "c2lnbmF0dXJl",
        "hs256-with-public-key": server.mint(alg="HS256"),
        "expired": server.mint(server.claims(iat=now - 7200, exp=now - 3600)),
        "nbf-in-the-future": server.mint(server.claims(nbf=now + 3600)),
        "wrong-issuer": server.mint(server.claims(iss="https://evil.example/")),
        "wrong-audience": server.mint(server.claims(aud="https://other.example")),
        "unknown-kid": server.mint(kid=f"kid-unknown-{uuid.uuid4().hex[:8]}", key=stranger),
        "known-kid-forged-signature": server.mint(kid=server.kid, key=stranger),
        "tampered-payload": f"{header}.{as_owner}.{signature}",
        "truncated-signature": good[:-12],
        "truncated-to-two-segments": f"{header}.{good.split('.')[1]}",
        "garbage": "this-is-not-a-jwt",
        "garbage-three-segments": "abc.def.ghi",
        "100KB": server.mint(server.claims(pad="x" * 100_000)),
        "missing-sub": server.mint(server.claims(sub=None)),
        "no-tenant": server.mint(server.claims(**{TENANT_CLAIM: None})),
    }


CASES = [
    "alg-none",
    "alg-none-with-signature",
    "hs256-with-public-key",
    "expired",
    "nbf-in-the-future",
    "wrong-issuer",
    "wrong-audience",
    "unknown-kid",
    "known-kid-forged-signature",
    "tampered-payload",
    "truncated-signature",
    "truncated-to-two-segments",
    "garbage",
    "garbage-three-segments",
    "100KB",
    "missing-sub",
    "no-tenant",
]
OVERSIZED = "100KB"  # over Sanic's header limit on the HTTP paths: any 4xx refusal is fine


@pytest.fixture(scope="module")
def bad_tokens(main: Prod) -> dict[str, str]:
    tokens = _bad_tokens(main.jwks)
    assert sorted(tokens) == sorted(CASES)
    assert len(tokens[OVERSIZED]) > 100_000
    return tokens


def assert_refusal(response: Any, case: str, token: str) -> None:
    status = response.status_code
    if case == OVERSIZED:
        assert 400 <= status < 500, status
    else:
        assert status == 401, (status, bytes(response.body))
        assert error_body(response.body)["code"] == "AUTH_FAILED"
    assert_clean(bytes(response.body).decode(errors="replace"), token)


@pytest.mark.parametrize("case", CASES)
async def test_rejected_bearer_header_refuses_the_upgrade(
    main: Prod, bad_tokens: dict[str, str], case: str
) -> None:
    token = bad_tokens[case]
    response = await refused_upgrade(main.gw.ws_url, additional_headers=bearer(token))
    assert_refusal(response, case, token)
    await assert_healthy(main.gw)


@pytest.mark.parametrize("case", CASES)
async def test_rejected_bearer_subprotocol_refuses_the_upgrade(
    main: Prod, bad_tokens: dict[str, str], case: str
) -> None:
    token = bad_tokens[case]
    response = await refused_upgrade(
        main.gw.ws_url, subprotocols=["diminuendo.v1", f"bearer.{token}"]
    )
    assert_refusal(response, case, token)
    await assert_healthy(main.gw)


@pytest.mark.parametrize("case", CASES)
async def test_rejected_authenticate_message_keeps_the_socket_for_a_retry(
    main: Prod, bad_tokens: dict[str, str], case: str
) -> None:
    token = bad_tokens[case]
    async with unauthenticated(main.gw.ws_url) as c:
        reply = await c.request({"type": "authenticate", "token": token})
        assert reply["type"] == "error" and reply["code"] == "AUTH_FAILED", reply
        assert_clean(json.dumps(reply), token)
        assert len(reply["message"]) <= 500
        # Nothing was granted: the socket is open but still unauthenticated …
        assert (await c.request({"type": "ping"}))["type"] == "pong"
        assert (await c.request({"type": "list_sessions"}))["code"] == "NOT_AUTHENTICATED"
        # … and a good token on the same socket works.
        retry = await c.request({"type": "authenticate", "token": main.jwks.mint()})
        assert retry["type"] == "authenticated", retry
    await assert_healthy(main.gw)


@pytest.mark.parametrize("case", CASES)
async def test_rejected_token_on_rest_is_401(
    main: Prod, bad_tokens: dict[str, str], case: str
) -> None:
    token = bad_tokens[case]
    response = await me(main.gw, token)
    status = response.status_code
    if case == OVERSIZED:
        assert 400 <= status < 500, status
    else:
        assert status == 401, (status, response.text)
        assert error_body(response.content)["code"] == "AUTH_FAILED"
    assert_clean(response.text, token)
    await assert_healthy(main.gw)


async def test_unknown_kids_do_not_hammer_the_jwks_server(main: Prod) -> None:
    """A burst of tokens with random kids costs the JWKS server at most one request."""
    stranger = new_key()
    tokens = [main.jwks.mint(kid=f"random-{i}-{uuid.uuid4().hex}", key=stranger) for i in range(30)]
    before = main.jwks.request_count
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=STEP_S) as http:
        responses = await asyncio.gather(
            *(http.get(f"{main.gw.url}/api/me", headers=bearer(t)) for t in tokens)
        )
    assert [r.status_code for r in responses] == [401] * len(tokens)
    assert time.monotonic() - started < PROMPT_S
    assert main.jwks.request_count - before <= 1, main.jwks.requests


async def test_no_token_reaches_the_log(main: Prod, bad_tokens: dict[str, str]) -> None:
    """Good and bad tokens alike: not whole, not their signature, not their payload."""
    await asyncio.sleep(0.2)  # let the log catch up with the tests above
    log = main.gw.output()
    assert "authentication failed" in log.lower(), "failures are logged (without the token)"
    assert "Traceback" not in log
    for token in {*main.jwks.minted, *bad_tokens.values()}:
        assert token not in log
        for part in token.split(".")[1:]:
            if len(part) >= 12:
                assert part not in log, "a token segment is logged"


# ----- 6. origin, security headers, CSRF --------------------------------------------------------


async def test_foreign_origin_is_refused_before_the_handshake(main: Prod) -> None:
    token = main.jwks.mint()
    response = await refused_upgrade(
        main.gw.ws_url, origin="https://evil.example", additional_headers=bearer(token)
    )
    assert response.status_code == 403
    assert error_body(response.body)["code"] == "FORBIDDEN"
    assert_clean(bytes(response.body).decode(), token)
    # The allowed origin, with or without a token up front.
    async with client(main.gw.ws_url, origin=ORIGIN, additional_headers=bearer(token)) as c:
        assert (await c.request({"type": "ping"}))["type"] == "pong"
    async with unauthenticated(main.gw.ws_url, origin=ORIGIN) as c:
        reply = await c.request({"type": "authenticate", "token": token})
        assert reply["type"] == "authenticated"


SECURITY_HEADERS = {"x-content-type-options": "nosniff", "x-frame-options": "DENY"}


def assert_security_headers(headers: httpx.Headers | Headers, what: str, hsts: bool) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name) == value, (what, name, headers.get(name))
    assert headers.get("content-security-policy"), (what, "content-security-policy")
    if hsts:
        assert "max-age=" in (headers.get("strict-transport-security") or ""), (what, "hsts")
    else:
        assert headers.get("strict-transport-security") is None, (what, "hsts in dev mode")


async def test_security_headers_on_every_http_response(main: Prod, gateway: Gateway) -> None:
    url = main.gw.url
    token = main.jwks.mint()
    async with httpx.AsyncClient(timeout=STEP_S) as http:
        responses = {
            "health": await http.get(f"{url}/health"),
            "api health": await http.get(f"{url}/api/health"),
            "metrics": await http.get(f"{url}/metrics"),
            "me 200": await http.get(f"{url}/api/me", headers=bearer(token)),
            "me 401": await http.get(f"{url}/api/me"),
            "csrf": await http.get(f"{url}/api/auth/csrf"),
            "404": await http.get(f"{url}/no/such/route"),
            "405": await http.put(f"{url}/health"),
            "csrf 403": await http.post(
                f"{url}/api/threads", headers={**bearer(token), "Origin": ORIGIN}, json={}
            ),
            "preflight": await http.options(
                f"{url}/api/threads",
                headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
            ),
            "413 header": await http.get(f"{url}/api/me", headers=bearer("x" * 100_000)),
        }
    for what, response in responses.items():
        assert_security_headers(response.headers, what, hsts=True)
    refused_auth = await refused_upgrade(main.gw.ws_url, additional_headers=bearer("a.b.c"))
    refused_origin = await refused_upgrade(main.gw.ws_url, origin="https://evil.example")
    assert_security_headers(refused_auth.headers, "upgrade 401", hsts=True)
    assert_security_headers(refused_origin.headers, "upgrade 403", hsts=True)
    # Dev mode: the same headers, but no HSTS.
    async with httpx.AsyncClient(timeout=STEP_S) as http:
        dev = await http.get(f"{gateway.url}/health")
    assert_security_headers(dev.headers, "dev health", hsts=False)


async def test_csrf_double_submit_on_mutating_requests(main: Prod) -> None:
    url = f"{main.gw.url}/api/threads"
    token = main.jwks.mint(main.jwks.claims(**{TENANT_CLAIM: f"csrf-{uuid.uuid4().hex[:8]}"}))
    async with httpx.AsyncClient(timeout=STEP_S) as http:
        issued = await http.get(f"{main.gw.url}/api/auth/csrf")
        assert issued.status_code == 200
        csrf = issued.json()["csrfToken"]
        set_cookie = issued.headers["set-cookie"]
        assert set_cookie.startswith(f"csrf_token={csrf};"), set_cookie
        assert "samesite=strict" in set_cookie.lower() and "secure" in set_cookie.lower()

        body = {"agentType": "echo", "name": "csrf"}
        browser = {**bearer(token), "Origin": ORIGIN}
        refused = [
            await http.post(url, headers=browser, json=body),
            await http.post(url, headers={**browser, "Cookie": f"csrf_token={csrf}"}, json=body),
            await http.post(url, headers={**browser, "X-CSRF-Token": csrf}, json=body),
            await http.post(
                url,
                headers={**browser, "Cookie": f"csrf_token={csrf}", "X-CSRF-Token": csrf + "x"},
                json=body,
            ),
        ]
        for response in refused:
            assert response.status_code == 403, response.text
            assert error_body(response.content)["code"] == "FORBIDDEN"

        accepted = await http.post(
            url,
            headers={**browser, "Cookie": f"csrf_token={csrf}", "X-CSRF-Token": csrf},
            json=body,
        )
        assert accepted.status_code == 201, accepted.text
        # A non-browser client (no Origin) relies on its Bearer token alone.
        cli = await http.post(url, headers=bearer(token), json=body)
        assert cli.status_code == 201, cli.text
        listing = await http.get(url, headers=bearer(token))
        assert len(listing.json()["threads"]) == 2, "the refused requests created nothing"


# ----- 4. failed attempts are limited per client IP ---------------------------------------------


async def test_failed_attempts_are_limited_per_client_ip(start_gateway, own_jwks) -> None:
    gw = start_gateway(**production_env(own_jwks, AUTH_FAILURE_LIMIT="3/60s"))
    good = own_jwks.mint()
    bad = "bad.bad.bad"
    async with unauthenticated(gw.ws_url) as c:
        # Three failures, one on each surface.
        refused = await refused_upgrade(gw.ws_url, additional_headers=bearer(bad))
        assert refused.status_code == 401
        assert (await c.request({"type": "authenticate", "token": bad}))["code"] == "AUTH_FAILED"
        assert (await me(gw, bad)).status_code == 401

        # Past the limit further failures are turned away, with a time to retry …
        limited = await c.request({"type": "authenticate", "token": bad})
        assert limited["type"] == "error" and limited["code"] == "AUTH_RATE_LIMITED", limited
        assert 0 < limited["retryAfterMs"] <= 60_000
        assert (await c.request({"type": "list_sessions"}))["code"] == "NOT_AUTHENTICATED"
        # … but a valid token never is (PROTOCOL.md §3).
        accepted = await c.request({"type": "authenticate", "token": good})
        assert accepted["type"] == "authenticated", accepted

    rest = await me(gw, bad)
    assert rest.status_code == 429 and error_body(rest.content)["code"] == "AUTH_RATE_LIMITED"
    assert 1 <= int(rest.headers["retry-after"]) <= 60
    upgrade = await refused_upgrade(gw.ws_url, additional_headers=bearer(bad))
    assert upgrade.status_code == 429
    assert error_body(upgrade.body)["code"] == "AUTH_RATE_LIMITED"
    assert (await me(gw, good)).status_code == 200
    # Without a proxy setting, a forged X-Forwarded-For does not make a new client.
    async with httpx.AsyncClient(timeout=STEP_S) as http:
        spoofed = await http.get(
            f"{gw.url}/api/me", headers={**bearer(bad), "X-Forwarded-For": "203.0.113.9"}
        )
    assert spoofed.status_code == 429

    # Another client IP is not affected.
    if not can_bind("127.0.0.2"):
        pytest.skip("this host has no second loopback address to test per-IP limits with")
    other = await me(gw, bad, transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2"))
    assert other.status_code == 401, other.text
    async with client(gw.ws_url, additional_headers=bearer(good), local_addr=("127.0.0.2", 0)) as c:
        assert (await c.request({"type": "ping"}))["type"] == "pong"
    await assert_healthy(gw)


async def test_rate_limited_upgrade_says_when_to_retry(start_gateway, own_jwks) -> None:
    gw = start_gateway(**production_env(own_jwks, AUTH_FAILURE_LIMIT="1/60s"))
    assert (await me(gw, "bad.bad.bad")).status_code == 401
    upgrade = await refused_upgrade(gw.ws_url, additional_headers=bearer("bad.bad.bad"))
    assert upgrade.status_code == 429
    body = error_body(upgrade.body)
    assert body["code"] == "AUTH_RATE_LIMITED"
    assert body.get("retryAfterMs") or upgrade.headers.get("Retry-After"), body


# ----- 5. the authentication deadline -----------------------------------------------------------


async def test_unauthenticated_socket_is_closed_with_4001(start_gateway, own_jwks) -> None:
    gw = start_gateway(**production_env(own_jwks, AUTH_TIMEOUT="1"))

    async def idle_until_closed() -> float:
        started = time.monotonic()
        async with unauthenticated(gw.ws_url) as c:
            # Anything but `authenticate` (and `ping`) is refused, and does not reset the clock.
            for message in (
                {"type": "list_sessions"},
                {"type": "create_session", "agentType": "echo"},
                {"type": "join_session", "sessionId": "ses_x"},
            ):
                reply = await c.request(message)
                assert reply["code"] == "NOT_AUTHENTICATED" and reply["id"], reply
            with pytest.raises(ConnectionClosed) as closed:
                await c.recv(timeout=STEP_S)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
        return time.monotonic() - started

    async def authenticated_stays() -> None:
        async with unauthenticated(gw.ws_url) as c:
            reply = await c.request({"type": "authenticate", "token": own_jwks.mint()})
            assert reply["type"] == "authenticated"
            await asyncio.sleep(1.6)
            assert (await c.request({"type": "ping"}))["type"] == "pong"

    elapsed, _ = await asyncio.gather(idle_until_closed(), authenticated_stays())
    assert 0.8 <= elapsed <= 4.0, elapsed


# ----- 3. key rotation and JWKS outages (kept last: they wait out the 30 s refetch cooldown) -----


async def test_rotated_key_is_picked_up_without_restart(fleet: dict[str, Prod]) -> None:
    prod = fleet["rotate"]
    old_kid = prod.jwks.kid
    await asyncio.sleep(prod.jwks.cooldown_remaining())
    new_kid = prod.jwks.rotate()  # the old key is withdrawn, as after a revocation
    stranger = new_key()
    before = prod.jwks.request_count

    # A burst mixing the new kid and random kids: one fetch serves them all.
    good = [prod.jwks.mint(kid=new_kid) for _ in range(5)]
    junk = [prod.jwks.mint(kid=f"junk-{uuid.uuid4().hex}", key=stranger) for _ in range(5)]
    async with httpx.AsyncClient(timeout=STEP_S) as http:
        responses = await asyncio.gather(
            *(http.get(f"{prod.gw.url}/api/me", headers=bearer(t)) for t in good + junk)
        )
    assert [r.status_code for r in responses] == [200] * 5 + [401] * 5
    assert prod.jwks.request_count - before == 1, prod.jwks.requests

    # The new key works on the WebSocket too; a fresh token under the withdrawn key does not.
    async with client(prod.gw.ws_url, additional_headers=bearer(prod.jwks.mint(kid=new_kid))):
        pass
    withdrawn = await me(prod.gw, prod.jwks.mint(kid=old_kid))
    assert withdrawn.status_code == 401

    # More unknown kids within the cooldown: the JWKS server is not asked again.
    more = [prod.jwks.mint(kid=f"junk-{uuid.uuid4().hex}", key=stranger) for _ in range(10)]
    async with httpx.AsyncClient(timeout=STEP_S) as http:
        for token in more:
            assert (
                await http.get(f"{prod.gw.url}/api/me", headers=bearer(token))
            ).status_code == 401
    assert prod.jwks.request_count - before == 1, prod.jwks.requests
    await assert_healthy(prod.gw)


async def test_jwks_down_cached_keys_work_and_new_kids_fail_promptly(
    fleet: dict[str, Prod],
) -> None:
    prod = fleet["down"]
    await asyncio.sleep(prod.jwks.cooldown_remaining())
    prod.jwks.stop()  # connection refused from now on
    new_kid = prod.jwks.add_key()

    started = time.monotonic()
    unknown = await me(prod.gw, prod.jwks.mint(kid=new_kid))  # triggers a (failing) fetch
    assert unknown.status_code == 401 and error_body(unknown.content)["code"] == "AUTH_FAILED"
    assert time.monotonic() - started < PROMPT_S

    # Fresh tokens (not in the verifier's cache) under the cached key: every path still works.
    assert (await me(prod.gw, prod.jwks.mint())).status_code == 200
    async with client(prod.gw.ws_url, additional_headers=bearer(prod.jwks.mint())) as c:
        assert (await c.request({"type": "ping"}))["type"] == "pong"
    async with unauthenticated(prod.gw.ws_url) as c:
        reply = await c.request({"type": "authenticate", "token": prod.jwks.mint()})
        assert reply["type"] == "authenticated", reply
        started = time.monotonic()
        again = await c.request({"type": "authenticate", "token": prod.jwks.mint(kid=new_kid)})
        assert again["code"] == "AUTH_FAILED" and time.monotonic() - started < PROMPT_S
    await assert_healthy(prod.gw)


async def test_jwks_hanging_new_kid_fails_promptly_cached_keys_do_not_wait(
    fleet: dict[str, Prod],
) -> None:
    prod = fleet["hang"]
    await asyncio.sleep(prod.jwks.cooldown_remaining())
    prod.jwks.set_hang(True)  # accepts the request, never answers
    new_kid = prod.jwks.add_key()
    before = prod.jwks.request_count

    started = time.monotonic()
    pending = asyncio.create_task(me(prod.gw, prod.jwks.mint(kid=new_kid)))
    assert await asyncio.to_thread(prod.jwks.wait_for_requests, before + 1)
    # While that fetch hangs, a known kid is answered from memory at once.
    cached_started = time.monotonic()
    assert (await me(prod.gw, prod.jwks.mint())).status_code == 200
    assert time.monotonic() - cached_started < 2.0

    unknown = await asyncio.wait_for(pending, PROMPT_S + 2)
    assert unknown.status_code == 401 and error_body(unknown.content)["code"] == "AUTH_FAILED"
    assert time.monotonic() - started < PROMPT_S
    prod.jwks.set_hang(False)
    await assert_healthy(prod.gw)
