"""`diminuendo serve` under tracemalloc, for the memory profile of the idle benchmark.

Not gateway code: a harness. It starts tracemalloc (10 frames), then runs the gateway exactly as
`python -m diminuendo serve` does. On SIGUSR2 it writes to $BENCH_TRACE_OUT the object counts by
type (gc) and the top allocation sites by traceback, then carries on serving.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import tracemalloc
from collections import Counter

FRAMES = 10
TOP = 40


def dump(signum: int, frame: object) -> None:
    out = os.environ.get("BENCH_TRACE_OUT", "serve-traced-memory.txt")
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    counts = Counter(type(o).__qualname__ for o in gc.get_objects())
    lines = [f"traced current/peak: {tracemalloc.get_traced_memory()}", "", "gc objects by type:"]
    lines += [f"{n:>10}  {name}" for name, n in counts.most_common(TOP)]
    lines += ["", "top allocation sites (lineno):"]
    for stat in snapshot.statistics("lineno")[:TOP]:
        lines.append(f"{stat.size / 1024:>10.1f} KiB {stat.count:>8}  {stat.traceback[0]}")
    lines += ["", "top allocation sites (traceback):"]
    for stat in snapshot.statistics("traceback")[:15]:
        lines.append(f"{stat.size / 1024:>10.1f} KiB {stat.count:>8}")
        lines += [f"      {f}" for f in stat.traceback.format()[-2 * FRAMES :]]
    with open(out, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def main() -> int:
    tracemalloc.start(FRAMES)
    signal.signal(signal.SIGUSR2, dump)
    from diminuendo.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
