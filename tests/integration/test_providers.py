"""Each provider adapter against a fake server that speaks that provider's documented wire
format over real HTTP on 127.0.0.1, through the gateway and the emulated budget store:
translation (non-stream, stream, tools, multi-turn), usage charged exactly with cached tokens
once, retries (429 + Retry-After, 5xx, timeouts, malformed JSON), client errors returned as
they are, cut streams, client disconnects and streams stopped at their hold."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from forge.domain.errors import UpstreamRejected, UpstreamUnavailable
from forge.domain.ids import new_id
from forge.domain.money import Bucket, Usage
from forge.domain.records import utcnow
from forge.domain.requests import EmbeddingsRequest
from forge.gateway import RequestLimits, estimated_input_tokens
from forge.ledger.reconcile import reconcile
from forge.store.dynamo.store import DynamoStore
from forge.wiring import get_store
from forge_tools.emulator import Resources
from tests.fakes import Fault
from tests.integration.providers_kit import (
    LONG_SYSTEM,
    MODELS,
    PROVIDERS,
    Fakes,
    Sleeps,
    balances,
    call,
    chat,
    cost,
    customer,
    gateway,
    reported_usage,
    run,
    start_fakes,
    stream,
    text_of,
)

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    yield from start_fakes()


@pytest.fixture
def store(aws_stack: Resources, fakes: Fakes) -> DynamoStore:
    fakes.reset()
    return get_store()


def assert_conserved(store: DynamoStore) -> None:
    report = reconcile(store, utcnow())
    assert report.ok, report.drifts
    assert report.pending_holds == 0


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_plain_call_is_translated_and_charged_exactly(
    store: DynamoStore, fakes: Fakes, provider: str
) -> None:
    key = customer(store)
    gw = gateway(store, fakes)
    request = chat(
        provider,
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Explain my bill"},
        max_tokens=50,
    )

    body, receipt = run(call(gw, key, request))

    served = fakes[provider].calls[-1]
    assert served.status == 200, served  # the fake accepted the translated request
    assert body["choices"][0]["message"]["content"] == served.text
    assert body["model"].startswith(MODELS[provider])  # what actually served the call
    usage = reported_usage(provider, served.usage or {})
    assert receipt.usage == usage
    assert receipt.charge == cost(usage, receipt.prices) > 0  # type: ignore[arg-type]
    assert balances(store, key)[Bucket.CREDIT] == (1_000_000 - receipt.charge, 0)
    assert [a.outcome for a in receipt.attempts] == ["ok"]
    assert_conserved(store)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_stream_is_translated_chunk_by_chunk_and_charged_exactly(
    store: DynamoStore, fakes: Fakes, provider: str
) -> None:
    key = customer(store)
    gw = gateway(store, fakes)

    items = run(stream(gw, key, chat(provider, {"role": "user", "content": "stream it"})))

    served = fakes[provider].calls[-1]
    assert served.stream and served.status == 200
    assert text_of(items) == served.text
    finishes = [
        c["finish_reason"] for i in items if i.kind == "chunk" for c in i.payload["choices"]
    ]
    assert finishes[-1] == "stop"
    end = items[-1]
    assert end.kind == "end" and end.receipt is not None
    usage = reported_usage(provider, served.usage or {})
    assert end.payload["usage"]["prompt_tokens"] == usage.input_tokens
    assert end.payload["usage"]["completion_tokens"] == usage.output_tokens
    assert end.receipt.charge == cost(usage, end.receipt.prices) > 0  # type: ignore[arg-type]
    assert end.payload["receipt"]["charge_micros"] == end.receipt.charge  # not $0, not twice
    assert balances(store, key)[Bucket.CREDIT] == (1_000_000 - end.receipt.charge, 0)
    assert_conserved(store)


def _cached_request(provider: str, streamed: bool) -> Any:
    system: Any = LONG_SYSTEM
    if provider == "anthropic":  # Claude caches what the request marks
        system = [{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}}]
    return chat(
        provider,
        {"role": "system", "content": system},
        {"role": "user", "content": "What did I spend?"},
        max_tokens=40,
        stream=streamed,
    )


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_cached_tokens_are_charged_once_at_the_cached_price(
    store: DynamoStore, fakes: Fakes, provider: str, streamed: bool
) -> None:
    key = customer(store)
    gw = gateway(store, fakes)
    charges = []
    for _ in range(2):  # the first call writes the cache, the second reads it
        request = _cached_request(provider, streamed)
        if streamed:
            receipt = run(stream(gw, key, request))[-1].receipt
        else:
            receipt = run(call(gw, key, request))[1]
        served = fakes[provider].calls[-1]
        usage = reported_usage(provider, served.usage or {})
        assert receipt is not None and receipt.usage == usage
        assert receipt.charge == cost(usage, receipt.prices)  # type: ignore[arg-type]
        charges.append(receipt)
    first, second = charges
    assert first.usage.cached_input_tokens == 0
    assert second.usage.cached_input_tokens > 0
    assert second.usage.input_tokens == first.usage.input_tokens  # cached tokens inside input
    assert second.charge < first.charge
    if provider == "anthropic":
        assert first.cache_write_input_tokens > 0 and second.cache_write_input_tokens == 0
    total = first.charge + second.charge
    assert balances(store, key)[Bucket.CREDIT] == (1_000_000 - total, 0)
    assert_conserved(store)


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_tool_use_round_trips_through_every_provider(
    store: DynamoStore, fakes: Fakes, provider: str, streamed: bool
) -> None:
    key = customer(store)
    gw = gateway(store, fakes)
    question = {"role": "user", "content": "What is the weather in Paris?"}

    request = chat(provider, question, tools=TOOLS, stream=streamed)
    if streamed:
        items = run(stream(gw, key, request))
        deltas = [c["delta"] for i in items if i.kind == "chunk" for c in i.payload["choices"]]
        calls = [t for d in deltas for t in d.get("tool_calls") or []]
        name = next(t["function"]["name"] for t in calls if t.get("function", {}).get("name"))
        call_id = next(t["id"] for t in calls if t.get("id"))
        arguments = "".join(t["function"].get("arguments") or "" for t in calls)
        finish = [
            c["finish_reason"] for i in items if i.kind == "chunk" for c in i.payload["choices"]
        ]
        assert finish[-1] == "tool_calls"
    else:
        body, _ = run(call(gw, key, request))
        choice = body["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        tool_call = choice["message"]["tool_calls"][0]
        name, call_id = tool_call["function"]["name"], tool_call["id"]
        arguments = tool_call["function"]["arguments"]
    assert name == "get_weather" and json.loads(arguments) == {"city": "Paris"}

    # The second turn carries the call and its result back: the provider must accept it.
    follow_up = chat(
        provider,
        question,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": '{"temp_c": 21}'},
        {"role": "user", "content": "Thanks, summarise"},
        tools=TOOLS,
    )
    body, receipt = run(call(gw, key, follow_up))
    assert fakes[provider].calls[-1].status == 200
    assert body["choices"][0]["message"]["content"] == fakes[provider].calls[-1].text
    assert receipt.status == "succeeded"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_429_with_retry_after_is_retried_after_that_wait(
    store: DynamoStore, fakes: Fakes, provider: str
) -> None:
    key = customer(store)
    sleeps = Sleeps()
    gw = gateway(store, fakes, sleeps=sleeps)
    fakes[provider].fail(MODELS[provider], Fault("status", 429, retry_after="2"))

    _, receipt = run(call(gw, key, chat(provider)))

    assert sleeps.waits == [2.0]
    assert [(a.status, a.action, a.wait_ms) for a in receipt.attempts] == [
        (429, "retry", 2000),
        (200, None, None),
    ]
    assert len(fakes[provider].calls) == 2
    assert receipt.charge == cost(
        reported_usage(provider, fakes[provider].calls[-1].usage or {}),
        receipt.prices,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("provider", PROVIDERS)
def test_server_errors_and_malformed_json_are_retried_with_capped_jittered_backoff(
    store: DynamoStore, fakes: Fakes, provider: str
) -> None:
    key = customer(store)
    sleeps = Sleeps()
    gw = gateway(store, fakes, sleeps=sleeps)
    fakes[provider].fail(MODELS[provider], Fault("status", 500))
    _, first = run(call(gw, key, chat(provider)))
    fakes[provider].fail(MODELS[provider], Fault("malformed"))
    _, second = run(call(gw, key, chat(provider)))

    assert [a.reason for a in first.attempts] != []
    assert (first.attempts[0].status, first.attempts[0].action) == (500, "retry")
    assert second.attempts[0].reason == "malformed_response"
    assert sleeps.waits == pytest.approx([0.15, 0.15])  # base 0.2 s, equal jitter, rand 0.5
    assert first.status == second.status == "succeeded"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_timeout_is_retried(store: DynamoStore, fakes: Fakes, provider: str) -> None:
    key = customer(store)
    gw = gateway(store, fakes, timeout=0.3)
    fakes[provider].fail(MODELS[provider], Fault("timeout", seconds=1.0))

    started = time.monotonic()
    _, receipt = run(call(gw, key, chat(provider)))

    assert receipt.attempts[0].status is None and "timeout" in (receipt.attempts[0].reason or "")
    assert receipt.attempts[-1].outcome == "ok"
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_client_error_is_returned_as_it_is_without_retry(
    store: DynamoStore, fakes: Fakes, provider: str
) -> None:
    key = customer(store)
    sleeps = Sleeps()
    gw = gateway(store, fakes, sleeps=sleeps)
    fakes[provider].fail(MODELS[provider], Fault("status", 400))
    request_id = new_id("req")

    with pytest.raises(UpstreamRejected) as refused:
        run(call(gw, key, chat(provider), request_id))

    assert refused.value.status == 400 and refused.value.details["upstream_status"] == 400
    assert "scripted failure" in refused.value.message  # the provider's own message
    assert len(fakes[provider].calls) == 1 and sleeps.waits == []
    receipt = store.get_receipt(key.account_id, request_id)
    assert receipt is not None and receipt.charge == 0 and receipt.attempts[0].action == "return"
    assert balances(store, key)[Bucket.CREDIT] == (1_000_000, 0)


def test_a_provider_that_keeps_failing_charges_nothing(store: DynamoStore, fakes: Fakes) -> None:
    key = customer(store)
    gw = gateway(store, fakes)
    fakes.gemini.always(MODELS["gemini"], Fault("status", 503))
    request_id = new_id("req")

    with pytest.raises(UpstreamUnavailable):
        run(call(gw, key, chat("gemini"), request_id))

    receipt = store.get_receipt(key.account_id, request_id)
    assert receipt is not None and receipt.status == "failed" and receipt.charge == 0
    assert [a.action for a in receipt.attempts] == ["retry", "give_up"]
    assert balances(store, key)[Bucket.CREDIT] == (1_000_000, 0)
    assert_conserved(store)


# Streams after their first byte ----------------------------------------------------------------
# How many events each fake sends before its cut, so that two content chunks got through.
_CUT_AFTER = {"openai": 3, "anthropic": 5, "gemini": 2}


@pytest.mark.parametrize("fault", ["cut", "error_event"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_stream_cut_midway_ends_with_an_error_and_charges_what_was_delivered_once(
    store: DynamoStore, fakes: Fakes, provider: str, fault: str
) -> None:
    key = customer(store)
    gw = gateway(store, fakes)
    after = _CUT_AFTER[provider] if fault == "cut" else 2
    fakes[provider].fail(MODELS[provider], Fault(fault, after=after))  # type: ignore[arg-type]
    request = chat(provider, {"role": "user", "content": "a long story"}, max_tokens=100)

    items = run(stream(gw, key, request))

    assert items[-1].kind == "error" and all(i.kind == "chunk" for i in items[:-1])
    assert len(fakes[provider].calls) == 1  # no retry after the first byte
    delivered = len(text_of(items).split())
    assert delivered == 2
    receipt = items[-1].receipt
    assert receipt is not None and receipt.status == "partial"
    reported = fakes[provider].calls[-1].usage or {}
    if provider == "openai":  # OpenAI reports usage only at the end: the documented estimate
        input_tokens = estimated_input_tokens(request)
    else:  # Anthropic (message_start) and Gemini (every chunk) reported the input already
        input_tokens = reported_usage(
            provider, {**reported, "candidatesTokenCount": 0}
        ).input_tokens
    expected = Usage(input_tokens=input_tokens, output_tokens=delivered)
    assert receipt.usage == expected
    assert receipt.charge == cost(expected, receipt.prices) > 0  # type: ignore[arg-type]
    assert items[-1].payload["error"]["receipt"]["charge_micros"] == receipt.charge
    assert balances(store, key)[Bucket.CREDIT] == (1_000_000 - receipt.charge, 0)
    assert_conserved(store)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_client_disconnect_closes_the_upstream_and_settles_what_was_produced(
    store: DynamoStore, fakes: Fakes, provider: str
) -> None:
    key = customer(store)
    gw = gateway(store, fakes)
    fakes[provider].fail(MODELS[provider], Fault("endless"))
    request_id = new_id("req")

    items = run(stream(gw, key, chat(provider, max_tokens=150), request_id, limit=4))

    receipt = store.get_receipt(key.account_id, request_id)
    assert receipt is not None and receipt.status == "partial"
    assert "client disconnected" in (receipt.note or "")
    assert receipt.usage.output_tokens >= len(text_of(items).split()) > 0
    assert 0 < receipt.charge <= receipt.hold
    assert balances(store, key)[Bucket.CREDIT] == (1_000_000 - receipt.charge, 0)
    deadline = time.monotonic() + 5
    while not fakes[provider].calls[-1].closed_early and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fakes[provider].calls[-1].closed_early  # the upstream saw the connection go
    assert_conserved(store)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_stream_whose_running_cost_reaches_its_hold_is_stopped(
    store: DynamoStore, fakes: Fakes, provider: str
) -> None:
    key = customer(store)
    gw = gateway(store, fakes)
    fakes[provider].fail(MODELS[provider], Fault("endless"))  # ignores max_tokens

    items = run(stream(gw, key, chat(provider, max_tokens=20)))

    assert len(text_of(items).split()) == 20  # what the hold pays for, not a token more
    finishes = [
        c["finish_reason"] for i in items if i.kind == "chunk" for c in i.payload["choices"]
    ]
    assert finishes[-1] == "length"
    end = items[-1]
    assert end.kind == "end" and end.receipt is not None
    assert end.receipt.charge <= end.receipt.hold
    assert end.receipt.usage.output_tokens == 20
    assert "reached the hold" in (end.receipt.note or "")
    assert balances(store, key)[Bucket.CREDIT] == (1_000_000 - end.receipt.charge, 0)
    assert_conserved(store)


def test_gemini_thinking_tokens_are_billed_as_output(store: DynamoStore, fakes: Fakes) -> None:
    key = customer(store)
    gw = gateway(store, fakes)

    _, receipt = run(call(gw, key, chat("gemini-pro")))

    reported = fakes.gemini.calls[-1].usage or {}
    assert reported["thoughtsTokenCount"] > 0
    assert (
        receipt.usage.output_tokens
        == reported["candidatesTokenCount"] + reported["thoughtsTokenCount"]
    )


def test_embeddings_are_charged_for_their_input(store: DynamoStore, fakes: Fakes) -> None:
    key = customer(store)
    gw = gateway(store, fakes)
    request = EmbeddingsRequest.model_validate({"model": "embed", "input": ["one", "two three"]})

    async def embed() -> Any:
        plan = await gw.plan(key, request, new_id("req"), RequestLimits())
        await gw.reserve(plan)
        return await gw.complete(plan)

    body, receipt = run(embed())

    assert len(body["data"]) == 2
    tokens = (fakes.openai.calls[-1].usage or {})["prompt_tokens"]
    assert receipt.usage == Usage(input_tokens=tokens)
    assert receipt.charge == tokens  # 1 micro-unit an input token
    assert balances(store, key)[Bucket.CREDIT] == (1_000_000 - tokens, 0)


def test_claude_cache_marks_are_not_sent_to_openai_compatible_upstreams(
    store: DynamoStore, fakes: Fakes
) -> None:
    key = customer(store)
    gw = gateway(store, fakes)
    marked = [{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}}]
    request = chat(
        "openai", {"role": "system", "content": marked}, {"role": "user", "content": "x"}
    )

    _, receipt = run(call(gw, key, request))

    assert fakes.openai.calls[-1].status == 200 and receipt.status == "succeeded"
