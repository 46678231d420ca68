"""The supervisor's restart policy: a backoff that doubles, and a budget that ends a crash loop."""

from diminuendo.supervisor import RestartBudget


def test_backoff_doubles_up_to_the_cap() -> None:
    budget = RestartBudget(limit=10, window_s=1000.0, initial_s=0.5, max_s=4.0)
    assert [budget.next_delay(float(t)) for t in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_budget_spent_within_the_window_gives_up() -> None:
    budget = RestartBudget(limit=3, window_s=60.0)
    assert all(budget.next_delay(t) is not None for t in (0.0, 1.0, 2.0))
    assert budget.next_delay(3.0) is None


def test_restarts_older_than_the_window_are_forgiven() -> None:
    """A worker that crashes once an hour is restarted every time, after the first delay."""
    budget = RestartBudget(limit=2, window_s=60.0, initial_s=0.5)
    assert budget.next_delay(0.0) == 0.5
    assert budget.next_delay(3600.0) == 0.5
    assert budget.next_delay(7200.0) == 0.5
