"""The gateway over the emulated store with faked upstreams (httpx.MockTransport, no patching):
failed calls charge nothing, cut streams and disconnects settle once, a broken store fails
closed before any upstream call."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from forge.api.sse import openai_events
from forge.domain.catalog import load_catalog
from forge.domain.errors import BudgetStoreUnavailable, UpstreamUnavailable
from forge.domain.money import Bucket, Usage, charge_for
from forge.domain.records import ApiKey
from forge.domain.requests import ChatCompletionRequest
from forge.gateway import Gateway, RequestLimits, estimated_input_tokens
from forge.money_in.accounts import create_account, credit_wallet, issue_key
from forge.providers.openai import OpenAICompatProvider
from forge.store.dynamo.store import DynamoStore
from forge.wiring import get_store
from forge_tools.emulator import Resources

REQUEST = ChatCompletionRequest.model_validate(
    {
        "model": "demo-official",
        "messages": [{"role": "user", "content": "hi there"}],
        "max_tokens": 50,
        "stream": True,
    }
)


@pytest.fixture
def aws_stack(aws_stack_or_twin: Resources) -> Resources:
    """Every test of this module runs on the emulator and on the in-memory twin."""
    return aws_stack_or_twin


def sse(*payloads: dict[str, Any], done: bool = True) -> bytes:
    body = b"".join(b"data: " + json.dumps(p).encode() + b"\n\n" for p in payloads)
    return body + (b"data: [DONE]\n\n" if done else b"")


def chunk(text: str) -> dict[str, Any]:
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }


class Upstream:
    """A fake provider that records what it was asked."""

    def __init__(self, respond: httpx.Response) -> None:
        self.requests: list[httpx.Request] = []
        self._respond = respond

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self._respond

    def gateway(self, store: DynamoStore) -> Gateway:
        provider = OpenAICompatProvider(
            "http://upstream.test/v1", "k", transport=httpx.MockTransport(self.handler)
        )
        return Gateway(store, {"demo": provider}, load_catalog(), hold_ttl_seconds=960)


def customer(store: DynamoStore) -> ApiKey:
    account_id = create_account(store, "gateway test")
    credit_wallet(store, account_id, Bucket.CREDIT, "1", source="test", memo="fund")
    return issue_key(store, account_id)[1]


def balance(store: DynamoStore, key: ApiKey) -> tuple[int, int]:
    wallet = store.get_wallet(key.account_id, Bucket.CREDIT)
    return wallet.balance, wallet.held


async def collect(events: Any, limit: int | None = None) -> list[bytes]:
    out: list[bytes] = []
    async for event in events:
        out.append(event)
        if limit is not None and len(out) >= limit:
            break
    return out


def test_upstream_500_voids_the_hold(aws_stack: Resources) -> None:
    store = get_store()
    key = customer(store)
    upstream = Upstream(httpx.Response(500, json={"error": {"code": "boom"}}))
    gateway = upstream.gateway(store)
    request = REQUEST.model_copy(update={"stream": False})
    plan = asyncio.run(gateway.plan(key, request, "req_fail500", RequestLimits()))

    async def run() -> None:
        await gateway.reserve(plan)
        with pytest.raises(UpstreamUnavailable):
            await gateway.complete(plan)

    asyncio.run(run())
    assert balance(store, key) == (1_000_000, 0)
    receipt = store.get_receipt(key.account_id, "req_fail500")
    assert receipt is not None and receipt.status == "failed" and receipt.charge == 0
    assert receipt.attempts[0].status == 500 and receipt.attempts[0].reason == "boom"


def test_a_stream_cut_midway_charges_the_documented_estimate_once(aws_stack: Resources) -> None:
    store = get_store()
    key = customer(store)
    body = sse(chunk("one"), chunk(" two"), chunk(" three"), done=False)
    upstream = Upstream(
        httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
    )
    gateway = upstream.gateway(store)
    plan = asyncio.run(gateway.plan(key, REQUEST, "req_cut", RequestLimits()))

    async def run() -> list[bytes]:
        await gateway.reserve(plan)
        return await collect(openai_events(await gateway.open_stream(plan)))

    events = asyncio.run(run())
    assert len(events) == 4 and b"[DONE]" not in events[-1]  # 3 chunks, then a final event
    expected = charge_for(
        Usage(input_tokens=estimated_input_tokens(REQUEST), output_tokens=3), plan.prices
    )
    receipt = store.get_receipt(key.account_id, "req_cut")
    assert receipt is not None and receipt.status == "partial"
    assert receipt.charge == expected > 0
    assert "estimate" in (receipt.note or "")
    assert balance(store, key) == (1_000_000 - expected, 0)


def test_a_client_disconnect_settles_what_was_delivered(aws_stack: Resources) -> None:
    store = get_store()
    key = customer(store)
    body = sse(*(chunk(f" w{i}") for i in range(10)))
    upstream = Upstream(
        httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
    )
    gateway = upstream.gateway(store)
    plan = asyncio.run(gateway.plan(key, REQUEST, "req_gone", RequestLimits()))

    async def run() -> None:
        await gateway.reserve(plan)
        events = openai_events(await gateway.open_stream(plan))
        await collect(events, limit=2)
        await events.aclose()  # what the server does when the client goes away

    asyncio.run(run())
    receipt = store.get_receipt(key.account_id, "req_gone")
    assert receipt is not None and receipt.status == "partial"
    assert "client disconnected" in (receipt.note or "")
    assert 0 < receipt.charge <= plan.hold.amount
    assert balance(store, key) == (1_000_000 - receipt.charge, 0)


def test_stream_usage_from_the_upstream_is_charged_exactly(aws_stack: Resources) -> None:
    store = get_store()
    key = customer(store)
    usage = {
        "prompt_tokens": 11,
        "completion_tokens": 2,
        "total_tokens": 13,
        "prompt_tokens_details": {"cached_tokens": 4},
    }
    final = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [],
        "usage": usage,
    }
    upstream = Upstream(
        httpx.Response(
            200,
            content=sse(chunk("a"), chunk("b"), final),
            headers={"content-type": "text/event-stream"},
        )
    )
    gateway = upstream.gateway(store)
    asks_usage = ChatCompletionRequest.model_validate(
        {**REQUEST.model_dump(exclude_none=True), "stream_options": {"include_usage": True}}
    )
    plan = asyncio.run(gateway.plan(key, asks_usage, "req_usage", RequestLimits()))

    async def run() -> list[bytes]:
        await gateway.reserve(plan)
        return await collect(openai_events(await gateway.open_stream(plan)))

    events = asyncio.run(run())
    sent = json.loads(upstream.requests[0].content)
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["model"] == "demo-official-1"
    expected = charge_for(
        Usage(input_tokens=11, cached_input_tokens=4, output_tokens=2), plan.prices
    )
    last_chunk = json.loads(events[-3].removeprefix(b"data: "))
    assert last_chunk["usage"]["prompt_tokens_details"]["cached_tokens"] == 4
    assert last_chunk["receipt"]["charge_micros"] == expected
    receipt = json.loads(events[-2].removeprefix(b": receipt "))
    assert receipt == last_chunk["receipt"]
    assert events[-1] == b"data: [DONE]\n\n"
    assert balance(store, key) == (1_000_000 - expected, 0)


def test_a_broken_budget_store_fails_closed_and_calls_no_upstream(aws_stack: Resources) -> None:
    import boto3

    store = get_store()
    key = customer(store)
    broken = DynamoStore(
        boto3.client("dynamodb", endpoint_url="http://127.0.0.1:9", region_name="us-east-1"),
        "budget",
        "ledger",
    )
    upstream = Upstream(httpx.Response(200, json={}))
    gateway = upstream.gateway(broken)
    request = REQUEST.model_copy(update={"stream": False})

    async def run() -> None:
        plan = await gateway.plan(key, request, "req_closed", RequestLimits())
        await gateway.reserve(plan)

    with pytest.raises(BudgetStoreUnavailable):
        asyncio.run(run())
    assert upstream.requests == []
