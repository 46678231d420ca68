"""`Admission`: the connection limits of PROTOCOL.md §13 as pure bookkeeping."""

from __future__ import annotations

import pytest

from diminuendo.auth.admission import Admission
from diminuendo.protocol.errors import ErrorCode, GatewayError

A, B = "203.0.113.9", "198.51.100.7"


def refused(call, *args) -> ErrorCode:  # type: ignore[no-untyped-def]
    with pytest.raises(GatewayError) as refusal:
        call(*args)
    return refusal.value.code


def test_connections_and_streams_share_max_total() -> None:
    admission = Admission(max_total=2, max_per_user=None, max_pending_per_address=10)
    admission.admit_connection(A, None)
    admission.admit_stream("alice")
    assert refused(admission.check_capacity) is ErrorCode.CAPACITY_EXCEEDED
    assert refused(admission.admit_stream, "bob") is ErrorCode.CAPACITY_EXCEEDED
    assert refused(admission.admit_connection, B, "bob") is ErrorCode.CAPACITY_EXCEEDED
    admission.release_stream("alice")
    admission.admit_connection(B, "bob")
    assert admission.total == 2


def test_per_user_cap_counts_sockets_and_streams() -> None:
    admission = Admission(max_total=100, max_per_user=2, max_pending_per_address=10)
    admission.admit_connection(A, "alice")
    admission.admit_stream("alice")
    assert refused(admission.admit_connection, A, "alice") is ErrorCode.QUOTA_EXCEEDED
    assert refused(admission.admit_stream, "alice") is ErrorCode.QUOTA_EXCEEDED
    admission.admit_connection(A, None)  # pending: not alice's yet
    assert refused(admission.authenticated, A, "alice") is ErrorCode.QUOTA_EXCEEDED
    admission.admit_connection(A, "bob")  # another user is not affected
    admission.release_connection(A, "alice")
    admission.authenticated(A, "alice")  # the pending one takes the freed place
    assert admission.total == 3


def test_pending_connections_are_capped_per_address_until_they_authenticate() -> None:
    admission = Admission(max_total=100, max_per_user=None, max_pending_per_address=2)
    admission.admit_connection(A, None)
    admission.admit_connection(A, None)
    assert refused(admission.check_connection, A, None) is ErrorCode.QUOTA_EXCEEDED
    admission.check_connection(A, "alice")  # a token on the upgrade is not pending
    admission.admit_connection(B, None)  # another address
    admission.authenticated(A, "alice")
    admission.admit_connection(A, None)
    admission.release_connection(A, None)
    admission.release_connection(A, None)
    admission.admit_connection(A, None)


def test_without_a_per_user_cap_users_are_not_counted() -> None:
    admission = Admission(max_total=1_000, max_per_user=None, max_pending_per_address=1)
    for _ in range(500):
        admission.admit_connection(A, "dev-user-001")
    assert admission._per_user == {}


def test_counts_return_to_empty() -> None:
    admission = Admission(max_total=10, max_per_user=5, max_pending_per_address=5)
    admission.admit_connection(A, None)
    admission.authenticated(A, "alice")
    admission.admit_stream("alice")
    admission.release_connection(A, "alice")
    admission.release_stream("alice")
    assert (admission.total, admission._per_user, admission._pending) == (0, {}, {})
