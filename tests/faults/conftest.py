"""Fault tests get their own stand-ins (Podium in its own process) so switching a fault on, or
killing a process, can never disturb the rest of the suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Gateway, Stack, gateway_process, new_stack


@pytest.fixture
def fault_stack(tmp_path: Path) -> Iterator[Stack]:
    stack = new_stack(tmp_path / "stack", split=True)
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture
def fault_gateway(fault_stack: Stack, tmp_path: Path) -> Iterator[Any]:
    started: list[Gateway] = []

    def start(**overrides: str) -> Gateway:
        gateway = gateway_process(fault_stack, tmp_path, **overrides)
        gateway.start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()
