"""Google Gemini over httpx: `{base}/models/{model}:generateContent` and
`:streamGenerateContent?alt=sse` with the x-goog-api-key header, translated to OpenAI's chat
shapes by forge.providers.gemini_format; and `:countTokens`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx

from forge.domain.provider_errors import Dialect
from forge.domain.upstream import Completion, UpstreamError
from forge.providers.gemini_format import (
    GenerateStreamReader,
    completion_from_response,
    to_generate_content_request,
)
from forge.providers.http import (
    HttpProvider,
    UpstreamStream,
    parse_event,
    sse_events,
    token_count,
)


class GeminiStream(UpstreamStream):
    def __init__(self, response: httpx.Response, model: str) -> None:
        super().__init__(response)
        self._reader = GenerateStreamReader(model, created=int(time.time()))

    async def chunks(self) -> AsyncIterator[dict[str, Any]]:
        reader = self._reader
        async for _, data in sse_events(self._response):
            for chunk in reader.feed(parse_event(data, self.status), self.status):
                delta = chunk["choices"][0]["delta"]
                if delta.get("content") or delta.get("tool_calls"):
                    self.state.content_chunks += 1
                yield chunk
            if reader.usage is not None:
                self.state.usage = reader.usage
                self.state.output_tokens = reader.usage.output_tokens
        # No [DONE] in Gemini's stream: it is complete when a candidate finished.
        if not reader.finished:
            raise UpstreamError("stream ended without a finishReason", self.status)
        if final := reader.usage_chunk():
            yield final
        self.state.finished = True


class GeminiProvider(HttpProvider):
    dialect: Dialect = "gemini"

    def _url(self, model: str, method: str) -> str:
        return f"{self._http.base_url}/models/{quote(model, safe='-._')}:{method}"

    def _headers(self) -> dict[str, str]:
        return {"x-goog-api-key": self._http.key()}

    async def complete(self, body: dict[str, Any]) -> Completion:
        model = str(body["model"])
        status, payload = await self._http.post_json(
            self._url(model, "generateContent"), to_generate_content_request(body), self._headers()
        )
        completion, usage = completion_from_response(payload, model, status)
        return Completion(completion, usage, status=status)

    async def open_stream(self, body: dict[str, Any]) -> GeminiStream:
        model = str(body["model"])
        url = self._url(model, "streamGenerateContent") + "?alt=sse"
        response = await self._http.open_stream(
            url, to_generate_content_request(body), self._headers()
        )
        return GeminiStream(response, model)

    async def count_tokens(self, body: dict[str, Any]) -> int:
        """The prompt's tokens as Gemini counts them, for exactly the GenerateContentRequest
        `complete` would send (system instruction and tools included)."""
        model = str(body["model"])
        request = {
            "generateContentRequest": {
                "model": f"models/{model}",
                **to_generate_content_request(body),
            }
        }
        status, payload = await self._http.post_json(
            self._url(model, "countTokens"), request, self._headers()
        )
        return token_count(payload, "totalTokens", status)
