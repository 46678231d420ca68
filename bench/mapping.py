"""mapping: the pure core alone, no sockets — decode a Podium runtime frame (msgspec JSON, as
`upstreams/podium.py` does), `diminuendo.mapping.map_event`, then `SessionStream.publish`
(seq, encode, replay window) with one subscriber → events per second on one core.

    .venv/bin/python bench/mapping.py --events 200000

Workloads: `text_delta` (what a streaming turn is made of) and `mixed` (every event family).
Stages are also timed alone (decode, map, publish), and the replay window's memory per
retained frame is measured (tracemalloc), since it bounds memory per active session.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import time
import tracemalloc
from collections import deque
from dataclasses import dataclass
from typing import Any

import msgspec
from lib.options import BenchOptions, option, parse_options
from lib.processes import Bench
from lib.results import summary, write_result

from diminuendo.mapping import map_event
from diminuendo.sessions.stream import Frame, SessionStream

TURN = "trn_0123456789abcdef0123456789abcdef"
_decoder = msgspec.json.Decoder()  # the runtime socket's decoder (upstreams/podium.py)


@dataclass(frozen=True, kw_only=True)
class MappingOptions(BenchOptions):
    events: int = option(200_000)
    repeats: int = option(5)
    cpu: int = option(0, "pin to this core (-1: no pinning)")


class Sink:
    """One subscriber doing what `Connection.deliver` does without a socket: queue the text."""

    __slots__ = ("queue",)

    def __init__(self) -> None:
        self.queue: deque[str] = deque(maxlen=1000)

    def deliver(self, frame: Frame) -> None:
        self.queue.append(frame.data)


def podium_frame(event_type: str, event_id: int, **content: Any) -> bytes:
    """A frame as local Podium sends it (`local/runtime.py` InstanceRuntime.emit)."""
    body = {**content, "turn_id": TURN, "event_id": event_id, "ts": 1764171234567 + event_id}
    return json.dumps({"type": "update", "event_type": event_type, "content": body}).encode()


def text_frames(count: int) -> list[bytes]:
    return [
        podium_frame("stream_update", i, text=f"d{i}@{1764171234567 + i} ") for i in range(count)
    ]


def mixed_frames(count: int) -> list[bytes]:
    cycle = [
        ("stream_update", {"text": "Hello there, "}),
        ("thinking.progress", {"text": "Reading the request."}),
        ("tool.call_start", {"tool_call_id": "call_1", "tool_name": "bash"}),
        ("tool.call_delta", {"tool_call_id": "call_1", "args_delta": '{"command": "ls'}),
        ("tool.call", {"tool_call_id": "call_1", "tool_name": "bash", "args": {"command": "ls"}}),
        ("terminal.stream", {"terminal_id": "t1", "data": "a.txt\nb.txt\n"}),
        ("tool.result", {"tool_call_id": "call_1", "output": "a.txt\nb.txt", "is_error": False}),
        ("plan.step_started", {"step_id": "s1"}),
        ("file.changed", {"path": "demo/notes.md", "iteration": 3}),
        ("usage", {"input_tokens": 120, "output_tokens": 48, "cost": "0.000111"}),
    ]
    return [podium_frame(cycle[i % 10][0], i, **cycle[i % 10][1]) for i in range(count)]


def _rate(fn: Any, items: list[Any], repeats: int) -> dict[str, Any]:
    rates = []
    for _ in range(repeats):
        gc.collect()
        started = time.perf_counter()
        fn(items)
        rates.append(len(items) / (time.perf_counter() - started))
    return {
        "events_per_s_best": round(max(rates)),
        "events_per_s_median": round(statistics.median(rates)),
        "us_per_event_best": round(1e6 / max(rates), 3),
    }


def measure(frames: list[bytes], repeats: int) -> dict[str, Any]:
    stream = SessionStream("ses_bench", "e" * 16)
    stream.attach(Sink())
    publish = stream.publish
    ts = 1764171234567

    def pipeline(raw_frames: list[bytes]) -> None:
        for raw in raw_frames:
            event = map_event(_decoder.decode(raw))
            if event is not None and type(event) is dict:
                publish(event, ts)

    decoded = [_decoder.decode(raw) for raw in frames]
    mapped = [e for e in (map_event(f) for f in decoded) if type(e) is dict]

    def decode_only(raw_frames: list[bytes]) -> None:
        for raw in raw_frames:
            _decoder.decode(raw)

    def map_only(items: list[Any]) -> None:
        for frame in items:
            map_event(frame)

    def publish_only(events: list[dict[str, Any]]) -> None:
        for event in events:
            publish(dict(event), ts)  # publish adds keys: give it a fresh dict, as map_event does

    def copy_only(events: list[dict[str, Any]]) -> None:
        for event in events:
            dict(event)

    result = {
        "pipeline": _rate(pipeline, frames, repeats),
        "decode": _rate(decode_only, frames, repeats),
        "map_event": _rate(map_only, decoded, repeats),
        "publish_incl_dict_copy": _rate(publish_only, mapped, repeats),
        "dict_copy_overhead": _rate(copy_only, mapped, repeats),
        "bytes_per_frame_wire": round(sum(len(f) for f in frames) / len(frames), 1),
    }
    return result


def window_memory(frames: list[bytes], events: int = 10_000) -> dict[str, Any]:
    """Bytes a full replay window holds per frame (REPLAY_MAX_EVENTS frames of this workload)."""
    raw = (frames * (events // len(frames) + 1))[:events]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    stream = SessionStream("ses_bench", "e" * 16, max_events=events)
    for item in raw:
        event = map_event(_decoder.decode(item))
        if type(event) is dict:
            stream.publish(event, 1764171234567)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    per_frame = used / max(stream.last_seq, 1)
    return {
        "frames_retained": stream.last_seq,
        "bytes_per_retained_frame": round(per_frame),
        "full_window_mb_per_session": round(used / 2**20, 2),
        "full_windows_5000_sessions_gb": round(used * 5000 / 2**30, 2),
    }


def main() -> int:
    options = parse_options(MappingOptions, __doc__.splitlines()[0])
    with Bench("mapping", options):
        if options.cpu >= 0 and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {options.cpu})
        result: dict[str, Any] = {
            "params": {"events": options.events, "repeats": options.repeats, "cpu": options.cpu}
        }
        text = text_frames(options.events)
        mixed = mixed_frames(options.events)
        result["text_delta"] = measure(text, options.repeats)
        result["mixed"] = measure(mixed, options.repeats)
        result["replay_window_text_delta"] = window_memory(text[:10_000])
    path = write_result("mapping", result, options.results_dir)
    t, m = result["text_delta"]["pipeline"], result["mixed"]["pipeline"]
    w = result["replay_window_text_delta"]
    summary(
        "mapping",
        f"text_delta {t['events_per_s_best']:,} ev/s ({t['us_per_event_best']} us/ev), "
        f"mixed {m['events_per_s_best']:,} ev/s on one core; replay window "
        f"{w['bytes_per_retained_frame']} B/frame [{path.name}]",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
