"""Roles and permissions (PROTOCOL §11) and the claims → Identity mapping (§3, OPERATIONS §3)."""

from typing import Any

import msgspec
import pytest

from diminuendo.auth.errors import AuthError
from diminuendo.auth.identity import (
    DEV_IDENTITY,
    ROLE_PERMISSIONS,
    Identity,
    Permission,
    Role,
    identity_from_claims,
    sees_only_own_sessions,
)

TENANT_CLAIM = "https://diminuendo/tenant_id"
ROLE_CLAIM = "https://diminuendo/role"

# PROTOCOL §11, transcribed column by column: read, create, write, delete, members, config.
SPEC_TABLE = {
    "owner": (5, "✓✓✓✓✓✓"),
    "admin": (4, "✓✓✓✓✓✓"),
    "developer": (3, "✓✓✓..."),
    "viewer": (2, "✓....."),
    "guest": (1, "✓....."),  # "own sessions only"
}
SPEC_COLUMNS = [
    "threads.read",
    "threads.create",
    "threads.write",
    "threads.delete",
    "members.manage",
    "config.manage",
]


def test_role_permissions_match_the_protocol_table() -> None:
    assert {role.name.lower() for role in Role} == set(SPEC_TABLE)
    assert [p.value for p in Permission] == SPEC_COLUMNS
    assert set(ROLE_PERMISSIONS) == set(Role)
    for name, (level, marks) in SPEC_TABLE.items():
        role = Role.parse(name)
        assert role == level
        expected = {col for col, mark in zip(SPEC_COLUMNS, marks, strict=True) if mark == "✓"}
        assert {p.value for p in ROLE_PERMISSIONS[role]} == expected, name


def test_only_guests_are_limited_to_their_own_sessions() -> None:
    assert [role for role in Role if sees_only_own_sessions(role)] == [Role.GUEST]


def test_role_permissions_cannot_be_changed_at_run_time() -> None:
    with pytest.raises(TypeError):
        ROLE_PERMISSIONS[Role.GUEST] = frozenset(Permission)  # type: ignore[index]


@pytest.mark.parametrize(
    ("name", "role"),
    [("owner", Role.OWNER), ("Developer", Role.DEVELOPER), (" GUEST ", Role.GUEST)],
)
def test_role_parse_ignores_case(name: str, role: Role) -> None:
    assert Role.parse(name) is role


@pytest.mark.parametrize("name", ["", "root", "superadmin", "5", None, 3, ["admin"]])
def test_role_parse_rejects_anything_else(name: Any) -> None:
    with pytest.raises(ValueError):
        Role.parse(name)


def test_roles_order_by_level() -> None:
    assert Role.GUEST < Role.VIEWER < Role.DEVELOPER < Role.ADMIN < Role.OWNER
    assert max(Role.VIEWER, Role.ADMIN) is Role.ADMIN


def test_identity_permissions_and_can() -> None:
    dev = Identity(user_id="u", email=None, tenant_id="t", role=Role.DEVELOPER)
    assert dev.permissions() == {Permission.READ, Permission.CREATE, Permission.WRITE}
    assert dev.can(Permission.WRITE)
    assert not dev.can(Permission.DELETE)
    assert not dev.can(Permission.CONFIG)


def test_identity_wire_form() -> None:
    identity = Identity(user_id="auth0|abc", email="a@b.c", tenant_id="acme", role=Role.DEVELOPER)
    assert identity.to_wire() == {
        "userId": "auth0|abc",
        "email": "a@b.c",
        "tenantId": "acme",
        "role": "developer",
    }


def test_identity_is_immutable_and_hashable() -> None:
    identity = Identity(user_id="u", email=None, tenant_id="t", role=Role.GUEST)
    with pytest.raises(AttributeError):
        identity.role = Role.OWNER  # type: ignore[misc]
    assert hash(identity) == hash(Identity(user_id="u", email=None, tenant_id="t", role=Role.GUEST))


def test_dev_identity_matches_the_protocol() -> None:
    assert DEV_IDENTITY.to_wire() == {
        "userId": "dev-user-001",
        "email": "developer@example.com",
        "tenantId": "dev",
        "role": "owner",
    }
    assert msgspec.json.decode(msgspec.json.encode(DEV_IDENTITY), type=Identity) == DEV_IDENTITY


