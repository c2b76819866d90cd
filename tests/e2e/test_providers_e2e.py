"""The official `openai` and `anthropic` SDKs against the running local stack, whose OpenAI,
Anthropic, Gemini and OpenAI-compatible (DeepSeek) routes point at fake providers speaking
each provider's wire format: every answer translated, every charge exact (balance decrease ==
receipt == ledger entry), fallbacks visible, receipts readable by their own account only."""

from __future__ import annotations

import time
import uuid
from typing import Any

import anthropic
import httpx
import pytest

from forge.domain.catalog import CatalogModel
from forge.domain.money import Bucket, RouteType, Usage, charge_for
from forge.money_in.accounts import create_account, credit_wallet, issue_key
from tests.e2e.conftest import LocalStack
from tests.e2e.helpers import e2e_catalog, forge_admin, new_customer, sdk
from tests.fakes import Fault
from tests.fakes.base import Call
from tests.integration.providers_kit import LONG_SYSTEM, Fakes, reported_usage

# catalog model -> (provider, fake upstream model)
SERVED = {
    "gpt-4o-mini": ("openai", "gpt-4o-mini"),
    "claude-haiku-4-5": ("anthropic", "claude-haiku-4-5"),
    "gemini-2.5-flash": ("gemini", "gemini-2.5-flash"),
    "deepseek-chat": ("openai", "deepseek-chat"),  # an OpenAI-compatible endpoint
}
BUCKET = {"deepseek-chat": Bucket.RMB}
open_anthropic: list[anthropic.Anthropic] = []


@pytest.fixture(autouse=True)
def _close_anthropic_clients() -> Any:
    yield
    while open_anthropic:
        open_anthropic.pop().close()


def claude_sdk(stack: LocalStack, key: str) -> anthropic.Anthropic:
    """The official Anthropic client pointed at the gateway (it posts to {base}/v1/messages)."""
    client = anthropic.Anthropic(
        base_url=stack.base_url.removesuffix("/v1"), api_key=key, max_retries=0
    )
    open_anthropic.append(client)
    return client


def route(model: str, index: int = 0) -> Any:
    models = {m["id"]: m for m in e2e_catalog()["models"]}
    return CatalogModel.model_validate(models[model]).routes[index]


def served_call(fakes: Fakes, provider: str, marker: str) -> Call:
    """The fake's record of the request whose prompt carries `marker`."""
    calls = [c for c in fakes[provider].calls if marker in str(c.body)]
    assert calls, f"{provider} never saw {marker}"
    return calls[-1]


def expected_charge(model: str, call: Call, provider: str, index: int = 0) -> int:
    usage: Usage = reported_usage(provider, call.usage or {})
    return charge_for(usage, route(model, index).effective_prices)


def receipt_of(stack: LocalStack, key: str, request_id: str) -> httpx.Response:
    return httpx.get(
        f"{stack.base_url}/requests/{request_id}", headers={"Authorization": f"Bearer {key}"}
    )


@pytest.mark.parametrize("model", list(SERVED))
def test_openai_sdk_non_stream_through_every_provider(
    local_stack: LocalStack, fake_providers: Fakes, model: str
) -> None:
    provider, upstream = SERVED[model]
    bucket = BUCKET.get(model, Bucket.CREDIT)
    account_id, key = new_customer(local_stack)
    store = local_stack.store()
    before = store.get_wallet(account_id, bucket).balance
    marker = uuid.uuid4().hex

    raw = sdk(local_stack, key).chat.completions.with_raw_response.create(
        model=model,
        messages=[
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": f"Explain my bill {marker}"},
        ],
        max_tokens=60,
    )
    completion = raw.parse()

    served = served_call(fake_providers, provider, marker)
    assert completion.choices[0].message.content == served.text
    assert completion.model.startswith(upstream)  # what actually served the call
    assert (
        raw.headers["x-forge-route"]
        == f"{provider if model != 'deepseek-chat' else 'deepseek'}:{upstream}"
    )
    assert raw.headers["x-forge-upstream-model"] == upstream
    assert raw.headers["x-forge-bucket"] == bucket.value
    charge = int(raw.headers["x-forge-charge-micros"])
    assert charge == expected_charge(model, served, provider) > 0
    assert completion.usage is not None
    assert (
        completion.usage.prompt_tokens == reported_usage(provider, served.usage or {}).input_tokens
    )
    after = store.get_wallet(account_id, bucket)
    assert before - after.balance == charge and after.held == 0
    entry = store.list_entries(account_id, bucket)[-1]
    assert (entry.entry_id, entry.amount) == (raw.headers["x-forge-ledger-entry"], -charge)


