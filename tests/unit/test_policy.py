"""The read rule and the member-change rule of `auth.policy` (PROTOCOL.md §4, §5, §11), and how
an identity follows a member record (`Identity.with_member_role`)."""

from __future__ import annotations

import pytest

from diminuendo.auth.identity import Identity, Role, identity_from_claims
from diminuendo.auth.policy import check_member_change, may_read_session
from diminuendo.protocol.errors import ErrorCode, GatewayError

OW, A, D, V, G = Role.OWNER, Role.ADMIN, Role.DEVELOPER, Role.VIEWER, Role.GUEST


def who(role: Role, user: str = "u1", tenant: str = "t1") -> Identity:
    return Identity(user_id=user, email=None, tenant_id=tenant, role=role)


@pytest.mark.parametrize(
    ("identity", "tenant", "owner", "readable"),
    [
        (who(V), "t1", "someone", True),
        (who(OW), "t2", "u1", False),  # another tenant, even its own user id
        (who(G), "t1", "u1", True),  # a guest's own session
        (who(G), "t1", "someone", False),
        (who(G), "t2", "u1", False),
    ],
)
def test_read_rule(identity: Identity, tenant: str, owner: str, readable: bool) -> None:
    assert may_read_session(identity, tenant, owner) is readable


# (actor, current, new, owners) → error message, or None when allowed
CHANGES = [
    ((OW, None, OW, 0), None),  # the first owner record
    ((A, None, A, 1), None),  # at its own level
    ((A, None, OW, 1), "Cannot grant a role above your own"),
    ((A, OW, V, 2), "Cannot change a member above your own role"),  # demote an owner
    ((A, OW, None, 2), "Cannot change a member above your own role"),  # remove an owner
    ((A, A, D, 1), None),
    ((OW, OW, A, 2), None),
    ((OW, OW, A, 1), "The last owner cannot be removed or demoted"),
    ((OW, OW, None, 1), "The last owner cannot be removed or demoted"),
    ((OW, OW, OW, 1), None),  # re-adding the last owner as owner changes nothing
    ((D, None, V, 1), "Permission denied"),  # no members.manage
    ((D, G, None, 1), "Permission denied"),
    ((V, None, G, 1), "Permission denied"),
]


@pytest.mark.parametrize(("change", "refusal"), CHANGES)
def test_member_change_rule(
    change: tuple[Role, Role | None, Role | None, int], refusal: str | None
) -> None:
    if refusal is None:
        check_member_change(*change)
        return
    with pytest.raises(GatewayError) as raised:
        check_member_change(*change)
    assert raised.value.code is ErrorCode.FORBIDDEN and raised.value.message == refusal


def test_identity_follows_its_member_record() -> None:
    claims = {"sub": "u1", "tenant": "t1", "role": "viewer"}
    options = {"tenant_claim": "tenant", "role_claim": "role", "default_role": G}
    from_record = identity_from_claims(claims, member_role=A, **options)
    assert (from_record.role, from_record.token_role) == (A, V)

    demoted = from_record.with_member_role(D)
    assert (demoted.role, demoted.token_role) == (D, V)
    removed = demoted.with_member_role(None)
    assert removed == identity_from_claims(claims, **options), "as a new authentication finds it"
    assert (removed.role, removed.token_role) == (V, V)
    assert removed.with_member_role(G).with_member_role(None) == removed
