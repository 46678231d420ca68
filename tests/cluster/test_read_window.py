"""`streams.read_window`, the log read as a stream to continue (a follower's first copy, an
owner's takeover), against a real Valkey while the owner keeps appending."""

from __future__ import annotations

from diminuendo.fleet.replay_log import ReplayLog
from diminuendo.fleet.streams import read_window
from tests.cluster.conftest import Fleet
from tests.cluster.test_replay_log import SESSION, owned


class AppendsAfterMeta(ReplayLog):
    """The real log, with the owner's next appends landing right after each `meta` read: what
    a live owner appending every few ms does to a reader on a loaded host."""

    def __init__(self, fleet: Fleet, token: str, appends: int) -> None:
        super().__init__(fleet.client, fleet.url, fleet.keys)
        self._token, self._appends = token, appends

    async def meta(self, session_id: str) -> tuple[str, int] | None:
        found = await super().meta(session_id)
        for n in range(self._appends):
            await self.append(session_id, b'{"type":"late","n":%d}' % n, owner_token=self._token)
        return found


async def test_appends_between_the_meta_and_the_read_keep_the_window(fleet: Fleet) -> None:
    """Before the fix: the read returned frames beyond the meta's last seq, `read_window`
    took that for a hole and seeded the copy with an empty window at seq 20, so a client
    rejoining with `afterSeq` 12 got `gap: true` from a follower although nothing was lost
    (the 50-drops test's rejoins on B, ~1 in 6 runs on the loaded machine)."""
    lease = await owned(fleet)
    for n in range(20):
        await fleet.log.append(SESSION, b'{"type":"e","n":%d}' % n, owner_token=lease.token)
    window = await read_window(AppendsAfterMeta(fleet, lease.token, 3), SESSION, 100)
    assert window is not None
    _, last_seq, frames = window
    assert [f.seq for f in frames] == list(range(1, last_seq + 1))
    assert last_seq >= 20
