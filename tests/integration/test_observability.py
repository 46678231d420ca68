"""Metrics in Prometheus text format and bounded JSON logs under DATA_DIR/logs/."""

from __future__ import annotations

import json

import httpx

from tests.conftest import client
from tests.integration.test_sessions import join_ready, new_session


async def test_metrics_scrape_in_prometheus_text_format(start_gateway) -> None:
    gw = start_gateway(WS_RATE_LIMIT="3/10s")
    async with client(gw.ws_url) as c:
        session_id = await new_session(c)
        await join_ready(c, session_id)
        events = await c.request({"type": "get_events", "sessionId": session_id, "afterSeq": 0})
        assert events["type"] == "events"
        await c.send({"type": "ping"})
        await c.send({"type": "ping"})
        await c.recv_until(lambda f: f.get("code") == "RATE_LIMITED")
        async with httpx.AsyncClient() as http:
            response = await http.get(f"{gw.url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    samples = {
        line.split(" ")[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert samples["diminuendo_connections"] == 1
    assert samples["diminuendo_authenticated_connections"] == 1
    assert samples['diminuendo_active_sessions{state="ready"}'] == 1
    assert samples["diminuendo_rate_limited_total"] >= 1
    assert samples['diminuendo_errors_total{code="RATE_LIMITED"}'] >= 1
    assert samples['diminuendo_upstream_request_seconds_count{service="unison"}'] >= 1
    assert samples["diminuendo_ws_messages_in_total"] >= 4
    assert samples["diminuendo_replay_requests_total"] == 1
    assert "# TYPE diminuendo_upstream_request_seconds histogram" in text


async def test_json_logs_land_in_data_dir_with_context(start_gateway, tmp_path) -> None:
    gw = start_gateway(LOG_LEVEL="debug")
    async with client(gw.ws_url) as c:
        await new_session(c)
    log_file = tmp_path / "logs" / "diminuendo.log"
    assert log_file.is_file()
    lines = [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]
    assert lines and all({"ts", "level", "msg"} <= set(line) for line in lines)
    assert any(line.get("client_id") for line in lines), "connection ids travel with log lines"
