"""The dev console (PROTOCOL.md §1): `GET /` and its assets in dev mode only, with the security
headers, correct content types, and nothing else reachable through `/console/`."""

from __future__ import annotations

import re
import socket

import httpx
import pytest

from diminuendo.gateway.headers import SECURITY_HEADERS
from diminuendo.settings import LOCAL_STACK_SECRETS_KEY
from tests.conftest import Gateway, free_port

NOT_FOUND = {"error": {"code": "NOT_FOUND", "message": "Not found"}}


def raw_get(port: int, target: str) -> tuple[int, bytes]:
    """A GET with the request target sent byte for byte: HTTP clients normalise `..` away."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        sock.sendall(request.encode("latin-1"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_index_is_served_in_dev_mode(gateway: Gateway) -> None:
    response = httpx.get(f"{gateway.url}/", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value, name
    page = response.text
    assert '<script src="/console/console.js"' in page
    assert 'href="/console/console.css"' in page
    # The CSP forbids inline script: every <script> loads a same-origin file and is empty.
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page, re.S)
    assert scripts and all(
        'src="/console/' in attrs and not body.strip() for attrs, body in scripts
    )
    assert not re.search(r"\son[a-z]+\s*=", page), "inline event handlers are blocked by the CSP"


@pytest.mark.parametrize(
    ("name", "content_type", "marker"),
    [
        ("console.js", "text/javascript", b"WebSocket"),
        ("console.css", "text/css", b".transcript"),
        ("index.html", "text/html", b"<!doctype html>"),
    ],
)
def test_assets_have_their_content_types(
    gateway: Gateway, name: str, content_type: str, marker: bytes
) -> None:
    response = httpx.get(f"{gateway.url}/console/{name}", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == content_type
    assert response.headers["x-content-type-options"] == "nosniff"
    assert (
        response.headers["content-security-policy"] == SECURITY_HEADERS["Content-Security-Policy"]
    )
    assert marker in response.content


@pytest.mark.parametrize("name", ["missing.js", "console.py", "__init__.py", "CONSOLE.JS", ""])
def test_unknown_asset_is_not_found(gateway: Gateway, name: str) -> None:
    response = httpx.get(f"{gateway.url}/console/{name}", timeout=5)
    assert response.status_code == 404
    assert response.json() == NOT_FOUND


@pytest.mark.parametrize(
    "target",
    [
        "/console/../app.py",
        "/console/../../diminuendo/app.py",
        "/console/..%2fapp.py",
        "/console/..%2Fapp.py",
        "/console/%2e%2e/app.py",
        "/console/%2e%2e%2fapp.py",
        "/console/%2E%2E%2Fapp.py",
        "/console/%252e%252e%252fapp.py",
        "/console/..%5capp.py",
        "/console/..\\app.py",
        "/console/console.js/../../app.py",
        "/console/%2e%2e%2f%2e%2e%2fsettings.py",
        "/console/..%2f..%2f..%2fetc%2fpasswd",
        "/console//etc/passwd",
        "/console/%2fetc%2fpasswd",
        "/console/console.js%00.py",
    ],
)
def test_path_traversal_is_not_found(gateway: Gateway, target: str) -> None:
    status, body = raw_get(gateway.port, target)
    assert status == 404, (target, body[:200])
    assert b"import" not in body and b"root:" not in body


def test_not_served_in_production_mode(start_gateway) -> None:
    gw = start_gateway(
        DEV_MODE="false",
        AUTH0_DOMAIN=f"http://127.0.0.1:{free_port()}",
        AUTH0_AUDIENCE="x",
        PODIUM_SECRETS_KEY=LOCAL_STACK_SECRETS_KEY,
    )
    for path in ("/", "/console/console.js", "/console/console.css", "/console/index.html"):
        response = httpx.get(f"{gw.url}{path}", timeout=5)
        assert response.status_code == 404, path
        assert response.json() == NOT_FOUND
        assert response.headers["x-content-type-options"] == "nosniff"
