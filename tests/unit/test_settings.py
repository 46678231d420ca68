"""Settings: defaults, dev-mode defaults, and every bad value reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from diminuendo.settings import _VARS, ConfigError, load_settings

PROD = {
    "AUTH0_DOMAIN": "acme.eu.auth0.com",
    "AUTH0_AUDIENCE": "https://api.acme.test",
    "PODIUM_URL": "https://podium.internal",
    "PODIUM_API_KEY": "pk-secret-value",
    # 32 bytes, base64url: b"sk-secret-value-for-these-tests!"
    "PODIUM_SECRETS_KEY": "c2stc2VjcmV0LXZhbHVlLWZvci10aGVzZS10ZXN0cyE=",
    "ENSEMBLE_URL": "https://ensemble.internal",
    "ENSEMBLE_API_KEY": "ek-secret-value",
    "UNISON_URL": "https://unison.internal",
    "UNISON_API_KEY": "uk-secret-value",
}


def load(env: dict[str, str]):
    return load_settings(env, dotenv_path=None)


def test_production_defaults() -> None:
    s = load(PROD)
    assert (s.host, s.port, s.dev_mode, s.log_format) == ("0.0.0.0", 8080, False, "json")
    assert s.ws_rate_limit == (60, 10.0) and s.ws_max_message_bytes == 1024 * 1024
    assert s.max_connections == 10_000 and s.max_active_sessions == 5_000


def test_dev_mode_defaults_to_loopback_and_local_stack() -> None:
    s = load({"DEV_MODE": "true"})
    assert (s.host, s.port, s.log_format) == ("127.0.0.1", 8001, "pretty")
    assert s.podium_url == "http://127.0.0.1:8002" and s.podium_api_key == "local-dev-key"


def test_every_problem_is_reported_once() -> None:
    with pytest.raises(ConfigError) as err:
        load(
            {
                "PORT": "eighty",
                "WS_RATE_LIMIT": "lots",
                "PODIUM_URL": "ftp://x",
                "LOG_LEVEL": "loud",
            }
        )
    problems = err.value.problems
    assert any(p.startswith("PORT:") for p in problems)
    assert any(p.startswith("WS_RATE_LIMIT:") for p in problems)
    assert any(p.startswith("PODIUM_URL:") for p in problems)
    assert any(p.startswith("LOG_LEVEL:") for p in problems)
    assert any(p.startswith("AUTH0_DOMAIN: required") for p in problems)
    assert any(p.startswith("UNISON_API_KEY: required") for p in problems)


def test_dev_mode_refuses_a_public_bind_unless_allowed() -> None:
    with pytest.raises(ConfigError) as err:
        load({"DEV_MODE": "true", "HOST": "0.0.0.0"})
    assert "DEV_MODE_ALLOW_REMOTE" in err.value.problems[0]
    assert (
        load({"DEV_MODE": "1", "HOST": "0.0.0.0", "DEV_MODE_ALLOW_REMOTE": "yes"}).host == "0.0.0.0"
    )


def test_plain_http_auth0_only_on_loopback() -> None:
    assert load({**PROD, "AUTH0_DOMAIN": "http://127.0.0.1:9000"}).auth0_domain
    with pytest.raises(ConfigError) as err:
        load({**PROD, "AUTH0_DOMAIN": "http://idp.example.com"})
    assert err.value.problems[0].startswith("AUTH0_DOMAIN:")


def test_url_credentials_are_refused() -> None:
    with pytest.raises(ConfigError) as err:
        load({**PROD, "UNISON_URL": "https://user:pw@unison.internal"})
    assert "credentials" in err.value.problems[0] and "pw" not in err.value.problems[0]


def test_sizes_rates_and_durations() -> None:
    s = load(
        {
            **PROD,
            "WS_MAX_MESSAGE_BYTES": "512KiB",
            "WS_RATE_LIMIT": "120/30s",
            "SESSION_IDLE_TIMEOUT": "60s",
        }
    )
    assert s.ws_max_message_bytes == 512 * 1024
    assert s.ws_rate_limit == (120, 30.0) and s.session_idle_timeout_s == 60.0
    with pytest.raises(ConfigError):
        load({**PROD, "WS_MAX_MESSAGE_BYTES": "8MiB"})  # above the 4 MiB hard cap


def test_secrets_stay_out_of_repr_and_describe() -> None:
    s = load(PROD)
    text = repr(s) + str(s.describe())
    assert "secret-value" not in text and PROD["PODIUM_SECRETS_KEY"] not in text
    assert s.describe()["PODIUM_API_KEY"] == s.describe()["PODIUM_SECRETS_KEY"] == "<set>"


@pytest.mark.parametrize("key", ["sk-secret-value", "c2stc2VjcmV0LXZhbHVl", "ab" * 32])
def test_a_malformed_secrets_key_is_one_problem_that_does_not_echo_it(key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load({**PROD, "PODIUM_SECRETS_KEY": key})
    (problem,) = caught.value.problems
    assert problem.startswith("PODIUM_SECRETS_KEY: must be 32 random bytes, base64url")
    assert key not in problem


def test_dev_mode_seals_with_the_local_stack_key() -> None:
    from diminuendo.local.stack import LocalStackConfig
    from diminuendo.upstreams.sealing import instance_aad, open_sealed, seal

    aad = instance_aad("t", "s")
    sealed = seal({"k": "v"}, load({"DEV_MODE": "true"}).podium_secrets_key, aad=aad)
    assert open_sealed(sealed, LocalStackConfig(Path(".")).secrets_key, aad=aad) == {"k": "v"}


def test_dotenv_is_read_and_real_environment_wins(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("DEV_MODE=true\nPORT=9100\nLOG_LEVEL=debug\n")
    s = load_settings({"PORT": "9200"}, dotenv_path=dotenv)
    assert (s.dev_mode, s.port, s.log_level) == (True, 9200, "debug")


def test_edge_adapters_are_off_in_production_and_named_one_by_one() -> None:
    assert load(PROD).edge_adapters == ()
    assert load({**PROD, "EDGE_ADAPTERS": "none"}).edge_adapters == ()
    with pytest.raises(ConfigError) as err:
        load({**PROD, "EDGE_ADAPTERS": "agui,telnet"})
    assert err.value.problems == [
        "EDGE_ADAPTERS: unknown adapter 'telnet'; choose from agui, mcp, a2a"
    ]


def test_the_security_limits_have_the_documented_defaults() -> None:
    s = load(PROD)
    assert s.ws_send_buffer_bytes == 8 * 2**20 and s.reply_max_bytes == 2**20
    assert (s.max_active_sessions_per_tenant, s.max_joined_per_connection) == (1000, 100)
    assert (s.max_connections_per_user, s.max_pending_per_ip, s.rpc_batch_max) == (100, 50, 20)
    assert (s.auth_clock_leeway_s, s.auth_refresh_window_s) == (30.0, 60.0)
    assert s.metrics_token == "" and not s.allow_insecure_upstreams
    assert "sk-metrics" not in repr(load({**PROD, "METRICS_TOKEN": "sk-metrics"}))


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://podium.internal", "podium.internal"),
        ("http://10.0.0.7:8002", "10.0.0.7"),
        ("http://[fd00::5]", "fd00::5"),
        ("http://0.0.0.0", "0.0.0.0"),
    ],
)
def test_plain_http_upstreams_need_a_loopback_host(url: str, host: str) -> None:
    with pytest.raises(ConfigError) as err:
        load({**PROD, "PODIUM_URL": url})
    assert err.value.problems == [
        f"PODIUM_URL: plain http:// to {host} would send PODIUM_API_KEY in clear; use https:// "
        "(or set ALLOW_INSECURE_UPSTREAMS=true on a trusted network)"
    ]
    assert load({**PROD, "PODIUM_URL": url, "ALLOW_INSECURE_UPSTREAMS": "true"}).podium_url == url
    for local in ("http://127.0.0.1:8002", "http://localhost", "http://[::1]:1", "https://x.y"):
        assert load({**PROD, "PODIUM_URL": local}).podium_url == local


def test_dev_mode_keeps_the_upstream_rule() -> None:
    with pytest.raises(ConfigError) as err:
        load({"DEV_MODE": "true", "UNISON_URL": "http://unison.lan:8005"})
    assert [p.split(":")[0] for p in err.value.problems] == ["UNISON_URL"]
    assert load({"DEV_MODE": "true"}).unison_url == "http://127.0.0.1:8005"


def test_check_config_names_each_setting_by_its_variable() -> None:
    described = load(PROD).describe()
    assert set(described) == {var.name for var in _VARS}  # every field has its variable
    assert described["AUTH_CLOCK_LEEWAY"] == 30.0 and described["SESSION_IDLE_TIMEOUT"] == 900.0


def test_clock_leeway_is_at_most_a_minute() -> None:
    """The token verifier refuses more (a longer leeway lets expired tokens work that much
    longer), so the gateway would otherwise fail only when it starts."""
    assert load({**PROD, "AUTH_CLOCK_LEEWAY": "0"}).auth_clock_leeway_s == 0.0
    with pytest.raises(ConfigError) as err:
        load({**PROD, "AUTH_CLOCK_LEEWAY": "61s"})
    assert err.value.problems == ["AUTH_CLOCK_LEEWAY: must be at most 60 seconds"]


def test_fleet_settings_defaults_and_parsing() -> None:
    s = load(PROD)
    assert (s.redis_url, s.redis_key_prefix) == ("", "dim")
    assert (s.replay_ttl_s, s.session_lease_ttl_s) == (86_400.0, 10.0)
    with pytest.raises(ConfigError) as err:
        load({**PROD, "REDIS_URL": "http://valkey:6379", "REDIS_KEY_PREFIX": "a b"})
    assert [p.split(":")[0] for p in err.value.problems] == ["REDIS_URL", "REDIS_KEY_PREFIX"]


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("redis://valkey:6379/0", "redis://valkey:6379/0"),
        ("rediss://:pw@valkey:6380", "rediss://:pw@valkey:6380"),
        ("valkey://valkey", "redis://valkey"),
        ("valkeys://u:pw@valkey", "rediss://u:pw@valkey"),
    ],
)
def test_redis_url_schemes_become_redis_py_ones(raw: str, parsed: str) -> None:
    from diminuendo.settings_parsers import parse_redis_url

    assert parse_redis_url(raw) == parsed


def test_redis_url_is_accepted_and_hides_its_password() -> None:
    s = load({**PROD, "REDIS_URL": "redis://:hunter2@valkey:6379"})
    assert s.redis_url == "redis://:hunter2@valkey:6379"
    assert s.describe()["REDIS_URL"] == "redis://***@valkey:6379"
    assert "hunter2" not in repr(s)
    from diminuendo.settings import Settings

    s = Settings(redis_url="redis://user:hunter2@valkey:6379/0")
    assert s.describe()["REDIS_URL"] == "redis://***@valkey:6379/0"
    assert "hunter2" not in repr(s)


def test_several_workers_need_redis_in_production() -> None:
    with pytest.raises(ConfigError) as err:
        load({**PROD, "WORKERS": "2"})
    assert err.value.problems == [
        "WORKERS: more than 1 worker needs REDIS_URL (a shared Valkey); without it each "
        "worker keeps its own sessions and replay — run one worker per process instead"
    ]
    assert load({"DEV_MODE": "true", "WORKERS": "2"}).workers == 2
    assert load({**PROD, "WORKERS": "2", "REDIS_URL": "redis://valkey:6379"}).workers == 2
