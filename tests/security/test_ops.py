"""Operator-facing holes (issue 13, items 14, 17, 18, 19), against real processes: a dev-mode
gateway for the DNS-rebinding guard, a production gateway for `/metrics`, a Podium stand-in whose
agent fails with a leaky message, and the real CLI for configuration refusals."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from diminuendo.local import agents
from diminuendo.local.ports import free_port
from diminuendo.local.stack import LocalStack, LocalStackConfig
from tests.conftest import LOCAL_KEY, Gateway, Stack, client, gateway_process
from tests.unit.test_settings import PROD as PRODUCTION  # a valid production configuration

FOREIGN_HOSTS = ("evil.example", "evil.example:8001", "127.0.0.1.evil.example", "localhost.evil")


def raw_status(port: int, request: str) -> tuple[int, bytes]:
    """Send one raw HTTP/1.1 request (any Host header) and return the status and the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, "the server closed the connection without answering"
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        while len(body) < length:
            chunk = sock.recv(65536)
            assert chunk
            body += chunk
    return int(head.split(b" ", 2)[1]), body


def upgrade_request(host: str) -> str:
    return (
        f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )


# --- 14: dev mode answers only loopback Host names (DNS rebinding) -------------------------------


@pytest.mark.parametrize("host", FOREIGN_HOSTS)
def test_dev_mode_refuses_requests_for_a_foreign_host(gateway: Gateway, host: str) -> None:
    """A page on evil.example whose DNS name is rebound to 127.0.0.1 reaches the dev gateway
    with `Host: evil.example`; dev mode has no authentication, so that page could list, create
    and run sessions. Before the fix: REST, the WebSocket upgrade and the health fast path
    all answered (200 / 101 / 200)."""
    for path in ("/api/threads", "/health", "/api/health?via=sanic"):
        status, body = raw_status(gateway.port, f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n")
        assert status == 403, (path, status, body)
        assert b'"FORBIDDEN"' in body and b"DEV_MODE_ALLOW_REMOTE" in body
    status, body = raw_status(gateway.port, upgrade_request(host))
    assert status == 403 and b'"FORBIDDEN"' in body


@pytest.mark.parametrize(
    "request_text",
    [
        "GET /api/threads HTTP/1.1\r\n\r\n",  # no Host at all
        "GET /api/threads HTTP/1.0\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n",  # the dev console
        "GET /metrics HTTP/1.1\r\nHost: evil.example\r\n\r\n",
        "POST /rpc HTTP/1.1\r\nHost: evil.example\r\nContent-Type: application/json\r\n"
        'Content-Length: 53\r\n\r\n{"jsonrpc":"2.0","id":1,"method":"conversation/list"}',
        "OPTIONS /api/threads HTTP/1.1\r\nHost: evil.example\r\nOrigin: http://evil.example\r\n"
        "Access-Control-Request-Method: POST\r\n\r\n",
    ],
)
def test_dev_mode_host_rule_covers_every_route(gateway: Gateway, request_text: str) -> None:
    status, body = raw_status(gateway.port, request_text)
    assert status == 403 and b'"FORBIDDEN"' in body, (status, body)
    assert b"DEV_MODE_ALLOW_REMOTE" in body  # the Host rule answered, before any other check


@pytest.mark.parametrize("host", ("localhost", "127.0.0.1", "[::1]", "LOCALHOST", "127.0.0.2"))
def test_dev_mode_answers_loopback_hosts_with_any_port(gateway: Gateway, host: str) -> None:
    for with_port in (host, f"{host}:{gateway.port}"):
        for path in ("/api/threads", "/health", "/api/health?via=sanic"):
            status, _ = raw_status(
                gateway.port, f"GET {path} HTTP/1.1\r\nHost: {with_port}\r\n\r\n"
            )
            assert status == 200, (with_port, path)
        status, _ = raw_status(gateway.port, upgrade_request(with_port))
        assert status == 101


def test_dev_mode_allow_remote_answers_any_host(start_gateway: Any) -> None:
    gw = start_gateway(DEV_MODE_ALLOW_REMOTE="true")
    for path in ("/api/threads", "/health"):
        status, _ = raw_status(gw.port, f"GET {path} HTTP/1.1\r\nHost: evil.example\r\n\r\n")
        assert status == 200
    assert raw_status(gw.port, upgrade_request("evil.example"))[0] == 101


async def test_production_mode_has_no_host_rule(prod: Any) -> None:
    """Production authenticates every request; names are the load balancer's business."""
    p = prod()
    status, _ = raw_status(p.gw.port, "GET /health HTTP/1.1\r\nHost: gateway.example\r\n\r\n")
    assert status == 200


# --- 18: METRICS_TOKEN protects /metrics -------------------------------------------------------


async def test_metrics_token_is_required_when_set(prod: Any) -> None:
    """Before the fix: `/metrics` answered 200 to anyone (tenant-level counters, upstream
    latencies and error rates) even with METRICS_TOKEN set."""
    p = prod(METRICS_TOKEN="scrape-me-0123456789")
    async with p.http() as http:
        for headers in (
            {},
            {"Authorization": "Bearer wrong-token-0123456789"},
            {"Authorization": "Bearer scrape-me-012345678"},  # a prefix of the token
            {"Authorization": "Basic c2NyYXBlLW1lLTAxMjM0NTY3ODk="},
            {"Authorization": "Bearer scrape-me-0123456789é".encode()},
        ):
            refused = await http.get("/metrics", headers=headers)
            assert refused.status_code == 401, headers
            assert refused.json()["error"]["code"] == "NOT_AUTHENTICATED"
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert "scrape-me" not in refused.text
        for scheme in ("Bearer", "bearer"):
            allowed = await http.get(
                "/metrics", headers={"Authorization": f"{scheme} scrape-me-0123456789"}
            )
            assert allowed.status_code == 200
            assert "diminuendo_" in allowed.text


async def test_metrics_stay_open_without_a_token(prod: Any) -> None:
    p = prod()
    async with p.http() as http:
        assert (await http.get("/metrics")).status_code == 200


# --- 19: runtime error messages are redacted before they reach a client ------------------------

LEAKS = (
    "sk-live-0123456789abcdefghij",
    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl",
    "hunter2",
    "/srv/podium/runtime/agent.py",
    "Traceback",
)


async def _leaky_agent(turn: Any) -> None:
    turn.say("partial ")
    raise RuntimeError(
        "upstream said no: api_key=sk-live-0123456789abcdefghij via "
        "https://svc:hunter2@models.internal/v1 Authorization: Bearer "
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl in /srv/podium/runtime/agent.py\n"
        'Traceback (most recent call last):\n  File "/srv/podium/runtime/agent.py", line 3\n'
        + "detail "
        * 300
    )


@pytest.fixture
async def leaky_podium(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[LocalStackConfig]:
    """A Podium stand-in in this process whose `echo` agent fails with secrets in its error."""
    monkeypatch.setitem(agents.AGENTS, "echo", _leaky_agent)
    port = free_port()
    config = LocalStackConfig(
        data_dir=tmp_path, podium_port=port, api_key=LOCAL_KEY, services=("podium",)
    )
    podium = LocalStack(config)
    await podium.start()
    try:
        yield config
    finally:
        await podium.stop()


@pytest.fixture
async def gateway_on_leaky_podium(
    stack: Stack, leaky_podium: LocalStackConfig, tmp_path: Path
) -> AsyncIterator[Gateway]:
    """Started and stopped off the event loop: the Podium it drains against runs on that loop
    (stopped on it, the gateway waited out its whole grace period for Podium: 10 s)."""
    gw = gateway_process(stack, tmp_path, PODIUM_URL=f"http://127.0.0.1:{leaky_podium.podium_port}")
    await asyncio.to_thread(gw.start)
    yield gw
    await asyncio.to_thread(gw.stop)


async def test_turn_error_messages_from_the_runtime_are_redacted(
    gateway_on_leaky_podium: Gateway,
) -> None:
    """Before the fix: the agent's exception text reached every client of the session verbatim:
    an API key, URL credentials, a bearer JWT, a server path, a traceback, 2,100 characters in
    all, and the runtime's own code `AGENT_ERROR`, which is not a §12 code."""
    async with client(gateway_on_leaky_podium.ws_url) as c:
        created = await c.request({"type": "create_session", "agentType": "echo"})
        session_id = created["session"]["id"]
        await c.request({"type": "join_session", "sessionId": session_id})
        await c.send({"type": "run_turn", "sessionId": session_id, "text": "go"})
        frames = await c.recv_until("turn_error")
    error = frames[-1]
    assert error["code"] == "UPSTREAM_ERROR"
    assert error["message"].startswith("upstream said no")
    assert len(error["message"]) <= 500
    for leak in LEAKS:
        assert leak not in error["message"], leak
    assert not any(secret in gateway_on_leaky_podium.output() for secret in LEAKS[:3])


# --- 17: plain-http upstreams to other hosts are refused ---------------------------------------


# `.invalid` names never resolve (RFC 6761): a gateway that wrongly starts reaches nothing.
PLAIN = {
    "PODIUM_URL": "http://podium.invalid:8002",
    "ENSEMBLE_URL": "http://ensemble.invalid",
    "UNISON_URL": "http://unison.invalid:8005",
}


def cli(command: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "diminuendo", command],
        env={"PATH": os.environ["PATH"], **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_plain_http_upstreams_on_other_hosts_are_refused(command: str, tmp_path: Path) -> None:
    """Every upstream call carries that upstream's API key in a header. Before the fix
    `http://podium.internal` was accepted and `serve` started, sending the keys in clear over
    the network."""
    bind = {"HOST": "127.0.0.1", "PORT": str(free_port())}
    done = cli(command, {**PRODUCTION, **PLAIN, **bind}, tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 3, lines
    for line, name in zip(lines, PLAIN, strict=True):
        assert line.startswith(f"config error: {name}: ")
        assert "ALLOW_INSECURE_UPSTREAMS=true" in line and "https://" in line
    assert "secret-value" not in done.stderr and "Traceback" not in done.stderr


def test_plain_http_upstreams_are_allowed_when_the_operator_says_so(tmp_path: Path) -> None:
    done = cli(
        "check-config", {**PRODUCTION, **PLAIN, "ALLOW_INSECURE_UPSTREAMS": "true"}, tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["PODIUM_URL"] == PLAIN["PODIUM_URL"]


def test_plain_http_to_loopback_and_https_anywhere_are_fine(tmp_path: Path) -> None:
    local = {
        "PODIUM_URL": "http://127.0.0.1:8002",
        "ENSEMBLE_URL": "http://localhost:8004",
        "UNISON_URL": "http://[::1]:8005",
    }
    assert cli("check-config", {**PRODUCTION, **local}, tmp_path).returncode == 0
    assert cli("check-config", PRODUCTION, tmp_path).returncode == 0


def test_otel_endpoint_over_plain_http_is_refused_only_with_credentials(tmp_path: Path) -> None:
    """Spans carry no key, so a collector at http://otel-collector:4318 is fine; but with
    OTEL_EXPORTER_OTLP_HEADERS (an `Authorization` for a hosted collector, say) every export
    would send that header in clear."""
    collector = {**PRODUCTION, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel.invalid:4318"}
    assert cli("check-config", collector, tmp_path).returncode == 0
    for variable in ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"):
        done = cli("check-config", {**collector, variable: "authorization=Bearer k"}, tmp_path)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("config error: OTEL_EXPORTER_OTLP_ENDPOINT: ")
        assert variable in done.stderr and "Bearer k" not in done.stderr


# --- 19: a caller's X-Request-ID is propagated only when all of it is a safe token -------------


def test_a_request_id_with_a_final_newline_is_replaced_not_propagated(start_gateway: Any) -> None:
    """The caller's X-Request-ID travels to Podium, Ensemble and Unison. Before the fix the
    shape check was `^…$` with `re.match`, and `$` also matches before a final newline, so
    `abc\\n` (which Sanic passes on) was propagated: httpx refused to send the upstream request
    and the listing failed with 503 UPSTREAM_UNAVAILABLE, each time counting as an upstream
    failure towards the circuit breaker that every tenant shares."""
    gw = start_gateway()
    request = "GET /api/threads HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-ID: abc\n\r\n\r\n"
    statuses = [raw_status(gw.port, request)[0] for _ in range(6)]  # > the breaker's 5
    assert statuses == [200] * 6
    assert raw_status(gw.port, "GET /api/threads HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")[0] == 200
