"""Podium stand-in REST routes over real HTTP: UPSTREAMS.md §1."""

import base64
import hashlib
import re
from collections.abc import Iterator

import httpx
import pytest

from diminuendo.local.podium import deployment_id
from diminuendo.local.podium_store import PodiumStore
from diminuendo.local.stack import LocalStack
from diminuendo.upstreams.sealing import SealingKey, instance_aad, seal
from tests.local.conftest import SECRETS_KEY

pytestmark = pytest.mark.timeout(10)


@pytest.fixture
def store(stack: LocalStack) -> Iterator[PodiumStore]:
    """A second connection to Podium's database, to seed transcripts and files quickly."""
    opened = PodiumStore(stack.state_dir / "podium.sqlite3")
    yield opened
    opened.close()


async def test_health_needs_no_key(stack: LocalStack) -> None:
    async with httpx.AsyncClient() as anonymous:
        reply = await anonymous.get(f"{stack.podium_url}/health")
    assert reply.json() == {"status": "ok"}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}])
async def test_routes_require_the_key(stack: LocalStack, headers: dict[str, str]) -> None:
    async with httpx.AsyncClient(headers=headers) as http:
        for reply in (
            await http.get(f"{stack.podium_url}/api/v1/deployments"),
            await http.post(f"{stack.podium_url}/api/v1/instances", json={}),
            await http.get(f"{stack.podium_url}/api/v1/instances/x/messages"),
        ):
            assert reply.status_code == 401
            assert reply.json()["error"]["code"] == "UNAUTHORIZED"


async def test_deployments_newest_first(stack: LocalStack, client: httpx.AsyncClient) -> None:
    everything = (await client.get(f"{stack.podium_url}/api/v1/deployments")).json()["deployments"]
    assert {d["agent_type"] for d in everything} == {"echo", "demo", "slow", "chat"}
    echo = (
        await client.get(f"{stack.podium_url}/api/v1/deployments", params={"agent_type": "echo"})
    ).json()["deployments"]
    assert [d["version"] for d in echo] == ["1.0.0", "0.9.0"]
    newest = echo[0]
    digest = hashlib.sha256(b"echo:1.0.0").hexdigest()[:8]
    assert newest == {
        "deployment_id": f"echo:1.0.0@{digest}",
        "agent_type": "echo",
        "version": "1.0.0",
    }
    assert re.fullmatch(r"echo:\d+\.\d+\.\d+@[0-9a-f]{8}", echo[1]["deployment_id"])
    unknown = await client.get(f"{stack.podium_url}/api/v1/deployments", params={"agent_type": "x"})
    assert unknown.json() == {"deployments": []}


