"""One simulated paid call: a client on a container, from authentication to the last chunk.

The client reads a stream chunk by chunk and may hang up at any chunk (a disconnect). What it
was told (the receipt of a served call, or the error) is kept, to hold against the ledger.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

from forge.domain.errors import ForgeError, InternalError
from forge.domain.records import Receipt
from forge.domain.requests import ChatCompletionRequest
from forge.gateway import Gateway, RequestLimits, StreamResult
from tests.sim.scheduler import Actor
from tests.sim.world import MODELS, SimKey

DISCONNECT_PER_CHUNK = 0.04


@dataclass
class SimRequest:
    rid: str
    key: SimKey
    request: ChatCompletionRequest
    limits: RequestLimits
    actor: Actor
    started: float = 0.0  # on the simulation's clock
    outcome: str = "in flight"
    receipt: Receipt | None = None  # what the client was told it paid, if anything
    chunks: int = 0
    defect: BaseException | None = None  # something escaped the guarded boundary

    @property
    def account(self) -> str:
        return self.key.key.account_id

    @property
    def crashed(self) -> bool:
        return self.actor.dead

    def summary(self) -> str:
        told = ""
        if self.receipt is not None:
            told = f" charge={self.receipt.charge} {self.receipt.settlement}"
        return f"{self.outcome}{told}"


def new_request(rid: str, key: SimKey, rng: random.Random, container: int) -> SimRequest:
    """A chat call with a shape, size, stream flag and budget headers drawn from `rng`."""
    words = " ".join("lorem" for _ in range(rng.randint(1, 60)))
    body: dict[str, Any] = {
        "model": rng.choice(MODELS),
        "messages": [{"role": "user", "content": f"[{rid}] {words}"}],
        "stream": rng.random() < 0.45,
    }
    if rng.random() < 0.8:
        body["max_tokens"] = rng.choice([16, 64, 200, 500, 1000, 2000, 5000])
    if body["stream"] and rng.random() < 0.3:
        body["stream_options"] = {"include_usage": rng.random() < 0.5}
    run_id = f"run{rng.randint(0, 4)}" if rng.random() < 0.3 else None
    limits = RequestLimits(
        run_id=run_id,
        run_budget=rng.choice([None, 5_000, 20_000]) if run_id else None,
        max_charge=rng.choice([None, None, 2_000, 10_000]),
    )
    request = ChatCompletionRequest.model_validate(body)
    return SimRequest(rid, key, request, limits, Actor(rid, container))


async def run_request(call: SimRequest, gateway: Gateway, rng: random.Random) -> None:
    """The client side of one call (the actor's main)."""
    try:
        key = await gateway.authenticate_key(call.key.plaintext)
        result = await gateway.serve(key, call.request, call.rid, call.limits, _answer)
        if isinstance(result, StreamResult):
            await _read_stream(call, result, rng)
        else:
            call.receipt = result.receipt
            call.outcome = "completed"
    except InternalError as exc:  # the boundary contained a defect of ours: a finding
        call.outcome = exc.code
        call.defect = exc.__cause__ or exc
    except ForgeError as exc:
        call.outcome = exc.code
    except asyncio.CancelledError:
        call.outcome = "crashed"
    except BaseException as exc:
        call.outcome = f"raised {type(exc).__name__}"
        call.defect = exc


async def _read_stream(call: SimRequest, result: StreamResult, rng: random.Random) -> None:
    items = result.items
    try:
        async for item in items:
            if item.kind == "chunk":
                call.chunks += 1
                if rng.random() < DISCONNECT_PER_CHUNK:
                    call.outcome = "disconnected"
                    return  # the finally closes the stream: the gateway settles what it sent
            else:
                call.receipt = item.receipt
                call.outcome = f"stream {item.kind}"
    finally:
        await items.aclose()


def _answer(completion: Any) -> dict[str, Any]:
    return dict(completion.body)
