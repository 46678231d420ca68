"""Request ids: a caller's X-Request-ID is kept only when the whole value is a safe token."""

from __future__ import annotations

import pytest

from diminuendo.observability.context import incoming_request_id


@pytest.mark.parametrize("value", ["abc", "req-1.2:3_x", "A" * 64])
def test_a_safe_request_id_is_kept(value: str) -> None:
    assert incoming_request_id(value) == value


@pytest.mark.parametrize(
    "value", [None, "", "abc\n", "abc\r\n", "\nabc", "abc def", "abc\x00", "é", "a" * 65]
)
def test_anything_else_gets_a_fresh_id(value: str | None) -> None:
    fresh = incoming_request_id(value)
    assert fresh != value and len(fresh) == 16 and int(fresh, 16) >= 0
