"""Anthropic Messages API over httpx (`POST {base}/v1/messages`, x-api-key, anthropic-version),
non-stream and SSE, translated to OpenAI's chat shapes by forge.providers.anthropic_format;
and its token count (`POST {base}/v1/messages/count_tokens`)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from forge.domain.provider_errors import Dialect
from forge.domain.upstream import Completion
from forge.providers.anthropic_format.outbound import (
    MessagesStreamReader,
    completion_from_message,
    to_messages_request,
)
from forge.providers.anthropic_format.terms import ANTHROPIC_VERSION
from forge.providers.http import (
    HttpProvider,
    UpstreamStream,
    parse_event,
    sse_events,
    token_count,
)


class AnthropicStream(UpstreamStream):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response)
        self._reader = MessagesStreamReader(created=int(time.time()))

    async def chunks(self) -> AsyncIterator[dict[str, Any]]:
        reader = self._reader
        async for _, data in sse_events(self._response):
            for chunk in reader.feed(parse_event(data, self.status)):
                if chunk.get("usage") is None and any(
                    (c.get("delta") or {}).get("content")
                    or (c.get("delta") or {}).get("tool_calls")
                    for c in chunk["choices"]
                ):
                    self.state.content_chunks += 1
                yield chunk
            # Anthropic reports input (and cache) tokens at message_start and the cumulative
            # output at message_delta: the state always holds the best count so far.
            self.state.usage = reader.usage
            self.state.output_tokens = reader.usage.output_tokens
            self.state.cache_write_tokens = reader.cache_write_tokens
            if reader.stopped:
                self.state.finished = True


# What a count request may hold: the prompt, never the output settings (Anthropic refuses
# any other field, max_tokens included).
COUNT_FIELDS = ("model", "messages", "system", "tools", "tool_choice")


class AnthropicProvider(HttpProvider):
    dialect: Dialect = "anthropic"

    @property
    def _url(self) -> str:
        return self._http.base_url + "/v1/messages"

    def _headers(self) -> dict[str, str]:
        return {"x-api-key": self._http.key(), "anthropic-version": ANTHROPIC_VERSION}

    async def complete(self, body: dict[str, Any]) -> Completion:
        status, payload = await self._http.post_json(
            self._url, to_messages_request(body), self._headers()
        )
        completion, usage, written = completion_from_message(payload)
        return Completion(completion, usage, status=status, cache_write_tokens=written)

    async def open_stream(self, body: dict[str, Any]) -> AnthropicStream:
        request = {**to_messages_request(body), "stream": True}
        return AnthropicStream(await self._http.open_stream(self._url, request, self._headers()))

    async def count_tokens(self, body: dict[str, Any]) -> int:
        """The prompt's input tokens as Anthropic counts them (cache reads and writes
        included), for exactly the Messages request `complete` would send."""
        request = {k: v for k, v in to_messages_request(body).items() if k in COUNT_FIELDS}
        status, payload = await self._http.post_json(
            self._url + "/count_tokens", request, self._headers()
        )
        return token_count(payload, "input_tokens", status)
