"""Unison stand-in over real HTTP: UPSTREAMS.md §3."""

from urllib.parse import quote

import httpx
import pytest

from diminuendo.local.stack import LocalStack

pytestmark = pytest.mark.timeout(10)

SESSIONS = quote("tenant:acme/sessions", safe="")


def kv(stack: LocalStack, namespace: str = SESSIONS, key: str | None = None) -> str:
    url = f"{stack.unison_url}/api/v1/kv/{namespace}"
    return f"{url}/{quote(key, safe='')}" if key is not None else url


async def test_health_and_ready_need_no_key(stack: LocalStack) -> None:
    async with httpx.AsyncClient() as anonymous:
        assert (await anonymous.get(f"{stack.unison_url}/api/v1/health")).json() == {"ok": True}
        assert (await anonymous.get(f"{stack.unison_url}/api/v1/ready")).json() == {"ok": True}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "x"}])
async def test_kv_routes_require_the_key(stack: LocalStack, headers: dict[str, str]) -> None:
    async with httpx.AsyncClient(headers=headers) as http:
        reply = await http.get(kv(stack, key="s1"))
    assert reply.status_code == 401
    assert reply.json()["error"]["code"] == "UNAUTHORIZED"


async def test_put_get_versions_and_entry_shape(
    stack: LocalStack, client: httpx.AsyncClient
) -> None:
    first = await client.put(kv(stack, key="s1"), json={"value": {"name": "a"}, "actor": "user:1"})
    assert first.status_code == 200
    entry = first.json()
    assert entry["namespace"] == "tenant:acme/sessions"
    assert entry["key"] == "s1"
    assert entry["value"] == {"name": "a"}
    assert entry["version"] == 1
    assert entry["updatedBy"] == "user:1"
    assert isinstance(entry["updatedAt"], int) and entry["updatedAt"] > 1_600_000_000_000
    assert entry["expiresAt"] is None

    second = (await client.put(kv(stack, key="s1"), json={"value": [1, 2]})).json()
    assert second["version"] == 2
    assert second["updatedBy"] == "api"
    assert (await client.get(kv(stack, key="s1"))).json() == second


async def test_cas_conflict_returns_the_current_entry(
    stack: LocalStack, client: httpx.AsyncClient
) -> None:
    created = await client.put(kv(stack, key="s1"), json={"value": 1, "actor": "a", "cas": 0})
    assert created.json()["version"] == 1

    stale = await client.put(kv(stack, key="s1"), json={"value": 2, "actor": "b", "cas": 0})
    assert stale.status_code == 409
    error = stale.json()["error"]
    assert error["code"] == "CAS_CONFLICT"
    assert error["current"]["version"] == 1
    assert error["current"]["value"] == 1

    ok = await client.put(kv(stack, key="s1"), json={"value": 3, "actor": "b", "cas": 1})
    assert ok.status_code == 200 and ok.json()["version"] == 2

    absent = await client.put(kv(stack, key="nope"), json={"value": 1, "cas": 4})
    assert absent.status_code == 409
    assert absent.json()["error"]["current"] is None


async def test_list_filters_by_prefix_and_namespace(
    stack: LocalStack, client: httpx.AsyncClient
) -> None:
    for key in ("a/1", "a/2", "b%_1"):
        await client.put(kv(stack, key=key), json={"value": key})
    other = quote("tenant:other/sessions", safe="")
    await client.put(kv(stack, other, "a/3"), json={"value": "x"})

    everything = (await client.get(kv(stack))).json()["items"]
    assert [item["key"] for item in everything] == ["a/1", "a/2", "b%_1"]
    prefixed = (await client.get(kv(stack), params={"prefix": "a/"})).json()["items"]
    assert [item["key"] for item in prefixed] == ["a/1", "a/2"]
    literal = (await client.get(kv(stack), params={"prefix": "b%_"})).json()["items"]
    assert [item["key"] for item in literal] == ["b%_1"]
    assert (await client.get(kv(stack, quote("tenant:none", safe="")))).json() == {"items": []}


async def test_delete_and_missing_keys(stack: LocalStack, client: httpx.AsyncClient) -> None:
    await client.put(kv(stack, key="s1"), json={"value": 1})
    deleted = await client.delete(kv(stack, key="s1"), params={"actor": "user:1"})
    assert deleted.status_code == 204
    again = await client.delete(kv(stack, key="s1"))
    assert again.status_code == 404
    missing = await client.get(kv(stack, key="s1"))
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "NOT_FOUND"
    recreated = await client.put(kv(stack, key="s1"), json={"value": 2})
    assert recreated.json()["version"] == 1


@pytest.mark.parametrize(
    "body",
    [{"actor": "a"}, {"value": 1, "cas": "1"}, {"value": 1, "cas": -1}, {"value": 1, "actor": 5}],
)
async def test_invalid_writes_are_400(
    stack: LocalStack, client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    reply = await client.put(kv(stack, key="s1"), json=body)
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "INVALID_REQUEST"


async def test_non_json_body_is_400(stack: LocalStack, client: httpx.AsyncClient) -> None:
    reply = await client.put(kv(stack, key="s1"), content=b"{not json")
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "INVALID_REQUEST"
