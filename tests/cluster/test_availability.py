"""Degraded mode against a real valkey-server: an instance whose Valkey is down, hung or back
says so within the 1 s bound, with a reason health can show and without the URL's password."""

from __future__ import annotations

import time
from pathlib import Path

from diminuendo.fleet.availability import FleetAvailability
from diminuendo.fleet.connection import FleetUnavailable, open_client
from diminuendo.local.ports import free_port
from diminuendo.local.valkey import LocalValkey
from tests.cluster.test_valkey_trouble import until


async def test_valkey_down_at_start_degrades_with_a_reason_and_no_password() -> None:
    url = f"redis://:sekrit@127.0.0.1:{free_port()}/0"  # nothing listens there
    client = open_client(url)
    availability = FleetAvailability(client, url)
    try:
        started = time.monotonic()
        await availability.start()
        assert time.monotonic() - started < 1.0
        report = availability.report()
        assert not availability.use_valkey
        assert (report["ok"], report["mode"], report["latencyMs"]) == (False, "memory", None)
        assert "PING failed" in report["reason"] and "127.0.0.1" in report["reason"]
        assert "sekrit" not in str(report)
    finally:
        await availability.close()
        await client.aclose()


async def test_valkey_up_later_is_used_again(tmp_path: Path) -> None:
    server = LocalValkey(tmp_path / "valkey")  # not started yet
    client = open_client(server.url)
    availability = FleetAvailability(client, server.url, retry_interval_s=0.1)
    try:
        await availability.start()
        assert not availability.use_valkey
        version = availability.version
        server.start()
        await until(lambda: availability.use_valkey, timeout_s=5)
        report = availability.report()
        assert (report["ok"], report["mode"], report["reason"]) == (True, "valkey", None)
        assert availability.version > version and report["latencyMs"] is not None
    finally:
        await availability.close()
        await client.aclose()
        server.stop()


async def test_a_hung_valkey_degrades_within_the_bound_and_recovers(
    own_valkey: LocalValkey,
) -> None:
    client = open_client(own_valkey.url)
    availability = FleetAvailability(
        client, own_valkey.url, probe_interval_s=0.2, retry_interval_s=0.1
    )
    try:
        await availability.start()
        assert availability.use_valkey and availability.report()["mode"] == "valkey"
        own_valkey.pause()
        started = time.monotonic()
        await until(lambda: not availability.use_valkey, timeout_s=3)
        assert time.monotonic() - started < 0.2 + 1.0 + 0.5  # one interval, one bounded PING
        assert "timed out" in availability.reason
        own_valkey.resume()
        await until(lambda: availability.use_valkey, timeout_s=5)
    finally:
        own_valkey.resume()
        await availability.close()
        await client.aclose()


async def test_a_failed_call_degrades_at_once_and_a_probe_restores(
    valkey_server: LocalValkey,
) -> None:
    client = open_client(valkey_server.url)
    availability = FleetAvailability(client, valkey_server.url, retry_interval_s=0.2)
    try:
        await availability.start()
        assert availability.use_valkey
        version = availability.version
        availability.failed(FleetUnavailable("Valkey at redis://127.0.0.1:1/0: append timed out"))
        assert not availability.use_valkey and availability.version == version + 1
        assert availability.report()["reason"].endswith("append timed out")
        await until(lambda: availability.use_valkey, timeout_s=3)
    finally:
        await availability.close()
        await client.aclose()


async def test_starting_against_a_hung_valkey_returns_within_the_bound(
    own_valkey: LocalValkey,
) -> None:
    client = open_client(own_valkey.url)
    availability = FleetAvailability(client, own_valkey.url)
    own_valkey.pause()
    try:
        started = time.monotonic()
        await availability.start()
        assert time.monotonic() - started < 1.5
        assert not availability.use_valkey and "timed out" in availability.reason
    finally:
        own_valkey.resume()
        await availability.close()
        await client.aclose()
