"""Helpers for gateway tests against the fake providers (real HTTP on 127.0.0.1) and the
emulated store: a test catalog, funded customers, and what each provider's own usage report
costs, computed here independently of the adapters."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from forge.domain.catalog import Catalog
from forge.domain.ids import new_id
from forge.domain.money import Bucket, Prices, RouteType, Usage, charge_for
from forge.domain.records import ApiKey, Receipt
from forge.domain.requests import ChatCompletionRequest
from forge.domain.routing import RetryPolicy, RouteHealth
from forge.gateway import Gateway, RequestLimits, StreamItem
from forge.money_in.accounts import create_account, credit_wallet, issue_key
from forge.providers.anthropic import AnthropicProvider
from forge.providers.gemini import GeminiProvider
from forge.providers.openai import OpenAICompatProvider
from forge.store.dynamo.store import DynamoStore
from tests.fakes import FakeAnthropic, FakeGemini, FakeOpenAI, FakeProvider

PROVIDERS = ("openai", "anthropic", "gemini")
MODELS = {"openai": "gpt-test", "anthropic": "claude-test", "gemini": "gemini-test"}
# Per 1M tokens: 1 micro-unit an input token, 0.1 a cached one, 5 an output token.
PRICES = {"input": "1", "cached_input": "0.1", "output": "5"}
LONG_SYSTEM = "You are a careful assistant who explains every charge. " * 25  # > 1024 bytes


@dataclass
class Fakes:
    openai: FakeOpenAI
    anthropic: FakeAnthropic
    gemini: FakeGemini

    def __getitem__(self, name: str) -> FakeProvider:
        provider: FakeProvider = getattr(self, name)
        return provider

    def reset(self) -> None:
        for name in PROVIDERS:
            self[name].reset()

    def stop(self) -> None:
        for name in PROVIDERS:
            self[name].stop()


def start_fakes() -> Iterator[Fakes]:
    fakes = Fakes(FakeOpenAI().start(), FakeAnthropic().start(), FakeGemini().start())
    try:
        yield fakes
    finally:
        fakes.stop()


def route(provider: str, model: str, route_type: str = "official", **prices: str) -> dict[str, Any]:
    return {
        "provider": provider,
        "upstream_model": model,
        "route_type": route_type,
        "prices": {**PRICES, **prices},
        "max_output_tokens": 200,
    }


def catalog_for_tests(*extra: dict[str, Any]) -> Catalog:
    models = [
        {"id": provider, "routes": [route(provider, MODELS[provider])]} for provider in PROVIDERS
    ]
    models.append({"id": "gemini-pro", "routes": [route("gemini", "gemini-2.5-pro-test")]})
    models.append(
        {"id": "embed", "mode": "embeddings", "routes": [route("openai", "embed-test", output="0")]}
    )
    return Catalog.model_validate({"models": [*models, *extra]})


@dataclass
class Sleeps:
    """The gateway's injected sleep: records the waits instead of waiting."""

    waits: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def providers(fakes: Fakes, timeout: float = 5.0) -> dict[str, Any]:
    return {
        "openai": OpenAICompatProvider(f"{fakes.openai.base_url}/v1", "test-key", timeout=timeout),
        "anthropic": AnthropicProvider(fakes.anthropic.base_url, "test-key", timeout=timeout),
        "gemini": GeminiProvider(f"{fakes.gemini.base_url}/v1beta", "test-key", timeout=timeout),
    }


def gateway(
    store: DynamoStore,
    fakes: Fakes,
    catalog: Catalog | None = None,
    *,
    sleeps: Sleeps | None = None,
    timeout: float = 5.0,
    health: RouteHealth | None = None,
    retry: RetryPolicy | None = None,
) -> Gateway:
    return Gateway(
        store,
        providers(fakes, timeout),
        catalog or catalog_for_tests(),
        hold_ttl_seconds=960,
        sleep=sleeps or Sleeps(),
        rand=lambda: 0.5,
        health=health or RouteHealth(threshold=1000),
        retry=retry,
    )


def customer(
    store: DynamoStore,
    credit: str = "1",
    rmb: str = "1",
    route_types: frozenset[RouteType] = frozenset(RouteType),
) -> ApiKey:
    account_id = create_account(store, "provider test")
    for bucket, amount in ((Bucket.CREDIT, credit), (Bucket.RMB, rmb)):
        if amount != "0":
            credit_wallet(store, account_id, bucket, amount, source="test", memo="fund")
    return issue_key(store, account_id, route_types=route_types)[1]


def balances(store: DynamoStore, key: ApiKey) -> dict[Bucket, tuple[int, int]]:
    out = {}
    for bucket in Bucket:
        wallet = store.get_wallet(key.account_id, bucket)
        out[bucket] = (wallet.balance, wallet.held)
    return out


def chat(model: str, *messages: dict[str, Any], **extra: Any) -> ChatCompletionRequest:
    body = {"model": model, "messages": list(messages) or [{"role": "user", "content": "hello"}]}
    return ChatCompletionRequest.model_validate({**body, **extra})


def reported_usage(provider: str, raw: dict[str, Any]) -> Usage:
    """A provider's usage report as billable tokens, by its own documentation."""
    if provider == "openai":
        return Usage(
            input_tokens=raw["prompt_tokens"],
            cached_input_tokens=raw["prompt_tokens_details"]["cached_tokens"],
            output_tokens=raw["completion_tokens"],
        )
    if provider == "anthropic":
        return Usage(
            input_tokens=raw["input_tokens"]
            + raw["cache_creation_input_tokens"]
            + raw["cache_read_input_tokens"],
            cached_input_tokens=raw["cache_read_input_tokens"],
            output_tokens=raw["output_tokens"],
        )
    return Usage(
        input_tokens=raw["promptTokenCount"],
        cached_input_tokens=raw.get("cachedContentTokenCount", 0),
        output_tokens=raw["candidatesTokenCount"] + raw.get("thoughtsTokenCount", 0),
    )


def cost(usage: Usage, prices: Prices) -> int:
    return charge_for(usage, prices)


async def call(
    gw: Gateway, key: ApiKey, request: ChatCompletionRequest, request_id: str | None = None
) -> tuple[dict[str, Any], Receipt]:
    plan = await gw.plan(key, request, request_id or new_id("req"), RequestLimits())
    await gw.reserve(plan)
    return await gw.complete(plan)


async def stream(
    gw: Gateway,
    key: ApiKey,
    request: ChatCompletionRequest,
    request_id: str | None = None,
    limit: int | None = None,
) -> list[StreamItem]:
    plan = await gw.plan(key, request, request_id or new_id("req"), RequestLimits())
    await gw.reserve(plan)
    items = (await gw.open_stream(plan)).items
    out: list[StreamItem] = []
    try:
        async for item in items:
            out.append(item)
            if limit is not None and len(out) >= limit:
                break
    finally:
        await items.aclose()
    return out


def text_of(items: list[StreamItem]) -> str:
    return "".join(
        (c.get("delta") or {}).get("content") or ""
        for i in items
        if i.kind == "chunk"
        for c in i.payload["choices"]
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def dumps(value: Any) -> str:
    return json.dumps(value)
