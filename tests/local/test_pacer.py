"""The stand-in's shared pacer: one loop timer, beats in due order, none lost or run early.

Each test waits for its last beat (a future it resolves), never for a fixed time, so a stalled
loop on a busy machine delays the test but cannot change its outcome."""

from __future__ import annotations

import asyncio

from diminuendo.local.pacer import Beat, Pacer

PATIENCE_S = 5.0


def finish_at(pacer: Pacer, when: float) -> asyncio.Future[None]:
    """A future resolved by a beat at `when`, after every beat already scheduled for `when`."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    pacer.call_at(when, done.set_result, None)
    return done


async def test_beats_run_in_due_order_with_ties_in_schedule_order() -> None:
    pacer = Pacer(slack_s=0.0)
    ran: list[str] = []
    now = pacer.time()
    pacer.call_at(now + 0.03, ran.append, "c")
    pacer.call_at(now + 0.01, ran.append, "a")
    pacer.call_at(now + 0.02, ran.append, "b1")
    pacer.call_at(now + 0.02, ran.append, "b2")
    await asyncio.wait_for(finish_at(pacer, now + 0.03), PATIENCE_S)
    assert ran == ["a", "b1", "b2", "c"]


async def test_a_beat_never_runs_before_its_time_less_the_slack() -> None:
    pacer = Pacer(slack_s=0.002)
    early_by: list[float] = []
    due = pacer.time() + 0.02
    pacer.call_at(due, lambda: early_by.append(due - pacer.time()))
    await asyncio.wait_for(finish_at(pacer, due), PATIENCE_S)
    assert len(early_by) == 1 and early_by[0] <= 0.002


async def test_beats_within_the_slack_share_one_round() -> None:
    # At +15 ms only the +10 ms timer can have fired; the +20 and +30 ms beats ran with it.
    pacer = Pacer(slack_s=0.05)
    ran: list[str] = []
    now = pacer.time()
    for name, offset in (("a", 0.01), ("b", 0.02), ("c", 0.03)):
        pacer.call_at(now + offset, ran.append, name)
    await asyncio.sleep(0.015)
    assert ran == ["a", "b", "c"]


async def test_a_cancelled_beat_never_runs() -> None:
    pacer = Pacer(slack_s=0.0)
    ran: list[str] = []
    now = pacer.time()
    pacer.call_at(now + 0.01, ran.append, "kept")
    pacer.call_at(now + 0.01, ran.append, "cancelled").cancel()
    await asyncio.wait_for(finish_at(pacer, now + 0.01), PATIENCE_S)
    assert ran == ["kept"]


async def test_a_beat_scheduled_by_a_callback_does_not_delay_the_ones_already_waiting() -> None:
    # The callback at +10 ms schedules a beat 60 s out; the one at +30 ms must not wait for it.
    pacer = Pacer(slack_s=0.0)
    ran: list[str] = []
    far: list[Beat] = []
    now = pacer.time()
    pacer.call_at(now + 0.01, lambda: far.append(pacer.call_at(now + 60, ran.append, "far")))
    pacer.call_at(now + 0.03, ran.append, "near")
    await asyncio.wait_for(finish_at(pacer, now + 0.03), PATIENCE_S)
    far[0].cancel()
    assert ran == ["near"]


async def test_a_failing_callback_does_not_stop_the_round() -> None:
    pacer = Pacer(slack_s=0.0)
    ran: list[str] = []
    now = pacer.time()
    pacer.call_at(now + 0.01, lambda: 1 / 0)
    pacer.call_at(now + 0.01, ran.append, "after")
    pacer.call_at(now + 0.02, ran.append, "next round")
    await asyncio.wait_for(finish_at(pacer, now + 0.02), PATIENCE_S)
    assert ran == ["after", "next round"]


class _Abandon(BaseException):
    """Not an Exception: the pacer does not catch it, the loop's exception handler gets it."""


async def test_beats_go_on_after_a_callback_raises_a_base_exception() -> None:
    pacer = Pacer(slack_s=0.0)
    ran: list[str] = []
    raised: list[object] = []
    now = pacer.time()

    def abandon() -> None:
        raise _Abandon

    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda loop, context: raised.append(context.get("exception")))
    try:
        pacer.call_at(now + 0.01, abandon)
        pacer.call_at(now + 0.03, ran.append, "later")
        await asyncio.wait_for(finish_at(pacer, now + 0.03), PATIENCE_S)
    finally:
        loop.set_exception_handler(previous)
    assert len(raised) == 1 and isinstance(raised[0], _Abandon)
    assert ran == ["later"]
