"""`BoundedCache`: size bound, freshness window, and values that are None; `InvalidationStamps`."""

from __future__ import annotations

import pytest

from diminuendo.cache import BoundedCache, InvalidationStamps
from tests.unit.fakes import Clock


def test_entries_expire_after_the_ttl() -> None:
    clock = Clock()
    cache: BoundedCache[str, int] = BoundedCache(10, 5.0, clock=clock)
    cache.put("a", 1)
    clock.now = 4.9
    assert cache.get("a") == 1 and "a" in cache
    clock.now = 5.0
    assert cache.get("a") is None and "a" not in cache
    assert len(cache) == 0, "a stale entry is dropped when seen"


def test_the_entry_stored_longest_ago_goes_first() -> None:
    clock = Clock()
    cache: BoundedCache[int, int] = BoundedCache(3, 60.0, clock=clock)
    for key in range(3):
        cache.put(key, key)
    cache.put(0, 0)  # stored again: now the newest
    cache.put(3, 3)
    assert [k for k in range(4) if k in cache] == [0, 2, 3]


def test_a_flood_of_distinct_keys_stays_at_the_bound() -> None:
    cache: BoundedCache[str, None] = BoundedCache(100, 60.0)
    for i in range(10_000):
        cache.put(f"k{i}", None)
        assert len(cache) <= 100
    assert len(cache) == 100


def test_none_is_a_value() -> None:
    cache: BoundedCache[str, int | None] = BoundedCache(2, 60.0)
    cache.put("unknown", None)
    assert "unknown" in cache and cache.get("unknown", -1) is None
    assert cache.get("absent", -1) == -1
    cache.pop("unknown")
    cache.pop("never stored")
    assert "unknown" not in cache


def test_the_bound_is_at_least_one() -> None:
    with pytest.raises(ValueError):
        BoundedCache(0, 1.0)


def test_a_stamp_changes_with_its_tenants_invalidation_and_all_change_past_the_bound() -> None:
    stamps = InvalidationStamps(max_tenants=2)
    before_a, before_b = stamps.of("a"), stamps.of("b")
    stamps.bump("a")
    assert stamps.of("a") != before_a and stamps.of("b") == before_b
    after_a = stamps.of("a")
    stamps.bump("b")
    assert stamps.of("a") == after_a  # another tenant's invalidation leaves it alone
    b = stamps.of("b")
    stamps.bump("c")  # a third tenant: the table is cleared, every stamp moves
    assert stamps.of("a") != after_a and stamps.of("b") != b