def identity(claims: dict[str, Any], member_role: Role | None = None) -> Identity:
    return identity_from_claims(
        {"sub": "auth0|abc", **claims},
        tenant_claim=TENANT_CLAIM,
        role_claim=ROLE_CLAIM,
        default_role=Role.VIEWER,
        member_role=member_role,
    )


def test_full_mapping() -> None:
    mapped = identity({TENANT_CLAIM: "acme", ROLE_CLAIM: "admin", "email": "a@b.c"})
    assert mapped == Identity(user_id="auth0|abc", email="a@b.c", tenant_id="acme", role=Role.ADMIN)


def test_the_identity_expires_with_its_token() -> None:
    assert identity({TENANT_CLAIM: "acme", "exp": 1_900_000_000}).expires_at == 1_900_000_000.0
    assert DEV_IDENTITY.expires_at is None  # dev identities do not expire


@pytest.mark.parametrize(
    ("claims", "tenant"),
    [
        ({TENANT_CLAIM: "acme"}, "acme"),
        ({TENANT_CLAIM: "acme", "org_id": "org_123"}, "acme"),
        ({"org_id": "org_123"}, "org_123"),
        ({TENANT_CLAIM: "", "org_id": "org_123"}, "org_123"),
        ({TENANT_CLAIM: None, "org_id": "org_123"}, "org_123"),
    ],
)
def test_tenant_claim_then_org_id(claims: dict[str, Any], tenant: str) -> None:
    assert identity(claims).tenant_id == tenant


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({}, "token has no tenant"),
        ({TENANT_CLAIM: "", "org_id": ""}, "token has no tenant"),
        ({"tenant_id": "acme"}, "token has no tenant"),
        ({TENANT_CLAIM: 42, "org_id": "org_123"}, "invalid tenant claim"),
        ({TENANT_CLAIM: ["acme"]}, "invalid tenant claim"),
        ({"org_id": {"id": "x"}}, "invalid tenant claim"),
    ],
)
def test_missing_or_malformed_tenant_is_rejected(claims: dict[str, Any], reason: str) -> None:
    with pytest.raises(AuthError) as info:
        identity(claims)
    assert str(info.value) == reason
    assert info.value.code == "AUTH_FAILED"


@pytest.mark.parametrize("sub", [None, "", 42])
def test_missing_subject_is_rejected(sub: Any) -> None:
    with pytest.raises(AuthError, match="token has no subject"):
        identity({"sub": sub, TENANT_CLAIM: "acme"})


@pytest.mark.parametrize(
    ("role_claim", "member_role", "role"),
    [
        (None, None, Role.VIEWER),  # default
        ("developer", None, Role.DEVELOPER),  # claim beats default
        ("GUEST", None, Role.GUEST),  # a claim may also lower the role
        ("developer", Role.GUEST, Role.GUEST),  # member record beats claim
        (None, Role.OWNER, Role.OWNER),  # member record beats default
        (["viewer", "admin", "developer"], None, Role.ADMIN),  # list: the strongest known
        (["nonsense", "Developer"], None, Role.DEVELOPER),  # unknown entries ignored
        (["nonsense", 7, None], None, Role.VIEWER),  # nothing known → default
        ([], None, Role.VIEWER),
        ("root", None, Role.VIEWER),
        (5, None, Role.VIEWER),  # levels are not role names
        ({"role": "admin"}, None, Role.VIEWER),
        (["owner"], Role.VIEWER, Role.VIEWER),
    ],
)
def test_role_precedence(role_claim: Any, member_role: Role | None, role: Role) -> None:
    claims = {TENANT_CLAIM: "acme", ROLE_CLAIM: role_claim}
    assert identity(claims, member_role=member_role).role is role


def test_default_role_is_configurable() -> None:
    mapped = identity_from_claims(
        {"sub": "s", "org_id": "o"},
        tenant_claim=TENANT_CLAIM,
        role_claim=ROLE_CLAIM,
        default_role=Role.GUEST,
    )
    assert mapped.role is Role.GUEST


@pytest.mark.parametrize("email", [None, "", 42, ["a@b.c"]])
def test_email_is_optional(email: Any) -> None:
    assert identity({TENANT_CLAIM: "acme", "email": email}).email is None
