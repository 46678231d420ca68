"""`sessions.capacity`: the tenant quota, fair eviction and the reserve (PROTOCOL.md §4, §13)."""

from __future__ import annotations

import pytest

from diminuendo.sessions.capacity import Admission, Limits, admission, choose_victim

ADMIT, FREE_OWN, FREE_FAIRLY = Admission.ADMIT, Admission.FREE_OWN, Admission.FREE_FAIRLY


@pytest.mark.parametrize(
    ("limits", "held", "tenant", "expected"),
    [
        (Limits(4, 1000), {}, "a", ADMIT),
        (Limits(4, 1000), {"a": 3}, "a", ADMIT),  # no reserve below 10
        (Limits(4, 1000), {"a": 4}, "a", FREE_FAIRLY),
        (Limits(4, 1000), {"a": 3, "b": 1}, "b", FREE_FAIRLY),
        (Limits(4, 3), {"a": 3}, "a", FREE_OWN),  # quota first, though the instance has room
        (Limits(4, 3), {"a": 3}, "b", ADMIT),
        (Limits(10, 1000), {"a": 8}, "a", ADMIT),
        (Limits(10, 1000), {"a": 9}, "a", FREE_FAIRLY),  # alone: fair share 10 // 2 = 5
        (Limits(10, 1000), {"a": 9}, "b", ADMIT),  # under its share: 10 // 3 = 3
        (Limits(10, 1000), {"a": 6, "b": 3}, "b", FREE_FAIRLY),  # 3 == 10 // 3
        (Limits(10, 1000), {"a": 6, "b": 2}, "b", ADMIT),
        (Limits(10, 1000), {"a": 7, "b": 2}, "c", ADMIT),  # 0 < 10 // 4
        (Limits(10, 1000), {"a": 8, "b": 2}, "c", FREE_FAIRLY),  # full
        (Limits(5000, 1000), {"a": 1000}, "a", FREE_OWN),
        (Limits(5000, 1000), {f"t{i}": 900 for i in range(5)}, "new", ADMIT),  # 4500: reserve
        (Limits(5000, 1000), {f"t{i}": 900 for i in range(5)}, "t0", FREE_FAIRLY),
    ],
)
def test_admission(limits: Limits, held: dict[str, int], tenant: str, expected: Admission) -> None:
    assert admission(tenant, held, sum(held.values()), limits) is expected


def idle(*sessions: tuple[str, float]) -> list[tuple[str, float, str]]:
    return [(tenant, used, f"{tenant}@{used}") for tenant, used in sessions]


@pytest.mark.parametrize(
    ("tenant", "held", "candidates", "need", "victim"),
    [
        # The biggest tenant's least recently used, although another's is older.
        ("b", {"a": 3, "b": 1}, idle(("b", 1.0), ("a", 5.0), ("a", 3.0)), FREE_FAIRLY, "a@3.0"),
        # Never a smaller (or equal, or one-smaller) tenant's: only its own.
        ("a", {"a": 3, "b": 1}, idle(("b", 1.0)), FREE_FAIRLY, None),
        ("a", {"a": 3, "b": 1}, idle(("b", 1.0), ("a", 9.0)), FREE_FAIRLY, "a@9.0"),
        ("a", {"a": 2, "b": 3}, idle(("b", 1.0), ("a", 9.0)), FREE_FAIRLY, "a@9.0"),
        ("a", {"a": 2, "b": 4}, idle(("b", 1.0), ("a", 9.0)), FREE_FAIRLY, "b@1.0"),
        # At the quota only its own, whoever is bigger.
        ("a", {"a": 3, "b": 9}, idle(("b", 1.0)), FREE_OWN, None),
        ("a", {"a": 3, "b": 9}, idle(("b", 1.0), ("a", 7.0), ("a", 4.0)), FREE_OWN, "a@4.0"),
        ("a", {"a": 1}, [], FREE_FAIRLY, None),
    ],
)
def test_choose_victim(
    tenant: str,
    held: dict[str, int],
    candidates: list[tuple[str, float, str]],
    need: Admission,
    victim: str | None,
) -> None:
    assert choose_victim(tenant, held, candidates, need) == victim
