"""What each client message does (PROTOCOL.md §3 to §7): one function per message type, called
by `ClientSession` once the message has passed the size, rate, authentication and permission
checks. Each calls the `SessionService` (or `MemberService`) and answers with a typed frame that
echoes the message's `id`; a `GatewayError` it raises becomes the `error` reply."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from diminuendo.auth.routing import check_routing_tenant
from diminuendo.gateway import frames
from diminuendo.observability import context
from diminuendo.protocol import SUPPORTED_VERSIONS
from diminuendo.protocol import events as ev
from diminuendo.protocol import messages as m
from diminuendo.protocol.errors import ErrorCode, GatewayError
from diminuendo.sessions.stream import Replay

if TYPE_CHECKING:
    from diminuendo.gateway.ws_session import ClientSession

CLOSE_POLICY = 1008


def _ack(client: ClientSession, message: m.ClientMessage) -> None:
    client.conn.send(ev.Ack(for_=message.__struct_config__.tag, id=message.id))


async def authenticate(client: ClientSession, message: m.Authenticate) -> None:
    if message.protocol_version is not None and message.protocol_version not in SUPPORTED_VERSIONS:
        raise GatewayError(
            ErrorCode.PROTOCOL_VERSION_MISMATCH, extra={"supported": list(SUPPORTED_VERSIONS)}
        )
    gateway = client.gateway
    if gateway.settings.dev_mode:
        identity = gateway.dev_identity
    else:
        identity = await gateway.authenticate(message.token, client.conn.ip)
        check_routing_tenant(client.routed_as, identity)
    current = client.conn.identity
    if current is not None and (current.tenant_id, current.user_id) != (
        identity.tenant_id,
        identity.user_id,
    ):
        # A socket's subscriptions and broadcasts belong to one tenant and user: switching
        # would leak them. Re-authenticating as the same user (a fresh token, which moves
        # the expiry deadline) is fine.
        raise GatewayError(
            ErrorCode.FORBIDDEN, "This connection is bound to another identity; reconnect"
        )
    try:
        gateway.hub.set_identity(client.conn, identity)
    except GatewayError as exc:  # the user holds too many connections: not one more
        client.send_error(exc, message.id)
        client.conn.close(CLOSE_POLICY, "too many connections for this user")
        return
    context.tenant_id.set(identity.tenant_id)
    client.conn.send(ev.Authenticated(identity=frames.identity(identity), id=message.id))


async def list_sessions(client: ClientSession, message: m.ListSessions) -> None:
    sessions = await client.gateway.sessions.list_sessions(
        client.conn.identity, message.include_archived
    )
    client.conn.send(ev.SessionList(sessions=sessions, id=message.id))


async def create_session(client: ClientSession, message: m.CreateSession) -> None:
    session = await client.gateway.sessions.create_session(
        client.conn.identity,
        message.agent_type,
        name=message.name,
        project_id=message.project_id,
        metadata=message.metadata,
        requester=client.conn,
    )
    client.conn.send(ev.SessionCreated(session=session, id=message.id))


async def rename_session(client: ClientSession, message: m.RenameSession) -> None:
    session = await client.gateway.sessions.rename_session(
        client.conn.identity, message.session_id, message.name, requester=client.conn
    )
    client.conn.send(ev.SessionUpdated(session=session, id=message.id))


async def archive_session(client: ClientSession, message: m.ArchiveSession) -> None:
    await client.gateway.sessions.set_archived(
        client.conn.identity, message.session_id, True, requester=client.conn
    )
    client.conn.send(ev.SessionArchived(session_id=message.session_id, id=message.id))


async def unarchive_session(client: ClientSession, message: m.UnarchiveSession) -> None:
    await client.gateway.sessions.set_archived(
        client.conn.identity, message.session_id, False, requester=client.conn
    )
    client.conn.send(ev.SessionUnarchived(session_id=message.session_id, id=message.id))


async def delete_session(client: ClientSession, message: m.DeleteSession) -> None:
    await client.gateway.sessions.delete_session(
        client.conn.identity, message.session_id, requester=client.conn
    )
    client.conn.joined.discard(message.session_id)
    client.conn.send(ev.SessionDeleted(session_id=message.session_id, id=message.id))


async def join_session(client: ClientSession, message: m.JoinSession) -> None:
    conn = client.conn
    if message.after_seq is not None:
        client.gateway.metrics.replays.inc()

    # MAX_JOINED_PER_CONNECTION: the slot is taken before the first await (joins of other
    # sessions run concurrently) and given back if the join never subscribed.
    joined, limit = conn.joined, client.settings.max_joined_per_connection
    new = message.session_id not in joined
    if new and len(joined) >= limit:
        raise GatewayError(
            ErrorCode.QUOTA_EXCEEDED, f"At most {limit} sessions joined at once; leave one"
        )
    joined.add(message.session_id)
    subscribed = False

    def send(snapshot: dict[str, Any], replay: Replay) -> None:
        nonlocal subscribed
        subscribed = True
        conn.send(frames.reply(ev.StateSnapshot, snapshot, message.id))
        for frame in replay.frames:
            conn.deliver(frame)

    page_frames, page_bytes = conn.replay_page
    try:
        await client.gateway.sessions.join(
            conn.identity,
            conn,
            message.session_id,
            after_seq=message.after_seq,
            epoch=message.epoch,
            send=send,
            page_frames=page_frames,
            page_bytes=page_bytes,
            replay_rest=conn.replay,
        )
    finally:
        if new and not subscribed:
            joined.discard(message.session_id)


async def leave_session(client: ClientSession, message: m.LeaveSession) -> None:
    await client.gateway.sessions.get_session(client.conn.identity, message.session_id)
    client.gateway.sessions.leave(message.session_id, client.conn)
    client.conn.joined.discard(message.session_id)
    client.conn.send(ev.SessionLeft(session_id=message.session_id, id=message.id))


async def run_turn(client: ClientSession, message: m.RunTurn) -> None:
    conn = client.conn
    subscribed = message.session_id in conn.joined
    turn = await client.gateway.sessions.run_turn(
        conn.identity,
        message.session_id,
        message.text,
        message.client_turn_id,
        on_accept=(
            (lambda turn_id: conn.expect_turn_reply(turn_id, message.id))
            if subscribed and message.id is not None
            else None
        ),
    )
    if not subscribed:  # else the stream's `turn_started` is the reply
        started = ev.TurnStarted(
            session_id=message.session_id,
            turn_id=turn.turn_id,
            client_turn_id=turn.client_turn_id,
            id=message.id,
        )
        conn.send(started)


async def stop_turn(client: ClientSession, message: m.StopTurn) -> None:
    await client.gateway.sessions.stop_turn(client.conn.identity, message.session_id)
    _ack(client, message)


async def steer(client: ClientSession, message: m.Steer) -> None:
    await client.gateway.sessions.steer(client.conn.identity, message.session_id, message.content)
    _ack(client, message)


async def answer_question(client: ClientSession, message: m.AnswerQuestion) -> None:
    await client.gateway.sessions.answer(
        client.conn.identity,
        message.session_id,
        message.request_id,
        answers=message.answers,
        approved=message.approved,
        dismissed=message.dismissed,
    )
    _ack(client, message)


async def get_history(client: ClientSession, message: m.GetHistory) -> None:
    history = await client.gateway.sessions.history(
        client.conn.identity, message.session_id, limit=message.limit, before=message.before
    )
    client.conn.send(frames.reply(ev.History, history, message.id))


async def get_events(client: ClientSession, message: m.GetEvents) -> None:
    client.gateway.metrics.replays.inc()
    events = await client.gateway.sessions.events(
        client.conn.identity, message.session_id, message.after_seq, message.epoch, message.limit
    )
    client.conn.send(frames.reply(ev.Events, events, message.id))


async def list_files(client: ClientSession, message: m.ListFiles) -> None:
    listing = await client.gateway.sessions.list_files(
        client.conn.identity, message.session_id, message.path, message.depth
    )
    client.conn.send(frames.reply(ev.FileList, listing, message.id))


async def read_file(client: ClientSession, message: m.ReadFile | m.FileAtIteration) -> None:
    """`read_file`, and `file_at_iteration` for one stored iteration of the file."""
    iteration = message.iteration if isinstance(message, m.FileAtIteration) else None
    content = await client.gateway.sessions.read_file(
        client.conn.identity, message.session_id, message.path, iteration
    )
    client.conn.send(frames.reply(ev.FileContent, content, message.id))


async def file_history(client: ClientSession, message: m.FileHistory) -> None:
    history = await client.gateway.sessions.file_history(
        client.conn.identity, message.session_id, message.path
    )
    client.conn.send(frames.reply(ev.FileHistory, history, message.id))


async def manage_members(client: ClientSession, message: m.ManageMembers) -> None:
    members = await client.gateway.members.manage(
        client.conn.identity, message.action, user_id=message.user_id, role=message.role
    )
    client.conn.send(ev.MemberList(members=members, id=message.id))


# Messages whose handlers only read for this client: cancelled as soon as its socket closes.
CANCELLED_ON_CLOSE: frozenset[type] = frozenset(
    {
        m.Authenticate,
        m.ListSessions,
        m.LeaveSession,
        m.GetHistory,
        m.GetEvents,
        m.ListFiles,
        m.ReadFile,
        m.FileHistory,
        m.FileAtIteration,
    }
)

Handler = Callable[["ClientSession", Any], Awaitable[None]]
HANDLERS: dict[type, Handler] = {
    m.Authenticate: authenticate,
    m.ListSessions: list_sessions,
    m.CreateSession: create_session,
    m.RenameSession: rename_session,
    m.ArchiveSession: archive_session,
    m.UnarchiveSession: unarchive_session,
    m.DeleteSession: delete_session,
    m.JoinSession: join_session,
    m.LeaveSession: leave_session,
    m.RunTurn: run_turn,
    m.StopTurn: stop_turn,
    m.Steer: steer,
    m.AnswerQuestion: answer_question,
    m.GetHistory: get_history,
    m.GetEvents: get_events,
    m.ListFiles: list_files,
    m.ReadFile: read_file,
    m.FileHistory: file_history,
    m.FileAtIteration: read_file,
    m.ManageMembers: manage_members,
}
