"""The one table of which permission each operation needs (PROTOCOL.md §5, §11).

Keyed by the WebSocket message types; REST routes and RPC methods name the message type whose
operation they perform, so all three surfaces are authorised by this one table.
"""

from __future__ import annotations

from diminuendo.auth.identity import Identity, Permission
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
