"""Fixtures for the local stack tests: a real stack on free loopback ports per test."""

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from diminuendo.local.ports import free_ports
from diminuendo.local.stack import LocalStack, LocalStackConfig
from diminuendo.settings import LOCAL_STACK_SECRETS_KEY
from diminuendo.upstreams.sealing import SealingKey, instance_aad, seal

API_KEY = "test-key"
SECRETS_KEY = SealingKey.parse(LOCAL_STACK_SECRETS_KEY)
METADATA = {"tenant_id": "acme", "session_id": "sess_local", "user_id": "dev"}
SEALED = {"key": SECRETS_KEY, "aad": instance_aad("acme", "sess_local")}
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def config(tmp_path: Path) -> LocalStackConfig:
    podium, ensemble, unison = free_ports(3)
    return LocalStackConfig(
        data_dir=tmp_path,
        podium_port=podium,
        ensemble_port=ensemble,
        unison_port=unison,
        api_key=API_KEY,
    )


@pytest.fixture
async def stack(config: LocalStackConfig) -> AsyncIterator[LocalStack]:
    local = LocalStack(config)
    await local.start()
    try:
        yield local
    finally:
        await local.stop()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(headers=AUTH, timeout=5.0) as http:
        yield http


class RuntimeSocket:
    """The gateway's side of a Podium runtime socket, with helpers to read events."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.attached: list[dict[str, Any]] = []  # the `runtime.attached` hellos seen

    async def send(self, frame_type: str, **content: Any) -> None:
        await self.ws.send(json.dumps({"type": frame_type, "content": content}))

    async def next_event(self, wait_s: float = 3.0) -> dict[str, Any]:
        """The next agent event; attach hellos are recorded in `attached`, not returned."""
        while True:
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), wait_s))
            assert frame["type"] == "update"
            if frame["event_type"] != "runtime.attached":
                return frame
            self.attached.append(frame["content"])

    async def until(self, event_type: str, wait_s: float = 5.0) -> list[dict[str, Any]]:
        """Every event up to and including the first `event_type`."""
        events = []
        async with asyncio.timeout(wait_s):
            while True:
                events.append(await self.next_event(wait_s))
                if events[-1]["event_type"] == event_type:
                    return events


class Podium:
    """Test-side access to the running Podium stand-in, through its HTTP and WS contract only."""

    def __init__(self, stack: LocalStack, http: httpx.AsyncClient) -> None:
        self.stack = stack
        self.http = http
        self.url = stack.podium_url

    async def create_instance(
        self,
        agent_type: str,
        config: dict[str, Any] | None = None,
        secrets: dict[str, str] | None = None,
    ) -> str:
        """An instance as the gateway creates one: its secrets (by default the Ensemble key the
        chat agent needs) sealed for its tenant and session."""
        found = await self.http.get(
            f"{self.url}/api/v1/deployments", params={"agent_type": agent_type}
        )
        deployment_id = found.json()["deployments"][0]["deployment_id"]
        created = await self.http.post(
            f"{self.url}/api/v1/instances",
            json={
                "deployment_id": deployment_id,
                "config": config or {},
                "secrets": {
                    "sealed": seal(
                        {"ensemble_api_key": API_KEY} if secrets is None else secrets, **SEALED
                    )
                },
                "metadata": METADATA,
            },
        )
        assert created.status_code == 201, created.text
        return created.json()["instance_id"]

    def ws_url(self, instance_id: str) -> str:
        return self.url.replace("http://", "ws://") + f"/agent/{instance_id}"

    @asynccontextmanager
    async def runtime(self, instance_id: str) -> AsyncIterator[RuntimeSocket]:
        async with connect(self.ws_url(instance_id), additional_headers=AUTH, open_timeout=3) as ws:
            yield RuntimeSocket(ws)

    async def messages(self, instance_id: str, **params: Any) -> dict[str, Any]:
        reply = await self.http.get(
            f"{self.url}/api/v1/instances/{instance_id}/messages", params=params
        )
        assert reply.status_code == 200, reply.text
        return reply.json()

    @staticmethod
    def streamed_text(events: list[dict[str, Any]]) -> str:
        return "".join(e["content"]["text"] for e in events if e["event_type"] == "stream_update")


@pytest.fixture
def podium(stack: LocalStack, client: httpx.AsyncClient) -> Podium:
    return Podium(stack, client)
