"""A real HAProxy (Debian's `haproxy`) in front of two gateway instances (issue 16 item 5), with
`config/haproxy.cfg.example` rendered for 127.0.0.1 (only the bind and the server lines change).

The instances run in production mode against one JWKS server, so the example's routing on the
token's `org_id` claim is exercised, and the routing header is checked against a verified token.
Which instance answered: `/health`'s `instanceId` (HTTP) or the instances' connection counts
(WebSocket). Skipped, with the reason, where `haproxy` is not installed (`.ci/run` installs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from diminuendo.local.ports import free_port
from tests.conftest import (
    Client,
    Gateway,
    Stack,
    client,
    gateway_process,
    stop_process,
    stop_processes,
)
from tests.integration.jwks_server import ROLE_CLAIM, TENANT_CLAIM, JwksServer, production_env

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "haproxy.cfg.example"
HAPROXY = shutil.which("haproxy")
TENANTS = [f"tenant-{n}" for n in range(16)]
# The example's health checks: `inter 2s fall 2` → a draining instance is out after ~4 s.
DRAIN_DETECTED_S = 15.0

# Routing is HAProxy's and the gateway's header check, not the interpreter's: CI runs it once
# (one_python), which saves ~80 s on each other Python.
pytestmark = [
    pytest.mark.skipif(
        HAPROXY is None, reason="haproxy not installed (apt-get install haproxy; .ci/run does)"
    ),
    pytest.mark.one_python,
]


def render_config(example: str, port: int, servers: dict[str, int]) -> str:
    """The example with `bind` on 127.0.0.1:`port` and its `server` lines replaced by ours."""
    lines = [line for line in example.splitlines() if not line.strip().startswith("server ")]
    text = "\n".join(lines)
    text, bound = re.subn(r"^(\s*)bind \*:80$", rf"\1bind 127.0.0.1:{port}", text, flags=re.M)
    assert bound == 1, "the example's `bind *:80` line moved: update render_config"
    assert text.rstrip().splitlines()[-1].strip().startswith("default-server")
    servers_text = "".join(f"    server {n} 127.0.0.1:{p} check\n" for n, p in servers.items())
    return f"{text.rstrip()}\n\n{servers_text}"


@dataclass
class Fleet:
    jwks: JwksServer
    instances: dict[str, Gateway]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self, tenant: str) -> str:
        claims = {TENANT_CLAIM: tenant, "org_id": tenant, ROLE_CLAIM: "developer"}
        return self.jwks.mint(self.jwks.claims(sub=f"auth0|user-{tenant}", **claims))

    def instance_ids(self) -> dict[str, str]:
        """instance id → server name, asked of each instance directly."""
        return {
            httpx.get(f"{gw.url}/health", timeout=5).json()["instanceId"]: name
            for name, gw in self.instances.items()
        }

    def served_by(self, tenant: str) -> str:
        """The instance HAProxy sends this tenant's HTTP requests (token in Authorization) to."""
        reply = httpx.get(
            f"{self.url}/health", headers={"Authorization": f"Bearer {self.token(tenant)}"}
        )
        return reply.json()["instanceId"]

    def connections(self) -> dict[str, int]:
        return {name: self.connections_of(name) for name in self.instances}

    def connections_of(self, name: str) -> int:
        health = httpx.get(f"{self.instances[name].url}/health", timeout=5).json()
        return health["metrics"]["connections"]

    def status_of(self, name: str) -> int:
        return httpx.get(f"{self.instances[name].url}/health", timeout=5).status_code

    @contextlib.asynccontextmanager
    async def ws(
        self, tenant: str, *, subprotocol: bool = False, **headers: str
    ) -> AsyncIterator[Client]:
        token = self.token(tenant)
        kwargs: dict[str, Any]
        if subprotocol:  # browsers: the token in the subprotocol
            kwargs = {"subprotocols": ["diminuendo.v1", f"bearer.{token}"]}
        else:
            kwargs = {"additional_headers": {"Authorization": f"Bearer {token}", **headers}}
        async with client(f"ws://127.0.0.1:{self.port}/ws", **kwargs) as c:
            yield c


@pytest.fixture
def drain_delay() -> str:
    """gw1's DRAIN_DELAY: none, unless a test drains gw1 (it parametrizes this). Every instance
    still running at teardown is stopped, and a drain delay there is only a wait."""
    return "0s"


