"""Token → `Identity`: verification, the member-record role, and the failed-attempt limit.

Every edge (the upgrade, the `authenticate` message, REST, RPC) authenticates through here, so
failures look the same everywhere: `AUTH_FAILED` saying only "Authentication failed" (the reason
goes to the log: telling a forger which check failed helps them), or `AUTH_RATE_LIMITED` once a
client address has failed too often (PROTOCOL.md §3, §12).

The limit counts failures and refuses only failures. A token is always verified first and a
valid one is never refused by it: otherwise anyone sharing the address (every client behind a
proxy, a whole office behind NAT) is locked out by one client's bad tokens.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from loguru import logger

from diminuendo.auth.errors import AuthError
from diminuendo.auth.identity import Identity, Role, identity_from_claims
from diminuendo.auth.verifier import TokenVerifier
from diminuendo.protocol.errors import ErrorCode, GatewayError
from diminuendo.ratelimit import KeyedWindows

MemberRoleLookup = Callable[[str, str], Awaitable[Role | None]]


class Authenticator:
    def __init__(
        self,
        verifier: TokenVerifier,
        *,
        member_role: MemberRoleLookup,
        tenant_claim: str,
        role_claim: str,
        default_role: Role,
        failure_limit: tuple[int, float] = (10, 60.0),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._verifier = verifier
        self._member_role = member_role
        self._tenant_claim = tenant_claim
        self._role_claim = role_claim
        self._default_role = default_role
        self._failures = KeyedWindows(*failure_limit)
        self._clock = clock

    async def authenticate(self, token: str, client_address: str) -> Identity:
        """The identity of a valid token; `GatewayError` otherwise. `client_address` is the key
        of the caller's address (`client_address.address_key`) the failures count under."""
        try:
            claims = await self._verifier.verify(token)
            preliminary = identity_from_claims(
                claims,
                tenant_claim=self._tenant_claim,
                role_claim=self._role_claim,
                default_role=self._default_role,
            )
        except AuthError as exc:
            raise self._failed(client_address, exc) from None
        member_role = await self._member_role(preliminary.tenant_id, preliminary.user_id)
        if member_role is None:
            return preliminary
        return identity_from_claims(
            claims,
            tenant_claim=self._tenant_claim,
            role_claim=self._role_claim,
            default_role=self._default_role,
            member_role=member_role,
        )

    def _failed(self, client_address: str, reason: AuthError) -> GatewayError:
        """Count a failure for `client_address`; past the limit it is `AUTH_RATE_LIMITED`."""
        wait = self._failures.hit(client_address, self._clock())
        logger.info("authentication failed from {}: {}", client_address, reason)
        if wait is not None:
            return GatewayError(
                ErrorCode.AUTH_RATE_LIMITED, retry_after_ms=max(1, int(wait * 1000))
            )
        return GatewayError(ErrorCode.AUTH_FAILED)
