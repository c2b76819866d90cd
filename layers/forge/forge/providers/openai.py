"""OpenAI-compatible provider over httpx: OpenAI itself, resellers, DeepSeek, the demo provider.

Chat completions (non-stream and SSE, always asking for the usage chunk with
`stream_options.include_usage`) and embeddings, with a bearer key. Embeddings are answered in
the `encoding_format` asked for, whatever the upstream sent (many compatible upstreams, and
the demo, answer floats to a request for base64).
"""

from __future__ import annotations

import base64
import binascii
import struct
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
        wanted = str(body.get("encoding_format") or "float")
        payload = {**payload, "data": embeddings_as(wanted, payload.get("data"), status)}
        return Completion(body=payload, usage=usage, status=status)


def embeddings_as(encoding: str, data: Any, status: int) -> list[dict[str, Any]]:
    """Each embedding in `encoding`: `float` (a list of numbers) or `base64` (the float32
    values, little-endian, base64-encoded: what OpenAI sends and its SDKs decode). An
    embedding that is neither is a malformed answer (retried, never charged)."""
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise UpstreamError("malformed_response", status, kind=FailureKind.RETRY)
    return [
        {**item, "embedding": _encoded(encoding, item.get("embedding"), status)} for item in data
    ]


def _encoded(encoding: str, embedding: Any, status: int) -> list[float] | str:
    try:
        if isinstance(embedding, str):
            if encoding == "base64":
                return embedding
            raw = base64.b64decode(embedding, validate=True)
            return list(struct.unpack(f"<{len(raw) // 4}f", raw))
        numbers = embedding if isinstance(embedding, list) else None
        if numbers is None or not all(
            isinstance(n, int | float) and not isinstance(n, bool) for n in numbers
        ):
            raise ValueError("not a list of numbers")
        if encoding == "float":
            return numbers
        return base64.b64encode(struct.pack(f"<{len(numbers)}f", *numbers)).decode("ascii")
    except (ValueError, binascii.Error, struct.error, OverflowError) as exc:
        raise UpstreamError("malformed_response", status, kind=FailureKind.RETRY) from exc
