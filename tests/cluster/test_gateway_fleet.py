"""The gateway with `REDIS_URL` (issue 16 step 1): real gateway processes, a real Valkey.

Set, the gateway builds its fleet objects and `/health` reports Valkey as a dependency; Valkey
unreachable at start, it starts anyway and says `degraded` with the reason (no password); unset,
redis-py is not even imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from diminuendo.local.ports import free_port
from diminuendo.local.valkey import LocalValkey
from tests.conftest import Stack, gateway_process


def test_gateway_with_redis_url_reports_valkey_in_health(
    stack: Stack, valkey_server: LocalValkey, tmp_path: Path
) -> None:
    gw = gateway_process(stack, tmp_path, REDIS_URL=valkey_server.url)
    gw.start()
    try:
        body = httpx.get(f"{gw.url}/health", timeout=5).json()
        valkey = body["dependencies"]["valkey"]
        assert (body["status"], valkey["ok"], valkey["mode"], valkey["reason"]) == (
            "ok",
            True,
            "valkey",
            None,
        )
    finally:
        gw.stop()


def test_valkey_unreachable_at_start_means_degraded_with_the_reason(
    stack: Stack, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens there
    gw = gateway_process(stack, tmp_path, REDIS_URL=f"redis://:hunter2@127.0.0.1:{port}/0")
    gw.start()
    try:
        response = httpx.get(f"{gw.url}/health", timeout=5)
        body = response.json()
        valkey = body["dependencies"]["valkey"]
        assert response.status_code == 200 and body["status"] == "degraded"
        assert (valkey["ok"], valkey["mode"]) == (False, "memory")
        assert f"127.0.0.1:{port}" in valkey["reason"]
        assert "hunter2" not in response.text and "hunter2" not in gw.output()
    finally:
        gw.stop()


def test_without_redis_url_redis_is_never_imported(tmp_path: Path) -> None:
    """Unset, the gateway's object graph is today's: no fleet, and redis-py not loaded."""
    code = (
        "import sys\n"
        "from diminuendo.settings import load_settings\n"
        "from diminuendo.gateway.context import Gateway\n"
        "g = Gateway(load_settings({'DEV_MODE': 'true', 'DATA_DIR': sys.argv[1]}, None))\n"
        "assert g.fleet is None\n"
        "print(sorted(m for m in sys.modules if m == 'redis' or m.startswith('redis.')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        env={k: v for k, v in os.environ.items() if k != "REDIS_URL"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_one_gateway_holds_one_pubsub_connection(
    stack: Stack, valkey_server: LocalValkey, tmp_path: Path
) -> None:
    """Tenant broadcasts, the inbox of forwarded commands and followed sessions share one
    subscriber connection per process (`Fleet.bus`). Before the fix: 2 seen here (each part
    opened its own)."""
    from redis import Redis

    gw = gateway_process(stack, tmp_path, REDIS_URL=valkey_server.url)
    gw.start()
    try:
        with httpx.Client(base_url=gw.url, timeout=5) as http:
            created = http.post("/api/threads", json={"agentType": "echo"})
            assert created.status_code == 201, created.text
            http.get(f"/api/threads/{created.json()['id']}")  # the tenant is followed now
        with Redis.from_url(valkey_server.url) as valkey:
            subscribers = valkey.client_list(_type="pubsub")
            assert len(subscribers) == 1, subscribers
            assert int(subscribers[0]["sub"]) >= 2  # its inbox and the tenant's channel
    finally:
        gw.stop()
