"""The one table of which permission each operation needs (PROTOCOL.md §5, §11).

Keyed by the WebSocket message types; REST routes and RPC methods name the message type whose
operation they perform, so all three surfaces are authorised by this one table.
"""

from __future__ import annotations

from diminuendo.auth.identity import (
    ROLE_PERMISSIONS,
    Identity,
    Permission,
    Role,
    sees_only_own_sessions,
)
from diminuendo.protocol import messages as m
from diminuendo.protocol.errors import ErrorCode, GatewayError

# The one table of which permission each message needs (PROTOCOL.md §5, §11).
MESSAGE_PERMISSIONS: dict[type, Permission | None] = {
    m.Ping: None,
    m.Authenticate: None,
    m.ListSessions: Permission.READ,
    m.CreateSession: Permission.CREATE,
    m.RenameSession: Permission.WRITE,
    m.ArchiveSession: Permission.WRITE,
    m.UnarchiveSession: Permission.WRITE,
    m.DeleteSession: Permission.DELETE,
    m.JoinSession: Permission.READ,
    m.LeaveSession: Permission.READ,
    m.RunTurn: Permission.WRITE,
    m.StopTurn: Permission.WRITE,
    m.Steer: Permission.WRITE,
    m.AnswerQuestion: Permission.WRITE,
    m.GetHistory: Permission.READ,
    m.GetEvents: Permission.READ,
    m.ListFiles: Permission.READ,
    m.ReadFile: Permission.READ,
    m.FileHistory: Permission.READ,
    m.FileAtIteration: Permission.READ,
}


def permission_for(message: m.ClientMessage) -> Permission | None:
    if isinstance(message, m.ManageMembers):
        return Permission.READ if message.action == "list" else Permission.MEMBERS
    return MESSAGE_PERMISSIONS[type(message)]


def require(identity: Identity, permission: Permission | None) -> None:
    """Raise `FORBIDDEN` unless `identity` holds `permission` (None: no permission needed)."""
    if permission is not None and not identity.can(permission):
        raise GatewayError(ErrorCode.FORBIDDEN)


def may_read_session(identity: Identity, tenant_id: str, owner_id: str) -> bool:
    """The read rule for one session (PROTOCOL.md §4, §11): the caller's own tenant, and for a
    role that sees only its own sessions (guest), only sessions it owns. Lookups, listings and
    lifecycle broadcasts all ask this, so they cannot disagree about who sees a session."""
    if tenant_id != identity.tenant_id:
        return False
    return not sees_only_own_sessions(identity.role) or owner_id == identity.user_id


def check_member_change(actor: Role, current: Role | None, new: Role | None, owners: int) -> None:
    """Raise `FORBIDDEN` unless an actor with role `actor` may move a member from `current` to
    `new` (None: no member record) in a tenant whose member records hold `owners` owners
    (PROTOCOL.md §5): the actor needs `members.manage`, its level must be at least both the
    member's current level and the new one, and the last owner is never removed or demoted."""
    if Permission.MEMBERS not in ROLE_PERMISSIONS[actor]:
        raise GatewayError(ErrorCode.FORBIDDEN)
    if current is not None and current > actor:
        raise GatewayError(ErrorCode.FORBIDDEN, "Cannot change a member above your own role")
    if new is not None and new > actor:
        raise GatewayError(ErrorCode.FORBIDDEN, "Cannot grant a role above your own")
    if current is Role.OWNER and new is not Role.OWNER and owners <= 1:
        raise GatewayError(ErrorCode.FORBIDDEN, "The last owner cannot be removed or demoted")
