"""A real JWKS endpoint on 127.0.0.1 for production-mode gateways, and a token minter.

`JwksServer` is a stdlib `ThreadingHTTPServer` in a daemon thread (it keeps answering while a
test's event loop is busy) that publishes the public halves of RSA keys it generated at
`/.well-known/jwks.json`. It records every request (time and path) so tests can bound how often
the gateway asks, and can be switched to a rotated key set, to hanging without an answer, or
stopped (connection refused). Point a gateway at it with `AUTH0_DOMAIN=server.base_url`; the
issuer is then `server.issuer`.

`mint(claims, kid=…, alg=…)` signs a token with one of the server's keys (or a key the server
never published, for forgeries); `claims(**overrides)` builds a valid claim set.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from diminuendo.settings import LOCAL_STACK_SECRETS_KEY

JWKS_PATH = "/.well-known/jwks.json"
AUDIENCE = "https://diminuendo.test"
TENANT_CLAIM = "https://diminuendo/tenant_id"
ROLE_CLAIM = "https://diminuendo/role"
HANG_LIMIT_S = 20.0


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj: Any) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


class JwksServer:
    """Publishes RSA signing keys; counts requests; can rotate, hang or stop."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.published: list[str] = []
        self.hang = False
        self.requests: list[tuple[float, str]] = []
        self.minted: list[str] = []  # every token `mint` returned, for "never logged" checks
        self._lock = threading.Lock()
        self._release = threading.Event()
        self.kid = self.add_key()
        self.published = [self.kid]
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server._lock:
                    server.requests.append((time.monotonic(), self.path))
                if server.hang:
                    server._release.wait(HANG_LIMIT_S)
                    return  # close without an answer
                if self.path != JWKS_PATH:
                    self.send_error(404)
                    return
                body = json.dumps(server.document()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        self.running = True

    # ----- the published key set --------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        return f"{self.base_url}/"

    def add_key(self, kid: str | None = None) -> str:
        """Generate a key the server knows (and can sign with) but does not publish yet."""
        kid = kid or f"kid-{uuid.uuid4().hex[:12]}"
        self.keys[kid] = new_key()
        return kid

    def rotate(self, keep_old: bool = False) -> str:
        """Publish a brand-new key (alone, or beside the current ones); returns its kid."""
        kid = self.add_key()
        with self._lock:
            self.published = [kid, *self.published] if keep_old else [kid]
        return kid

    def document(self) -> dict[str, Any]:
        with self._lock:
            kids = list(self.published)
        keys = []
        for kid in kids:
            entry = RSAAlgorithm.to_jwk(self.keys[kid].public_key(), as_dict=True)
            keys.append({**entry, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": keys}

    def public_pem(self, kid: str | None = None) -> bytes:
        return (
            self.keys[kid or self.kid]
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    # ----- requests ---------------------------------------------------------------------------

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    def last_request_at(self) -> float | None:
        with self._lock:
            return self.requests[-1][0] if self.requests else None

    def wait_for_requests(self, count: int, timeout_s: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.request_count >= count:
                return True
            time.sleep(0.02)
        return False

    def cooldown_remaining(self, cooldown_s: float = 30.0, margin_s: float = 0.5) -> float:
        """Seconds until `cooldown_s` have passed since the last request (0 if already)."""
        last = self.last_request_at()
        if last is None:
            return 0.0
        return max(0.0, last + cooldown_s + margin_s - time.monotonic())

    # ----- tokens -----------------------------------------------------------------------------

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """A valid claim set for this issuer; an override of None drops that claim."""
        now = int(time.time())
        base: dict[str, Any] = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": f"auth0|{uuid.uuid4().hex[:12]}",
            "iat": now,
            "exp": now + 3600,
            "jti": uuid.uuid4().hex,
            "email": "user@example.com",
            TENANT_CLAIM: "acme",
            ROLE_CLAIM: "developer",
        }
        merged = {**base, **overrides}
        return {k: v for k, v in merged.items() if v is not None}

    def mint(
        self,
        claims: dict[str, Any] | None = None,
        *,
        kid: str | None = None,
        alg: str = "RS256",
        key: rsa.RSAPrivateKey | None = None,
    ) -> str:
        """Sign `claims` (default: a valid set).

        `alg="RS256"` signs with `key` or the server's key for `kid` (default: the current
        one); `alg="none"` returns an unsigned token; `alg="HS256"` signs with the PEM of the
        public key as the HMAC secret (the classic algorithm-confusion forgery).
        """
        claims = self.claims() if claims is None else claims
        kid = kid or self.kid
        if alg == "none":
            return f"{b64json({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{b64json(claims)}."
        if alg == "HS256":
            signing_input = (
                f"{b64json({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{b64json(claims)}"
            )
            secret = self.public_pem(kid if kid in self.keys else None)
            signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
            return f"{signing_input}.{b64url(signature)}"
        signer = key if key is not None else self.keys[kid]
        return jwt.encode(claims, signer, algorithm=alg, headers={"kid": kid})

    # ----- faults -----------------------------------------------------------------------------

    def set_hang(self, hang: bool) -> None:
        """Accept requests but never answer them (until `set_hang(False)` or `stop()`)."""
        self.hang = hang
        if hang:
            self._release.clear()
        else:
            self._release.set()

    def stop(self) -> None:
        """Stop listening: the gateway's next fetch gets connection refused."""
        if self.running:
            self.running = False
            self._release.set()
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(5)


def production_env(server: JwksServer, **overrides: str) -> dict[str, str]:
    """Settings for `start_gateway`/`gateway_process` to run against `server` out of dev mode."""
    return {
        "DEV_MODE": "false",
        "AUTH0_DOMAIN": server.base_url,
        "AUTH0_AUDIENCE": AUDIENCE,
        "PODIUM_SECRETS_KEY": LOCAL_STACK_SECRETS_KEY,
        "ALLOWED_ORIGINS": "https://app.example.com",
        **overrides,
    }
