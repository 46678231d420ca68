"""The Ensemble stand-in's bridge to an OpenAI-compatible endpoint (UPSTREAMS.md §4).

`OpenAIProxy.from_env()` reads two environment variables when the stand-in is built:

- `OPENAI_BASE_URL`: the endpoint, including its version prefix, e.g.
  `http://127.0.0.1:11434/v1` (a local model server) or `https://api.openai.com/v1`.
  Unset or blank: no proxy, the stand-in serves only its mock models.
- `OPENAI_API_KEY`: optional; sent as `Authorization: Bearer …`. It is never logged and never
  appears in an error message (upstream error text is scrubbed of it too).

What is used of the endpoint: `GET {base}/models` (`data[].id`, cached 60 s; a failed listing is
retried after 5 s and logs one warning until the endpoint answers again) and
`POST {base}/chat/completions`, plain or with `stream: true` (SSE `data:` chunks ending with
`data: [DONE]`). Timeouts are explicit: connect 2 s, read 60 s for generation; connect 2 s,
read 3 s for the listing so the gateway's catalogue call (10 s) never waits on a stuck endpoint.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from loguru import logger

PROVIDER = "openai-compatible"
CATALOGUE_TTL_S = 60.0
FAILED_LISTING_TTL_S = 5.0
GENERATE_TIMEOUT = httpx.Timeout(60.0, connect=2.0)
LISTING_TIMEOUT = httpx.Timeout(3.0, connect=2.0)
_ERROR_BODY_LIMIT = 4096
_ERROR_TEXT_LIMIT = 200
_REDACTED = "[redacted]"

# The `code` of a `failed` event (and the `data.code` of a JSON-RPC error) for each way the
# endpoint can let a generation down.
UNAVAILABLE = "UPSTREAM_UNAVAILABLE"  # connection refused, DNS, connect timeout
TIMEOUT = "UPSTREAM_TIMEOUT"  # connected, then no answer within the read timeout
UPSTREAM_ERROR = "UPSTREAM_ERROR"  # an HTTP error status or an error object in the stream
PROTOCOL = "UPSTREAM_PROTOCOL"  # a malformed body or chunk, or a stream cut short


class UpstreamFailure(Exception):
    """A generation or listing the endpoint could not serve; the message is safe to show."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Completion:
    """What the endpoint produced; `stream_chat` fills it in as the stream goes."""

    text: str = ""
    finish_reason: str = "stop"
    # Token counts the endpoint reported, when it did (many servers omit them when streaming).
    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass(eq=False)
