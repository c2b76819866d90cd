"""OpenAI-compatible provider over httpx: OpenAI itself, resellers, and the demo provider."""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import AsyncIterator
from typing import Any

import httpx

from forge.upstream import Completion, StreamState, UpstreamError, usage_from_openai

# One connection pool per event loop: Mangum may run each invocation on a new loop.
_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, httpx.AsyncClient]] = (
    weakref.WeakKeyDictionary()
)


def _shared_client(base_url: str, timeout: float) -> httpx.AsyncClient:
    pool = _pools.setdefault(asyncio.get_running_loop(), {})
    if base_url not in pool:
        pool[base_url] = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=5.0))
    return pool[base_url]


def _error_reason(response: httpx.Response) -> str:
    try:
        error = response.json().get("error") or {}
        return str(error.get("code") or error.get("type") or f"http_{response.status_code}")
    except (ValueError, AttributeError):
        return f"http_{response.status_code}"


class OpenAIStream:
    """SSE lines -> chunk dicts; remembers the usage chunk and how much content was sent."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.state = StreamState()

    async def chunks(self) -> AsyncIterator[dict[str, Any]]:
        try:
            async for line in self._response.aiter_lines():
                if not line.startswith("data:"):
                    continue  # comments, event names and keep-alives
                data = line[5:].strip()
                if data == "[DONE]":
                    self.state.finished = True
                    return
                try:
                    chunk = json.loads(data)
                except json.JSONDecodeError as exc:
                    raise UpstreamError("malformed_stream_chunk", self.status) from exc
                if usage := usage_from_openai(chunk.get("usage")):
                    self.state.usage = usage
                if any((c.get("delta") or {}).get("content") for c in chunk.get("choices", [])):
                    self.state.content_chunks += 1
                yield chunk
        except httpx.HTTPError as exc:
            raise UpstreamError(f"stream_interrupted: {type(exc).__name__}", self.status) from exc

    async def aclose(self) -> None:
        await self._response.aclose()


class OpenAICompatProvider:
    """Chat completions against `{base_url}/chat/completions` with a bearer key."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 120.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._timeout = timeout
        self._transport = transport
        self._own_client: httpx.AsyncClient | None = None

    def _client(self) -> httpx.AsyncClient:
        if self._transport is None:
            return _shared_client(self._url, self._timeout)
        if self._own_client is None:  # the test seam: a fake upstream without patching
            self._own_client = httpx.AsyncClient(transport=self._transport, timeout=self._timeout)
        return self._own_client

    async def complete(self, body: dict[str, Any]) -> Completion:
        try:
            response = await self._client().post(self._url, json=body, headers=self._headers)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"{type(exc).__name__}") from exc
        if response.status_code != 200:
            raise UpstreamError(_error_reason(response), response.status_code)
        try:
            payload = response.json()
        except ValueError as exc:
            raise UpstreamError("malformed_response", response.status_code) from exc
        usage = usage_from_openai(payload.get("usage"))
        if usage is None:
            raise UpstreamError("missing_usage", response.status_code)
        return Completion(body=payload, usage=usage)

    async def open_stream(self, body: dict[str, Any]) -> OpenAIStream:
        """Send the request and wait for the status line: failures before the first byte
        raise here, so the caller can still answer with a plain error (or fall back)."""
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        client = self._client()
        request = client.build_request("POST", self._url, json=body, headers=self._headers)
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"{type(exc).__name__}") from exc
        if response.status_code != 200:
            await response.aread()
            await response.aclose()
            raise UpstreamError(_error_reason(response), response.status_code)
        return OpenAIStream(response)
