"""The routing tenant: the header a load balancer hashes on, checked against the verified token.

HAProxy (`config/haproxy.cfg.example`) sends every connection of a tenant to one instance, keyed
first on `X-Diminuendo-Tenant`. That header is the client's to set, so an instance refuses a
request whose header names another tenant than its token: otherwise a client could route itself
to an instance that does not hold its tenant's sessions (two instances then hold one session's
runtime socket) or aim its load at another tenant's instance. Absent, nothing is checked (the
balancer hashed on the token's claim or the address). Dev mode has no verified token to compare
with, so it is not checked there.
"""

from __future__ import annotations

from diminuendo.auth.identity import Identity
from diminuendo.protocol.errors import ErrorCode, GatewayError

ROUTING_TENANT_HEADER = "x-diminuendo-tenant"


def check_routing_tenant(routed_as: str | None, identity: Identity) -> None:
    """`FORBIDDEN` when the request was routed as (`X-Diminuendo-Tenant`) another tenant than
    the verified `identity`'s."""
    if routed_as is not None and routed_as.strip() != identity.tenant_id:
        raise GatewayError(
            ErrorCode.FORBIDDEN,
            "X-Diminuendo-Tenant does not match the token's tenant; send the token's tenant "
            "or no X-Diminuendo-Tenant",
        )
