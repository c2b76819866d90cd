"""Idempotency-Key: a client retry replays the first answer instead of paying twice.

The first request with a key claims it (a conditional put); the same key with the same body
then replays the stored response; with another body it is a 409; while the first is still
running, a second waits for it (so two concurrent requests make one upstream call). A claim
whose request died is taken over once its lease (the hold's lifetime) has passed. Requests
that end in an error before anything was charged release the claim, so a retry can succeed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pydantic import BaseModel

from forge.domain.errors import (
    IdempotencyConflict,
    IdempotencyInProgress,
    InvalidRequest,
)

MAX_STORED_BODY = 300_000  # bytes after compression: DynamoDB items stop at 400 KB
REPLAY_TTL_SECONDS = 24 * 3600


class StoredResponse(BaseModel):
    status: int
    headers: dict[str, str]
    body_zlib_b64: str
    media_type: str

    @classmethod
    def of(
        cls, status: int, headers: dict[str, str], body: bytes, media_type: str
    ) -> StoredResponse:
        packed = base64.b64encode(zlib.compress(body)).decode()
        return cls(status=status, headers=headers, body_zlib_b64=packed, media_type=media_type)

    @property
    def body(self) -> bytes:
        return zlib.decompress(base64.b64decode(self.body_zlib_b64))

    @property
    def storable(self) -> bool:
        return len(self.body_zlib_b64) <= MAX_STORED_BODY


class IdempotencyRecord(BaseModel):
    state: Literal["in_progress", "done"]
    fingerprint: str
    request_id: str
    lease_until: int
    response: StoredResponse | None = None


def fingerprint(body: dict[str, Any], headers: dict[str, str | None]) -> str:
    """What makes two requests 'the same': the parsed body and the budget headers."""
    canonical = json.dumps([body, headers], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def validate_key(key: str) -> str:
    if not 1 <= len(key) <= 255 or not key.isprintable():
        raise InvalidRequest(
            "Idempotency-Key must be 1-255 printable characters", param="Idempotency-Key"
        )
    return key


async def wait_for_first(
    read: Callable[[str, str], Awaitable[IdempotencyRecord | None]],
    account_id: str,
    key: str,
    own_fingerprint: str,
    wait_seconds: float,
) -> StoredResponse:
    """Wait for the request that holds the claim to finish; its response, or a 409."""
    deadline = time.monotonic() + wait_seconds
    delay = 0.05
    while True:
        record: IdempotencyRecord | None = await read(account_id, key)
        if record is not None and record.fingerprint != own_fingerprint:
            raise IdempotencyConflict(
                "This Idempotency-Key was used with a different request body",
                param="Idempotency-Key",
            )
        if record is not None and record.state == "done" and record.response is not None:
            return record.response
        if record is None or time.monotonic() > deadline:
            raise IdempotencyInProgress(
                "A request with this Idempotency-Key is still in progress; retry later",
                param="Idempotency-Key",
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)
