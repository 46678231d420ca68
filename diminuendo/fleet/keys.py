"""Every key and channel name the fleet uses, in one place.

All names of one session share the hash tag `{ses_…}`, so a Valkey Cluster keeps them in one slot
and the append script may touch the stream, the meta hash and the lease together. An instance's
inbox (forwarded commands and their replies) is tagged `{inst:<id>}`; a tenant's broadcast channel
is `<prefix>:tenant:<id>` (channels have no slot). The prefix (`REDIS_KEY_PREFIX`, default `dim`)
lets several deployments share one Valkey.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Session ids are `ses_<hex>` today; any id that cannot break a hash tag or a name is accepted.
# Instance ids (`Leases`, `Forwarder`) follow the same rule.
_SESSION_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """The names of one session's data, all in the slot of `{session_id}`."""

    log: str  # stream: entry id `<seq>-0`, field `d` = the frame's payload
    meta: str  # hash: `e` epoch, `s` last seq, `b` average payload bytes
    lease: str  # string: `<fence>:<instance_id>` of the owner, with a TTL
    fence: str  # counter: the last fencing token handed out (never expires)
    channel: str  # pub/sub: `seq:epoch:payload` of every append


@dataclass(frozen=True, slots=True)
class InboxKeys:
    """The names of one instance's inbox, both in the slot of `{inst:<id>}`."""

    stream: str  # stream: every message sent to the instance, kept `retain` ms (gap re-reads)
    channel: str  # pub/sub: the same messages, live


@dataclass(frozen=True, slots=True)
class Keyspace:
    prefix: str = "dim"

    def session(self, session_id: str) -> SessionKeys:
        """The names of `session_id`'s data. Raises `ValueError` for an id that could escape its
        hash tag (`{`, `}`) or the name's structure (`:`), so no input can reach another
        session's keys."""
        if not _SESSION_ID.fullmatch(session_id):
            raise ValueError(f"not a session id usable in Valkey: {session_id!r}")
        base = f"{self.prefix}:{{{session_id}}}"
        return SessionKeys(
            log=f"{base}:log",
            meta=f"{base}:meta",
            lease=f"{base}:lease",
            fence=f"{base}:fence",
            channel=f"{base}:events",
        )

    def inbox(self, instance_id: str) -> InboxKeys:
        """The names of `instance_id`'s inbox; `ValueError` for an id that could escape them."""
        if not _SESSION_ID.fullmatch(instance_id):
            raise ValueError(f"not an instance id usable in Valkey: {instance_id!r}")
        base = f"{self.prefix}:{{inst:{instance_id}}}"
        return InboxKeys(stream=f"{base}:inbox", channel=f"{base}:inbox")

    def tenant_channel(self, tenant_id: str) -> str:
        """The broadcast channel of one tenant. Any tenant id is accepted: the fixed
        `:tenant:` part keeps the mapping one-to-one and apart from every session name, and
        receivers map a channel back to its tenant through their own table, never by parsing."""
        if not tenant_id:
            raise ValueError("empty tenant id")
        return f"{self.prefix}:tenant:{tenant_id}"
