"""Summarise a py-spy `--format raw` profile (collapsed stacks): the functions with the most
samples, by self time and by inclusive time, as a share of all samples.

    .venv/bin/python bench/tools/pyspy_top.py PROFILE.txt [--top 30] [--match diminuendo]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_LINE = re.compile(r"\s*\((.*?):\d+\)$")

# Where a sample's time goes, by the first rule (in this order) matching any frame of its stack.
GROUPS: list[tuple[str, re.Pattern[str]]] = [
    (
        "sanic signal dispatch (http.lifecycle.*: per send, per request)",
        re.compile(r"SignalRouter|sanic_routing/exceptions|Sanic\.debug|is_debug"),
    ),
    (
        "outbound: client WebSocket send (writer task, sanic/websockets)",
        re.compile(r"_write_loop|WebsocketImplProtocol\.send|HttpProtocol\.send|send_data"),
    ),
    (
        "upstream HTTP (httpx/httpcore: Unison, Podium REST)",
        re.compile(r"httpx|httpcore|anyio|UpstreamHttp|UnisonClient|_persist"),
    ),
    (
        "inbound: runtime socket receive (websockets client) + core",
        re.compile(
            r"_read_loop|websockets/asyncio|websockets/protocol|websockets/frames|"
            r"websockets/streams|_on_runtime_frame|map_event|publish"
        ),
    ),
    (
        "client WebSocket receive / handlers (sanic ws impl, ws.py)",
        re.compile(r"sanic/server/websockets|diminuendo/gateway/ws\.py|ClientSession"),
    ),
    ("HTTP request handling (sanic http, routes)", re.compile(r"sanic/http|sanic/app\.py|health")),
    ("event loop itself (uvloop native: epoll, syscalls)", re.compile(r"_run_server_forever")),
]


def function(frame: str) -> str:
    """`name (path/file.py:123)` → `name (path/file.py)`: merge a function's lines."""
    return _LINE.sub(lambda m: f" ({m.group(1)})", frame)


def summarise(path: Path, top: int = 30, match: str | None = None) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = [function(f) for f in stack.split(";")]
        own[frames[-1]] += samples
        for group, pattern in GROUPS:
            if pattern.search(stack):
                groups[group] += samples
                break
        else:
            groups["other"] += samples
        for name in set(frames):
            inclusive[name] += samples
    if not total:
        return "no samples"

    def table(counter: Counter[str], title: str) -> list[str]:
        rows = [f"{title} (of {total} samples)"]
        shown = 0
        for name, samples in counter.most_common():
            if match and match not in name:
                continue
            rows.append(f"{100 * samples / total:6.1f}%  {samples:>7}  {name}")
            shown += 1
            if shown >= top:
                break
        return rows

    grouped = [f"by area (of {total} samples)"]
    grouped += [f"{100 * n / total:6.1f}%  {n:>7}  {name}" for name, n in groups.most_common()]
    return "\n".join([*grouped, "", *table(own, "self"), "", *table(inclusive, "inclusive")])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--match", default=None, help="only functions whose line contains this")
    args = parser.parse_args()
    print(summarise(args.profile, args.top, args.match))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
