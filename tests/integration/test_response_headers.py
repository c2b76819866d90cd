"""Every `x-forge-*` header the API sends is documented in the README's API section."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import httpx

from forge.api import create_app
from forge.api.deps import get_gateway
from forge.domain.catalog import load_catalog
from forge.domain.money import Bucket
from forge.gateway import Gateway
from forge.money_in.accounts import create_account, credit_wallet, issue_key
from forge.providers.openai import OpenAICompatProvider
from forge.wiring import get_store
from forge_tools.emulator import Resources

README = Path(__file__).resolve().parents[2] / "README.md"
BODY = {"model": "demo-official", "messages": [{"role": "user", "content": "hi"}]}
USAGE = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}


def upstream(request: httpx.Request) -> httpx.Response:
    if not json.loads(request.content).get("stream"):
        return httpx.Response(200, json={"id": "c", "object": "chat.completion", "usage": USAGE})
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    events = [
        {**chunk, "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]},
        {**chunk, "choices": [], "usage": USAGE},
    ]
    sse = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    return httpx.Response(200, content=sse.encode(), headers={"content-type": "text/event-stream"})


def api_section() -> str:
    readme = README.read_text(encoding="utf-8")
    return readme[readme.index("\n## The API\n") :].split("\n## ", 2)[1]


def test_every_forge_response_header_is_documented(aws_stack: Resources) -> None:
    # Given a funded key and an upstream that answers both ways
    store = get_store()
    account_id = create_account(store, "headers")
    credit_wallet(store, account_id, Bucket.CREDIT, "1", source="test", memo="fund")
    plaintext, _ = issue_key(store, account_id)
    transport = httpx.MockTransport(upstream)
    provider = OpenAICompatProvider("http://up.test/v1", "k", transport=transport)
    app = create_app()
    gateway = Gateway(store, {"demo": provider}, load_catalog(), hold_ttl_seconds=960)
    app.dependency_overrides[get_gateway] = lambda: gateway

    # When it calls non-stream (then replays it by Idempotency-Key) and stream
    async def calls() -> list[httpx.Response]:
        app_transport = httpx.ASGITransport(app=app)
        auth = {"Authorization": f"Bearer {plaintext}"}
        async with httpx.AsyncClient(transport=app_transport, base_url="http://gw") as client:
            once = {**auth, "Idempotency-Key": "headers-1"}
            stream = {**BODY, "stream": True}
            return [
                await client.post("/v1/chat/completions", json=BODY, headers=once),
                await client.post("/v1/chat/completions", json=BODY, headers=once),
                await client.post("/v1/chat/completions", json=stream, headers=auth),
            ]

    responses = asyncio.run(calls())
    assert [r.status_code for r in responses] == [200, 200, 200]
    sent = {name for r in responses for name in r.headers if name.startswith("x-forge-")}
    assert {"x-forge-settlement", "x-forge-max-tokens", "x-forge-hold"} <= sent

    # Then the README's API section names every one of them
    documented = set(re.findall(r"`(x-forge-[a-z-]+)`", api_section()))
    assert sent - documented == set()
