"""`Authenticator`: the failed-attempt limit counts failures only, per address, and a refusal
never says why (PROTOCOL.md §3, §12)."""

from __future__ import annotations

from typing import Any

import pytest

from diminuendo.auth.authenticator import Authenticator
from diminuendo.auth.errors import AuthError
from diminuendo.auth.identity import Role
from diminuendo.protocol.errors import ErrorCode, GatewayError
from tests.unit.fakes import Clock

GOOD = "good"
CLAIMS = {"sub": "auth0|a", "tenant": "acme", "exp": 2_000_000_000}


class FakeVerifier:
    """Accepts the token "good"; anything else fails with a specific reason."""

    async def verify(self, token: str) -> dict[str, Any]:
        if token != GOOD:
            raise AuthError("token expired")
        return dict(CLAIMS)


async def no_member(tenant_id: str, user_id: str) -> Role | None:
    return None


def authenticator(clock: Clock) -> Authenticator:
    return Authenticator(
        FakeVerifier(),  # type: ignore[arg-type]
        member_role=no_member,
        tenant_claim="tenant",
        role_claim="role",
        default_role=Role.VIEWER,
        failure_limit=(2, 60.0),
        clock=clock,
    )


async def refusal(auth: Authenticator, token: str, address: str) -> GatewayError:
    with pytest.raises(GatewayError) as refused:
        await auth.authenticate(token, address)
    return refused.value


async def test_failures_past_the_limit_are_rate_limited_but_valid_tokens_pass() -> None:
    clock = Clock()
    auth = authenticator(clock)
    for _ in range(2):
        failed = await refusal(auth, "bad", "203.0.113.9")
        assert failed.code is ErrorCode.AUTH_FAILED
        assert failed.message == "Authentication failed"  # not "… token expired"
    limited = await refusal(auth, "bad", "203.0.113.9")
    assert limited.code is ErrorCode.AUTH_RATE_LIMITED and limited.retry_after_ms == 60_000
    identity = await auth.authenticate(GOOD, "203.0.113.9")
    assert identity.user_id == "auth0|a" and identity.tenant_id == "acme"
    # Another address has its own count; the window slides.
    assert (await refusal(auth, "bad", "198.51.100.7")).code is ErrorCode.AUTH_FAILED
    clock.now = 60.0
    assert (await refusal(auth, "bad", "203.0.113.9")).code is ErrorCode.AUTH_FAILED
