"""The benchmarks' typed options (bench/lib/options.py): a dataclass's fields are the
command-line options, parsed once into typed values."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from idle import IdleOptions
from lib.options import BenchOptions, common, params, parse_options
from lib.paths import RESULTS_DIR
from stream import StreamOptions


def test_no_arguments_give_the_defaults() -> None:
    options = parse_options(StreamOptions, "stream", [])
    assert options == StreamOptions()
    assert (options.pin, options.sessions, options.rate, options.variant) == (
        True,
        5000,
        4.0,
        "both",
    )
    assert (options.results_dir, options.timeout, options.py_spy) == (RESULTS_DIR, 900, None)


def test_flags_are_the_field_names_and_values_get_the_field_types() -> None:
    argv = ["--no-pin", "--sessions", "20", "--rate", "2.5", "--setup-concurrency", "5"]
    argv += ["--variant", "fanout", "--py-spy", "/tmp/p.txt", "--keep-logs"]
    options = parse_options(StreamOptions, "stream", argv)
    assert options.pin is False
    assert options.sessions == 20 and options.setup_concurrency == 5
    assert options.rate == 2.5 and options.variant == "fanout"
    assert options.py_spy == Path("/tmp/p.txt") and options.keep_logs is True
    assert parse_options(IdleOptions, "idle", ["--pin", "--trace-memory"]).trace_memory is True


@pytest.mark.parametrize(
    "argv",
    [["--variant", "neither"], ["--sessions", "many"], ["--no-keep-logs"], ["--unknown", "1"]],
)
def test_a_bad_option_is_a_usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_options(StreamOptions, "stream", argv)
    assert exited.value.code == 2
    assert "usage: " in capsys.readouterr().err


def test_one_benchmarks_options_build_anothers_and_record_as_text() -> None:
    stream = parse_options(StreamOptions, "stream", ["--timeout", "60", "--no-pin"])
    idle = IdleOptions(**common(stream), connections=100)
    assert (idle.timeout, idle.pin, idle.connections, idle.hold) == (60, False, 100, 5.0)
    assert set(common(stream)) == {
        "pin",
        "results_dir",
        "timeout",
        "keep_logs",
        "watchdog",
        "py_spy",
    }
    recorded = params(idle)
    assert list(recorded)[:6] == list(common(BenchOptions()))
    assert recorded["connections"] == "100" and recorded["watchdog"] == "None"