async def test_instance_lifecycle(stack: LocalStack, client: httpx.AsyncClient) -> None:
    url = f"{stack.podium_url}/api/v1/instances"
    deployment_id = (
        await client.get(f"{stack.podium_url}/api/v1/deployments", params={"agent_type": "echo"})
    ).json()["deployments"][0]["deployment_id"]
    created = await client.post(
        url,
        json={
            "deployment_id": deployment_id,
            "config": {"delay_ms": 1},
            "secrets": {
                "sealed": seal(
                    {"ensemble_api_key": "sk-super-secret-value"},
                    SECRETS_KEY,
                    aad=instance_aad("t1", "s1"),
                )
            },
            "metadata": {"tenant_id": "t1", "session_id": "s1", "user_id": "u1"},
        },
    )
    assert created.status_code == 201
    body = created.json()
    assert body["status"] == "running" and body["deployment_id"] == deployment_id
    instance_id = body["instance_id"]

    fetched = (await client.get(f"{url}/{instance_id}")).json()
    assert fetched["instance_id"] == instance_id
    assert fetched["status"] == "running"
    assert fetched["created_at"] == body["created_at"]
    assert fetched["metadata"] == {"tenant_id": "t1", "session_id": "s1", "user_id": "u1"}
    assert "secrets" not in fetched

    database = b"".join(path.read_bytes() for path in stack.state_dir.glob("podium.sqlite3*"))
    assert b"sk-super-secret-value" not in database

    assert (await client.delete(f"{url}/{instance_id}")).status_code == 204
    gone = await client.get(f"{url}/{instance_id}")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "NOT_FOUND"
    assert (await client.delete(f"{url}/{instance_id}")).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"deployment_id": "echo:9.9.9@00000000"},
        {},
        {"deployment_id": 5},
        {"deployment_id": deployment_id("echo", "1.0.0"), "config": []},
        {"deployment_id": deployment_id("echo", "1.0.0"), "secrets": "x"},
        # Plaintext secrets are refused, not kept: the gateway only ever sends them sealed.
        {"deployment_id": deployment_id("echo", "1.0.0"), "secrets": {"ensemble_api_key": "k"}},
        {"deployment_id": deployment_id("echo", "1.0.0"), "secrets": {"sealed": 5}},
    ],
)
async def test_create_rejects_bad_bodies(
    stack: LocalStack, client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    reply = await client.post(f"{stack.podium_url}/api/v1/instances", json=body)
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "INVALID_REQUEST"


@pytest.mark.parametrize(
    ("key", "sealed_for", "cause"),
    [
        (SealingKey(b"k" * 32), ("t1", "s1"), "PODIUM_SECRETS_KEY differs"),
        (SECRETS_KEY, ("t1", "s2"), "sealed for another instance"),
        (SECRETS_KEY, ("t2", "s1"), "sealed for another instance"),
    ],
)
async def test_secrets_it_cannot_open_are_a_clear_422(
    stack: LocalStack,
    client: httpx.AsyncClient,
    key: SealingKey,
    sealed_for: tuple[str, str],
    cause: str,
) -> None:
    sealed = seal({"ensemble_api_key": "sk-super-secret-value"}, key, aad=instance_aad(*sealed_for))
    reply = await client.post(
        f"{stack.podium_url}/api/v1/instances",
        json={
            "deployment_id": deployment_id("echo", "1.0.0"),
            "secrets": {"sealed": sealed},
            "metadata": {"tenant_id": "t1", "session_id": "s1", "user_id": "u1"},
        },
    )
    assert reply.status_code == 422
    error = reply.json()["error"]
    assert error["code"] == "SECRETS_UNREADABLE" and cause in error["message"]
    assert "sk-super-secret-value" not in reply.text and sealed not in reply.text


async def test_messages_paginate_backwards(podium, store: PodiumStore) -> None:
    instance_id = await podium.create_instance("echo")
    ids = [store.add_message(instance_id, "user", f"m{i}", f"trn_{i}")["id"] for i in range(7)]

    latest = await podium.messages(instance_id, limit=3)
    assert [m["text"] for m in latest["messages"]] == ["m4", "m5", "m6"]
    assert latest["has_more"] is True
    assert set(latest["messages"][0]) == {"id", "role", "text", "turn_id", "ts"}

    older = await podium.messages(instance_id, limit=3, before=latest["messages"][0]["id"])
    assert [m["text"] for m in older["messages"]] == ["m1", "m2", "m3"]
    assert older["has_more"] is True
    oldest = await podium.messages(instance_id, limit=3, before=ids[1])
    assert [m["text"] for m in oldest["messages"]] == ["m0"]
    assert oldest["has_more"] is False
    assert len((await podium.messages(instance_id))["messages"]) == 7


async def test_messages_errors(podium) -> None:
    instance_id = await podium.create_instance("echo")
    url = f"{podium.url}/api/v1/instances/{instance_id}/messages"
    for params in ({"limit": 0}, {"limit": 501}, {"limit": "x"}, {"before": "msg_unknown"}):
        reply = await podium.http.get(url, params=params)
        assert reply.status_code == 400, params
    missing = await podium.http.get(f"{podium.url}/api/v1/instances/inst_none/messages")
    assert missing.status_code == 404


async def test_workspace_files(podium, store: PodiumStore) -> None:
    instance_id = await podium.create_instance("echo")
    files = f"{podium.url}/api/v1/instances/{instance_id}/files"
    http = podium.http
    assert (await http.get(files)).json() == {"entries": []}
    store.write_file(instance_id, "src/app/main.py", b"print('v1')\n")
    store.write_file(instance_id, "src/app/main.py", b"print('v2')\n")
    store.write_file(instance_id, "README.md", b"# hi\n")
    store.write_file(instance_id, "img/logo.bin", bytes([0, 255, 1, 254]))
    store.write_file(instance_id, "logs/history", b"a file named history\n")

    top = (await http.get(files)).json()["entries"]
    assert [(e["path"], e["type"]) for e in top] == [
        ("README.md", "file"),
        ("img", "dir"),
        ("logs", "dir"),
        ("src", "dir"),
    ]
    assert top[0]["size"] == 5 and isinstance(top[0]["modified_at"], int)
    deep = (await http.get(files, params={"path": "src", "depth": 5})).json()["entries"]
    assert [(e["path"], e["type"]) for e in deep] == [
        ("src/app", "dir"),
        ("src/app/main.py", "file"),
    ]
    assert (await http.get(files, params={"path": "nothing"})).status_code == 404
    assert (await http.get(files, params={"depth": 0})).status_code == 400

    latest = (await http.get(f"{files}/src/app/main.py")).json()
    assert latest == {
        "path": "src/app/main.py",
        "content": "print('v2')\n",
        "encoding": "utf-8",
        "size": 12,
        "iteration": 2,
    }
    first = (await http.get(f"{files}/src/app/main.py", params={"iteration": 1})).json()
    assert first["content"] == "print('v1')\n" and first["iteration"] == 1
    binary = (await http.get(f"{files}/img/logo.bin")).json()
    assert binary["encoding"] == "base64"
    assert base64.b64decode(binary["content"]) == bytes([0, 255, 1, 254])

    named_history = (await http.get(f"{files}/logs/history")).json()
    assert named_history["content"] == "a file named history\n"
    history = (await http.get(f"{files}/src/app/main.py/history")).json()["iterations"]
    assert [h["iteration"] for h in history] == [1, 2]
    assert history[1]["hash"] == "sha256:" + hashlib.sha256(b"print('v2')\n").hexdigest()
    assert history[0]["size"] == 12 and isinstance(history[0]["timestamp"], int)

    for missing in (
        await http.get(f"{files}/nope.txt"),
        await http.get(f"{files}/src/app/main.py", params={"iteration": 3}),
        await http.get(f"{files}/nope.txt/history"),
        await http.get(f"{podium.url}/api/v1/instances/inst_none/files"),
    ):
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "NOT_FOUND"


async def test_unknown_route_is_json_404(stack: LocalStack, client: httpx.AsyncClient) -> None:
    reply = await client.get(f"{stack.podium_url}/api/v1/nothing")
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "NOT_FOUND"
