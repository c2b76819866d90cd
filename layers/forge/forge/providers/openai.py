"""OpenAI-compatible provider over httpx: OpenAI itself, resellers, DeepSeek, the demo provider.

Chat completions (non-stream and SSE, always asking for the usage chunk with
`stream_options.include_usage`) and embeddings, with a bearer key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx

from forge.domain.upstream import Completion, FailureKind, UpstreamError, usage_from_openai
from forge.providers.http import (
    HttpProvider,
    UpstreamStream,
    parse_event,
    sse_events,
)


def _openai_body(body: dict[str, Any]) -> dict[str, Any]:
    """The body without Anthropic's prompt-cache marks (a Claude client's `cache_control`),
    which OpenAI-compatible APIs do not know: they cache prefixes by themselves."""
    if not any(isinstance(m.get("content"), list) for m in body.get("messages") or []):
        return body
    messages = [
        {
            **m,
            "content": [
                {k: v for k, v in part.items() if k != "cache_control"}
                if isinstance(part, dict)
                else part
                for part in m["content"]
            ],
        }
        if isinstance(m.get("content"), list)
        else m
        for m in body["messages"]
    ]
    return {**body, "messages": messages}


class OpenAIStream(UpstreamStream):
    """SSE data lines -> chunk dicts; remembers the usage chunk and how much was delivered."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response)

    async def chunks(self) -> AsyncIterator[dict[str, Any]]:
        async for _, data in sse_events(self._response):
            if data.strip() == "[DONE]":
                self.state.finished = True
                return
            chunk = parse_event(data, self.status)
            if isinstance(chunk.get("error"), dict):  # some compatible upstreams do this
                error = chunk["error"]
                raise UpstreamError(
                    str(error.get("code") or error.get("type") or "stream_error"),
                    self.status,
                    kind=FailureKind.RETRY,
                    message=error.get("message"),
                )
            if usage := usage_from_openai(chunk.get("usage")):
                self.state.usage = usage
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                if delta.get("content") or delta.get("tool_calls") or delta.get("refusal"):
                    self.state.content_chunks += 1
            yield chunk


class OpenAICompatProvider(HttpProvider):
    """`{base_url}/chat/completions` and `{base_url}/embeddings` with a bearer key."""

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._http.key()}"}

    async def complete(self, body: dict[str, Any]) -> Completion:
        url = self._http.base_url + "/chat/completions"
        status, payload = await self._http.post_json(url, _openai_body(body), self._headers())
        usage = usage_from_openai(payload.get("usage"))
        if usage is None:
            raise UpstreamError("missing_usage", status, kind=FailureKind.ROUTE)
        return Completion(body=payload, usage=usage, status=status)

    async def open_stream(self, body: dict[str, Any]) -> OpenAIStream:
        body = {**_openai_body(body), "stream": True, "stream_options": {"include_usage": True}}
        url = self._http.base_url + "/chat/completions"
        return OpenAIStream(await self._http.open_stream(url, body, self._headers()))

    async def embed(self, body: dict[str, Any]) -> Completion:
        url = self._http.base_url + "/embeddings"
        status, payload = await self._http.post_json(url, body, self._headers())
        usage = usage_from_openai(payload.get("usage"))
        if usage is None:
            raise UpstreamError("missing_usage", status, kind=FailureKind.ROUTE)
        return Completion(body=payload, usage=usage, status=status)
