"""Fixtures of the edge tests: `prod` (a production gateway with its own JWKS server, from
tests/security) and `edge_gateway`, a dev-mode gateway of the module's own adapter only (`EDGE`
in the test module), so an unfinished or broken other adapter cannot fail its tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Gateway, Stack, gateway_process
from tests.security.conftest import prod  # noqa: F401  (the production-gateway factory)


@pytest.fixture(scope="module")
def edge_gateway(
    request: pytest.FixtureRequest, stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    adapter = request.module.EDGE
    g = gateway_process(stack, tmp_path_factory.mktemp(adapter), EDGE_ADAPTERS=adapter)
    g.start()
    yield g
    g.stop()
