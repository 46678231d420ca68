"""Text-delta coalescing (PROTOCOL.md §6): at most one `text_delta` per session per window
(10 ms) or per `max_chars` (4 KiB) of text, whichever comes first.

The first delta after a quiet window goes out at once (no added latency for a slow stream);
deltas arriving inside the window are merged and leave when the window closes (the caller sets a
timer for `deadline`) or as soon as they reach `max_chars`. Merging only concatenates, so the
deltas of a turn still concatenate to its `finalText`. Pure: time comes in as an argument.
"""

from __future__ import annotations

from typing import Any


class DeltaCoalescer:
    __slots__ = ("_chars", "_last_emit", "_parts", "_template", "max_chars", "window_s")

    def __init__(self, window_s: float = 0.010, max_chars: int = 4096) -> None:
        self.window_s = window_s
        self.max_chars = max_chars
        self._parts: list[str] = []
        self._chars = 0
        self._template: dict[str, Any] | None = None
        self._last_emit = float("-inf")

    @property
    def pending(self) -> bool:
        return bool(self._parts)

    @property
    def deadline(self) -> float:
        """When the held text is due (meaningful only while `pending`)."""
        return self._last_emit + self.window_s

    def push(self, delta: dict[str, Any], now: float) -> list[dict[str, Any]]:
        """Take one `text_delta`; return the deltas to publish now, in order."""
        out: list[dict[str, Any]] = []
        if (
            self._parts
            and self._template is not None
            and (self._template.get("turnId") != delta.get("turnId"))
        ):
            out.append(self._merged())
        text = delta.get("text", "")
        if not self._parts and now - self._last_emit >= self.window_s:
            self._last_emit = now
            out.append(delta)
            return out
        if not self._parts:
            self._template = delta
        self._parts.append(text)
        self._chars += len(text)
        if self._chars >= self.max_chars:
            self._last_emit = now
            out.append(self._merged())
        return out

    def due(self, now: float) -> dict[str, Any] | None:
        """The merged delta if its window has closed (the timer fired), else None."""
        if self._parts and now >= self.deadline:
            self._last_emit = now
            return self._merged()
        return None

    def flush(self) -> dict[str, Any] | None:
        """Whatever is held, now: called before any other event so order is kept."""
        return self._merged() if self._parts else None

    def _merged(self) -> dict[str, Any]:
        assert self._template is not None
        merged = {**self._template, "text": "".join(self._parts)}
        self._parts = []
        self._chars = 0
        self._template = None
        return merged
