"""The Ensemble stand-in proxying an OpenAI-compatible endpoint (UPSTREAMS.md §4), against a real
fake endpoint on loopback (`fake_openai.py`): catalogue, generation, streaming, the chat agent,
failures and the API key."""

import json
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from loguru import logger

from diminuendo.local import openai_proxy
from diminuendo.local.stack import LocalStack, LocalStackConfig
from tests.local.conftest import Podium, free_ports
from tests.local.fake_openai import MODELS, PROMPT_TOKENS, TOKENS_PER_PIECE, FakeOpenAI, reply

pytestmark = pytest.mark.timeout(10)

OPENAI_KEY = f"sk-test-{secrets.token_hex(12)}"


@pytest.fixture
def logs() -> Iterator[list[str]]:
    """Everything logged while the test runs, tracebacks included."""
    lines: list[str] = []
    sink = logger.add(lines.append, level="DEBUG", format="{message}\n{exception}")
    yield lines
    logger.remove(sink)


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def stack(
    fake: FakeOpenAI,
    config: LocalStackConfig,
    logs: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[LocalStack]:
    """The conftest stack, with Ensemble pointed at the fake endpoint. `fake` binds before
    `config` picks its ports, so the two never pick the same one."""
    monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    local = LocalStack(config)
    await local.start()
    try:
        yield local
    finally:
        await local.stop()


def rpc(method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": "req-1", "method": method, "params": params or {}}


MESSAGES = [
    {"role": "user", "content": "earlier"},
    {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
    {"role": "user", "content": "hello there"},
]
EXPECTED = reply([{"role": "user", "content": "hello there"}])


def generate(model: str = "fake-llama", **extra: Any) -> dict[str, Any]:
    return rpc("inference/generate", {"model": model, "messages": MESSAGES, **extra})


async def list_ids(stack: LocalStack, client: httpx.AsyncClient) -> list[str]:
    reply = await client.post(f"{stack.ensemble_url}/rpc", json=rpc("inference/models.list"))
    return [model["id"] for model in reply.json()["result"]["models"]]


async def stream(
    stack: LocalStack, client: httpx.AsyncClient, body: dict[str, Any]
) -> list[tuple[str, dict[str, Any]]]:
    async with client.stream("POST", f"{stack.ensemble_url}/rpc", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = (await response.aread()).decode()
    events = []
    for block in raw.split("\n\n"):
        if block.strip():
            fields = dict(line.split(": ", 1) for line in block.splitlines())
            events.append((fields["event"], json.loads(fields["data"])))
    return events


def assert_no_key(*texts: Any) -> None:
    for text in texts:
        assert OPENAI_KEY not in str(text)


async def test_models_list_merges_the_endpoint(stack: LocalStack, client: httpx.AsyncClient, fake):
    reply = await client.post(f"{stack.ensemble_url}/rpc", json=rpc("inference/models.list"))
    models = reply.json()["result"]["models"]
    assert [m["id"] for m in models] == ["mock", "mock-slow", *MODELS]
    assert models[2] == {
        "id": "fake-llama",
        "provider": "openai-compatible",
        "capabilities": {"streaming": True, "tools": False},
    }
    assert await list_ids(stack, client) == ["mock", "mock-slow", *MODELS]
    assert fake.model_listings == 1  # cached
    assert fake.authorizations == [f"Bearer {OPENAI_KEY}"]


async def test_generate_proxies_a_completion(stack: LocalStack, client: httpx.AsyncClient, fake):
    reply = await client.post(f"{stack.ensemble_url}/rpc", json=generate())
    result = reply.json()["result"]
    assert result["content"] == [{"type": "text", "text": EXPECTED}]
    assert result["model"] == "fake-llama"
    assert result["finishReason"] == "stop"
    assert result["id"].startswith("gen_")
    assert result["usage"] == {"inputTokens": PROMPT_TOKENS, "outputTokens": TOKENS_PER_PIECE * 8}
    sent = fake.chat_requests[-1]
    assert sent["messages"] == [
        {"role": "user", "content": "earlier"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "hello there"},
    ]
    assert sent["stream"] is False and "max_tokens" not in sent
    assert fake.authorizations[-1] == f"Bearer {OPENAI_KEY}"

    reply = await client.post(f"{stack.ensemble_url}/rpc", json=generate(max_tokens=2))
    result = reply.json()["result"]
    assert result["content"][0]["text"] == "Fake model "
    assert result["finishReason"] == "length"
    assert fake.chat_requests[-1]["max_tokens"] == 2


async def test_streaming_deltas_add_up_to_the_completed_text(
    stack: LocalStack, client: httpx.AsyncClient, fake
):
    events = await stream(stack, client, generate(stream=True))
    names = [name for name, _ in events]
    assert names[0] == "started" and names[-1] == "completed"
    assert set(names[1:-1]) == {"delta"} and len(names) > 4
    streamed = "".join(data["text"] for name, data in events if name == "delta")
    completed = events[-1][1]
    assert streamed == completed["content"][0]["text"] == EXPECTED
    assert completed["id"] == events[0][1]["id"]
    assert completed["model"] == "fake-llama" and completed["finishReason"] == "stop"
    # The fake reports no usage when streaming: the stand-in counts, as it does for mock.
    assert completed["usage"] == {"inputTokens": 4, "outputTokens": 8}
    assert fake.chat_requests[-1]["stream"] is True

    events = await stream(stack, client, generate(stream=True, max_tokens=3))
    assert events[-1][0] == "completed" and events[-1][1]["finishReason"] == "length"


async def test_mock_models_and_unknown_models_are_untouched(
    stack: LocalStack, client: httpx.AsyncClient, fake
):
    reply = await client.post(f"{stack.ensemble_url}/rpc", json=generate(model="mock"))
    assert reply.json()["result"]["content"][0]["text"].startswith("You said: hello there.")
    reply = await client.post(f"{stack.ensemble_url}/rpc", json=generate(model="gpt-nothing"))
    assert reply.json()["error"]["code"] == -32602
    assert fake.chat_requests == []


@pytest.mark.parametrize(
    ("fail", "code"),
    [
        ("http", "UPSTREAM_ERROR"),
        ("malformed", "UPSTREAM_PROTOCOL"),
        ("truncated", "UPSTREAM_PROTOCOL"),
    ],
)
async def test_upstream_failure_is_a_failed_event(
    stack: LocalStack, client: httpx.AsyncClient, fake, logs: list[str], fail: str, code: str
):
    fake.fail = fail
    events = await stream(stack, client, generate(stream=True))
    names = [name for name, _ in events]
    assert names[0] == "started" and names[-1] == "failed"
    assert "completed" not in names
    failed = events[-1][1]
    assert failed["code"] == code
    assert fake.base_url in failed["message"]
    if fail == "http":
        # The fake quotes the Authorization header in its error: it is scrubbed on the way out.
        assert "HTTP 500" in failed["message"] and "[redacted]" in failed["message"]
    assert fake.authorizations[-1] == f"Bearer {OPENAI_KEY}"
    assert any(failed["message"] in line for line in logs)
    assert_no_key(events, *logs)


async def test_upstream_down(stack: LocalStack, client: httpx.AsyncClient, fake, logs: list[str]):
    assert "fake-llama" in await list_ids(stack, client)
    fake.stop()
    events = await stream(stack, client, generate(stream=True))
    assert [name for name, _ in events] == ["started", "failed"]
    assert events[-1][1]["code"] == "UPSTREAM_UNAVAILABLE"
    reply = (await client.post(f"{stack.ensemble_url}/rpc", json=generate())).json()
    assert reply["error"]["code"] == -32000
    assert reply["error"]["data"] == {"code": "UPSTREAM_UNAVAILABLE"}
    assert "unreachable" in reply["error"]["message"]
    assert_no_key(events, reply, *logs)


async def test_chat_agent_streams_the_real_model(podium: Podium, fake) -> None:
    instance_id = await podium.create_instance("chat", {"model": "fake-llama"})
    async with podium.runtime(instance_id) as runtime:
        await runtime.send("process_message", text="hi model", turn_id="trn_1")
        first = await runtime.until("stream_end")
        await runtime.send("process_message", text="and again", turn_id="trn_2")
        second = await runtime.until("stream_end")
    end = first[-1]["content"]
    assert end["final_text"] == reply([{"role": "user", "content": "hi model"}])
    assert end["stop_reason"] == "end_turn"
    updates = [e for e in first if e["event_type"] == "stream_update"]
    assert len(updates) > 3
    assert podium.streamed_text(first) == end["final_text"]
    assert second[-1]["content"]["final_text"].startswith("Fake model heard: and again.")
    # The whole transcript went to the real model.
    assert [m["role"] for m in fake.chat_requests[-1]["messages"]] == ["user", "assistant", "user"]
    assert fake.chat_requests[-1]["messages"][1]["content"] == end["final_text"]


async def test_chat_agent_turn_ends_with_an_error_when_the_endpoint_is_down(
    podium: Podium, fake, logs: list[str]
) -> None:
    instance_id = await podium.create_instance("chat", {"model": "fake-llama"})
    fake.stop()
    async with podium.runtime(instance_id) as runtime:
        await runtime.send("process_message", text="anyone there?", turn_id="trn_1")
        events = await runtime.until("error")
    error = events[-1]["content"]
    assert error["code"] == "AGENT_ERROR" and error["turn_id"] == "trn_1"
    assert "failed" in error["message"] and "unreachable" in error["message"]
    assert "stream_end" not in [e["event_type"] for e in events]
    assert_no_key(events, *logs)


async def test_unreachable_endpoint_keeps_the_mock_models(
    config: LocalStackConfig,
    client: httpx.AsyncClient,
    logs: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    late = FakeOpenAI(port=free_ports(1)[0])  # never one of the stack's: no port is reissued
    monkeypatch.setenv("OPENAI_BASE_URL", late.base_url)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setattr(openai_proxy, "FAILED_LISTING_TTL_S", 0.0)  # retry at every listing
    local = LocalStack(config)
    await local.start()
    try:
        for _ in range(3):
            assert await list_ids(local, client) == ["mock", "mock-slow"]
        warnings = [line for line in logs if "cannot list models" in line]
        assert len(warnings) == 1 and late.base_url in warnings[0]
        with late:  # the endpoint comes up: the next listing has its models
            assert await list_ids(local, client) == ["mock", "mock-slow", *MODELS]
            assert late.authorizations == [None]  # no key configured: no Authorization header
    finally:
        await local.stop()


async def test_no_base_url_is_mock_only(
    config: LocalStackConfig, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    local = LocalStack(config)
    await local.start()
    try:
        assert await list_ids(local, client) == ["mock", "mock-slow"]
        reply = await client.post(f"{local.ensemble_url}/rpc", json=generate())
        assert reply.json()["error"]["code"] == -32602
    finally:
        await local.stop()


def test_proxy_configuration_hides_the_key() -> None:
    assert openai_proxy.OpenAIProxy.from_env({"OPENAI_API_KEY": OPENAI_KEY}) is None
    assert openai_proxy.OpenAIProxy.from_env({"OPENAI_BASE_URL": "  "}) is None
    proxy = openai_proxy.OpenAIProxy.from_env(
        {"OPENAI_BASE_URL": "https://user:pw@models.example/v1/", "OPENAI_API_KEY": OPENAI_KEY}
    )
    assert proxy is not None
    assert proxy.base_url == "https://user:pw@models.example/v1"
    assert proxy.display_url == "https://models.example/v1"
    assert_no_key(repr(proxy))