@pytest.mark.parametrize("model", list(SERVED))
def test_openai_sdk_stream_through_every_provider_charges_the_usage_once(
    local_stack: LocalStack, fake_providers: Fakes, model: str
) -> None:
    provider, _ = SERVED[model]
    bucket = BUCKET.get(model, Bucket.CREDIT)
    account_id, key = new_customer(local_stack)
    store = local_stack.store()
    before = store.get_wallet(account_id, bucket).balance
    marker = uuid.uuid4().hex
    system: Any = LONG_SYSTEM
    if provider == "anthropic":
        system = [{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}}]
    messages: Any = [
        {"role": "system", "content": system},
        {"role": "user", "content": f"Stream it {marker}"},
    ]
    client = sdk(local_stack, key)
    # Twice: the second call reads the prompt cache the first one wrote.
    list(client.chat.completions.create(model=model, messages=messages, stream=True))
    chunks = list(
        client.chat.completions.create(
            model=model, messages=messages, stream=True, stream_options={"include_usage": True}
        )
    )

    served = served_call(fake_providers, provider, marker)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == served.text
    final = chunks[-1]
    assert final.choices == [] and final.usage is not None
    usage = reported_usage(provider, served.usage or {})
    assert usage.cached_input_tokens > 0  # the cache was read...
    assert final.usage.prompt_tokens_details is not None
    assert final.usage.prompt_tokens_details.cached_tokens == usage.cached_input_tokens
    assert final.usage.prompt_tokens == usage.input_tokens  # ...and counted once, inside input
    receipt = (final.model_extra or {})["receipt"]
    assert receipt["charge_micros"] == expected_charge(model, served, provider) > 0
    assert receipt["bucket"] == bucket.value
    entries = store.list_entries(account_id, bucket)[-2:]
    first_charge = -entries[0].amount
    assert (
        before - store.get_wallet(account_id, bucket).balance
        == first_charge + receipt["charge_micros"]
    )
    assert -entries[1].amount == receipt["charge_micros"]


@pytest.mark.parametrize("model", ["claude-haiku-4-5", "gemini-2.5-flash"])
def test_openai_sdk_tool_calls_through_claude_and_gemini(
    local_stack: LocalStack, fake_providers: Fakes, model: str
) -> None:
    _, key = new_customer(local_stack)
    tools: Any = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    completion = sdk(local_stack, key).chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": f"What is the weather? {uuid.uuid4().hex}"}],
        tools=tools,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert call.function.arguments == '{"city": "Paris"}'  # type: ignore[union-attr]


@pytest.mark.parametrize("model", ["claude-haiku-4-5", "gpt-4o-mini"])
def test_anthropic_sdk_messages_non_stream(
    local_stack: LocalStack, fake_providers: Fakes, model: str
) -> None:
    provider, upstream = SERVED[model]
    account_id, key = new_customer(local_stack)
    marker = uuid.uuid4().hex

    raw = claude_sdk(local_stack, key).messages.with_raw_response.create(
        model=model,
        max_tokens=50,
        system="Be terse.",
        messages=[
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi, what do you need?"},
            {"role": "user", "content": f"My bill {marker}"},
        ],
    )
    message = raw.parse()

    served = served_call(fake_providers, provider, marker)
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text" and message.content[0].text == served.text
    assert message.model.startswith(upstream)
    assert message.stop_reason in ("end_turn", "max_tokens")
    usage = reported_usage(provider, served.usage or {})
    billed = (
        message.usage.input_tokens
        + (message.usage.cache_read_input_tokens or 0)
        + (message.usage.cache_creation_input_tokens or 0)
    )
    assert billed == usage.input_tokens and message.usage.output_tokens == usage.output_tokens
    charge = int(raw.headers["x-forge-charge-micros"])
    assert charge == expected_charge(model, served, provider)
    entry = local_stack.store().list_entries(account_id, Bucket.CREDIT)[-1]
    assert entry.amount == -charge and entry.request_id == raw.headers["x-request-id"]


