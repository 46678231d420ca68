"""A session's replay log in Valkey: one stream whose entry ids are the seqs, a meta hash with
the epoch and the last seq, appended by one Lua script (Centrifugo's Redis engine, with a lease
check in front).

Data model (names in `keys`): `log` is a stream of `<seq>-0 d=<payload>`, trimmed with
`MAXLEN ~` to the event bound (and an approximate byte bound: the event bound is lowered to
`max_bytes / average payload size`, the average kept in the meta hash), expiring `stream_ttl_ms`
after the last append; `meta` is a hash `e` (epoch), `s` (last seq), `b` (average payload bytes)
that outlives the stream (`meta_ttl_ms`), so a session idle past the stream's TTL keeps its
epoch and the next reader sees `gap` rather than a silent restart of seqs. A missing meta means
Valkey lost the session (flush, eviction, restart without persistence): the next append creates
a new epoch, seqs start again at 1, and a reader holding the old epoch gets `gap`.

The payload is opaque bytes (the gateway's `Frame.data`, the frame's complete JSON text).

Contract of `ReplayLog` (every method raises `FleetUnavailable` when Valkey cannot be reached
in time; nothing is retried after a timeout, so an append runs at most once):

- `append(session_id, payload, owner_token=)` → `(seq, epoch)`. Atomically: refuses with
  `Fenced` unless `owner_token` is the session's current lease token; creates the epoch if the
  meta is missing; assigns `seq = last + 1`; adds the entry; trims; renews both TTLs; publishes
  `seq:epoch:payload` on the session's channel. Concurrent appends get distinct, consecutive seqs.
- `append_batches(batches)` → one refusal or `None` per `Batch`: the owners' pipeline (the
  instance's `appending.LogWriter`), every session's `(seq, payload)` entries appended in order
  in one round trip, each checked by the script to continue the log exactly (`epoch` is the
  log's, `seq` its last + 1: else `Diverged`, and nothing of that entry is written; an entry
  already appended, by a retry after a timeout, is not appended twice). A session's refusal
  (`Fenced`, `Diverged`, or another error of its script, as it is) is its own: the other
  sessions' entries are appended all the same. Only `FleetUnavailable` concerns them all.
- `read_after(session_id, after_seq, epoch, limit)` → `Replay`: up to `limit` events with
  `seq > after_seq`, oldest first, read in one transaction with the meta. `gap` is true when the
  caller's `epoch` is not the current one (no events then), when the meta is missing, or when
  events after `after_seq` have been trimmed or expired (the events returned start later). An
  `epoch` of `None` means "the current one". `last_seq` tells whether there is more to read.
- `meta(session_id)` → `(epoch, last_seq)` or `None` when Valkey has no log for the session.

The script runs by `EVALSHA` (`connection.Script`): after a Valkey restart or `SCRIPT FLUSH`
the `NOSCRIPT` answer loads it and the pipeline is resent once, which the script's continuity
check makes harmless (an entry that ran answers its seq again and adds nothing).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from diminuendo.fleet.connection import Fenced, FleetError, Script, unavailable_as
from diminuendo.fleet.keys import Keyspace

# The meta outlives the stream by this factor, so an expired log still has its epoch.
META_TTL_FACTOR = 7

# KEYS: meta, log, lease · ARGV: payload, owner token, max events, max bytes, log ttl ms,
# meta ttl ms, channel, epoch, expected seq ('' when the script assigns it) → {seq, epoch}, or a
# FENCED / DIVERGED error. With an expected seq, the epoch is the caller's and must be the log's:
# the log mirrors the owner's stream exactly, or refuses (a retry of an append that ran answers
# its seq again and adds nothing); without, the epoch is only the one to create.
_APPEND = """
local holder = redis.call('GET', KEYS[3])
if holder ~= ARGV[2] then
  return redis.error_reply('FENCED ' .. (holder or ''))
end
local meta = redis.call('HMGET', KEYS[1], 'e', 's', 'b')
local epoch, last, avg = meta[1], tonumber(meta[2]), tonumber(meta[3])
if ARGV[9] ~= '' then
  local want = tonumber(ARGV[9])
  if epoch then
    if epoch ~= ARGV[8] then
      return redis.error_reply('DIVERGED epoch ' .. epoch)
    end
    if last >= want then
      return {want, epoch}
    end
    if last + 1 ~= want then
      return redis.error_reply('DIVERGED seq ' .. last)
    end
  elseif want ~= 1 then
    return redis.error_reply('DIVERGED lost')
  end
end
local size = string.len(ARGV[1])
if not epoch then
  epoch = ARGV[8]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 's', 0)
  avg = size
