"""SSE keep-alives: a comment line whenever a stream has been silent for a while, so no proxy's
idle timeout closes a live call. API Gateway closes a streamed response idle for 5 minutes
(Regional; 30 s edge-optimised); a reasoning model can think longer than that before its first
token, or between two. Every SSE parser (the OpenAI and Anthropic SDKs' included) skips lines
that start with ':'."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import anyio

KEEPALIVE = b": keep-alive\n\n"


async def with_keepalive(source: AsyncIterator[bytes], interval: float) -> AsyncIterator[bytes]:
    """`source`'s bytes, with KEEPALIVE after every `interval` seconds of silence. Each step of
    `source` runs in a task that outlives one wait; when the consumer stops (client gone), the
    step in flight is cancelled and `source` closed, so its own `finally` settles the call."""
    pending: asyncio.Future[bytes | None] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(_next(source))
            done, _ = await asyncio.wait({pending}, timeout=interval)
            if not done:
                yield KEEPALIVE
                continue
            chunk, pending = pending.result(), None
            if chunk is None:
                return
            yield chunk
    finally:
        with anyio.CancelScope(shield=True):
            await cancel(pending)
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()


async def wait_or_tick(task: asyncio.Future[Any], interval: float) -> bool:
    """Wait up to `interval` seconds for `task`; whether it is done."""
    done, _ = await asyncio.wait({task}, timeout=interval)
    return bool(done)


async def cancel(task: asyncio.Future[Any] | None) -> None:
    """Cancel `task` and wait until it has run its cleanup."""
    if task is None:
        return
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()  # retrieved: a failure during cleanup is the task's own to log


async def _next(source: AsyncIterator[bytes]) -> bytes | None:
    return await anext(source, None)
