"""`Hub`: who receives a lifecycle broadcast, and role updates on open connections (no sockets:
the Hub only calls `send_encoded` and reads `identity`)."""

from __future__ import annotations

import msgspec

from diminuendo.auth.admission import Admission
from diminuendo.auth.expiry import ExpirySchedule
from diminuendo.auth.identity import Identity, Role
from diminuendo.gateway.hub import Hub


class Peer:
    """Stands in for a `Connection`: what the Hub touches of one."""

    def __init__(self, user: str, role: Role, tenant: str = "t1", claimed: Role | None = None):
        self.identity = Identity(
            user_id=user, email=None, tenant_id=tenant, role=role, claimed_role=claimed
        )
        self.frames: list[dict] = []
        self.ip = "127.0.0.1"

    def send_encoded(self, data: bytes) -> None:
        self.frames.append(msgspec.json.decode(data))


def hub_with(*peers: Peer) -> Hub:
    admission = Admission(max_total=100, max_per_user=None, max_pending_per_address=100)
    hub = Hub(30.0, admission=admission, expiry=ExpirySchedule(60.0, 30.0))
    for peer in peers:
        hub.add(peer)  # type: ignore[arg-type]  # its identity set: added authenticated
    return hub


def created(hub: Hub, owner: str, tenant: str = "t1", exclude: Peer | None = None) -> None:
    hub.broadcast(tenant, owner, {"type": "session_created"}, exclude)  # type: ignore[arg-type]


def test_a_broadcast_reaches_readers_and_the_owning_guest_only() -> None:
    viewer, guest, other_guest, stranger = (
        Peer("v", Role.VIEWER),
        Peer("g", Role.GUEST),
        Peer("h", Role.GUEST),
        Peer("v", Role.OWNER, tenant="t2"),
    )
    hub = hub_with(viewer, guest, other_guest, stranger)
    created(hub, owner="g")
    created(hub, owner="v")
    created(hub, owner="v", exclude=viewer)
    assert (len(viewer.frames), len(guest.frames), len(other_guest.frames)) == (2, 1, 0)
    assert stranger.frames == []


def test_role_updates_move_connections_between_scopes() -> None:
    member = Peer("m", Role.DEVELOPER, claimed=Role.VIEWER)
    second_socket = Peer("m", Role.DEVELOPER, claimed=Role.VIEWER)
    someone = Peer("s", Role.ADMIN)
    hub = hub_with(member, second_socket, someone)

    changed = hub.update_role("t1", "m", Role.GUEST)
    assert set(changed) == {member, second_socket}
    assert member.identity.role is Role.GUEST and someone.identity.role is Role.ADMIN
    created(hub, owner="s")
    assert (member.frames, someone.frames) == ([], [{"type": "session_created"}])

    hub.update_role("t1", "m", None)  # record removed: the token's claim again
    assert member.identity.role is Role.VIEWER
    created(hub, owner="s")
    assert len(member.frames) == 1
    assert hub.update_role("t2", "m", Role.OWNER) == [], "another tenant's user is untouched"


def test_removed_connections_leave_no_index_behind() -> None:
    reader, guest = Peer("r", Role.VIEWER), Peer("g", Role.GUEST)
    hub = hub_with(reader, guest)
    hub.remove(reader)  # type: ignore[arg-type]
    hub.remove(guest)  # type: ignore[arg-type]
    assert (hub._readers, hub._own_only, dict(hub._by_tenant)) == ({}, {}, {})
