"""A real OpenAI-compatible server for tests: stdlib `http.server` on 127.0.0.1 in a thread.

It serves `GET /v1/models` and `POST /v1/chat/completions` (plain, or SSE with `stream: true`),
answers deterministically (`reply()`), records what it was sent, and can be switched to fail.
HTTP/1.0, one connection per request: once `stop()` returns nothing answers on the port, so a
stopped server is an unreachable endpoint, not a pooled connection still being served.
"""

from __future__ import annotations

import json
import re
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODELS = ("fake-llama", "fake-qwen")
# Non-streaming usage reports these, so tests can tell them from the stand-in's own word count.
PROMPT_TOKENS = 42
TOKENS_PER_PIECE = 2
# What `fail` can be set to (None: behave):
#   "http"      chat completions answer 500 with an error that quotes the Authorization header
#   "malformed" a stream sends one good chunk, then a chunk that is not JSON
#   "truncated" a stream sends one good chunk, then closes without a finish reason or [DONE]
FAIL_MODES = ("http", "malformed", "truncated")
_PIECE = re.compile(r"\S+\s*|\s+")


def reply(messages: list[dict[str, Any]]) -> str:
    """The fake model's answer to a conversation: it quotes the last user message."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return f"Fake model heard: {message.get('content', '')}. Over and out."
    return "Fake model heard nothing."


class FakeOpenAI:
    def __init__(self, port: int = 0, delta_delay_s: float = 0.005) -> None:
        self.fail: str | None = None
        self.delta_delay_s = delta_delay_s
        self.authorizations: list[str | None] = []  # the header of every request, in order
        self.chat_requests: list[dict[str, Any]] = []  # the bodies of chat completion requests
        self.model_listings = 0
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    def start(self) -> FakeOpenAI:
        server = _Server(("127.0.0.1", self._port), _handler(self))
        self._port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        self._server = server
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-stream (an interrupted turn) is normal here, not an error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: pytest output is for the tests

        def do_GET(self) -> None:
            fake.authorizations.append(self.headers.get("Authorization"))
            if self.path != "/v1/models":
                return self._json(404, {"error": {"message": "not found"}})
            fake.model_listings += 1
            data = [{"id": model, "object": "model", "owned_by": "fake"} for model in MODELS]
            self._json(200, {"object": "list", "data": data})

        def do_POST(self) -> None:
            fake.authorizations.append(self.headers.get("Authorization"))
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            if self.path != "/v1/chat/completions":
                return self._json(404, {"error": {"message": "not found"}})
            fake.chat_requests.append(body)
            if fake.fail == "http":
                seen = self.headers.get("Authorization")
                return self._json(500, {"error": {"message": f"model crashed (auth: {seen})"}})
            if body.get("model") not in MODELS:
                return self._json(404, {"error": {"message": "no such model"}})
            pieces = _PIECE.findall(reply(body["messages"]))
            finish = "stop"
            if body.get("max_tokens") is not None and len(pieces) > body["max_tokens"]:
                pieces, finish = pieces[: body["max_tokens"]], "length"
            if body.get("stream"):
                return self._stream(body["model"], pieces, finish)
            text = "".join(pieces)
            message = {"role": "assistant", "content": text}
            self._json(
                200,
                {
                    "id": f"chatcmpl-{secrets.token_hex(4)}",
                    "object": "chat.completion",
                    "model": body["model"],
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": {
                        "prompt_tokens": PROMPT_TOKENS,
                        "completion_tokens": TOKENS_PER_PIECE * len(pieces),
                        "total_tokens": PROMPT_TOKENS + TOKENS_PER_PIECE * len(pieces),
                    },
                },
            )

        def _json(self, status: int, payload: dict[str, Any]) -> None:
            encoded = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(encoded)))
            self.end_headers()
            self.wfile.write(encoded)

        def _stream(self, model: str, pieces: list[str], finish: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            chunk_id = f"chatcmpl-{secrets.token_hex(4)}"

            def send(delta: dict[str, Any], finish_reason: str | None = None) -> None:
                chunk = {
                    "id": chunk_id,
                    "object": "chat.completion.chunk",
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
                }
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())

            send({"role": "assistant", "content": ""})
            self.wfile.write(b": keep-alive comments are part of SSE\n\n")
            for index, piece in enumerate(pieces):
                time.sleep(fake.delta_delay_s)
                send({"content": piece})
                if index == 0 and fake.fail == "malformed":
                    self.wfile.write(b"data: {this is not json\n\n")
                    return
                if index == 0 and fake.fail == "truncated":
                    return
            send({}, finish)
            self.wfile.write(b"data: [DONE]\n\n")

    return Handler
