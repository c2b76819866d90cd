"""SSE keep-alives: a comment line whenever a stream has been silent for a while, so no proxy's
idle timeout closes a live call. API Gateway closes a streamed response idle for 5 minutes
(Regional; 30 s edge-optimised); a reasoning model can think longer than that before its first
token, or between two. Every SSE parser (the OpenAI and Anthropic SDKs' included) skips lines
that start with ':'."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Generic, TypeVar

import anyio

KEEPALIVE = b": keep-alive\n\n"
T = TypeVar("T")


class Abandoned(Exception):
    """What a cancelled `Background` task's result raises."""


class Background(Generic[T]):
    """An awaitable run in its own task, awaited in slices (`done_within`) and cancelled the
    way anyio cancels: a shielded section in flight (a store write, a hold being resolved)
    runs to its end first. A native `task.cancel()` would cut through those shields."""

    def __init__(self, work: Awaitable[T]) -> None:
        self._scope = anyio.CancelScope()
        self.task: asyncio.Future[T] = asyncio.ensure_future(self._run(work))

    async def _run(self, work: Awaitable[T]) -> T:
        with self._scope:
            return await work
        raise Abandoned

    async def done_within(self, seconds: float) -> bool:
        done, _ = await asyncio.wait({self.task}, timeout=seconds)
        return bool(done)

    def result(self) -> T:
        return self.task.result()

    async def cancel(self) -> None:
        """Cancel and wait until the work has run its cleanup (shielded from our caller's own
        cancellation, so the cleanup is never cut short)."""
        self._scope.cancel()
        with anyio.CancelScope(shield=True):
            await asyncio.wait({self.task})
        if not self.task.cancelled():
            self.task.exception()  # retrieved: a failure during cleanup is the work's to log


async def with_keepalive(source: AsyncIterator[bytes], interval: float) -> AsyncIterator[bytes]:
    """`source`'s bytes, with KEEPALIVE after every `interval` seconds of silence. Each step of
    `source` runs in a task that outlives one wait; when the consumer stops (client gone), the
    step in flight is cancelled and `source` closed, so its own `finally` settles the call."""
    pending: Background[bytes | None] | None = None
    try:
        while True:
            if pending is None:
                pending = Background(_next(source))
            if not await pending.done_within(interval):
                yield KEEPALIVE
                continue
            chunk, pending = pending.result(), None
            if chunk is None:
                return
            yield chunk
    finally:
        with anyio.CancelScope(shield=True):
            if pending is not None:
                await pending.cancel()
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()


async def _next(source: AsyncIterator[bytes]) -> bytes | None:
    return await anext(source, None)
