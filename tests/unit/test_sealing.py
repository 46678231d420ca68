"""Sealing the instance secrets: the round trip, and every way a blob must refuse to open."""

from __future__ import annotations

import base64
import pickle
import secrets

import pytest

from diminuendo.upstreams.sealing import (
    SealError,
    SealingKey,
    instance_aad,
    open_sealed,
    seal,
)

RAW = secrets.token_bytes(32)
KEY_TEXT = base64.urlsafe_b64encode(RAW).decode()
KEY = SealingKey.parse(KEY_TEXT)
AAD = instance_aad("acme", "sess_1")
SECRETS = {"ensemble_api_key": "ens_live_0123456789"}


def test_round_trip() -> None:
    sealed = seal(SECRETS, KEY, aad=AAD)
    assert sealed.startswith("v1.") and "ens_live" not in sealed
    assert open_sealed(sealed, KEY, aad=AAD) == SECRETS


def test_the_key_survives_pickling_into_a_worker_process() -> None:
    """Sanic's worker manager pickles the settings (auto-reload, WORKERS>1); before the fix
    `diminuendo dev` died at start-up with "cannot pickle 'AESGCM' object"."""
    copy = pickle.loads(pickle.dumps(KEY))
    assert open_sealed(seal(SECRETS, copy, aad=AAD), KEY, aad=AAD) == SECRETS
    assert "<hidden>" in repr(copy)


def test_each_seal_uses_a_fresh_nonce() -> None:
    assert seal(SECRETS, KEY, aad=AAD) != seal(SECRETS, KEY, aad=AAD)


def test_key_accepts_unpadded_and_padded_base64url() -> None:
    sealed = seal(SECRETS, SealingKey.parse(KEY_TEXT.rstrip("=")), aad=AAD)
    assert open_sealed(sealed, SealingKey.parse(f"  {KEY_TEXT}\n"), aad=AAD) == SECRETS


def test_wrong_key_fails() -> None:
    other = SealingKey(secrets.token_bytes(32))
    with pytest.raises(SealError, match="PODIUM_SECRETS_KEY differs"):
        open_sealed(seal(SECRETS, KEY, aad=AAD), other, aad=AAD)


@pytest.mark.parametrize("where", ["nonce", "ciphertext", "tag"])
def test_tampered_blob_fails(where: str) -> None:
    sealed = seal(SECRETS, KEY, aad=AAD)
    blob = bytearray(base64.urlsafe_b64decode(sealed[3:] + "=="))
    blob[{"nonce": 0, "ciphertext": 14, "tag": -1}[where]] ^= 1
    tampered = "v1." + base64.urlsafe_b64encode(bytes(blob)).decode().rstrip("=")
    with pytest.raises(SealError, match="cannot be opened"):
        open_sealed(tampered, KEY, aad=AAD)


@pytest.mark.parametrize(
    "aad",
    [
        instance_aad("acme", "sess_2"),
        instance_aad("globex", "sess_1"),
        instance_aad("acm", "esess_1"),
    ],
)
def test_blob_sealed_for_another_instance_fails(aad: bytes) -> None:
    with pytest.raises(SealError, match="another instance"):
        open_sealed(seal(SECRETS, KEY, aad=AAD), KEY, aad=aad)


@pytest.mark.parametrize(
    ("sealed", "reason"),
    [
        ("v2.AAAA", "must start with 'v1.'"),
        ("AAAA", "must start with 'v1.'"),
        ("v1.!!!*", "not base64url"),
        ("v1.AAAA", "too short"),
        ("v1.é", "not base64url"),
    ],
)
def test_malformed_blob_is_a_clear_error(sealed: str, reason: str) -> None:
    with pytest.raises(SealError, match=reason):
        open_sealed(sealed, KEY, aad=AAD)


def test_blob_that_is_not_a_map_of_strings_fails() -> None:
    with pytest.raises(SealError, match="not a map of strings"):
        open_sealed(seal({"n": 1}, KEY, aad=AAD), KEY, aad=AAD)  # type: ignore[dict-item]


@pytest.mark.parametrize(
    "text", ["", "short", KEY_TEXT[:-8], KEY_TEXT + KEY_TEXT, RAW.hex(), "é" * 43]
)
def test_malformed_key_is_refused_without_echoing_it(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        SealingKey.parse(text)
    message = str(caught.value)
    assert "32 random bytes, base64url" in message and "secrets.token_bytes(32)" in message
    assert not text or text not in message


def test_the_key_and_secrets_never_show() -> None:
    sealed = seal(SECRETS, KEY, aad=AAD)
    with pytest.raises(SealError) as caught:
        open_sealed(sealed, SealingKey(secrets.token_bytes(32)), aad=AAD)
    for text in (repr(KEY), str(KEY), f"{KEY!r}", sealed, str(caught.value)):
        assert KEY_TEXT.rstrip("=") not in text and RAW.hex() not in text
        assert SECRETS["ensemble_api_key"] not in text
