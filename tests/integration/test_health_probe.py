"""`GET /health` answered from the cached response by the connection protocol, and every other
shape of request answered by Sanic: both must look the same to a client."""

from __future__ import annotations

import socket

import httpx

from tests.conftest import Gateway


def raw_exchange(port: int, payload: bytes, responses: int) -> list[bytes]:
    """Send `payload` in one write on one keep-alive connection; read `responses` responses."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        buffer = b""
        answers: list[bytes] = []
        while len(answers) < responses:
            head, sep, rest = buffer.partition(b"\r\n\r\n")
            if sep:
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                if len(rest) >= length:
                    answers.append(head + sep + rest[:length])
                    buffer = rest[length:]
                    continue
            chunk = sock.recv(65536)
            assert chunk, "the server closed the connection"
            buffer += chunk
        return answers


PROBE = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: lb\r\n\r\n"


async def test_fast_and_sanic_answers_look_the_same(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        fast = await http.get("/health")
        slow = await http.get("/health?via=sanic")  # a query string takes Sanic's path
        api = await http.get("/api/health")
    for response in (fast, slow, api):
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert set(fast.json()) == set(slow.json()) == set(api.json())
    assert fast.json()["dependencies"].keys() == slow.json()["dependencies"].keys()


def test_keep_alive_probes_and_pipelined_requests_are_all_answered_in_order(
    gateway: Gateway,
) -> None:
    # Three probes one after another on one connection: each on the fast path.
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        for _ in range(3):
            sock.sendall(PROBE)
            head = sock.recv(65536)
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    # Pipelined: health, then a 404, in one write; Sanic answers both, in order.
    answers = raw_exchange(
        gateway.port, PROBE + b"GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 2
    )
    assert answers[0].startswith(b"HTTP/1.1 200") and b'"status"' in answers[0]
    assert answers[1].startswith(b"HTTP/1.1 404")


async def test_a_browser_probe_with_an_origin_gets_cors_headers(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        response = await http.get("/health", headers={"Origin": "http://localhost:5173"})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] in ("*", "http://localhost:5173")