@pytest.fixture
def fleet(stack: Stack, tmp_path: Path, drain_delay: str) -> Iterator[Fleet]:
    jwks = JwksServer()
    instances: dict[str, Gateway] = {}
    haproxy: subprocess.Popen[bytes] | None = None
    try:
        for name in ("gw1", "gw2"):
            env = production_env(
                jwks, PROXIES_COUNT="1", DRAIN_DELAY=drain_delay if name == "gw1" else "0s"
            )
            instances[name] = gateway_process(stack, tmp_path, **env, GRACEFUL_SHUTDOWN_TIMEOUT="3")
            instances[name].start()
        port = free_port()
        config = tmp_path / "haproxy.cfg"
        servers = {name: gw.port for name, gw in instances.items()}
        config.write_text(render_config(EXAMPLE.read_text(), port, servers))
        assert HAPROXY is not None
        checked = subprocess.run(
            [HAPROXY, "-c", "-f", str(config)], capture_output=True, timeout=30
        )
        assert checked.returncode == 0, checked.stderr.decode()[-2000:]
        log = (tmp_path / "haproxy.log").open("ab")
        haproxy = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stdout=log, stderr=log)
        fleet = Fleet(jwks, instances, port)
        deadline = time.monotonic() + 30
        while True:  # both servers up in HAProxy's eyes (`rise 2`: two checks, 2 s apart)
            with contextlib.suppress(httpx.HTTPError):
                if len({fleet.served_by(t) for t in TENANTS}) == 2:
                    break
            assert time.monotonic() < deadline, (tmp_path / "haproxy.log").read_text()[-2000:]
            time.sleep(0.5)
        yield fleet
    finally:
        if haproxy is not None:
            stop_process(haproxy)
        stop_processes([gw.proc for gw in instances.values() if gw.proc is not None])
        jwks.stop()


async def until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.2)


async def test_haproxy_routes_a_tenant_to_one_instance(fleet: Fleet) -> None:
    ids = fleet.instance_ids()
    placement = {tenant: ids[fleet.served_by(tenant)] for tenant in TENANTS}
    assert set(placement.values()) == {"gw1", "gw2"}, "two tenants can land on two instances"
    idle = fleet.connections()
    for tenant in TENANTS[:3]:
        home = placement[tenant]
        assert {ids[fleet.served_by(tenant)] for _ in range(5)} == {home}
        async with (
            fleet.ws(tenant) as a,
            fleet.ws(tenant) as b,
            fleet.ws(tenant, subprotocol=True) as c,
        ):
            for c_ in (a, b, c):
                assert c_.received[-1]["identity"]["tenantId"] == tenant
            expected = {name: idle[name] + (3 if name == home else 0) for name in idle}
            await until(lambda e=expected: fleet.connections() == e, 5, f"{tenant} on {home}")
        await until(lambda: fleet.connections() == idle, 5, "the sockets are closed")


async def test_routing_header_that_disagrees_with_the_token_is_refused(fleet: Fleet) -> None:
    """Before the fix (`auth/routing.py`): HAProxy hashed on the header, and the instance it
    chose accepted the upgrade as the token's tenant."""
    tenant, other = TENANTS[0], TENANTS[1]
    with pytest.raises(InvalidStatus) as refused:
        async with fleet.ws(tenant, **{"X-Diminuendo-Tenant": other}):
            pass
    assert refused.value.response.status_code == 403
    assert b"X-Diminuendo-Tenant" in refused.value.response.body
    async with fleet.ws(tenant, **{"X-Diminuendo-Tenant": tenant}) as c:
        assert c.received[-1]["identity"]["tenantId"] == tenant


# DRAIN_DELAY above the example's 2 x 2 s detection (see its comments).
@pytest.mark.parametrize("drain_delay", ["6s"])
async def test_a_draining_instance_leaves_the_pool(fleet: Fleet) -> None:
    """SIGTERM one instance: its /health answers 503 at once, HAProxy takes it out after its
    failed checks, and new connections of its tenants go to the other instance."""
    ids = fleet.instance_ids()
    tenant = next(t for t in TENANTS if ids[fleet.served_by(t)] == "gw1")
    gw1 = fleet.instances["gw1"]
    assert gw1.proc is not None
    gw1.proc.send_signal(15)
    await until(lambda: httpx.get(f"{gw1.url}/health", timeout=5).status_code == 503, 5, "gw1 503")
    started = time.monotonic()
    while True:
        try:
            if ids.get(fleet.served_by(tenant)) == "gw2":
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() - started < DRAIN_DETECTED_S, "HAProxy kept sending to gw1"
        await asyncio.sleep(0.2)
    before = fleet.connections_of("gw2")
    async with fleet.ws(tenant) as c:
        assert c.received[-1]["identity"]["tenantId"] == tenant
        await until(lambda: fleet.connections_of("gw2") == before + 1, 5, "new socket on gw2")
    assert gw1.proc.wait(15) == 0
