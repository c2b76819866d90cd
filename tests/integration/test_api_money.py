"""The HTTP API in process (httpx.ASGITransport) over the emulated store, with a fake upstream
that counts its calls: idempotency keys and failing closed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from forge.api import create_app
from forge.api.deps import get_gateway
from forge.domain.catalog import load_catalog
from forge.domain.money import Bucket
from forge.domain.records import LedgerKind
from forge.gateway import Gateway
from forge.money_in.accounts import create_account, credit_wallet, issue_key
from forge.providers.openai import OpenAICompatProvider
from forge.store.dynamo.store import DynamoStore
from forge.wiring import get_store as stores_get_store
from forge_tools.emulator import Resources

BODY = {
    "model": "demo-official",
    "messages": [{"role": "user", "content": "once"}],
    "max_tokens": 32,
}
USAGE = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}


class CountingUpstream:
    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        await asyncio.sleep(self.delay)
        body = json.loads(request.content)
        if body.get("stream"):
            chunk = {
                "id": "c",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "m",
                "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}],
            }
            final = {**chunk, "choices": [], "usage": USAGE}
            sse = f"data: {json.dumps(chunk)}\n\ndata: {json.dumps(final)}\n\ndata: [DONE]\n\n"
            return httpx.Response(
                200, content=sse.encode(), headers={"content-type": "text/event-stream"}
            )
        return httpx.Response(
            200,
            json={
                "id": f"call-{self.calls}",
                "object": "chat.completion",
                "choices": [],
                "usage": USAGE,
            },
        )


@pytest.fixture
def api(aws_stack: Resources) -> Iterator[tuple[httpx.AsyncClient, CountingUpstream, str, str]]:
    store = stores_get_store()
    account_id = create_account(store, "api test")
    credit_wallet(store, account_id, Bucket.CREDIT, "1", source="test", memo="fund")
    plaintext, _ = issue_key(store, account_id)
    upstream = CountingUpstream(delay=0.2)
    provider = OpenAICompatProvider(
        "http://up.test/v1", "k", transport=httpx.MockTransport(upstream)
    )
    app = create_app()
    gateway = Gateway(store, {"demo": provider}, load_catalog(), hold_ttl_seconds=960)
    app.dependency_overrides[get_gateway] = lambda: gateway
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://gw",
        headers={"Authorization": f"Bearer {plaintext}"},
    )
    yield client, upstream, account_id, plaintext
    asyncio.run(client.aclose())


def charge_entries(store: DynamoStore, account_id: str) -> int:
    return sum(
        1 for e in store.list_entries(account_id, Bucket.CREDIT) if e.kind is LedgerKind.CHARGE
    )


def test_a_retry_with_the_same_key_replays_without_a_new_charge(api: Any) -> None:
    client, upstream, account_id, _ = api
    headers = {"Idempotency-Key": "order-42"}

    async def run() -> tuple[httpx.Response, httpx.Response]:
        first = await client.post("/v1/chat/completions", json=BODY, headers=headers)
        again = await client.post("/v1/chat/completions", json=BODY, headers=headers)
        return first, again

    first, again = asyncio.run(run())
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["x-forge-idempotent-replay"] == "true"
    assert again.headers["x-request-id"] == first.headers["x-request-id"]
    assert again.headers["x-forge-charge-micros"] == first.headers["x-forge-charge-micros"]
    assert upstream.calls == 1
    assert charge_entries(stores_get_store(), account_id) == 1


def test_the_same_key_with_another_body_is_a_409(api: Any) -> None:
    client, upstream, account_id, _ = api

    async def run() -> httpx.Response:
        await client.post("/v1/chat/completions", json=BODY, headers={"Idempotency-Key": "k1"})
        other = {**BODY, "max_tokens": 33}
        return await client.post(
            "/v1/chat/completions", json=other, headers={"Idempotency-Key": "k1"}
        )

    conflict = asyncio.run(run())
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "idempotency_key_reused"
    assert upstream.calls == 1
    assert charge_entries(stores_get_store(), account_id) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_concurrent_requests_with_one_key_make_one_upstream_call(api: Any, stream: bool) -> None:
    client, upstream, account_id, _ = api
    body = {**BODY, "stream": stream}

    async def run() -> list[httpx.Response]:
        return await asyncio.gather(
            *(
                client.post("/v1/chat/completions", json=body, headers={"Idempotency-Key": "same"})
                for _ in range(5)
            )
        )

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200] * 5
    assert len({r.content for r in responses}) == 1  # every caller got the same answer
    assert sum(r.headers.get("x-forge-idempotent-replay") == "true" for r in responses) == 4
    assert upstream.calls == 1
    assert charge_entries(stores_get_store(), account_id) == 1


def test_a_refused_request_releases_its_key_so_a_retry_can_succeed(api: Any) -> None:
    client, upstream, _, _ = api
    store = stores_get_store()
    broke = create_account(store, "empty wallet")
    plaintext, _ = issue_key(store, broke)
    headers = {"Idempotency-Key": "retry-me", "Authorization": f"Bearer {plaintext}"}

    async def attempt() -> httpx.Response:
        return await client.post("/v1/chat/completions", json=BODY, headers=headers)

    refused = asyncio.run(attempt())
    assert refused.status_code == 402
    assert upstream.calls == 0
    credit_wallet(store, broke, Bucket.CREDIT, "1", source="test", memo="top-up")
    retried = asyncio.run(attempt())
    assert retried.status_code == 200  # run afresh, not a replay of the refusal
    assert "x-forge-idempotent-replay" not in retried.headers
    assert upstream.calls == 1
    assert charge_entries(store, broke) == 1


def test_a_broken_budget_store_fails_closed_with_503_and_no_upstream_call(
    aws_stack: Resources,
) -> None:
    import boto3

    store = stores_get_store()
    account_id = create_account(store, "closed")
    credit_wallet(store, account_id, Bucket.CREDIT, "1", source="test", memo="fund")
    plaintext, _ = issue_key(store, account_id)
    upstream = CountingUpstream()
    provider = OpenAICompatProvider(
        "http://up.test/v1", "k", transport=httpx.MockTransport(upstream)
    )
    gateway = Gateway(store, {"demo": provider}, load_catalog(), hold_ttl_seconds=960)
    app = create_app()
    app.dependency_overrides[get_gateway] = lambda: gateway

    async def run() -> httpx.Response:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gw"
        ) as client:
            # authenticate while the store works (the key is then cached) ...
            ok = await client.get("/v1/models", headers={"Authorization": f"Bearer {plaintext}"})
            assert ok.status_code == 200
            # ... then the budget store goes away.
            broken = boto3.client(
                "dynamodb", endpoint_url="http://127.0.0.1:9", region_name="us-east-1"
            )
            gateway._store = DynamoStore(broken, "budget", "ledger")
            return await client.post(
                "/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {plaintext}"}
            )

    response = asyncio.run(run())
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "budget_store_unavailable"
    assert response.headers["retry-after"] == "1"  # the SDKs wait this long before retrying
    assert upstream.calls == 0
    wallet = store.get_wallet(account_id, Bucket.CREDIT)
    assert (wallet.balance, wallet.held) == (1_000_000, 0)
