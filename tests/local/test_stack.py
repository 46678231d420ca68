"""The stack as a whole: restart persistence, port clashes, lifecycle and the blocking runner."""

import signal
import socket
import subprocess
import sys
from dataclasses import replace

import httpx
import pytest

from diminuendo.local.stack import LocalStack, LocalStackConfig
from diminuendo.upstreams.sealing import SealingKey
from tests.local.conftest import API_KEY

pytestmark = pytest.mark.timeout(20)


async def answer_demo_turn(runtime, turn_id: str, text: str) -> list[dict]:
    await runtime.send("process_message", text=text, turn_id=turn_id)
    events = await runtime.until("tool.question_requested")
    request_id = events[-1]["content"]["request_id"]
    await runtime.send("answer", request_id=request_id, answers={"q1": "keep"}, approved=True)
    return events + await runtime.until("stream_end")


async def test_state_survives_a_restart(
    stack: LocalStack, config: LocalStackConfig, podium, client: httpx.AsyncClient
) -> None:
    instance_id = await podium.create_instance("demo", {"delay_ms": 1})
    async with podium.runtime(instance_id) as runtime:
        await answer_demo_turn(runtime, "trn_1", "before the restart")
    session = f"{stack.unison_url}/api/v1/kv/tenant%3At1%2Fsessions/s1"
    written = (await client.put(session, json={"value": {"name": "kept"}, "actor": "u1"})).json()
    before = await podium.messages(instance_id)
    await stack.stop()

    restarted = LocalStack(config)
    await restarted.start()
    try:
        instance = await client.get(f"{podium.url}/api/v1/instances/{instance_id}")
        assert instance.status_code == 200
        assert instance.json()["config"] == {"delay_ms": 1}
        assert await podium.messages(instance_id) == before
        assert (await client.get(session)).json() == written

        async with podium.runtime(instance_id) as runtime:
            events = await answer_demo_turn(runtime, "trn_2", "after the restart")
        seen = {event["event_type"]: event["content"] for event in events}
        assert events[0]["content"]["event_id"] == 1  # a fresh runtime
        assert "sandbox.provisioning" not in seen  # not the instance's first turn
        assert seen["file.changed"]["iteration"] == 2
        assert len((await podium.messages(instance_id))["messages"]) == 4
    finally:
        await restarted.stop()


@pytest.mark.parametrize(
    ("restarted_key", "answer"),
    [(None, "You said: hello"), (SealingKey(b"r" * 32), "no ensemble_api_key")],
)
async def test_instance_secrets_are_kept_sealed_across_a_restart(
    stack: LocalStack,
    config: LocalStackConfig,
    podium,
    restarted_key: SealingKey | None,
    answer: str,
) -> None:
    """The chat agent's Ensemble key is opened again from the sealed copy after a restart; a
    stack restarted with another key cannot open it, and the turn says so (never runs keyless)."""
    instance_id = await podium.create_instance("chat")
    await stack.stop()
    database = b"".join(path.read_bytes() for path in stack.state_dir.glob("podium.sqlite3*"))
    assert API_KEY.encode() not in database

    restarted = LocalStack(replace(config, secrets_key=restarted_key or config.secrets_key))
    await restarted.start()
    try:
        async with podium.runtime(instance_id) as runtime:
            await runtime.send("process_message", text="hello", turn_id="trn_1")
            events = await runtime.until("stream_end" if restarted_key is None else "error")
        content = events[-1]["content"]
        assert answer in (content.get("final_text") or content.get("message", ""))
    finally:
        await restarted.stop()


async def test_a_taken_port_is_a_clear_error_and_nothing_stays_up(
    config: LocalStackConfig,
) -> None:
    with socket.socket() as squatter:
        squatter.bind((config.host, config.podium_port))
        squatter.listen()
        local = LocalStack(config)
        with pytest.raises(
            OSError, match=f"podium cannot listen on 127.0.0.1:{config.podium_port}"
        ):
            await local.start()
    for port in (config.unison_port, config.ensemble_port):
        with socket.socket() as probe:
            probe.bind((config.host, port))  # would fail if a stand-in still listened


async def test_stop_is_idempotent_and_the_stack_restarts(config: LocalStackConfig) -> None:
    local = LocalStack(config)
    await local.stop()
    await local.start()
    with pytest.raises(RuntimeError):
        await local.start()
    await local.stop()
    await local.stop()
    await local.start()
    try:
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{local.podium_url}/health")).status_code == 200
    finally:
        await local.stop()


def test_config_repr_hides_the_key(config: LocalStackConfig) -> None:
    shown = repr(replace(config, api_key="very-secret"))
    assert "very-secret" not in shown and "podium_port" in shown


def _runner(config: LocalStackConfig) -> subprocess.Popen[str]:
    code = (
        "import sys; from pathlib import Path;"
        "from diminuendo.local.stack import LocalStackConfig, run_local_stack;"
        "p, e, u = map(int, sys.argv[2:5]);"
        "sys.exit(run_local_stack(LocalStackConfig(Path(sys.argv[1]), podium_port=p,"
        " ensemble_port=e, unison_port=u)))"
    )
    ports = (config.podium_port, config.ensemble_port, config.unison_port)
    return subprocess.Popen(
        [sys.executable, "-c", code, str(config.data_dir), *map(str, ports)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_run_local_stack_serves_until_sigterm(config: LocalStackConfig) -> None:
    process = _runner(config)
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(3)]
        assert lines == [
            f"podium   http://127.0.0.1:{config.podium_port}\n",
            f"ensemble http://127.0.0.1:{config.ensemble_port}\n",
            f"unison   http://127.0.0.1:{config.unison_port}\n",
        ]
        health = httpx.get(f"http://127.0.0.1:{config.podium_port}/health", timeout=5)
        assert health.json() == {"status": "ok"}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.wait()
    assert (config.data_dir / "local-stack" / "podium.sqlite3").exists()


def test_run_local_stack_fails_cleanly_on_a_taken_port(config: LocalStackConfig) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", config.unison_port))
        squatter.listen()
        process = _runner(config)
        _, stderr = process.communicate(timeout=15)
    assert process.returncode == 1
    assert f"unison cannot listen on 127.0.0.1:{config.unison_port}" in stderr
