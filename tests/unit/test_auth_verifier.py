"""TokenVerifier and JwksCache against a real JWKS server on 127.0.0.1.

The server is a stdlib ``ThreadingHTTPServer`` in a thread (so it keeps answering while the test's
event loop is blocked in an assertion) that counts requests and can be switched to a rotated key
set, to HTTP 500, to hanging, or stopped. Both caches take injected clocks, so cooldowns, key-set
age and token expiry are driven without sleeping.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from jwt.algorithms import RSAAlgorithm

from diminuendo.auth.endpoints import Auth0Endpoints, resolve_auth0
from diminuendo.auth.errors import AuthError
from diminuendo.auth.identity import Role, identity_from_claims
from diminuendo.auth.jwks import JwksCache
from diminuendo.auth.verifier import TokenVerifier

AUDIENCE = "https://api.diminuendo.test"
CLIENT_ID = "client-123"
COOLDOWN_S = 30.0
JWKS_PATH = "/.well-known/jwks.json"


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


KEY_A, KEY_B, KEY_STRANGER = _new_key(), _new_key(), _new_key()


def jwk(key: rsa.RSAPrivateKey, kid: str | None, **extra: Any) -> dict[str, Any]:
    """Public JWK for ``key`` as Auth0 publishes it; an ``extra`` of None drops that member."""
    entry = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    entry = {**entry, "kid": kid, "use": "sig", "alg": "RS256", **extra}
    return {k: v for k, v in entry.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj: Any) -> str:
    return b64(json.dumps(obj).encode())


class FakeClock:
    """A callable clock the test moves by hand."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class JwksServer:
    """Serves ``document`` at the JWKS path; counts requests; can fail, hang or stop."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.status = 200
        self.hang = False
        self.requests = 0
        self.release = threading.Event()
        self._counted = threading.Condition()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server._counted:
                    server.requests += 1
                    server._counted.notify_all()
                if server.hang:
                    server.release.wait(10)
                if self.path != JWKS_PATH:
                    self.send_error(404)
                    return
                body = json.dumps(server.document).encode()
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        self._running = True

    def wait_for_requests(self, count: int, timeout_s: float = 2.0) -> bool:
        """Block until ``count`` requests have arrived (call it via ``asyncio.to_thread``)."""
        with self._counted:
            return self._counted.wait_for(lambda: self.requests >= count, timeout_s)

    def stop(self) -> None:
        if self._running:
            self._running = False
            self.release.set()
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(5)


class CountingJwks(JwksCache):
    """JwksCache that counts lookups, to tell a verifier cache hit from a full verification."""

    lookups = 0

    async def get_key(self, kid: str) -> jwt.PyJWK:
        self.lookups += 1
        return await super().get_key(kid)


@dataclass
class Env:
    """One verifier wired to one JWKS server, with both clocks exposed."""

    server: JwksServer
    endpoints: Auth0Endpoints
    jwks: CountingJwks
    verifier: TokenVerifier
    jwks_clock: FakeClock
    clock: FakeClock

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """Valid claims at the verifier's current time; an override of None drops the claim."""
        now = int(self.clock.now)
        claims: dict[str, Any] = {
            "iss": self.endpoints.issuer,
            "aud": AUDIENCE,
            "sub": "auth0|abc",
            "iat": now,
            "exp": now + 3600,
            "https://diminuendo/tenant_id": "acme",
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def mint(
        self, key: rsa.RSAPrivateKey = KEY_A, kid: str | None = "key-a", **overrides: Any
    ) -> str:
        headers = {"kid": kid} if kid is not None else {}
        return jwt.encode(self.claims(**overrides), key, algorithm="RS256", headers=headers)


@pytest.fixture
def server() -> Iterator[JwksServer]:
    srv = JwksServer({"keys": [jwk(KEY_A, "key-a")]})
    yield srv
    srv.stop()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


def make_env(
    server: JwksServer, client: httpx.AsyncClient, *, timeout_s: float = 2.0, **verifier_kwargs: Any
) -> Env:
    endpoints = resolve_auth0(server.base_url)
    jwks_clock = FakeClock(1_000.0)
    clock = FakeClock(time.time())
    jwks = CountingJwks(
        endpoints.jwks_url,
        client,
        refresh_cooldown_s=COOLDOWN_S,
        clock=jwks_clock,
        timeout_s=timeout_s,
    )
    verifier = TokenVerifier(
        endpoints=endpoints,
        audiences=[AUDIENCE, CLIENT_ID],
        jwks=jwks,
        clock=clock,
        **verifier_kwargs,
    )
    return Env(server, endpoints, jwks, verifier, jwks_clock, clock)


@pytest.fixture
def env(server: JwksServer, client: httpx.AsyncClient) -> Env:
    return make_env(server, client)


async def rejected(env: Env, token: Any) -> str:
    """The AuthError reason for ``token``; fails the test if it is accepted."""
    with pytest.raises(AuthError) as info:
        await env.verifier.verify(token)
    assert info.value.code == "AUTH_FAILED"
    return str(info.value)


# --- accepted -----------------------------------------------------------------------------------


async def test_valid_token_is_accepted_and_returns_claims(env: Env) -> None:
    claims = await env.verifier.verify(env.mint())
    assert claims["sub"] == "auth0|abc"
    assert claims["https://diminuendo/tenant_id"] == "acme"
    assert env.server.requests == 1


@pytest.mark.parametrize("aud", [CLIENT_ID, [f"{AUDIENCE}-other", AUDIENCE], ["x", CLIENT_ID]])
async def test_any_configured_audience_is_accepted(env: Env, aud: Any) -> None:
    assert (await env.verifier.verify(env.mint(aud=aud)))["aud"] == aud


async def test_clock_skew_within_leeway_is_tolerated(env: Env) -> None:
    now = int(env.clock.now)
    await env.verifier.verify(env.mint(exp=now - 20, iat=now - 100))
    await env.verifier.verify(env.mint(nbf=now + 20, iat=now + 20))


# --- rejected -----------------------------------------------------------------------------------


def hs256_with_public_pem(env: Env) -> str:
    """The classic RS→HS confusion forgery: HMAC keyed with the published public key."""
    pem = KEY_A.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = (
        f"{b64json({'alg': 'HS256', 'typ': 'JWT', 'kid': 'key-a'})}.{b64json(env.claims())}"
    )
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def unsigned(env: Env, signature: str) -> str:
    return f"{b64json({'alg': 'none', 'kid': 'key-a'})}.{b64json(env.claims())}.{signature}"


def tampered(env: Env) -> str:
    header, _, signature = env.mint().split(".")
    return f"{header}.{b64json(env.claims(sub='auth0|admin'))}.{signature}"


REJECTIONS: dict[str, tuple[Any, str]] = {
    "alg none, empty signature": (lambda e: unsigned(e, ""), "malformed token"),
    "alg none, junk signature": (lambda e: unsigned(e, "AAAA"), "unsupported token algorithm"),
    "HS256 keyed with public PEM": (hs256_with_public_pem, "unsupported token algorithm"),
    "expired": (lambda e: e.mint(exp=int(e.clock.now) - 31), "token expired"),
    "nbf in future": (lambda e: e.mint(nbf=int(e.clock.now) + 120), "token not yet valid"),
    "iat in future": (lambda e: e.mint(iat=int(e.clock.now) + 120), "token not yet valid"),
    "wrong issuer": (lambda e: e.mint(iss="https://evil.example/"), "invalid token issuer"),
    "issuer without slash": (
        lambda e: e.mint(iss=e.endpoints.issuer.rstrip("/")),
        "invalid token issuer",
    ),
    "wrong audience": (lambda e: e.mint(aud="https://other.api"), "invalid token audience"),
    "signed by another key": (lambda e: e.mint(key=KEY_STRANGER), "invalid token signature"),
    "tampered payload": (tampered, "invalid token signature"),
    "truncated": (lambda e: e.mint()[:-10], "invalid token signature"),
    "two segments": (lambda e: e.mint().rsplit(".", 1)[0], "malformed token"),
    "garbage": (lambda e: "not-a-jwt", "malformed token"),
    "non-ascii": (lambda e: "é.é.é", "malformed token"),
    "header not json": (lambda e: "abcd.abcd.abcd", "malformed token"),
    "100 KB token": (lambda e: e.mint(pad="x" * 100_000), "token too large"),
    "missing kid": (lambda e: e.mint(kid=None), "token has no key id"),
    "missing sub": (lambda e: e.mint(sub=None), "token has no 'sub' claim"),
    "missing exp": (lambda e: e.mint(exp=None), "token has no 'exp' claim"),
    "missing iat": (lambda e: e.mint(iat=None), "token has no 'iat' claim"),
    "missing aud": (lambda e: e.mint(aud=None), "token has no 'aud' claim"),
    "exp not a number": (lambda e: e.mint(exp="tomorrow"), "invalid 'exp' claim"),
    "bytes token": (lambda e: e.mint().encode(), "invalid token"),
}


@pytest.mark.parametrize("case", list(REJECTIONS))
async def test_bad_tokens_are_rejected_with_a_safe_reason(env: Env, case: str) -> None:
    build, reason = REJECTIONS[case]
    token = build(env)
    message = await rejected(env, token)
    assert message == reason
    assert len(message) < 60


async def test_cheap_rejections_never_touch_the_network(env: Env) -> None:
    for token in ["", "a.b", "x" * 20_000, unsigned(env, "AAAA"), env.mint(kid=None)]:
        await rejected(env, token)
    assert env.server.requests == 0
    assert env.jwks.lookups == 0


def test_bad_verifier_settings_are_refused(env: Env) -> None:
    common = {"endpoints": env.endpoints, "jwks": env.jwks}
    with pytest.raises(ValueError):
        TokenVerifier(audiences=[], **common)
    with pytest.raises(ValueError):
        TokenVerifier(audiences=["", ""], **common)
    with pytest.raises(ValueError):
        TokenVerifier(audiences=AUDIENCE, **common)
    with pytest.raises(ValueError):
        TokenVerifier(audiences=[AUDIENCE], leeway_s=61, **common)


# --- JWKS: unknown kids, rotation, outages ------------------------------------------------------


async def test_unknown_kid_refetches_at_most_once_per_cooldown(env: Env) -> None:
    await env.verifier.verify(env.mint())
    assert env.server.requests == 1
    env.jwks_clock.advance(COOLDOWN_S)  # the last fetch is now a cooldown old
    for n in range(5):
        assert await rejected(env, env.mint(kid=f"random-{n}")) == "unknown signing key"
    assert env.server.requests == 2
    env.jwks_clock.advance(COOLDOWN_S - 1)
    await rejected(env, env.mint(kid="random-x"))
    assert env.server.requests == 2
    env.jwks_clock.advance(1)
    await rejected(env, env.mint(kid="random-y"))
    assert env.server.requests == 3
    await env.verifier.verify(env.mint(sub="still-fine"))


async def test_concurrent_misses_share_one_fetch(env: Env) -> None:
    tokens = [env.mint(sub=f"user-{n}") for n in range(20)]
    results = await asyncio.gather(*(env.verifier.verify(t) for t in tokens))
    assert [r["sub"] for r in results] == [f"user-{n}" for n in range(20)]
    assert env.server.requests == 1


async def test_misses_during_a_fetch_join_it_even_without_cooldown(
    server: JwksServer, client: httpx.AsyncClient
) -> None:
    endpoints = resolve_auth0(server.base_url)
    jwks = JwksCache(endpoints.jwks_url, client, refresh_cooldown_s=0)
    keys = await asyncio.gather(*(jwks.get_key("key-a") for _ in range(10)))
    assert {key.key_id for key in keys} == {"key-a"}
    assert server.requests == 1


async def test_key_rotation_is_picked_up_without_restart(env: Env) -> None:
    await env.jwks.prefetch()
    env.server.document = {"keys": [jwk(KEY_A, "key-a"), jwk(KEY_B, "key-b")]}
    env.jwks_clock.advance(COOLDOWN_S)
    claims = await env.verifier.verify(env.mint(key=KEY_B, kid="key-b"))
    assert claims["sub"] == "auth0|abc"
    await env.verifier.verify(env.mint(sub="old-key-still-listed"))
    assert env.server.requests == 2


async def test_withdrawn_key_stops_verifying_once_the_set_is_old(env: Env) -> None:
    await env.jwks.prefetch()
    env.server.document = {"keys": [jwk(KEY_B, "key-b")]}
    env.jwks_clock.advance(600)
    # Served from the stale set at once; a background refresh starts.
    await env.verifier.verify(env.mint(sub="first"))
    assert await asyncio.to_thread(env.server.wait_for_requests, 2)
    await env.jwks.prefetch()  # joins that refresh if it is still running
    assert await rejected(env, env.mint(sub="second")) == "unknown signing key"
    await env.verifier.verify(env.mint(key=KEY_B, kid="key-b"))


async def test_jwks_errors_keep_the_last_good_keys(env: Env) -> None:
    await env.jwks.prefetch()
    env.server.status = 500
    env.jwks_clock.advance(COOLDOWN_S)
    assert await rejected(env, env.mint(kid="new")) == "unknown signing key"
    env.server.status, env.server.document = 200, {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}
    env.jwks_clock.advance(COOLDOWN_S)
    await rejected(env, env.mint(kid="new"))
    assert env.server.requests == 3
    await env.verifier.verify(env.mint())


async def test_jwks_server_down_keeps_cached_keys_and_fails_new_kids(env: Env) -> None:
    await env.jwks.prefetch()
    env.server.stop()
    env.jwks_clock.advance(COOLDOWN_S)
    started = time.monotonic()
    assert await rejected(env, env.mint(kid="new")) == "unknown signing key"
    assert time.monotonic() - started < 2
    await env.verifier.verify(env.mint())


async def test_hanging_jwks_server_is_bounded_by_the_timeout(
    server: JwksServer, client: httpx.AsyncClient
) -> None:
    env = make_env(server, client, timeout_s=0.3)
    server.hang = True
    started = time.monotonic()
    await env.jwks.prefetch()  # never raises, even when the fetch times out
    assert await rejected(env, env.mint()) == "unknown signing key"  # still in cooldown
    assert time.monotonic() - started < 1.5
    server.release.set()
    server.hang = False
    env.jwks_clock.advance(COOLDOWN_S)
    await env.verifier.verify(env.mint())


async def test_only_rsa_signature_keys_with_a_kid_are_used(env: Env) -> None:
    env.server.document = {
        "keys": [
            jwk(KEY_A, "enc", use="enc"),
            jwk(KEY_A, "rs512", alg="RS512"),
            jwk(KEY_B, None),
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA"},
            {"kty": "RSA", "kid": "broken", "n": "AA"},
            "not-a-key",
            jwk(KEY_A, "key-a", use=None, alg=None),
        ]
    }
    await env.verifier.verify(env.mint())
    for kid in ["enc", "rs512", "ec", "broken"]:
        env.jwks_clock.advance(COOLDOWN_S)
        assert await rejected(env, env.mint(kid=kid)) == "unknown signing key"


# --- verified-token cache -----------------------------------------------------------------------


async def test_cache_hit_skips_key_lookup_and_is_faster(
    env: Env, server: JwksServer, client: httpx.AsyncClient
) -> None:
    token = env.mint()
    await env.verifier.verify(token)
    assert env.jwks.lookups == 1
    uncached = make_env(server, client, cache_size=0)
    await uncached.verifier.verify(token)

    async def timed(verifier: TokenVerifier) -> float:
        started = time.perf_counter()
        for _ in range(200):
            await verifier.verify(token)
        return time.perf_counter() - started

    hit_s, full_s = await timed(env.verifier), await timed(uncached.verifier)
    assert env.jwks.lookups == 1
    assert uncached.jwks.lookups == 201
    assert server.requests == 2
    assert hit_s < full_s


async def test_cache_returns_a_copy(env: Env) -> None:
    token = env.mint()
    (await env.verifier.verify(token))["sub"] = "mutated"
    assert (await env.verifier.verify(token))["sub"] == "auth0|abc"


async def test_cache_ttl_is_capped_by_exp(server: JwksServer, client: httpx.AsyncClient) -> None:
    env = make_env(server, client, leeway_s=0, cache_ttl_s=300)
    token = env.mint(exp=int(env.clock.now) + 100)
    await env.verifier.verify(token)
    env.clock.advance(99)
    await env.verifier.verify(token)
    assert env.jwks.lookups == 1
    env.clock.advance(2)
    assert await rejected(env, token) == "token expired"


async def test_cache_ttl_forces_reverification(env: Env) -> None:
    token = env.mint()
    await env.verifier.verify(token)
    env.clock.advance(299)
    await env.verifier.verify(token)
    assert env.jwks.lookups == 1
    env.clock.advance(2)
    await env.verifier.verify(token)
    assert env.jwks.lookups == 2


async def test_tokens_only_valid_through_leeway_are_not_cached(env: Env) -> None:
    token = env.mint(exp=int(env.clock.now) - 5)
    await env.verifier.verify(token)
    await env.verifier.verify(token)
    assert env.jwks.lookups == 2


async def test_cache_evicts_least_recently_used(
    server: JwksServer, client: httpx.AsyncClient
) -> None:
    env = make_env(server, client, cache_size=2)
    one, two, three = (env.mint(sub=name) for name in ("one", "two", "three"))
    await env.verifier.verify(one)
    await env.verifier.verify(two)
    await env.verifier.verify(one)  # hit: "one" is now the most recent
    await env.verifier.verify(three)  # evicts "two"
    assert env.jwks.lookups == 3
    await env.verifier.verify(one)
    await env.verifier.verify(three)
    assert env.jwks.lookups == 3
    await env.verifier.verify(two)
    assert env.jwks.lookups == 4


# --- property: untrusted input only ever yields AuthError ---------------------------------------

_B64URL = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=60
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
_HEADER = st.fixed_dictionaries(
    {"alg": st.sampled_from(["RS256", "none", "HS256"]), "kid": st.text(min_size=1, max_size=8)}
) | st.fixed_dictionaries(
    {"alg": _JSON | st.just("RS256"), "kid": _JSON},
    optional={"typ": _JSON, "crit": _JSON, "b64": _JSON},
)
_PAYLOAD = (
    st.dictionaries(st.sampled_from(["iss", "aud", "sub", "exp", "iat", "nbf", "x"]), _JSON) | _JSON
)
_TOKENS = (
    st.text(max_size=200)
    | st.binary(max_size=200)
    | st.lists(_B64URL, min_size=1, max_size=5).map(".".join)
    | st.tuples(_HEADER, _PAYLOAD, _B64URL.filter(bool)).map(
        lambda t: f"{b64json(t[0])}.{b64json(t[1])}.{t[2]}"
    )
)


def signed(header: dict[str, Any], payload: Any, key: rsa.RSAPrivateKey = KEY_A) -> str:
    """A genuinely RS256-signed token around an arbitrary JSON payload (pyjwt would refuse some)."""
    signing_input = f"{b64json(header)}.{b64json(payload)}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64(signature)}"


@contextmanager
def verifier_on_own_loop(server: JwksServer) -> Iterator[Callable[[Any], dict[str, Any]]]:
    """A synchronous ``verify`` for hypothesis, on one loop shared by all examples.

    A fresh loop and httpx client per example would spend the time budget on TLS set-up.
    """
    loop = asyncio.new_event_loop()
    http = httpx.AsyncClient()
    endpoints = resolve_auth0(server.base_url)
    jwks = JwksCache(endpoints.jwks_url, http, timeout_s=2.0)
    verifier = TokenVerifier(endpoints=endpoints, audiences=[AUDIENCE], jwks=jwks)
    try:
        yield lambda token: loop.run_until_complete(verifier.verify(token))
    finally:
        loop.run_until_complete(http.aclose())
        loop.close()


def test_arbitrary_input_only_raises_auth_error(server: JwksServer) -> None:
    """Random text, bytes and near-JWTs (some reaching the key lookup) are all AuthError."""
    with verifier_on_own_loop(server) as verify:

        @settings(max_examples=300, deadline=None)
        @given(token=_TOKENS)
        def check(token: Any) -> None:
            with pytest.raises(AuthError):
                verify(token)

        check()


def test_signed_tokens_with_arbitrary_claims_yield_identity_or_auth_error(
    server: JwksServer,
) -> None:
    """Correctly signed tokens whose claims are dropped or replaced by arbitrary JSON.

    These get past the signature into claim validation and identity mapping; the only allowed
    outcomes are an Identity or AuthError.
    """
    now = int(time.time())
    valid = {
        "iss": resolve_auth0(server.base_url).issuer,
        "aud": AUDIENCE,
        "sub": "auth0|abc",
        "exp": now + 3600,
        "iat": now,
        "nbf": now,
        "org_id": "acme",
        "https://diminuendo/role": "admin",
    }

    @st.composite
    def mutated_claims(draw: st.DrawFn) -> dict[str, Any]:
        """Valid claims with up to three of them dropped or replaced by arbitrary JSON."""
        claims = dict(valid)
        for name in draw(st.lists(st.sampled_from(sorted(valid)), max_size=3, unique=True)):
            if draw(st.booleans()):
                del claims[name]
            else:
                claims[name] = draw(_JSON)
        return claims

    with verifier_on_own_loop(server) as verify:

        @settings(max_examples=300, deadline=None)
        @given(payload=mutated_claims() | _JSON)
        def check(payload: Any) -> None:
            with suppress(AuthError):
                identity_from_claims(
                    verify(signed({"alg": "RS256", "kid": "key-a"}, payload)),
                    tenant_claim="https://diminuendo/tenant_id",
                    role_claim="https://diminuendo/role",
                    default_role=Role.VIEWER,
                )

        check()
