"""The OpenAPI document covers every REST route with msgspec-generated schemas, and validates."""

from __future__ import annotations

import httpx
from openapi_spec_validator import validate

from tests.conftest import Gateway

ROUTES = {
    ("/api/threads", "get"),
    ("/api/threads", "post"),
    ("/api/threads/{session_id}", "get"),
    ("/api/threads/{session_id}", "patch"),
    ("/api/threads/{session_id}", "delete"),
    ("/api/threads/{session_id}/messages", "get"),
    ("/api/threads/{session_id}/messages", "post"),
    ("/api/threads/{session_id}/stop", "post"),
    ("/api/threads/{session_id}/steer", "post"),
    ("/api/threads/{session_id}/answer", "post"),
    ("/api/threads/{session_id}/events", "get"),
    ("/api/models", "get"),
    ("/api/me", "get"),
}


async def test_openapi_document_validates_and_covers_every_route(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        response = await http.get("/docs/openapi.json")
        assert response.status_code == 200
        doc = response.json()
        validate(doc)
        documented = {(path, verb) for path, verbs in doc["paths"].items() for verb in verbs}
        assert documented >= ROUTES, ROUTES - documented
        schemas = doc["components"]["schemas"]
        assert schemas["CreateThread"]["required"] == ["agentType"]
        assert schemas["CreateThread"]["properties"]["agentType"]["maxLength"] == 64
        assert "instanceId" not in schemas["SessionMeta"]["properties"]
        post = doc["paths"]["/api/threads"]["post"]
        assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
            "/CreateThread"
        )
        assert "201" in post["responses"] and "400" in post["responses"]

        # A real reply matches the documented SessionMeta properties exactly.
        created = (await http.post("/api/threads", json={"agentType": "echo"})).json()
        assert set(created) == set(schemas["SessionMeta"]["properties"])
