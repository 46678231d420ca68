"""Async, rate-limited cache of the identity provider's signing keys (JWKS).

pyjwt's ``PyJWKClient`` does not fit a gateway: it fetches with blocking ``urllib`` (stalling the
event loop for up to 30 s), refetches on *every* unknown ``kid`` (so random kids from an attacker
become one outbound request each) and, in some versions, forgets its keys when a refresh fails.
This cache fetches with httpx under a hard deadline, refetches for unknown kids at most once per
cooldown with concurrent misses sharing one request, keeps the last good key set through
outages, and refreshes an old set in the background so keys the provider has withdrawn stop
being trusted.
"""

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
from loguru import logger

from diminuendo.auth.errors import AuthError


class JwksCache:
    """Signing keys by ``kid``, fetched from ``jwks_url`` with ``client``.

    ``refresh_cooldown_s`` bounds how often a miss may trigger a fetch; ``max_age_s`` is how old
    the set may get before a lookup triggers a background refresh (the stale set keeps serving
    meanwhile); ``timeout_s`` is the total deadline of one fetch, connect to last byte.
    """

    def __init__(
        self,
        jwks_url: str,
        client: httpx.AsyncClient,
        *,
        refresh_cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        timeout_s: float = 5.0,
        max_age_s: float = 600.0,
    ) -> None:
        self._url = jwks_url
        self._client = client
        self._cooldown_s = refresh_cooldown_s
        self._clock = clock
        self._timeout_s = timeout_s
        self._max_age_s = max_age_s
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._inflight: asyncio.Task[None] | None = None

    async def get_key(self, kid: str) -> jwt.PyJWK:
        """The verification key for ``kid``, or AuthError("unknown signing key").

        A known kid is answered from memory without waiting, even while a refresh runs. An
        unknown kid waits for a fetch: the one in flight if any, else a new one when the
        cooldown allows; otherwise it fails at once.
        """
        now = self._clock()
        key = self._keys.get(kid)
        if key is not None:
            if self._is_stale(now) and self._may_fetch(now):
                self._start_fetch(now)
            return key
        if self._may_fetch(now):
            self._start_fetch(now)
        if self._inflight is not None:
            await asyncio.shield(self._inflight)
            key = self._keys.get(kid)
            if key is not None:
                return key
        raise AuthError("unknown signing key")

    async def prefetch(self) -> None:
        """Fetch the key set now (joining a fetch in flight); never raises.

        Meant for start-up, so the first logins do not pay for the fetch; if the provider is
        down the gateway still starts and misses retry later under the cooldown.
        """
        await asyncio.shield(self._inflight or self._start_fetch(self._clock()))

    def _is_stale(self, now: float) -> bool:
        return self._fetched_at is not None and now - self._fetched_at >= self._max_age_s

    def _may_fetch(self, now: float) -> bool:
        """No fetch in flight and none attempted within the cooldown."""
        if self._inflight is not None:
            return False
        return self._attempted_at is None or now - self._attempted_at >= self._cooldown_s

    def _start_fetch(self, now: float) -> asyncio.Task[None]:
        self._attempted_at = now
        self._inflight = asyncio.create_task(self._fetch(), name="jwks-fetch")
        return self._inflight

    async def _fetch(self) -> None:
        """Replace the key set on success; on any failure log it and keep the last good set."""
        try:
            async with asyncio.timeout(self._timeout_s):
                response = await self._client.get(self._url)
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code}")
            keys = _usable_keys(response.json())
            if not keys:
                raise ValueError("no usable RS256 signing keys in the set")
            self._keys = keys
            self._fetched_at = self._clock()
        except Exception as exc:  # any failure (not cancellation): keep the last good set
            logger.warning(
                "JWKS fetch from {} failed, keeping {} cached key(s): {}: {}",
                self._url,
                len(self._keys),
                type(exc).__name__,
                exc,
            )
        finally:
            self._inflight = None


def _usable_keys(document: Any) -> dict[str, jwt.PyJWK]:
    """RSA signature keys with a kid, bound to RS256; anything else in the set is skipped.

    Binding the algorithm here, rather than trusting the JWK's ``alg`` or the token header,
    means a key can only ever verify RS256 signatures.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK set")
    keys: dict[str, jwt.PyJWK] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict):
            continue
        kid = entry.get("kid")
        if (
            not isinstance(kid, str)
            or not kid
            or kid in keys
            or entry.get("kty") != "RSA"
            or entry.get("use", "sig") != "sig"
            or entry.get("alg", "RS256") != "RS256"
        ):
            continue
        try:
            keys[kid] = jwt.PyJWK(entry, algorithm="RS256")
        except jwt.PyJWTError:
            continue
    return keys
