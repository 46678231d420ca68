"""Delta coalescing keeps text exact and order intact while capping the delta rate."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from diminuendo.sessions.coalesce import DeltaCoalescer


def delta(text: str, turn: str = "t1") -> dict:
    return {"type": "text_delta", "turnId": turn, "text": text}


def test_first_delta_after_quiet_goes_out_at_once() -> None:
    c = DeltaCoalescer()
    assert c.push(delta("a"), now=1.0) == [delta("a")]
    assert not c.pending


def test_deltas_inside_the_window_are_merged_until_it_closes() -> None:
    c = DeltaCoalescer(window_s=0.01)
    c.push(delta("a"), 1.0)
    assert c.push(delta("b"), 1.002) == []
    assert c.push(delta("c"), 1.004) == []
    assert c.pending and c.deadline == 1.01
    assert c.due(1.005) is None
    assert c.due(1.01) == delta("bc")
    assert not c.pending


def test_size_cap_flushes_early() -> None:
    c = DeltaCoalescer(window_s=0.01, max_chars=4)
    c.push(delta("x"), 1.0)
    assert c.push(delta("ab"), 1.001) == []
    assert c.push(delta("cd"), 1.002) == [delta("abcd")]


def test_flush_before_other_events_and_turn_change() -> None:
    c = DeltaCoalescer()
    c.push(delta("a"), 1.0)
    c.push(delta("b"), 1.001)
    assert c.flush() == delta("b")
    assert c.flush() is None
    c.push(delta("c"), 1.002)
    assert c.push(delta("d", turn="t2"), 1.003) == [delta("c")]
    assert c.flush() == delta("d", turn="t2")


@given(st.lists(st.tuples(st.text(max_size=50), st.floats(0, 0.02)), max_size=60))
def test_concatenation_is_preserved_and_rate_is_capped(pieces) -> None:
    c = DeltaCoalescer(window_s=0.01, max_chars=64)
    now, out = 0.0, []
    for text, step in pieces:
        now += step
        if c.pending and now >= c.deadline:
            out.append(c.due(now))
        out.extend(c.push(delta(text), now))
    if (rest := c.flush()) is not None:
        out.append(rest)
    assert "".join(d["text"] for d in out) == "".join(t for t, _ in pieces)
