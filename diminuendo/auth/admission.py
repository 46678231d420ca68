"""Who may open another connection or SSE stream now (PROTOCOL.md §13), and the counts behind it.

Three limits, so that one client or user cannot take the instance from the others:

- ``max_total`` (`MAX_CONNECTIONS`): WebSocket connections and SSE streams together
  → `CAPACITY_EXCEEDED` (503);
- ``max_per_user`` (`MAX_CONNECTIONS_PER_USER`): one user's authenticated connections and
  streams → `QUOTA_EXCEEDED` (429). None turns it off (dev mode: everyone is the dev user);
- ``max_pending_per_address`` (`MAX_PENDING_PER_IP`): connections not yet authenticated from one
  client address (`client_address.address_key`) → `QUOTA_EXCEEDED` (429). Each may hold its
  place for `AUTH_TIMEOUT`, so without it a few hundred upgrades a second from one address
  keep the instance full.

Pure bookkeeping, no I/O: the edges ask ``check_*`` before the upgrade (to refuse with an HTTP
status) and call ``admit_*`` / ``release_*`` as clients come and go. ``admit_*`` checks again,
so concurrent upgrades that all passed the early check cannot overshoot a limit.
"""

from __future__ import annotations

from diminuendo.protocol.errors import ErrorCode, GatewayError


class Admission:
    def __init__(
        self, *, max_total: int, max_per_user: int | None, max_pending_per_address: int
    ) -> None:
        self.max_total = max_total
        self.max_per_user = max_per_user
        self.max_pending_per_address = max_pending_per_address
        self.total = 0
        self._per_user: dict[str, int] = {}
        self._pending: dict[str, int] = {}

    # ----- checks (count nothing) ----------------------------------------------------------

    def check_capacity(self) -> None:
        if self.total >= self.max_total:
            raise GatewayError(ErrorCode.CAPACITY_EXCEEDED, "Too many connections")

    def check_pending(self, address: str) -> None:
        if self._pending.get(address, 0) >= self.max_pending_per_address:
            raise GatewayError(
                ErrorCode.QUOTA_EXCEEDED, "Too many unauthenticated connections from your address"
            )

    def check_user(self, user_id: str) -> None:
        if self.max_per_user is not None and self._per_user.get(user_id, 0) >= self.max_per_user:
            raise GatewayError(ErrorCode.QUOTA_EXCEEDED, "Too many connections for this user")

    def check_connection(self, address: str, user_id: str | None) -> None:
        """A new WebSocket from ``address``: already ``user_id``'s (token on the upgrade) or
        pending (None) until it authenticates."""
        self.check_capacity()
        if user_id is None:
            self.check_pending(address)
        else:
            self.check_user(user_id)

    # ----- counting --------------------------------------------------------------------------

    def admit_connection(self, address: str, user_id: str | None) -> None:
        """Count a new WebSocket (as in ``check_connection``), or raise and count nothing."""
        self.check_connection(address, user_id)
        self.total += 1
        if user_id is None:
            _add(self._pending, address, 1)
        else:
            self._count_user(user_id, 1)

    def authenticated(self, address: str, user_id: str) -> None:
        """A pending connection from ``address`` became ``user_id``'s; raises (and it stays
        pending) when that user holds too many already."""
        self.check_user(user_id)
        _add(self._pending, address, -1)
        self._count_user(user_id, 1)

    def release_connection(self, address: str, user_id: str | None) -> None:
        """A WebSocket admitted with these keys (its user, once authenticated) closed."""
        self.total -= 1
        if user_id is None:
            _add(self._pending, address, -1)
        else:
            self._count_user(user_id, -1)

    def admit_stream(self, user_id: str) -> None:
        """Count a new SSE stream of ``user_id``, or raise and count nothing."""
        self.check_capacity()
        self.check_user(user_id)
        self.total += 1
        self._count_user(user_id, 1)

    def release_stream(self, user_id: str) -> None:
        self.total -= 1
        self._count_user(user_id, -1)

    def _count_user(self, user_id: str, delta: int) -> None:
        if self.max_per_user is not None:
            _add(self._per_user, user_id, delta)


def _add(counts: dict[str, int], key: str, delta: int) -> None:
    """Move a count; a count back at zero is dropped, so the maps hold only current clients."""
    value = counts.get(key, 0) + delta
    if value > 0:
        counts[key] = value
    else:
        counts.pop(key, None)
