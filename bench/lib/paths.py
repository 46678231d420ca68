"""Where the benchmarks live, the repository they measure, and where results go by default."""

from __future__ import annotations

from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
