"""forge.api.keepalive: comments while a stream is silent, and cancellation that lets a
shielded section (a store write, a hold being resolved) finish first."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import anyio
import pytest

from forge.api.keepalive import KEEPALIVE, Abandoned, Background, with_keepalive


def test_a_cancelled_background_lets_its_shielded_section_finish() -> None:
    finished: list[str] = []

    async def work() -> str:
        with anyio.CancelScope(shield=True):
            await anyio.sleep(0.05)  # a reservation in flight
            finished.append("write landed, hold resolved")
        await anyio.sleep(10)
        return "never"

    async def scenario() -> None:
        background = Background(work())
        await asyncio.sleep(0.01)
        await background.cancel()
        assert finished == ["write landed, hold resolved"]
        with pytest.raises(Abandoned):
            background.result()

    asyncio.run(scenario())


def test_silence_is_filled_with_comments_and_the_source_is_closed_when_the_reader_stops() -> None:
    closed: list[bool] = []

    async def slow() -> AsyncIterator[bytes]:
        try:
            yield b"data: 1\n\n"
            await anyio.sleep(0.35)
            yield b"data: 2\n\n"
            await anyio.sleep(10)
            yield b"data: never\n\n"
        finally:
            closed.append(True)

    async def scenario() -> list[bytes]:
        got: list[bytes] = []
        stream = with_keepalive(slow(), 0.1)
        async for chunk in stream:
            got.append(chunk)
            if chunk == b"data: 2\n\n":
                break
        await stream.aclose()  # type: ignore[attr-defined]
        return got

    got = asyncio.run(scenario())
    assert got[0] == b"data: 1\n\n" and got[-1] == b"data: 2\n\n", got
    assert 2 <= got.count(KEEPALIVE) <= 4, got
    assert closed == [True]
