"""The gateway's upstream calls per service (count, seconds, failures), read from its /metrics:
what a measurement window cost Podium, Ensemble and Unison."""

from __future__ import annotations

from typing import Any

import httpx

_METRICS = (
    ("diminuendo_upstream_request_seconds_count", "calls"),
    ("diminuendo_upstream_request_seconds_sum", "seconds"),
    ("diminuendo_upstream_failures_total", "failures"),
)


def upstream_calls(url: str) -> dict[str, dict[str, float]]:
    """Upstream calls so far per service from the gateway's /metrics: count, seconds, failures."""
    out: dict[str, dict[str, float]] = {}
    try:
        text = httpx.get(f"{url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return out
    for line in text.splitlines():
        for metric, key in _METRICS:
            if line.startswith(metric + "{"):
                service = line.split('service="', 1)[1].split('"', 1)[0]
                out.setdefault(service, {})[key] = float(line.rsplit(" ", 1)[1])
    return out


def upstream_calls_of(urls: list[str]) -> dict[str, dict[str, float]]:
    """`upstream_calls` summed over several gateways."""
    total: dict[str, dict[str, float]] = {}
    for url in urls:
        for service, values in upstream_calls(url).items():
            summed = total.setdefault(service, {})
            for key, value in values.items():
                summed[key] = summed.get(key, 0.0) + value
    return total


def calls_between(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    diff: dict[str, Any] = {}
    for service, values in after.items():
        base = before.get(service, {})
        diff[service] = {k: round(v - base.get(k, 0.0), 3) for k, v in values.items()}
    return diff
