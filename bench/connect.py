"""connect: connect + WebSocket handshake + authentication latency, one connection at a time.

    .venv/bin/python bench/connect.py --connections 1000

Variants, each over `--connections` sequential connections (kept open until the variant ends):

* `dev`            — dev-mode gateway; done when `authenticated` arrives (3rd frame).
* `jwt-warm`       — real RS256 JWT in the upgrade's Authorization header, the same token every
                     time (verifier cache warm).
* `jwt-cold`       — a distinct token per connection (same user): signature verified each time.
* `jwt-cold-user`  — a distinct user per connection: verification plus the member-role lookup
                     in Unison (role cache cold).
* `jwt-warm-message` — same token sent as the first `authenticate` message instead.
* `bare`           — bare Sanic WebSocket open (101 only), the framework's floor.

The JWT gateway runs with `DEV_MODE=false` against a JWKS server this benchmark runs on
127.0.0.1 (`AUTH0_DOMAIN=http://127.0.0.1:<port>`).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from benchlib import WS, WSError, close_all, ws_connect
from cryptography.hazmat.primitives.asymmetric import rsa
from lib.host import raise_nofile
from lib.loop import run
from lib.options import BenchOptions, option, parse_options
from lib.proc import cpu_seconds
from lib.processes import Bench, Gateway
from lib.results import summary, write_result
from lib.stats import percentiles

from diminuendo.settings import LOCAL_STACK_SECRETS_KEY

AUDIENCE = "https://bench"
TENANT_CLAIM = "https://diminuendo/tenant_id"
KID = "bench-key"
WARMUP = 20


@dataclass(frozen=True, kw_only=True)
class ConnectOptions(BenchOptions):
    connections: int = option(1000)


class Jwks:
    """A signing key and a tiny JWKS endpoint for it on 127.0.0.1."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": KID, "alg": "RS256", "use": "sig"})
        body = json.dumps({"keys": [jwk]}).encode()
        self.fetches = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/.well-known/jwks.json":
                    self.send_error(404)
                    return
                owner.fetches += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def domain(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Jwks:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def token(self, sub: str = "bench|user", ttl_s: int = 3600) -> str:
        now = int(time.time())
        claims = {
            "sub": sub,
            "iss": f"{self.domain}/",
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + ttl_s,
            "jti": uuid.uuid4().hex,
            TENANT_CLAIM: "bench",
        }
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": KID})


async def connect_once(port: int, token: str | None, mode: str) -> tuple[float, WS]:
    """ms from connect() to the `authenticated` frame (or the 101 for `bare`)."""
    headers = {"Authorization": f"Bearer {token}"} if token and mode == "header" else None
    started = time.perf_counter()
    ws = await ws_connect(port, headers=headers)
    if mode == "bare":
        return (time.perf_counter() - started) * 1000, ws
    if mode == "message":
        for _ in range(2):
            await ws.recv(10)  # welcome (requiresAuth: true), connected
        ws.send_json({"type": "authenticate", "token": token, "id": "a"})
        frame = await ws.recv_json(10)
    else:
        for _ in range(2):
            await ws.recv(10)
        frame = await ws.recv_json(10)
    if frame.get("type") != "authenticated":
        raise WSError(f"expected authenticated, got {frame}")
    return (time.perf_counter() - started) * 1000, ws


async def variant(
    server: Gateway, count: int, tokens: list[str | None], mode: str
) -> dict[str, Any]:
    """`tokens[i]` for connection i (cycled); the first WARMUP connections are not counted."""
    samples: list[float] = []
    sockets: list[WS] = []
    errors: list[str] = []
    cpu_before = cpu_seconds(server.pid)
    started = time.perf_counter()
    for index in range(count + WARMUP):
        token = tokens[index % len(tokens)]
        try:
            ms, ws = await connect_once(server.port, token, mode)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        sockets.append(ws)
        if index >= WARMUP:
            samples.append(ms)
    wall = time.perf_counter() - started
    cpu = cpu_seconds(server.pid) - cpu_before
    await close_all(sockets)
    stats = percentiles(samples)
    stats.update(
        errors=len(errors),
        first_errors=errors[:3],
        server_cpu_ms_per_connect=round(cpu * 1000 / max(len(sockets), 1), 3),
        connects_per_s_sequential=round(len(sockets) / wall, 1),
    )
    return stats


async def main_async(bench: Bench, options: ConnectOptions) -> dict[str, Any]:
    n = options.connections
    result: dict[str, Any] = {"params": {"connections": n, "warmup": WARMUP}, "variants": {}}
    variants = result["variants"]
    stack = bench.start_stack()

    gateway = bench.start_gateway(stack)
    bench.wait_health_ok(gateway)
    variants["dev"] = await variant(gateway, n, [None], "header")
    bench.stop(gateway.server)

    with Jwks() as jwks:
        warm = jwks.token()
        started = time.perf_counter()
        cold = [jwks.token() for _ in range(n + WARMUP)]
        cold_users = [jwks.token(sub=f"bench|user-{i}") for i in range(n + WARMUP)]
        result["token_minting_ms_each"] = round(
            (time.perf_counter() - started) * 1000 / (2 * (n + WARMUP)), 3
        )
        gateway = bench.start_gateway(
            stack,
            name="gateway-jwt",
            dev=False,
            AUTH0_DOMAIN=jwks.domain,
            AUTH0_AUDIENCE=AUDIENCE,
            PODIUM_SECRETS_KEY=LOCAL_STACK_SECRETS_KEY,
            AUTH_FAILURE_LIMIT="1000000/60s",
        )
        bench.wait_health_ok(gateway)
        variants["jwt-warm"] = await variant(gateway, n, [warm], "header")
        variants["jwt-cold"] = await variant(gateway, n, list(cold), "header")
        variants["jwt-cold-user"] = await variant(gateway, n, list(cold_users), "header")
        variants["jwt-warm-message"] = await variant(gateway, n, [warm], "message")
        result["jwks_fetches"] = jwks.fetches
        bench.stop(gateway.server)
    bench.stop_all()

    bare = bench.start_bare()
    variants["bare"] = await variant(bare, n, [None], "bare")
    bench.stop_all()
    return result


def main() -> int:
    options = parse_options(ConnectOptions, __doc__.splitlines()[0])
    raise_nofile(4 * options.connections + 10_000)
    with Bench("connect", options) as bench:
        result = run(main_async(bench, options))
    path = write_result("connect", result, options.results_dir)
    parts = [
        f"{name} p50 {v.get('p50')} p95 {v.get('p95')} p99 {v.get('p99')} ms"
        for name, v in result["variants"].items()
    ]
    summary("connect", f"{'; '.join(parts)} [{path.name}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
