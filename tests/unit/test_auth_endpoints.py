"""resolve_auth0: the issuer must match Auth0's ``iss`` exactly, and plain http only on loopback."""

import pytest

from diminuendo.auth.endpoints import Auth0Endpoints, resolve_auth0


@pytest.mark.parametrize(
    ("domain", "issuer"),
    [
        ("acme.eu.auth0.com", "https://acme.eu.auth0.com/"),
        ("  acme.eu.auth0.com  ", "https://acme.eu.auth0.com/"),
        ("ACME.eu.Auth0.com", "https://acme.eu.auth0.com/"),
        ("https://acme.eu.auth0.com", "https://acme.eu.auth0.com/"),
        ("https://acme.eu.auth0.com/", "https://acme.eu.auth0.com/"),
        ("HTTPS://login.example.com:8443", "https://login.example.com:8443/"),
        ("https://10.0.0.5", "https://10.0.0.5/"),
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000/"),
        ("http://127.8.9.10:9000/", "http://127.8.9.10:9000/"),
        ("http://localhost:9000", "http://localhost:9000/"),
        ("http://[::1]:9000", "http://[::1]:9000/"),
        ("https://[2001:db8::1]", "https://[2001:db8::1]/"),
        ("https://idp_mock.internal", "https://idp_mock.internal/"),
    ],
)
def test_accepted_domains(domain: str, issuer: str) -> None:
    assert resolve_auth0(domain) == Auth0Endpoints(
        issuer=issuer, jwks_url=f"{issuer}.well-known/jwks.json"
    )


def test_the_worked_example_from_the_spec() -> None:
    assert resolve_auth0("acme.eu.auth0.com") == (
        "https://acme.eu.auth0.com/",
        "https://acme.eu.auth0.com/.well-known/jwks.json",
    )


@pytest.mark.parametrize(
    ("domain", "why"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("http://acme.eu.auth0.com", "loopback"),
        ("http://10.0.0.5:9000", "loopback"),
        ("http://localhost.evil.com", "loopback"),
        ("ftp://acme.eu.auth0.com", "https"),
        ("https://acme.eu.auth0.com/tenant", "path"),
        ("https://acme.eu.auth0.com/.well-known/jwks.json", "path"),
        ("https://acme.eu.auth0.com?x=1", "query"),
        ("https://acme.eu.auth0.com?", "query"),
        ("https://acme.eu.auth0.com#frag", "fragment"),
        ("https://user:s3cret@acme.eu.auth0.com", "credentials"),
        ("http://admin:hunter2@127.0.0.1:9000", "credentials"),
        ("acme eu auth0 com", "whitespace"),
        ("acme.eu\n.auth0.com", "whitespace"),
        ("acme\t.auth0.com", "whitespace"),
        ("https://", "host"),
        ("https://:443", "host"),
        ("!!!", "host"),
        ("-acme.auth0.com", "host"),
        ("acme..auth0.com", "host"),
        ("acme.auth0.com.", "host"),
        ("exämple.com", "host"),
        ("a" * 64 + ".com", "host"),
        ("https://[::1", "host"),
        ("https://acme.auth0.com:notaport", "port"),
        ("https://acme.auth0.com:99999", "port"),
    ],
)
def test_rejected_domains_say_why_in_one_line(domain: str, why: str) -> None:
    with pytest.raises(ValueError) as info:
        resolve_auth0(domain)
    message = str(info.value)
    assert why in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "domain", ["https://user:s3cret@acme.eu.auth0.com", "https://s3cret@acme.eu.auth0.com:x/p"]
)
def test_messages_never_echo_credentials(domain: str) -> None:
    with pytest.raises(ValueError) as info:
        resolve_auth0(domain)
    assert "s3cret" not in str(info.value)
    error = info.value
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__
