"""Identifiers and API key material. Keys are shown once and stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import secrets
import time

KEY_PREFIX = "sk-forge-"
_KEY_BODY_BYTES = 32  # 256 bits: a plain SHA-256 is enough, no slow hash needed


def new_id(prefix: str) -> str:
    """A sortable id: milliseconds since the epoch (hex) then 64 random bits."""
    return f"{prefix}_{int(time.time() * 1000):011x}{secrets.token_hex(8)}"


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(_KEY_BODY_BYTES)


def hash_api_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def display_prefix(plaintext: str) -> str:
    """What operators and receipts show of a key: enough to recognise it, useless to use it."""
    return plaintext[: len(KEY_PREFIX) + 6]


_KEY_LENGTH = len(new_api_key())


def is_well_formed_key(plaintext: str) -> bool:
    """Whether a bearer token could be one of ours at all (checked before any lookup)."""
    return len(plaintext) == _KEY_LENGTH and plaintext.startswith(KEY_PREFIX)