end
avg = math.floor(avg + (size - avg) / 16)
local seq = redis.call('HINCRBY', KEYS[1], 's', 1)
redis.call('HSET', KEYS[1], 'b', avg)
local maxlen = math.min(tonumber(ARGV[3]), math.floor(tonumber(ARGV[4]) / math.max(avg, 1)))
redis.call('XADD', KEYS[2], 'MAXLEN', '~', math.max(maxlen, 1), seq .. '-0', 'd', ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PUBLISH', ARGV[7], seq .. ':' .. epoch .. ':' .. ARGV[1])
return {seq, epoch}
"""


class Diverged(FleetError):
    """The log no longer continues the owner's stream: Valkey lost it (flush, eviction, restart
    without persistence) or another epoch replaced it. The owner must stop appending: its
    session restarts from the log (a new epoch, `gap: true` for its clients)."""

    def __init__(self, session_id: str, detail: str) -> None:
        self.session_id = session_id
        super().__init__(f"session {session_id}: replay log diverged ({detail})")


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Batch:
    """One session's frames for `append_batches`: `(seq, payload)` in seq order, continuing the
    log of `epoch`, under the lease `owner_token`."""

    session_id: str
    entries: list[tuple[int, bytes]]
    owner_token: str
    epoch: str


@dataclass(frozen=True, slots=True)
class Replay:
    """The answer to "what did I miss after `after_seq`?", as `sessions.stream.Replay`."""

    gap: bool
    events: list[Event]
    last_seq: int
    epoch: str | None  # None: Valkey holds no log for the session (the next append makes one)


def new_epoch() -> str:
    """16 hex digits like the in-memory streams' epochs; never contains ':' (the pub/sub
    message is split on it)."""
    return secrets.token_hex(8)


class ReplayLog:
    def __init__(
        self,
        client: Redis,
        url: str,
        keyspace: Keyspace,
        *,
        max_events: int = 10_000,
        max_bytes: int = 8 * 1024 * 1024,
        ttl_ms: int = 24 * 3600 * 1000,
    ) -> None:
        self._client = client
        self._url = url
        self._keys = keyspace
        self._limits = (max_events, max_bytes, ttl_ms, ttl_ms * META_TTL_FACTOR)
        self._append = Script(client, _APPEND)

    async def append(self, session_id: str, payload: bytes, *, owner_token: str) -> tuple[int, str]:
        keys = self._keys.session(session_id)
        try:
            with unavailable_as(self._url, "append"):
                seq, epoch = await self._append(
                    [keys.meta, keys.log, keys.lease],
                    [payload, owner_token, *self._limits, keys.channel, new_epoch(), ""],
                )
        except ResponseError as exc:
            raise _refusal(session_id, exc) from None
        return int(seq), epoch.decode()

    async def append_batches(self, batches: Sequence[Batch]) -> list[Exception | None]:
        limits = self._limits
        calls = []
        for batch in batches:
            keys = self._keys.session(batch.session_id)
            script_keys = (keys.meta, keys.log, keys.lease)
            token, channel, epoch = batch.owner_token, keys.channel, batch.epoch
            for seq, payload in batch.entries:
                calls.append((script_keys, (payload, token, *limits, channel, epoch, seq)))
        with unavailable_as(self._url, "append"):
            results = await self._append.pipelined(calls)
        refusals: list[Exception | None] = []
        answers = iter(results)
        for batch in batches:
            refusal = None
            for answer in islice(answers, len(batch.entries)):
                if refusal is None and isinstance(answer, ResponseError):
                    refusal = _refusal(batch.session_id, answer)
            refusals.append(refusal)
        return refusals

    async def read_after(
        self, session_id: str, after_seq: int, epoch: str | None = None, limit: int = 500
    ) -> Replay:
        keys = self._keys.session(session_id)
        after_seq = max(after_seq, 0)
        with unavailable_as(self._url, "read"):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hmget(keys.meta, "e", "s")
                pipe.xrange(keys.log, min=f"{after_seq + 1}-0", count=max(limit, 1))
                (current, last), entries = await pipe.execute()
        if current is None:
            return Replay(True, [], 0, None)
        current_epoch, last_seq = current.decode(), int(last)
        if epoch is not None and epoch != current_epoch:
            return Replay(True, [], last_seq, current_epoch)
        if after_seq >= last_seq:
            return Replay(False, [], last_seq, current_epoch)
        events = [
            Event(int(entry_id.partition(b"-")[0]), fields[b"d"]) for entry_id, fields in entries
        ]
        gap = not events or events[0].seq != after_seq + 1
        return Replay(gap, events[: max(limit, 0)], last_seq, current_epoch)

    async def meta(self, session_id: str) -> tuple[str, int] | None:
        keys = self._keys.session(session_id)
        with unavailable_as(self._url, "meta"):
            current, last = await self._client.hmget(keys.meta, "e", "s")
        return (current.decode(), int(last)) if current is not None else None


def _refusal(session_id: str, exc: ResponseError) -> Exception:
    """The script's refusals as the layer's exceptions; any other error as it is."""
    message = str(exc)
    if message.startswith("FENCED"):
        return Fenced(session_id, message.removeprefix("FENCED").strip())
    if message.startswith("DIVERGED"):
        return Diverged(session_id, message.removeprefix("DIVERGED").strip())
    return exc
