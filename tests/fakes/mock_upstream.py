"""A deterministic OpenAI-compatible upstream for httpx.MockTransport: a short answer, a
three-chunk stream with a usage chunk, or an embedding, each with the same usage."""

from __future__ import annotations

import json

import httpx
from fastapi import FastAPI

from forge.api import create_app
from forge.api.deps import get_gateway
from forge.domain.catalog import load_catalog
from forge.gateway import Gateway
from forge.providers.openai import OpenAICompatProvider
from forge.store.dynamo.store import DynamoStore
from tests.fakes.base import sse_event

USAGE = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}


def answer(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    if request.url.path.endswith("/embeddings"):
        data = [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}]
        return httpx.Response(200, json={"object": "list", "data": data, "usage": USAGE})
    if not body.get("stream"):
        choice = {"index": 0, "message": {"role": "assistant", "content": "hey"}}
        return httpx.Response(
            200, json={"id": "c", "object": "chat.completion", "choices": [choice], "usage": USAGE}
        )
    base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    chunks = [
        {**base, "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
        for word in ("one ", "two ", "three")
    ]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    chunks.append({**base, "choices": [], "usage": USAGE})
    sse = "".join(sse_event(c) for c in chunks) + sse_event("[DONE]")
    return httpx.Response(200, content=sse.encode(), headers={"content-type": "text/event-stream"})


def gateway_app(store: DynamoStore, transport: httpx.MockTransport) -> FastAPI:
    """The API app whose gateway calls `transport` for the demo routes."""
    demo = OpenAICompatProvider("http://up.test/v1", "k", transport=transport)
    app = create_app()
    gateway = Gateway(store, {"demo": demo}, load_catalog(), hold_ttl_seconds=960)
    app.dependency_overrides[get_gateway] = lambda: gateway
    return app
