"""A tiny run of every benchmark (`bench/run-all --smoke`): each still starts its servers,
measures, stops them and writes its result. The figures are not judged here; see bench/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ("mapping", "connect", "create", "health", "idle", "stream")


@pytest.mark.slow
@pytest.mark.one_python
@pytest.mark.timeout(150)
def test_every_benchmark_runs_at_smoke_size(tmp_path: Path) -> None:
    started = time.monotonic()
    proc = subprocess.run(
        [str(ROOT / "bench" / "run-all"), "--smoke", "--results-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHON": sys.executable},
        check=False,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    for name in BENCHMARKS:
        files = list(tmp_path.glob(f"{name}-*.json"))
        assert len(files) == 1, f"{name}: {files}\n{proc.stdout[-3000:]}"
        result = json.loads(files[0].read_text())
        assert result["benchmark"] == name
        assert result["machine"]["nproc"] >= 1
        assert f"{name}: " in proc.stdout  # its one summary line
    summary = json.loads(next(tmp_path.glob("run-all-*.json")).read_text())
    assert summary["failures"] == 0
    assert elapsed < 60, f"smoke run took {elapsed:.0f} s"
