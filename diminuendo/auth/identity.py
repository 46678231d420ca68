"""Who a verified caller is, and what their role lets them do (PROTOCOL §3, §11).

Kept free of I/O so that every handler, the REST layer and the JSON-RPC surface share one
definition of roles and permissions instead of re-deriving them from raw claims.
"""

from collections.abc import Mapping
from enum import IntEnum, StrEnum
from types import MappingProxyType
from typing import Any

import msgspec

from diminuendo.auth.errors import AuthError


class Role(IntEnum):
    """Tenant roles; the integer is the protocol's level, so ``max()`` picks the strongest."""

    GUEST = 1
    VIEWER = 2
    DEVELOPER = 3
    ADMIN = 4
    OWNER = 5

    @classmethod
    def parse(cls, name: str) -> "Role":
        """Role from its name in any case (``"Developer"`` → DEVELOPER); ValueError otherwise.

        Config (``AUTH_DEFAULT_ROLE``), token claims and Unison member records all spell roles as
        names, and none of them agree on case.
        """
        if isinstance(name, str):
            member = cls.__members__.get(name.strip().upper())
            if member is not None:
                return member
        raise ValueError("unknown role")


class Permission(StrEnum):
    """Permission names as they appear on the wire (PROTOCOL §11)."""

    READ = "threads.read"
    CREATE = "threads.create"
    WRITE = "threads.write"
    DELETE = "threads.delete"
    MEMBERS = "members.manage"
    CONFIG = "config.manage"


_ALL = frozenset(Permission)
_CONTRIBUTE = frozenset({Permission.READ, Permission.CREATE, Permission.WRITE})
_READ_ONLY = frozenset({Permission.READ})

ROLE_PERMISSIONS: Mapping[Role, frozenset[Permission]] = MappingProxyType(
    {
        Role.OWNER: _ALL,
        Role.ADMIN: _ALL,
        Role.DEVELOPER: _CONTRIBUTE,
        Role.VIEWER: _READ_ONLY,
        # Guests may read, but only their own sessions: see sees_only_own_sessions().
        Role.GUEST: _READ_ONLY,
    }
)
"""The §11 table; read-only so no caller can widen a role at run time."""


def sees_only_own_sessions(role: Role) -> bool:
    """True when READ is limited to sessions the caller owns (the guest row of §11).

    A permission set cannot express "own sessions only", so listing and reading code asks this
    in addition to checking ``Permission.READ``.
    """
    return role is Role.GUEST


class Identity(msgspec.Struct, frozen=True):
    """A verified caller: the subject, their tenant and their effective role in it.

    ``expires_at`` is the token's ``exp`` (epoch seconds): an open connection keeps the identity
    until then plus the clock leeway, unless it presents a fresh token (PROTOCOL §3). None for
    the dev identity, which does not expire.
    """

    user_id: str
    email: str | None
    tenant_id: str
    role: Role
    expires_at: float | None = None
    # The role without a member record (token claim, else the default) when it differs from
    # `role`: removing the member record makes it the role again, also on open connections.
    claimed_role: Role | None = None

    @property
    def token_role(self) -> Role:
        """The role this identity has once its member record is removed (PROTOCOL §11)."""
        return self.claimed_role if self.claimed_role is not None else self.role

    def with_member_role(self, role: Role | None) -> "Identity":
        """This identity after its member record changed to `role` (None: the record was
        removed, so the token's own role applies), as a new authentication would find it."""
        token_role = self.token_role
        new = token_role if role is None else role
        return msgspec.structs.replace(
            self, role=new, claimed_role=None if new == token_role else token_role
        )

    def permissions(self) -> frozenset[Permission]:
        """Everything this identity's role grants."""
        return ROLE_PERMISSIONS[self.role]

    def can(self, permission: Permission) -> bool:
        """Whether the role grants ``permission`` (guests: see ``sees_only_own_sessions``)."""
        return permission in ROLE_PERMISSIONS[self.role]

    def to_wire(self) -> dict[str, Any]:
        """The ``identity`` object of the ``authenticated`` event (PROTOCOL §3)."""
        return {
            "userId": self.user_id,
            "email": self.email,
            "tenantId": self.tenant_id,
            "role": self.role.name.lower(),
        }


DEV_IDENTITY = Identity(
    user_id="dev-user-001", email="developer@example.com", tenant_id="dev", role=Role.OWNER
)
"""The identity every connection gets in dev mode (PROTOCOL §3)."""


def identity_from_claims(
    claims: Mapping[str, Any],
    *,
    tenant_claim: str,
    role_claim: str,
    default_role: Role,
    member_role: Role | None = None,
) -> Identity:
    """Map verified token claims to an Identity, or raise AuthError.

    Tenant: ``claims[tenant_claim]``, else Auth0's ``org_id``; a token without a tenant is
    rejected, because every session belongs to a tenant. A tenant claim that is present but not
    a string is rejected rather than skipped, so a malformed claim can never fall through to a
    different tenant via ``org_id``.

    Role: the tenant's member record (``member_role``, looked up by the caller in Unison) wins,
    then the role claim (a name, or a list of names of which the strongest known one counts;
    unknown names are ignored), then ``default_role``.
    """
    user_id = claims.get("sub")
    if not isinstance(user_id, str) or not user_id:
        raise AuthError("token has no subject")
    tenant_id = _tenant(claims, tenant_claim)
    claimed = _claimed_role(claims.get(role_claim))
    if claimed is None:
        claimed = default_role
    role = member_role if member_role is not None else claimed
    email = claims.get("email")
    exp = claims.get("exp")
    return Identity(
        user_id=user_id,
        email=email if isinstance(email, str) and email else None,
        tenant_id=tenant_id,
        role=role,
        claimed_role=None if claimed == role else claimed,
        expires_at=float(exp)
        if isinstance(exp, int | float) and not isinstance(exp, bool)
        else None,
    )


def _tenant(claims: Mapping[str, Any], tenant_claim: str) -> str:
    """The first non-empty tenant among the configured claim and ``org_id``."""
    for name in (tenant_claim, "org_id"):
        value = claims.get(name)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise AuthError("invalid tenant claim")
        return value
    raise AuthError("token has no tenant")


def _claimed_role(value: Any) -> Role | None:
    """The strongest known role named by the claim, or None when it names none."""
    if isinstance(value, str):
        names: list[Any] = [value]
    elif isinstance(value, list):
        names = value
    else:
        return None
    known = [role for role in map(_known_role, names) if role is not None]
    return max(known, default=None)


def _known_role(name: Any) -> Role | None:
    """``Role.parse`` that answers None instead of raising for unknown or non-string names."""
    try:
        return Role.parse(name)
    except ValueError:
        return None
