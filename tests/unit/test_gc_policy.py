"""The cycle-collector schedule (diminuendo.gc_policy): frozen objects are out of every automatic
collection's reach, and the deliberate full collection reclaims cycles among them."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from diminuendo.gc_policy import CollectorPolicy
from tests.unit.fakes import Clock


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cycle collector can free it


@pytest.fixture(autouse=True)
def thawed() -> Iterator[None]:
    yield
    gc.unfreeze()


def test_a_frozen_cycle_survives_collections_until_the_scheduled_full_one() -> None:
    clock = Clock()
    policy = CollectorPolicy(freeze_interval_s=60, full_interval_s=1800, clock=clock)
    node = Node()
    alive = weakref.ref(node)
    assert policy.tick() is False  # freezes `node` with everything else
    assert gc.get_freeze_count() > 0
    del node
    gc.collect()  # what any automatic collection could do: frozen objects are not looked at
    assert alive() is not None

    clock.now = 1799
    assert policy.tick() is False
    assert alive() is not None

    clock.now = 1800
    assert policy.tick() is True  # unfreeze, collect, freeze
    assert alive() is None
    assert gc.get_freeze_count() > 0, "survivors are frozen again"

    clock.now = 2000
    assert policy.tick() is False, "the next full collection is a whole interval later"


def test_a_full_interval_of_zero_never_collects_in_full() -> None:
    clock = Clock()
    policy = CollectorPolicy(freeze_interval_s=60, full_interval_s=0, clock=clock)
    clock.now = 10**9
    assert policy.tick() is False


async def test_the_survivors_of_any_full_collection_are_frozen_at_once() -> None:
    policy = CollectorPolicy(freeze_interval_s=60, full_interval_s=1800)
    policy.start()
    try:
        survivors = [Node() for _ in range(1000)]
        gc.collect(1)
        assert any(o is survivors[0] for o in gc.get_objects(2)), "promoted, not yet frozen"
        gc.collect(2)  # as CPython starts one when the old generation has grown
        assert not any(o is survivors[0] for o in gc.get_objects(2)), "frozen after the walk"
    finally:
        policy.stop()
    gc.unfreeze()
    later = [Node() for _ in range(10)]
    gc.collect(2)
    assert any(o is later[0] for o in gc.get_objects(2)), "stop() removed the hook"


async def test_starting_twice_hooks_once_and_one_stop_undoes_it() -> None:
    policy = CollectorPolicy(freeze_interval_s=60, full_interval_s=1800)
    hooks = len(gc.callbacks)
    policy.start()
    policy.start()
    assert len(gc.callbacks) == hooks + 1
    policy.stop()
    policy.stop()
    assert len(gc.callbacks) == hooks
