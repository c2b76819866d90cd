"""A deterministic scheduler of simulated requests on one asyncio loop, without threads.

Each in-flight request is an asyncio task that runs only when the simulation advances it, and
only until its next *checkpoint*: every store call (the gateway's `_io` seam runs them inline,
here), every upstream call or stream chunk, every retry wait. Everything else is parked on a
future, so the loop's ready queue only ever holds the one task being advanced: which request
moves next, and so every interleaving of store calls, is chosen by the simulation's seed.

A crashed container's requests are cancelled: their cleanup runs without parking (the clock
has stopped for them) against a store link that refuses every call, so nothing is resolved.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

# The actor (request, or a driver operation) whose code is running now; store links and
# upstreams charge what they see (faults, served calls) to it.
CURRENT: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("sim_actor", default=None)


@dataclass
class Actor:
    """Something that makes store calls: one simulated request, or a driver operation."""

    name: str
    container: int | None = None
    store_faults: int = 0  # store calls of this actor that the twin's schedule failed
    dead: bool = False  # its container crashed: it never runs again
    where: str = "new"  # the checkpoint it is parked at
    task: asyncio.Task[None] | None = None
    _resume: asyncio.Future[None] | None = field(default=None, repr=False)


class Scheduler:
    def __init__(self) -> None:
        self._stopped: asyncio.Future[None] | None = None

    async def checkpoint(self, where: str) -> None:
        """Park the running request here until the simulation advances it again."""
        actor = CURRENT.get()
        if actor is None or actor.task is None or actor.dead:
            return  # a driver operation runs straight through; a crashed one is finishing
        loop = asyncio.get_running_loop()
        actor.where = where
        actor._resume = loop.create_future()
        self._stop()
        await actor._resume

    async def advance(
        self, actor: Actor, main: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Run `actor` (started with `main` the first time) to its next checkpoint or its end."""
        loop = asyncio.get_running_loop()
        self._stopped = loop.create_future()
        if actor.task is None:
            assert main is not None
            actor.task = loop.create_task(self._run(actor, main))
            actor.task.add_done_callback(lambda _: self._stop())
        else:
            assert actor._resume is not None
            actor._resume.set_result(None)
        await self._stopped

    async def crash(self, actor: Actor) -> None:
        """The actor's container died: cancel it where it is parked and let it unwind."""
        actor.dead = True
        assert actor.task is not None
        if actor.task.done():
            return
        loop = asyncio.get_running_loop()
        self._stopped = loop.create_future()
        actor.task.cancel()
        await self._stopped

    @staticmethod
    async def _run(actor: Actor, main: Callable[[], Awaitable[None]]) -> None:
        CURRENT.set(actor)
        await main()

    def _stop(self) -> None:
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)


async def run_inline(scheduler: Scheduler, fn: Callable[[], Any]) -> Any:
    """The gateway's `blocking` seam in the simulation: a store call is a checkpoint, then
    runs on the loop itself (no thread), atomically with respect to the other requests."""
    await scheduler.checkpoint("store")
    return fn()