def test_anthropic_sdk_stream_and_tool_use(local_stack: LocalStack, fake_providers: Fakes) -> None:
    account_id, key = new_customer(local_stack)
    client = claude_sdk(local_stack, key)
    marker = uuid.uuid4().hex

    with client.messages.stream(
        model="claude-haiku-4-5",
        max_tokens=80,
        system=[{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": f"Tell me {marker}"}],
    ) as streamed:
        text = "".join(streamed.text_stream)
        final = streamed.get_final_message()

    served = served_call(fake_providers, "anthropic", marker)
    assert text == served.text
    raw_usage = served.usage or {}
    assert final.usage.output_tokens == raw_usage["output_tokens"]
    assert final.usage.cache_creation_input_tokens == raw_usage["cache_creation_input_tokens"]
    assert final.usage.cache_read_input_tokens == raw_usage["cache_read_input_tokens"]
    assert final.usage.input_tokens == raw_usage["input_tokens"]
    entry = local_stack.store().list_entries(account_id, Bucket.CREDIT)[-1]
    assert -entry.amount == expected_charge("claude-haiku-4-5", served, "anthropic") > 0

    tool = client.messages.create(
        model="claude-haiku-4-5",
        max_tokens=80,
        tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
        messages=[{"role": "user", "content": f"What is the weather? {marker}"}],
    )
    assert tool.stop_reason == "tool_use"
    use = next(b for b in tool.content if b.type == "tool_use")
    assert (use.name, use.input) == ("get_weather", {"city": "Paris"})
    answer = client.messages.create(
        model="claude-haiku-4-5",
        max_tokens=80,
        tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
        messages=[
            {"role": "user", "content": f"What is the weather? {marker}"},
            {"role": "assistant", "content": tool.content},  # type: ignore[typeddict-item]
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "21 C"}],
            },
        ],
    )
    assert answer.stop_reason in ("end_turn", "max_tokens")
    assert served_call(fake_providers, "anthropic", "21 C").status == 200


