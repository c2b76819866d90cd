"""Simulated upstream providers: every answer, failure and stream cut drawn from the seed.

They speak the gateway's upstream port (forge.domain.upstream) directly, with no HTTP: each
call and each stream chunk is a scheduler checkpoint, so other requests run in between. The
request id travels in the prompt, so a provider can record which requests it served: a charge
for a request no upstream served breaks rule 7.
"""

from __future__ import annotations

import random
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from forge.domain.money import Usage
from forge.domain.upstream import Completion, StreamState, UpstreamError
from tests.sim.scheduler import Scheduler

_REQUEST_ID = re.compile(r"\[(r\d+)\]")


@dataclass
class Served:
    """What the upstreams did for each request: answered it, or opened a stream for it."""

    requests: set[str] = field(default_factory=set)

    def note(self, body: dict[str, Any]) -> None:
        self.requests.add(request_id_of(body))


def request_id_of(body: dict[str, Any]) -> str:
    text = str(body["messages"][-1]["content"])
    match = _REQUEST_ID.search(text)
    assert match, text
    return match.group(1)


def _failure(rng: random.Random) -> UpstreamError:
    """One of the ways a call fails, in the proportions a bad hour shows."""
    roll = rng.random()
    if roll < 0.45:
        return UpstreamError("http_503", 503)  # transient: retried, then fall back
    if roll < 0.65:
        return UpstreamError("timeout: ReadTimeout")
    if roll < 0.80:
        return UpstreamError("rate_limited", 429, retry_after=rng.choice([0.5, 2.0, 30.0]))
    if roll < 0.95:
        return UpstreamError("invalid_api_key", 401)  # the route is broken: fall back
    return UpstreamError("bad_request", 400, message="the provider refused this request")


class SimProvider:
    """One provider. `failure_rate` is the chance any call (or stream open) fails."""

    def __init__(
        self,
        name: str,
        failure_rate: float,
        rng: random.Random,
        scheduler: Scheduler,
        served: Served,
    ) -> None:
        self.name = name
        self._failure_rate = failure_rate
        self._rng = rng
        self._scheduler = scheduler
        self._served = served

    def _usage(self, body: dict[str, Any], output: int) -> Usage:
        prompt = len(str(body["messages"])) // 4 + 3
        cached = prompt // 2 if self._rng.random() < 0.2 else 0
        return Usage(input_tokens=prompt, cached_input_tokens=cached, output_tokens=output)

    def _output_tokens(self, body: dict[str, Any]) -> int:
        limit = int(body.get("max_tokens") or 256)
        if self._rng.random() < 0.05:
            return limit + self._rng.randint(1, 50)  # an upstream that ignores max_tokens
        return self._rng.randint(0, limit)

    async def complete(self, body: dict[str, Any]) -> Completion:
        await self._scheduler.checkpoint(f"upstream {self.name}")
        if self._rng.random() < self._failure_rate:
            raise _failure(self._rng)
        self._served.note(body)
        usage = self._usage(body, self._output_tokens(body))
        answer = {
            "id": f"cmpl-{request_id_of(body)}",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
        }
        return Completion(body=answer, usage=usage)

    async def open_stream(self, body: dict[str, Any]) -> SimStream:
        await self._scheduler.checkpoint(f"open {self.name}")
        if self._rng.random() < self._failure_rate:
            raise _failure(self._rng)
        return SimStream(self, body)


class SimStream:
    """A stream that may run to its end, lose its usage chunk, end unfinished, or be cut."""

    status = 200

    def __init__(self, provider: SimProvider, body: dict[str, Any]) -> None:
        rng = provider._rng
        self._provider = provider
        self._body = body
        self.state = StreamState()
        self._tokens = provider._output_tokens(body)
        self._chunks = rng.randint(1, 12)  # content chunks, carrying the tokens between them
        fate = rng.random()
        # Where it breaks (a chunk index), and how; None runs to the end.
        self._cut_at = rng.randint(0, self._chunks) if fate < 0.15 else None
        self._unfinished = 0.15 <= fate < 0.2  # ends without its last event
        self._no_usage = 0.2 <= fate < 0.3  # never reports usage

    async def chunks(self) -> AsyncIterator[dict[str, Any]]:
        scheduler = self._provider._scheduler
        rid = request_id_of(self._body)
        base = {"id": f"chunk-{rid}", "object": "chat.completion.chunk", "model": "sim"}
        for index in range(self._chunks + 1):
            await scheduler.checkpoint(f"chunk {index}")
            if index == self._cut_at:
                raise UpstreamError("stream_interrupted: RemoteProtocolError", 200)
            if index == 0:
                self._provider._served.note(self._body)  # the first byte reached the gateway
                delta = {"role": "assistant", "content": ""}
            else:
                self.state.content_chunks += 1
                # The provider's running count, as Anthropic's and Gemini's streams send it.
                self.state.output_tokens = -(-self._tokens * index // self._chunks)
                delta = {"content": "x"}
            yield {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        if self._unfinished:
            return
        yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        if not self._no_usage:
            usage = self._provider._usage(self._body, self._tokens)
            self.state.usage = usage
            yield {
                **base,
                "choices": [],
                "usage": {
                    "prompt_tokens": usage.input_tokens,
                    "completion_tokens": usage.output_tokens,
                    "total_tokens": usage.input_tokens + usage.output_tokens,
                    "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
                },
            }
        self.state.finished = True

    async def aclose(self) -> None:
        return None
