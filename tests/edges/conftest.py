"""Fixtures of the edge tests: `prod` (a production gateway with its own JWKS server, from
tests/security) and `edge_gateway`, a dev-mode gateway of the module's own adapter only (`EDGE`
in the test module), so an unfinished or broken other adapter cannot fail its tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from diminuendo.local.valkey import LocalValkey
from tests.conftest import Gateway, GatewayFleet, Stack, serving
from tests.security.conftest import prod  # noqa: F401  (the production-gateway factory)


@pytest.fixture(scope="module")
def edge_gateway(
    request: pytest.FixtureRequest,
    stack: Stack,
    fleet_valkey: LocalValkey | None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway | GatewayFleet]:
    """Two instances under DIMINUENDO_TEST_FLEET=2, as the shared `gateway`."""
    adapter = request.module.EDGE
    with serving(stack, tmp_path_factory.mktemp(adapter), fleet_valkey, EDGE_ADAPTERS=adapter) as g:
        yield g