def test_anthropic_sdk_sees_anthropic_errors(local_stack: LocalStack) -> None:
    with pytest.raises(anthropic.AuthenticationError):
        claude_sdk(local_stack, "sk-forge-wrong").messages.create(
            model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    _, key = new_customer(local_stack, credit="0.000001")
    with pytest.raises(anthropic.APIStatusError) as refused:
        claude_sdk(local_stack, key).messages.create(
            model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert refused.value.status_code == 402
    error = refused.value.body["error"]  # type: ignore[index]
    assert error["type"] == "billing_error" and error["code"] == "budget_exceeded"


def test_fallback_is_visible_and_charged_at_the_secondary_in_its_bucket(
    local_stack: LocalStack, fake_providers: Fakes
) -> None:
    fake_providers.openai.always("e2e-primary", Fault("status", 500))
    account_id, key = new_customer(local_stack)
    store = local_stack.store()
    credit_before = store.get_wallet(account_id, Bucket.CREDIT).balance
    marker = uuid.uuid4().hex

    raw = sdk(local_stack, key).chat.completions.with_raw_response.create(
        model="e2e-fallback", messages=[{"role": "user", "content": f"Fall back {marker}"}]
    )
    completion = raw.parse()

    served = served_call(fake_providers, "anthropic", marker)
    assert completion.model.startswith("e2e-secondary")
    assert raw.headers["x-forge-route"] == "anthropic:e2e-secondary"
    assert raw.headers["x-forge-route-type"] == "routed"
    assert raw.headers["x-forge-bucket"] == "rmb"
    assert raw.headers["x-forge-attempts"] == "3"
    charge = int(raw.headers["x-forge-charge-micros"])
    assert charge == expected_charge("e2e-fallback", served, "anthropic", index=1) > 0
    assert store.get_wallet(account_id, Bucket.CREDIT).balance == credit_before

    receipt = receipt_of(local_stack, key, raw.headers["x-request-id"]).json()
    assert [(a["route"], a["status"], a["action"]) for a in receipt["attempts"]] == [
        ("openai:e2e-primary", 500, "retry"),
        ("openai:e2e-primary", 500, "fallback"),
        ("anthropic:e2e-secondary", 200, None),
    ]
    assert receipt["charge"] == charge and receipt["bucket"] == "rmb"
    _, stranger = new_customer(local_stack)
    assert receipt_of(local_stack, stranger, raw.headers["x-request-id"]).status_code == 404


def test_fallback_into_a_bucket_the_key_may_not_use_is_refused(
    local_stack: LocalStack, fake_providers: Fakes
) -> None:
    fake_providers.openai.always("e2e-primary", Fault("status", 500))
    store = local_stack.store()
    account_id = create_account(store, "official only")
    credit_wallet(store, account_id, Bucket.CREDIT, "1", source="test", memo="e2e")
    key, _ = issue_key(store, account_id, route_types=frozenset({RouteType.OFFICIAL}))

    response = httpx.post(
        f"{local_stack.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "e2e-fallback", "messages": [{"role": "user", "content": "no"}]},
        timeout=30,
    )

    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "fallback_route_type_not_allowed"
    assert error["refused_bucket"] == "rmb" and "may not use" in error["message"]
    wallet = store.get_wallet(account_id, Bucket.CREDIT)
    assert (wallet.balance, wallet.held) == (1_000_000, 0)
    receipt = receipt_of(local_stack, key, response.headers["x-request-id"]).json()
    assert receipt["status"] == "failed" and receipt["charge"] == 0


def test_the_demo_fallback_model_shows_both_attempts(local_stack: LocalStack) -> None:
    _, key = new_customer(local_stack)
    raw = sdk(local_stack, key).chat.completions.with_raw_response.create(
        model="demo-fallback", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-forge-route"] == "demo:demo-official-1"
    receipt = receipt_of(local_stack, key, raw.headers["x-request-id"]).json()
    routes = [(a["route"], a["outcome"]) for a in receipt["attempts"]]
    assert routes[0] == ("demo:demo-fail-503", "error")
    assert routes[-1] == ("demo:demo-official-1", "ok")


def test_a_client_disconnect_is_settled_and_shown_on_the_receipt(
    local_stack: LocalStack, fake_providers: Fakes
) -> None:
    fake_providers.gemini.fail("gemini-2.5-flash", Fault("endless"))
    account_id, key = new_customer(local_stack)
    marker = uuid.uuid4().hex
    with httpx.stream(
        "POST",
        f"{local_stack.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={
            "model": "gemini-2.5-flash",
            "messages": [{"role": "user", "content": f"go on {marker}"}],
            "stream": True,
            "max_tokens": 180,
        },
        timeout=30,
    ) as response:
        request_id = response.headers["x-request-id"]
        lines = response.iter_lines()
        for _ in range(6):
            next(lines)
    deadline = time.monotonic() + 15
    receipt: dict[str, Any] = {}
    while time.monotonic() < deadline:
        found = receipt_of(local_stack, key, request_id)
        if found.status_code == 200:
            receipt = found.json()
            break
        time.sleep(0.1)
    assert receipt["status"] == "partial" and "client disconnected" in receipt["note"]
    assert 0 < receipt["charge"] <= receipt["hold"]
    wallet = local_stack.store().get_wallet(account_id, Bucket.CREDIT)
    assert wallet.held == 0 and wallet.balance == 1_000_000 - receipt["charge"]
    assert served_call(fake_providers, "gemini", marker).closed_early


def test_operators_manage_the_catalog_and_clients_see_it(local_stack: LocalStack) -> None:
    _, key = new_customer(local_stack)
    model = f"e2e-{uuid.uuid4().hex[:8]}"
    forge_admin(
        local_stack, "catalog", "route-add", "--model", model, "--provider", "demo",
        "--upstream-model", "demo-official-1", "--route-type", "official", "--input", "1",
        "--cached-input", "0.5", "--output", "2", "--multiplier", "1.25",
    )  # fmt: skip
    deadline = time.monotonic() + 10
    cards: dict[str, Any] = {}
    while model not in cards and time.monotonic() < deadline:
        cards = {m.id: m.model_extra for m in sdk(local_stack, key).models.list()}
        time.sleep(0.2)
    card = cards[model] or {}
    assert card["prices"] == {
        "input": "1.250000",
        "cached_input": "0.625000",
        "output": "2.500000",
        "currency": "USD",
    }
    assert card["route_type"] == "official" and card["bucket"] == "credit"
    completion = sdk(local_stack, key).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}]
    )
    assert completion.model == "demo-official-1"


@pytest.mark.parametrize(
    ("model", "source"), [("claude-haiku-4-5", "provider"), ("gpt-4o-mini", "estimate")]
)
def test_anthropic_sdk_counts_tokens_for_free(
    local_stack: LocalStack, fake_providers: Fakes, model: str, source: str
) -> None:
    account_id, key = new_customer(local_stack)
    store = local_stack.store()
    entries = len(store.list_entries(account_id, Bucket.CREDIT))

    raw = claude_sdk(local_stack, key).messages.with_raw_response.count_tokens(
        model=model,
        system="Be terse.",
        messages=[{"role": "user", "content": f"Count me {uuid.uuid4().hex}"}],
    )
    counted = raw.parse()

    assert counted.input_tokens > 0
    assert raw.headers["x-forge-token-count"] == source
    assert raw.headers["request-id"] == raw.headers["x-request-id"]
    assert len(store.list_entries(account_id, Bucket.CREDIT)) == entries  # nothing charged
    assert store.get_wallet(account_id, Bucket.CREDIT).held == 0
