"""Text helpers shared by the mock model and the local agents."""

import re
import time

_PIECE = re.compile(r"\S+\s*|\s+")


def word_pieces(text: str) -> list[str]:
    """Split keeping every whitespace character, so the pieces concatenate back to `text`.

    Streaming consumers check that the deltas of a turn add up to its final text exactly.
    """
    return _PIECE.findall(text)


def count_tokens(text: str) -> int:
    """A stable, cheap stand-in for a tokenizer: one token per word."""
    return len(text.split())


def now_ms() -> int:
    """Unix time in milliseconds, the timestamp unit of every upstream contract."""
    return time.time_ns() // 1_000_000
