"""py-spy around a measurement: the gateway's collapsed stacks while a block runs
(bench/tools/pyspy_top.py sums them)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path


def py_spy_path() -> str | None:
    candidate = Path(sys.executable).parent / "py-spy"
    if candidate.exists():
        return str(candidate)
    return shutil.which("py-spy")


@contextlib.contextmanager
def py_spy(pid: int, out: Path | None, duration_s: float, rate: int = 250) -> Iterator[None]:
    """Record the gateway with py-spy (collapsed "raw" stacks) while the block runs."""
    if out is None:
        yield
        return
    exe = py_spy_path()
    if exe is None:
        print("py-spy not installed: no profile", file=sys.stderr)
        yield
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw"]
    argv += ["--duration", str(max(1, int(duration_s))), "--output", str(out), "--nonblocking"]
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        yield
    finally:
        try:
            proc.wait(duration_s + 30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(10)
