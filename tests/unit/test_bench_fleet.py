"""The fleet run of `bench/stream.py` (`--valkey --instances 2`): where `--pin` puts two
gateways and the rest, and how the run is judged against the in-memory one (the issue's ≤ 2x
CPU per delta, p99 < 100 ms)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from lib.host import cpu_plan, describe_plan
from stream import compare


@pytest.mark.parametrize(
    ("allowed", "gateways", "plan"),
    [
        ([0, 1], 1, ([0], [1])),
        ([0, 1], 2, ([0, 1], [0, 1])),  # 2 cores: a core each, the rest shares both
        ([0, 1, 2, 3], 2, ([0, 1], [2, 3])),
        ([2, 5, 7], 1, ([2], [5, 7])),  # the lowest CPUs this process may use
        ([0], 1, ([], [0])),  # one CPU: not pinned
        ([0], 2, ([], [0])),
    ],
)
def test_each_gateway_gets_a_cpu_and_the_rest_shares_what_is_left(
    allowed: list[int], gateways: int, plan: tuple[list[int], list[int]]
) -> None:
    assert cpu_plan(allowed, gateways) == plan


def test_the_printed_plan_says_when_the_gateways_share_their_cores() -> None:
    assert describe_plan([0, 1], [0, 1]) == (
        "pinned: gateway 1 on CPU 0, gateway 2 on CPU 1; client, local stack and Valkey on "
        "CPUs 0,1 (shared with the gateways)"
    )
    assert describe_plan([0], [1]).endswith("on CPUs 1")
    assert describe_plan([], [0]) == "not pinned: everything shares CPUs 0"


def run(us_per_delta: float, p99: float | None) -> dict[str, Any]:
    return {"gateway_cpu_us_per_delta": us_per_delta, "latency_ms": {"p99": p99}}


@pytest.mark.parametrize(
    ("fleet", "met"),
    [
        (run(80.0, 99.9), True),  # exactly 2x the CPU, p99 under 100 ms
        (run(80.1, 20.0), False),  # over 2x
        (run(60.0, 100.0), False),  # p99 at the bound
        (run(60.0, None), False),  # nothing delivered: never met
    ],
)
def test_the_fleet_is_judged_by_its_cpu_ratio_and_its_p99(fleet: dict[str, Any], met: bool) -> None:
    verdict = compare(run(40.0, 12.5), fleet)
    assert verdict["target_met"] is met
    assert verdict["cpu_ratio"] == round(fleet["gateway_cpu_us_per_delta"] / 40.0, 2)


def test_an_unmeasured_base_gives_no_ratio_and_no_verdict() -> None:
    """A tiny window can hold no CPU tick of the in-memory gateway (10 ms resolution)."""
    verdict = compare(run(0.0, 5.0), run(133.3, 7.4))
    assert (verdict["cpu_ratio"], verdict["target_met"]) == (None, False)
