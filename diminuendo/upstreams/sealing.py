"""Sealing the per-instance `secrets` map the gateway forwards to Podium (UPSTREAMS.md §1).

`PODIUM_SECRETS_KEY` is 32 random bytes, base64url-encoded (padding optional). A sealed map is
`v1.` + base64url(nonce ‖ AES-256-GCM ciphertext+tag) of the map as JSON, with a fresh 96-bit
nonce per seal. The associated data is the version and the instance's tenant and session id, so
a blob opens only for the instance request it was sealed for: replayed into another session's
`POST /api/v1/instances`, it fails like a wrong key. Pure: no I/O, no logging; neither the key nor
the plaintext ever appears in a `repr` or an error message.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
VERSION = "v1"
_PREFIX = f"{VERSION}."
_TAG_BYTES = 16
GENERATE_HINT = (
    'python -c "import secrets,base64; '
    'print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())"'
)
_decode_secrets = msgspec.json.Decoder(dict[str, str])


class SealError(Exception):
    """A sealed map that cannot be opened; the message says why and holds nothing secret."""


class SealingKey:
    """An AES-256 key that never shows itself (`repr`, `str`, errors)."""

    __slots__ = ("_aead", "_raw")

    def __init__(self, raw: bytes) -> None:
        if len(raw) != KEY_BYTES:
            raise ValueError(f"must be {KEY_BYTES} bytes")
        self._raw = raw
        self._aead = AESGCM(raw)

    def __reduce__(self) -> tuple[type[SealingKey], tuple[bytes]]:
        # Sanic's worker manager pickles the settings into each worker process (auto-reload,
        # WORKERS>1); `AESGCM` cannot be pickled, so a worker rebuilds it from the raw key.
        return (SealingKey, (self._raw,))

    @classmethod
    def parse(cls, text: str) -> SealingKey:
        """The key from its env form; a `ValueError` names the expected format, never the value."""
        compact = text.strip()
        try:
            raw = _b64decode(compact)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != KEY_BYTES:
            raise ValueError(
                f"must be {KEY_BYTES} random bytes, base64url-encoded (43 or 44 characters); "
                f"generate one with: {GENERATE_HINT}"
            ) from None
        return cls(raw)

    def __repr__(self) -> str:
        return "SealingKey(<hidden>)"

    __str__ = __repr__


def _b64decode(text: str) -> bytes:
    """Strict base64url, padding optional: a stray character is an error, not skipped."""
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def instance_aad(tenant_id: str, session_id: str) -> bytes:
    """What binds a sealed map to one instance request: its tenant and session (JSON, so no
    choice of ids can make two different pairs encode alike)."""
    return msgspec.json.encode([VERSION, tenant_id, session_id])


def seal(secrets: Mapping[str, str], key: SealingKey, *, aad: bytes) -> str:
    nonce = os.urandom(NONCE_BYTES)
    sealed = key._aead.encrypt(nonce, msgspec.json.encode(dict(secrets)), aad)
    return _PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")


def open_sealed(sealed: str, key: SealingKey, *, aad: bytes) -> dict[str, str]:
    """The map `seal` was given, or `SealError`: unknown version, malformed, or unopenable
    (wrong key, tampered, or sealed for another instance — AES-GCM cannot tell these apart)."""
    if not isinstance(sealed, str) or not sealed.startswith(_PREFIX):
        raise SealError(f"sealed secrets must start with {_PREFIX!r}")
    body = sealed[len(_PREFIX) :]
    try:
        blob = _b64decode(body)
    except (binascii.Error, ValueError):
        raise SealError("sealed secrets are not base64url") from None
    if len(blob) < NONCE_BYTES + _TAG_BYTES:
        raise SealError("sealed secrets are too short")
    try:
        plain = key._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag:
        raise SealError(
            "sealed secrets cannot be opened: PODIUM_SECRETS_KEY differs, or the blob was "
            "altered or sealed for another instance"
        ) from None
    try:
        return _decode_secrets.decode(plain)
    except msgspec.DecodeError:
        raise SealError("sealed secrets are not a map of strings") from None
