"""The shared HTTP edge to an upstream service: auth header, request id, timeouts, retry, breaker.

Every upstream adapter (`podium`, `ensemble`, `unison`) sends through one `UpstreamHttp`, so the
policy of UPSTREAMS.md — explicit timeouts, at most 3 tries of transient failures, a breaker per
service, failures surfacing as `UPSTREAM_UNAVAILABLE`/`UPSTREAM_ERROR` — is decided here once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from loguru import logger

from diminuendo.observability import context
from diminuendo.observability.tracing import inject_headers, span
from diminuendo.protocol.errors import ErrorCode, GatewayError
from diminuendo.upstreams.resilience import CircuitBreaker, CircuitOpen, backoff_delay

DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=2.0)
TRANSIENT_STATUSES = frozenset({502, 503, 504})
MAX_TRIES = 3

# Observer of (service, seconds, ok): the Gateway passes the metrics recorder in, so upstreams
# import nothing above them and no module-level list outlives a Gateway.
CallObserver = Callable[[str, float, bool], None]


def _ignore_call(service: str, seconds: float, ok: bool) -> None:
    """The default observer: a client built without metrics (tests, tools) records nothing."""


class UpstreamHttp:
    def __init__(
        self,
        service: str,
        base_url: str,
        api_key: str,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        breaker: CircuitBreaker | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        observe: CallObserver = _ignore_call,
    ) -> None:
        self.service = service
        self._observe = observe
        self.base_url = base_url.rstrip("/")
        self.breaker = breaker or CircuitBreaker()
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
            timeout=timeout,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            transport=transport,
        )

    def __repr__(self) -> str:  # never show the key
        return f"UpstreamHttp({self.service!r}, {self.base_url!r})"

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        ok: tuple[int, ...] = (200,),
        passthrough: tuple[int, ...] = (),
        timeout: httpx.Timeout | float | None = None,
        retry: bool = True,
    ) -> httpx.Response:
        """Send one logical call. Statuses in `ok` or `passthrough` are returned to the caller;
        transient failures are retried; anything else raises `GatewayError`."""
        headers = {"X-Request-ID": context.request_id.get() or context.new_request_id()}
        extra = {} if timeout is None else {"timeout": timeout}
        tries = MAX_TRIES if retry else 1
        for attempt in range(1, tries + 1):
            try:
                self.breaker.before_call()
            except CircuitOpen:
                raise GatewayError(
                    ErrorCode.UPSTREAM_UNAVAILABLE, f"{self.service.capitalize()} is unavailable"
                ) from None
            started = time.perf_counter()
            try:
                with span(f"{self.service} {method}", kind="client", url_path=path):
                    inject_headers(headers)
                    response = await self._client.request(
                        method, path, json=json, params=params, headers=headers, **extra
                    )
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                self._failed(started, f"{type(exc).__name__}")
                if attempt < tries:
                    await asyncio.sleep(backoff_delay(attempt))
                    continue
                raise self._unavailable() from None
            except httpx.HTTPError as exc:  # read timeouts, protocol errors: maybe processed
                self._failed(started, f"{type(exc).__name__}")
                raise self._unavailable() from None
            if response.status_code in TRANSIENT_STATUSES:
                self._failed(started, f"HTTP {response.status_code}")
                if attempt < tries:
                    await asyncio.sleep(backoff_delay(attempt))
                    continue
                raise self._unavailable()
            self._succeeded(started)
            if response.status_code in ok or response.status_code in passthrough:
                return response
            logger.warning("{} {} {} answered {}", self.service, method, path, response.status_code)
            raise GatewayError(
                ErrorCode.UPSTREAM_ERROR,
                f"{self.service.capitalize()} rejected the request ({response.status_code})",
            )
        raise AssertionError("unreachable")  # pragma: no cover

    async def get_json(self, path: str, **kwargs: Any) -> Any:
        return (await self.request("GET", path, **kwargs)).json()

    def _unavailable(self) -> GatewayError:
        return GatewayError(
            ErrorCode.UPSTREAM_UNAVAILABLE, f"{self.service.capitalize()} is unavailable"
        )

    def _failed(self, started: float, reason: str) -> None:
        self.breaker.record_failure()
        elapsed = time.perf_counter() - started
        logger.warning("{} call failed: {} after {:.0f} ms", self.service, reason, elapsed * 1000)
        self._observe(self.service, elapsed, False)

    def _succeeded(self, started: float) -> None:
        self.breaker.record_success()
        elapsed = time.perf_counter() - started
        self._observe(self.service, elapsed, True)
