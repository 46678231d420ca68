"""The one place that decides how the fleet talks to Valkey: RESP3 through redis-py's asyncio
client (hiredis parses), short timeouts, and redis-py's errors turned into the layer's own.

Fail fast is the policy: a gateway whose Valkey is down must answer its clients (degraded, with
in-memory windows) rather than queue behind a dead socket, so every command is bounded by
`timeout_s` and a connection refused surfaces at once as `FleetUnavailable`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from diminuendo.settings import without_credentials

DEFAULT_TIMEOUT_S = 1.0


class FleetError(Exception):
    """Base of the errors of the Valkey layer."""


class FleetUnavailable(FleetError):
    """Valkey could not be reached or did not answer in time. The message names the server
    without credentials; the caller falls back (degraded) or retries later."""


class Fenced(FleetError):
    """The caller's lease token is not the session's current one: another instance owns the
    session (or the lease expired), so this instance must stop writing to it."""

    def __init__(self, session_id: str, holder: str) -> None:
        self.session_id = session_id
        self.holder = holder  # `<fence>:<instance>` of the current owner, "" when none
        super().__init__(
            f"session {session_id}: lease not held by the caller "
            f"(current owner: {holder or 'none'})"
        )


def open_client(url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Redis:
    """A pooled client for commands and scripts (not for pub/sub: see `bus`).

    One retry, only on a broken connection and without backoff: a pooled connection left over
    from before a Valkey restart fails on first use, and the retry reconnects. A timeout is not
    retried — the command may have run, and an append must not run twice."""
    return Redis.from_url(
        url,
        protocol=3,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        health_check_interval=0,
    )


@contextmanager
def unavailable_as(url: str, what: str) -> Iterator[None]:
    """Turn redis-py's connection and timeout errors inside the block into `FleetUnavailable`
    naming `what` was attempted and the server (its credentials removed)."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        kind = "timed out" if isinstance(exc, RedisTimeoutError | TimeoutError) else "failed"
        raise FleetUnavailable(
            f"Valkey at {without_credentials(url)}: {what} {kind} ({type(exc).__name__})"
        ) from exc


class Script:
    """A Lua script run by `EVALSHA`, its SHA1 computed here once.

    redis-py's registered scripts send `SCRIPT EXISTS` before every pipeline that runs one
    (`Pipeline.load_scripts`): an extra round trip per pipeline, 24 % of an owner's CPU when
    appends were one pipeline per session. Here a pipeline queues bare `EVALSHA`s, and only a
    `NOSCRIPT` answer (Valkey restarted, `SCRIPT FLUSH`) loads the script and resends."""

    __slots__ = ("_client", "_source", "sha")

    def __init__(self, client: Redis, source: str) -> None:
        self._client = client
        self._source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run once: a `NOSCRIPT` answer means it did not run, so it is loaded and resent."""
        try:
            return await self._client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self._client.script_load(self._source)
            return await self._client.evalsha(self.sha, len(keys), *keys, *args)

    async def pipelined(self, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]) -> list[Any]:
        """Every `(keys, args)` of `calls` in one pipeline; the answers in order, an error as
        its exception (not raised). Any `NOSCRIPT` among them loads the script and resends the
        whole pipeline once, so the script must answer a rerun of a call that ran as harmlessly
        as the first run (the owner's appends and lease renewals do)."""
        results = await self._send(calls)
        if any(isinstance(result, NoScriptError) for result in results):
            await self._client.script_load(self._source)
            results = await self._send(calls)
        return results

    async def _send(self, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]) -> list[Any]:
        async with self._client.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
            return await pipe.execute(raise_on_error=False)
