"""Verify Auth0 access tokens (RS256 JWTs) and cache the ones that pass.

Every connection and REST call presents a token, often the same one again, so the verifier
rejects malformed input before any key lookup (a flood of junk never reaches the JWKS endpoint)
and remembers verified tokens by hash until they expire. The algorithm is fixed to RS256 and
never read from the token, which rules out ``alg: none`` and HS256-with-the-public-key forgeries.
"""

import hashlib
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import jwt

from diminuendo.auth.endpoints import Auth0Endpoints
from diminuendo.auth.errors import AuthError
from diminuendo.auth.jwks import JwksCache

_ALGORITHM = "RS256"
_REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub"]
MAX_LEEWAY_S = 60
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


class TokenVerifier:
    """Checks signature, issuer, audience and lifetime of bearer tokens.

    ``audiences`` lists every accepted ``aud`` (``AUTH0_AUDIENCE`` and/or ``AUTH0_CLIENT_ID``;
    empty entries, i.e. unset settings, are ignored). ``clock`` (epoch seconds) is the single
    notion of "now" for ``exp``/``nbf``/``iat`` and for the cache, so a cached token can never
    outlive what a fresh check would accept.
    """

    def __init__(
        self,
        *,
        endpoints: Auth0Endpoints,
        audiences: Sequence[str],
        jwks: JwksCache,
        leeway_s: float = 30,
        cache_size: int = 10_000,
        cache_ttl_s: float = 300.0,
        max_token_bytes: int = 16 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(audiences, str):
            raise ValueError("audiences must be a sequence of strings, not one string")
        accepted = [aud for aud in dict.fromkeys(audiences) if aud]
        if not accepted:
            raise ValueError("at least one audience is required")
        if not 0 <= leeway_s <= MAX_LEEWAY_S:
            raise ValueError(f"leeway must be between 0 and {MAX_LEEWAY_S} seconds")
        self._issuer = endpoints.issuer
        self._audiences = accepted
        self._jwks = jwks
        self._leeway_s = leeway_s
        self._cache_size = cache_size
        self._cache_ttl_s = cache_ttl_s
        self._max_token_bytes = max_token_bytes
        self._clock = clock
        self._cache: OrderedDict[bytes, tuple[float, dict[str, Any]]] = OrderedDict()

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims if it is valid now, else AuthError with a short reason.

        The returned dict is a copy; the cache keeps its own.
        """
        self._precheck(token)
        digest = hashlib.sha256(token.encode("ascii")).digest()
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None:
            expires_at, claims = cached
            if now < expires_at:
                self._cache.move_to_end(digest)
                return dict(claims)
            del self._cache[digest]
        kid = self._unverified_kid(token)
        key = await self._jwks.get_key(kid)
        claims = self._decode(token, key)
        now = self._clock()
        self._check_lifetime(claims, now)
        self._remember(digest, claims, now)
        return dict(claims)

    def _precheck(self, token: object) -> None:
        """Reject what cannot be a compact JWS before hashing, parsing or any key lookup."""
        if not isinstance(token, str):
            raise AuthError("invalid token")
        if len(token) > self._max_token_bytes:
            raise AuthError("token too large")
        if not token.isascii() or not _COMPACT_JWS.fullmatch(token):
            raise AuthError("malformed token")

    @staticmethod
    def _unverified_kid(token: str) -> str:
        """The header's ``kid``, after insisting the header claims RS256."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("malformed token") from None
        if header.get("alg") != _ALGORITHM:
            raise AuthError("unsupported token algorithm")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("token has no key id")
        return kid

    def _decode(self, token: str, key: jwt.PyJWK) -> dict[str, Any]:
        """Signature, issuer, audience and required claims, via pyjwt.

        pyjwt's own time checks are off because it reads the wall clock directly; lifetime is
        checked against ``clock`` in ``_check_lifetime`` instead.
        """
        try:
            return jwt.decode(
                token,
                key=key.key,
                algorithms=[_ALGORITHM],
                audience=self._audiences,
                issuer=self._issuer,
                options={
                    "require": _REQUIRED_CLAIMS,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"token has no '{exc.claim}' claim") from None
        except jwt.InvalidSignatureError:
            raise AuthError("invalid token signature") from None
        except jwt.InvalidIssuerError:
            raise AuthError("invalid token issuer") from None
        except jwt.InvalidAudienceError:
            raise AuthError("invalid token audience") from None
        except jwt.PyJWTError:
            raise AuthError("invalid token") from None

    def _check_lifetime(self, claims: dict[str, Any], now: float) -> None:
        """``exp``, ``nbf`` and ``iat`` against ``now``, each allowed ``leeway_s`` of skew."""
        exp = _numeric_date(claims, "exp")
        iat = _numeric_date(claims, "iat")
        nbf = _numeric_date(claims, "nbf") if "nbf" in claims else None
        if exp <= now - self._leeway_s:
            raise AuthError("token expired")
        if (nbf is not None and nbf > now + self._leeway_s) or iat > now + self._leeway_s:
            raise AuthError("token not yet valid")

    def _remember(self, digest: bytes, claims: dict[str, Any], now: float) -> None:
        """Cache until the earlier of the TTL and ``exp`` (tokens inside the leeway: not at all)."""
        expires_at = min(now + self._cache_ttl_s, claims["exp"])
        if self._cache_size <= 0 or expires_at <= now:
            return
        self._cache[digest] = (expires_at, claims)
        self._cache.move_to_end(digest)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)


def _numeric_date(claims: dict[str, Any], name: str) -> float:
    """A JSON number of seconds (RFC 7519 NumericDate); anything else makes the token invalid."""
    value = claims[name]
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        raise AuthError(f"invalid '{name}' claim")
    return value
