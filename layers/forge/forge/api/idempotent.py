"""Idempotency-Key for HTTP responses: claim, replay, or capture (see forge.domain.idempotency)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable

import anyio
from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from forge.domain.idempotency import IdempotencyRecord, StoredResponse, wait_for_first
from forge.store.dynamo.store import DynamoStore

REPLAY_HEADER = "x-forge-idempotent-replay"


class PaidStream(StreamingResponse):
    """A relayed stream. `finished` says whether it ran to its end (only then is it replayed);
    `close` runs however the response ends, even if its body was never read (a client gone
    before the first chunk), so the call's hold is always resolved."""

    def __init__(
        self,
        content: AsyncIterator[bytes],
        headers: dict[str, str],
        *,
        finished: Callable[[], bool],
        close: Callable[[], Awaitable[None]],
    ) -> None:
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self.finished = finished
        self.close = close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.close()


class IdempotentCall:
    def __init__(
        self,
        store: DynamoStore,
        account_id: str,
        key: str,
        fingerprint: str,
        request_id: str,
        lease_seconds: int,
        wait_seconds: float,
    ) -> None:
        self._store = store
        self._account_id = account_id
        self._key = key
        self._fingerprint = fingerprint
        self._request_id = request_id
        self._lease_seconds = lease_seconds
        self._wait_seconds = wait_seconds

    async def begin(self) -> Response | None:
        """None if this request now owns the key; else the replayed response (or a 409)."""
        now = int(time.time())
        record = IdempotencyRecord(
            state="in_progress",
            fingerprint=self._fingerprint,
            request_id=self._request_id,
            lease_until=now + self._lease_seconds,
        )
        holder = await asyncio.to_thread(
            self._store.claim_idempotency, self._account_id, self._key, record, now
        )
        if holder is None:
            return None

        async def read(account_id: str, key: str) -> IdempotencyRecord | None:
            return await asyncio.to_thread(self._store.read_idempotency, account_id, key)

        stored = await wait_for_first(
            read, self._account_id, self._key, self._fingerprint, self._wait_seconds
        )
        return replay(stored)

    async def release(self) -> None:
        """Nothing was charged: let a retry with the same key run afresh."""
        await self._finish(None)

    async def capture(self, response: Response) -> Response:
        """Store what this request answered, so retries replay it."""
        headers = {k: v for k, v in response.headers.items() if k.startswith("x-")}
        if isinstance(response, PaidStream):
            recorded = PaidStream(
                self._recording(
                    response.body_iterator, response.status_code, headers, response.finished
                ),
                dict(response.headers),
                finished=response.finished,
                close=response.close,
            )
            recorded.status_code = response.status_code
            return recorded
        stored = StoredResponse.of(
            response.status_code, headers, bytes(response.body), response.media_type or ""
        )
        await self._finish(stored if stored.storable else None)
        return response

    async def _recording(
        self,
        events: AsyncIterable[str | bytes | memoryview],
        status: int,
        headers: dict[str, str],
        finished: Callable[[], bool],
    ) -> AsyncIterator[bytes]:
        sent = bytearray()
        try:
            async for event in events:
                chunk = event.encode() if isinstance(event, str) else bytes(event)
                sent += chunk
                yield chunk
        finally:
            # Only a stream that ran to its end is replayed. One cut short (upstream failure,
            # disconnect) was charged for what it delivered; replaying the stub would pin the
            # key to it, so the key is released and a retry runs afresh.
            stored = StoredResponse.of(status, headers, bytes(sent), "text/event-stream")
            keep = finished() and stored.storable
            await asyncio.shield(self._finish(stored if keep else None))

    async def _finish(self, stored: StoredResponse | None) -> None:
        await asyncio.to_thread(
            self._store.finish_idempotency, self._account_id, self._key, self._request_id, stored
        )


def replay(stored: StoredResponse) -> Response:
    headers = {**stored.headers, REPLAY_HEADER: "true"}
    return Response(stored.body, stored.status, headers, media_type=stored.media_type)
