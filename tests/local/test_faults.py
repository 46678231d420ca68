"""Fault switches of the stand-ins: 503s, hangs and refused runtime sockets."""

import asyncio

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from diminuendo.local.stack import LocalStack

pytestmark = pytest.mark.timeout(10)

# (service, a public route, a keyed route)
ROUTES = [
    ("podium", "/health", "/api/v1/deployments"),
    ("ensemble", "/api/v1/health", "/rpc"),
    ("unison", "/api/v1/health", "/api/v1/kv/tenant%3Aa%2Fsettings"),
]


def base(stack: LocalStack, service: str) -> str:
    return getattr(stack, f"{service}_url")


async def call(client: httpx.AsyncClient, url: str, **kwargs: object) -> httpx.Response:
    if url.endswith("/rpc"):
        body = {"jsonrpc": "2.0", "id": 1, "method": "inference/models.list"}
        return await client.post(url, json=body, **kwargs)
    return await client.get(url, **kwargs)


@pytest.mark.parametrize(("service", "public", "keyed"), ROUTES)
async def test_unavailable_then_ok(
    stack: LocalStack, client: httpx.AsyncClient, service: str, public: str, keyed: str
) -> None:
    url = base(stack, service)
    assert (await client.get(f"{url}/_local/fault")).json() == {"mode": "ok"}
    switched = await client.post(f"{url}/_local/fault", json={"mode": "unavailable"})
    assert switched.json() == {"mode": "unavailable"}
    for route in (public, keyed):
        reply = await call(client, url + route)
        assert reply.status_code == 503
        assert reply.json()["error"]["code"] == "UNAVAILABLE"
    async with httpx.AsyncClient() as anonymous:
        assert (await call(anonymous, url + keyed)).status_code == 401
    assert (await client.get(f"{url}/_local/fault")).json() == {"mode": "unavailable"}

    await client.post(f"{url}/_local/fault", json={"mode": "ok"})
    for route in (public, keyed):
        assert (await call(client, url + route)).status_code == 200


@pytest.mark.parametrize("service", ["podium", "ensemble", "unison"])
async def test_fault_routes_need_the_key_and_a_known_mode(
    stack: LocalStack, client: httpx.AsyncClient, service: str
) -> None:
    url = f"{base(stack, service)}/_local/fault"
    async with httpx.AsyncClient() as anonymous:
        assert (await anonymous.get(url)).status_code == 401
        assert (await anonymous.post(url, json={"mode": "ok"})).status_code == 401
    for body in ({"mode": "broken"}, {}):
        refused = await client.post(url, json=body)
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "INVALID_REQUEST"


async def test_hang_holds_requests_until_the_mode_changes(
    stack: LocalStack, client: httpx.AsyncClient
) -> None:
    url = f"{stack.unison_url}/api/v1/kv/ns/key"
    await client.post(f"{stack.unison_url}/_local/fault", json={"mode": "hang"})
    with pytest.raises(httpx.ReadTimeout):
        await client.get(url, timeout=0.3)
    pending = asyncio.create_task(client.get(url))
    await asyncio.sleep(0.2)
    assert not pending.done()
    await client.post(f"{stack.unison_url}/_local/fault", json={"mode": "ok"})
    released = await asyncio.wait_for(pending, 2)
    assert released.status_code == 503
    assert (await client.get(url)).status_code == 404


async def test_stopping_releases_hung_requests(
    stack: LocalStack, client: httpx.AsyncClient
) -> None:
    await client.post(f"{stack.ensemble_url}/_local/fault", json={"mode": "hang"})
    pending = asyncio.create_task(client.get(f"{stack.ensemble_url}/api/v1/health"))
    await asyncio.sleep(0.2)
    async with asyncio.timeout(3):
        await stack.stop()
        reply = await pending
    assert reply.status_code == 503


async def test_unavailable_podium_refuses_runtime_sockets(podium) -> None:
    instance_id = await podium.create_instance("echo")
    await podium.http.post(f"{podium.url}/_local/fault", json={"mode": "unavailable"})
    with pytest.raises(InvalidStatus) as refused:
        async with podium.runtime(instance_id):
            pass
    assert refused.value.response.status_code == 503