class OpenAIProxy:
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    _client: httpx.AsyncClient | None = field(default=None, init=False, repr=False)
    # (expires at, model ids or None when the last listing failed)
    _catalogue: tuple[float, list[str] | None] | None = field(default=None, init=False, repr=False)
    _listing_ok: bool = field(default=True, init=False, repr=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.base_url = self.base_url.strip().rstrip("/")
        self.api_key = (self.api_key or "").strip() or None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OpenAIProxy | None:
        env = os.environ if environ is None else environ
        base_url = (env.get("OPENAI_BASE_URL") or "").strip()
        if not base_url:
            return None
        return cls(base_url, env.get("OPENAI_API_KEY"))

    @property
    def display_url(self) -> str:
        """The base URL without user info or query, fit for logs and error messages."""
        try:
            url = httpx.URL(self.base_url)
        except httpx.InvalidURL:
            return "(invalid OPENAI_BASE_URL)"
        if url.scheme not in ("http", "https"):  # not a URL httpx can use: show it as given
            return self.base_url.rpartition("@")[2]
        port = f":{url.port}" if url.port else ""
        return f"{url.scheme}://{url.host}{port}{url.path}".rstrip("/")

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._client = httpx.AsyncClient(headers=headers, timeout=GENERATE_TIMEOUT)
        return self._client

    # the catalogue

    async def models(self) -> list[dict[str, Any]]:
        """The endpoint's models as Ensemble catalogue entries; [] while it cannot be listed."""
        return [
            {
                "id": model_id,
                "provider": PROVIDER,
                "capabilities": {"streaming": True, "tools": False},
            }
            for model_id in await self.model_ids() or []
        ]

    async def serves(self, model: str) -> bool:
        """Whether `generate` should go to the endpoint. When the endpoint cannot even be listed
        the answer is yes, so the caller learns that the endpoint is down rather than that the
        model does not exist."""
        ids = await self.model_ids()
        return ids is None or model in ids

    async def model_ids(self) -> list[str] | None:
        """The endpoint's model ids (cached), or None when it could not be listed."""
        async with self._lock:
            now = time.monotonic()
            if self._catalogue is not None and now < self._catalogue[0]:
                return self._catalogue[1]
            try:
                ids: list[str] | None = await self._fetch_ids()
            except UpstreamFailure as failure:
                if self._listing_ok:
                    logger.warning("local ensemble: cannot list models: {}", failure.message)
                self._listing_ok = False
                self._catalogue = (now + FAILED_LISTING_TTL_S, None)
                return None
            if not self._listing_ok:
                logger.info("local ensemble: {} lists its models again", self.display_url)
            self._listing_ok = True
            self._catalogue = (now + CATALOGUE_TTL_S, ids)
            return ids

    async def _fetch_ids(self) -> list[str]:
        body = await self._json_reply(
            self._http().get(f"{self.base_url}/models", timeout=LISTING_TIMEOUT),
            not_json=UpstreamFailure(PROTOCOL, f"{self.display_url}/models is not JSON"),
        )
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise UpstreamFailure(PROTOCOL, f"{self.display_url}/models has no `data` list")
        ids = []
        for entry in data:
            model_id = entry.get("id") if isinstance(entry, dict) else None
            if isinstance(model_id, str) and model_id and model_id not in ids:
                ids.append(model_id)
        return ids

    # generation

    def _payload(
        self, model: str, messages: list[dict[str, str]], max_tokens: int | None, stream: bool
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": model, "messages": messages, "stream": stream}
        if max_tokens is not None:
            payload["max_tokens"] = max_tokens
        return payload

    async def complete(
        self, model: str, messages: list[dict[str, str]], max_tokens: int | None
    ) -> Completion:
        """One non-streaming chat completion."""
        body = await self._json_reply(
            self._http().post(
                f"{self.base_url}/chat/completions",
                json=self._payload(model, messages, max_tokens, stream=False),
            ),
            not_json=self._malformed("the completion is not JSON"),
        )
        return self._completion(body)

    async def stream_chat(
        self,
        model: str,
        messages: list[dict[str, str]],
        max_tokens: int | None,
        outcome: Completion,
    ) -> AsyncIterator[str]:
        """Yield the text deltas of a streaming chat completion; `outcome` holds the whole text,
        the finish reason and any reported usage once the iteration ends without an exception.
        Raises `UpstreamFailure` for every way the endpoint fails (use `contextlib.aclosing`)."""
        parts: list[str] = []
        finished = False
        try:
            async with self._http().stream(
                "POST",
                f"{self.base_url}/chat/completions",
                json=self._payload(model, messages, max_tokens, stream=True),
            ) as response:
                if response.status_code >= 400:
                    raise self._status_failure(response.status_code, await _head(response))
                if not response.headers.get("content-type", "").startswith("text/event-stream"):
                    # A server that ignores `stream`: one JSON completion, relayed as one delta.
                    try:
                        whole = self._completion(jsonlib.loads(await response.aread()))
                    except ValueError:
                        raise self._malformed("the completion is not JSON") from None
                    if whole.text:
                        yield whole.text
                    _copy(whole, outcome)
                    return
                async for data in _sse_data(response):
                    if data.strip() == "[DONE]":
                        finished = True
                        break
                    pieces, chunk_finished = self._chunk(data, outcome)
                    finished = finished or chunk_finished
                    for piece in pieces:
                        parts.append(piece)
                        yield piece
        except httpx.HTTPError as exc:
            raise self._transport_failure(exc) from None
        if not finished:  # neither [DONE] nor a finish reason: the stream was cut short
            raise self._malformed("the stream ended before [DONE]")
        outcome.text = "".join(parts)

    def _chunk(self, data: str, outcome: Completion) -> tuple[list[str], bool]:
        """The text pieces of one stream chunk and whether it carries a finish reason; records
        the finish reason and usage in `outcome`."""
        try:
            chunk = jsonlib.loads(data)
        except ValueError:
            raise self._malformed("a stream chunk is not JSON") from None
        if not isinstance(chunk, dict):
            raise self._malformed("a stream chunk is not an object")
        if chunk.get("error"):
            raise UpstreamFailure(
                UPSTREAM_ERROR, f"{self.display_url} failed: {self._error_text(chunk['error'])}"
            )
        _record_usage(chunk.get("usage"), outcome)
        choices = chunk.get("choices", [])
        if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
            raise self._malformed("a stream chunk has no `choices` list")
        pieces, finished = [], False
        for choice in choices[:1]:  # n=1: only the first choice is ever asked for
            delta = choice.get("delta") or {}
            content = delta.get("content") if isinstance(delta, dict) else None
            if content is not None and not isinstance(content, str):
                raise self._malformed("a stream chunk's content is not text")
            if content:
                pieces.append(content)
            if isinstance(choice.get("finish_reason"), str):
                outcome.finish_reason, finished = choice["finish_reason"], True
        return pieces, finished

    def _completion(self, body: Any) -> Completion:
        choices = body.get("choices") if isinstance(body, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            if isinstance(body, dict) and body.get("error"):
                message = self._error_text(body["error"])
                raise UpstreamFailure(UPSTREAM_ERROR, f"{self.display_url} failed: {message}")
            raise self._malformed("the completion has no choices")
        message = choices[0].get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if content is not None and not isinstance(content, str):
            raise self._malformed("the completion's content is not text")
        finish = choices[0].get("finish_reason")
        outcome = Completion(text=content or "", finish_reason=finish or "stop")
        _record_usage(body.get("usage"), outcome)
        return outcome

    # failures: every message is built here, from parts known to be free of the key

    def _redact(self, text: str) -> str:
        return text.replace(self.api_key, _REDACTED) if self.api_key else text

    def _error_text(self, error: Any) -> str:
        if isinstance(error, dict):
            error = error.get("message") or error.get("error") or error
        if not isinstance(error, str):
            error = jsonlib.dumps(error)
        text = " ".join(self._redact(error).split())
        return text[:_ERROR_TEXT_LIMIT] + ("…" if len(text) > _ERROR_TEXT_LIMIT else "")

    async def _json_reply(
        self, request: Awaitable[httpx.Response], *, not_json: UpstreamFailure
    ) -> Any:
        """The JSON body of a plain (not streamed) request's reply. Every way it fails is an
        `UpstreamFailure`: the transport, an HTTP error status, or `not_json` for a body that is
        not JSON."""
        try:
            response = await request
            if response.status_code >= 400:
                raise self._status_failure(response.status_code, response.content)
            return response.json()
        except httpx.HTTPError as exc:
            raise self._transport_failure(exc) from None
        except ValueError:
            raise not_json from None

    def _status_failure(self, status: int, body: bytes) -> UpstreamFailure:
        try:
            detail = jsonlib.loads(body)
            if isinstance(detail, dict) and "error" in detail:
                detail = detail["error"]
        except ValueError:
            detail = body.decode("utf-8", "replace")
        text = self._error_text(detail) if detail else ""
        suffix = f": {text}" if text else ""
        return UpstreamFailure(UPSTREAM_ERROR, f"{self.display_url} answered HTTP {status}{suffix}")

    def _transport_failure(self, exc: httpx.HTTPError) -> UpstreamFailure:
        # Only the exception's type: httpx messages can quote URLs, and URLs can carry secrets.
        kind = type(exc).__name__
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return UpstreamFailure(UNAVAILABLE, f"{self.display_url} is unreachable ({kind})")
        if isinstance(exc, httpx.UnsupportedProtocol):
            message = f"OPENAI_BASE_URL {self.display_url} must start with http:// or https://"
            return UpstreamFailure(UNAVAILABLE, message)
        if isinstance(exc, httpx.TimeoutException):
            return UpstreamFailure(TIMEOUT, f"{self.display_url} did not answer in time ({kind})")
        return UpstreamFailure(
            UPSTREAM_ERROR, f"the connection to {self.display_url} failed ({kind})"
        )

    def _malformed(self, what: str) -> UpstreamFailure:
        return UpstreamFailure(PROTOCOL, f"{self.display_url} sent a malformed reply: {what}")


async def _sse_data(response: httpx.Response) -> AsyncIterator[str]:
    """The `data` of each server-sent event; comments and other fields are skipped."""
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield "\n".join(data)
            data = []
        elif line.startswith("data:"):
            value = line.removeprefix("data:")
            data.append(value.removeprefix(" "))
    if data:
        yield "\n".join(data)


async def _head(response: httpx.Response) -> bytes:
    """The start of an error body, without reading an unbounded stream."""
    body = b""
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= _ERROR_BODY_LIMIT:
            break
    return body[:_ERROR_BODY_LIMIT]


def _record_usage(usage: Any, outcome: Completion) -> None:
    if not isinstance(usage, dict):
        return
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if isinstance(prompt, int) and not isinstance(prompt, bool):
        outcome.input_tokens = prompt
    if isinstance(completion, int) and not isinstance(completion, bool):
        outcome.output_tokens = completion


def _copy(source: Completion, target: Completion) -> None:
    target.text = source.text
    target.finish_reason = source.finish_reason
    target.input_tokens = source.input_tokens
    target.output_tokens = source.output_tokens
