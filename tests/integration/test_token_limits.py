"""The output limit goes upstream in the field the route's model takes, and reasoning tokens
are priced as output and shown.

- A client's `max_completion_tokens` is forwarded as such to an OpenAI route; a route whose
  catalog entry marks a reasoning model (o4-mini: `token_limit_param: max_completion_tokens`)
  always gets `max_completion_tokens`, never the max_tokens it refuses (the fake refuses it
  as OpenAI does); Anthropic and Gemini routes get their own field from either. Without a
  limit the route's maximum goes, in the same field.
- The hold is sized from whichever limit applies.
- Both fields with different values are refused (400 invalid_parameter_combination, param
  max_tokens, as OpenAI refuses them); equal values are one limit.
- Reasoning tokens: OpenAI's are part of completion_tokens, Gemini's thoughtsTokenCount is
  not part of candidatesTokenCount and is added; both are charged as output and shown on the
  receipt and in `usage.completion_tokens_details.reasoning_tokens`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai import omit
from openai.types.chat import ChatCompletionMessageParam

from forge.domain.catalog import RouteSpec, load_catalog
from forge.domain.money import charge_for, token_cost
from forge.domain.requests import ChatCompletionRequest
from forge.gateway.plan import worst_case_input_tokens
from forge_tools.emulator import Resources
from tests.fakes.openai_fake import REASONING_TOKENS
from tests.integration.live_app import LiveApp, live_app
from tests.integration.providers_kit import Fakes, reported_usage, start_fakes

MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "How long should I think?"}
]


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    yield from start_fakes()


@pytest.fixture
def app(aws_stack: Resources, fakes: Fakes, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveApp]:
    fakes.reset()
    with live_app(fakes, monkeypatch) as served:
        yield served


def route_of(model: str) -> RouteSpec:
    found = load_catalog().find(model)
    assert found is not None
    return found.routes[0]


def expected_hold(model: str, limit: int) -> int:
    """The hold of a call of MESSAGES: the input bound plus `limit` output tokens."""
    prices = route_of(model).effective_prices
    request = ChatCompletionRequest.model_validate({"model": model, "messages": MESSAGES})
    return token_cost(worst_case_input_tokens(request), prices.input) + token_cost(
        limit, prices.output
    )


def sent_limits(body: dict[str, Any]) -> dict[str, Any]:
    return {k: body[k] for k in ("max_tokens", "max_completion_tokens") if k in body}


@pytest.mark.parametrize(
    "limits",
    [{"max_completion_tokens": 40}, {"max_tokens": 40}, {}],
    ids=["max_completion_tokens", "max_tokens", "no limit"],
)
def test_a_reasoning_route_always_gets_max_completion_tokens(
    app: LiveApp, limits: dict[str, int]
) -> None:
    with app.openai() as client:
        raw = client.chat.completions.with_raw_response.create(
            model="o4-mini",
            messages=MESSAGES,
            max_completion_tokens=limits.get("max_completion_tokens", omit),
            max_tokens=limits.get("max_tokens", omit),
        )
    completion = raw.parse()

    limit = limits.get("max_completion_tokens") or limits.get("max_tokens")
    limit = limit or route_of("o4-mini").max_output_tokens  # none sent: the route's maximum
    (call,) = app.fakes.openai.calls
    assert sent_limits(call.body) == {"max_completion_tokens": limit}
    assert raw.headers["x-forge-max-tokens"] == str(limit)
    receipt = app.receipt(raw.headers["x-request-id"])
    assert receipt.hold == expected_hold("o4-mini", limit)  # sized from the limit in force
    # Reasoning tokens are output tokens: in completion_tokens, priced as output, shown.
    usage = reported_usage("openai", call.usage or {})
    assert receipt.usage.reasoning_tokens == REASONING_TOKENS
    assert receipt.usage.output_tokens == usage.output_tokens
    assert receipt.charge == charge_for(usage, route_of("o4-mini").effective_prices)
    assert completion.usage is not None and completion.usage.completion_tokens_details is not None
    assert completion.usage.completion_tokens_details.reasoning_tokens == REASONING_TOKENS
    shown = app.receipt_json(receipt.request_id)
    assert shown["usage"]["reasoning_tokens"] == REASONING_TOKENS
    app.assert_money_whole()


@pytest.mark.parametrize("field", ["max_completion_tokens", "max_tokens"])
def test_an_openai_route_gets_the_field_the_client_used(app: LiveApp, field: str) -> None:
    with app.openai() as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            max_completion_tokens=30 if field == "max_completion_tokens" else omit,
            max_tokens=30 if field == "max_tokens" else omit,
        )

    (call,) = app.fakes.openai.calls
    assert sent_limits(call.body) == {field: 30}
    assert app.receipt(raw.headers["x-request-id"]).hold == expected_hold("gpt-4o-mini", 30)


def test_without_a_limit_an_openai_route_gets_its_maximum_as_max_tokens(app: LiveApp) -> None:
    with app.openai() as client:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    (call,) = app.fakes.openai.calls
    assert sent_limits(call.body) == {"max_tokens": route_of("gpt-4o-mini").max_output_tokens}


@pytest.mark.parametrize(
    ("model", "provider"), [("claude-haiku-4-5", "anthropic"), ("gemini-2.5-flash", "gemini")]
)
def test_anthropic_and_gemini_routes_get_their_own_field_from_max_completion_tokens(
    app: LiveApp, model: str, provider: str
) -> None:
    with app.openai() as client:
        raw = client.chat.completions.with_raw_response.create(
            model=model,
            messages=MESSAGES,
            max_completion_tokens=25,
        )

    (call,) = app.fakes[provider].calls
    if provider == "anthropic":
        assert call.body["max_tokens"] == 25 and "max_completion_tokens" not in call.body
    else:
        assert call.body["generationConfig"]["maxOutputTokens"] == 25
    assert app.receipt(raw.headers["x-request-id"]).hold == expected_hold(model, 25)


def test_different_limits_in_both_fields_are_refused_as_openai_refuses_them(
    app: LiveApp,
) -> None:
    before = app.balance()
    with app.openai() as client, pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            max_tokens=30,
            max_completion_tokens=40,
        )

    assert (raised.value.code, raised.value.param) == (
        "invalid_parameter_combination",
        "max_tokens",
    )
    assert app.fakes.openai.calls == []
    receipt = app.receipt(raw_request_id(raised.value))
    assert (receipt.status, receipt.charge) == ("failed", 0)
    assert app.balance() == before


def test_equal_limits_in_both_fields_are_one_limit(app: LiveApp) -> None:
    with app.openai() as client:
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            max_tokens=30,
            max_completion_tokens=30,
        )

    (call,) = app.fakes.openai.calls
    assert sent_limits(call.body) == {"max_completion_tokens": 30}


def test_gemini_thoughts_are_charged_as_output_and_shown(app: LiveApp) -> None:
    with app.openai() as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gemini-2.5-pro",
            messages=MESSAGES,
            max_tokens=50,
        )
    completion = raw.parse()

    (call,) = app.fakes.gemini.calls
    metadata = call.usage or {}
    thoughts = metadata["thoughtsTokenCount"]
    assert thoughts > 0  # the fake's "pro" models think
    receipt = app.receipt(raw.headers["x-request-id"])
    assert receipt.usage.output_tokens == metadata["candidatesTokenCount"] + thoughts
    assert receipt.usage.reasoning_tokens == thoughts
    prices = route_of("gemini-2.5-pro").effective_prices
    assert receipt.charge == charge_for(reported_usage("gemini", metadata), prices)
    assert receipt.charge > charge_for(
        receipt.usage.model_copy(update={"output_tokens": metadata["candidatesTokenCount"]}),
        prices,
    )
    assert int(raw.headers["x-forge-charge-micros"]) == receipt.charge
    assert completion.usage is not None and completion.usage.completion_tokens_details is not None
    assert completion.usage.completion_tokens_details.reasoning_tokens == thoughts
    assert app.receipt_json(receipt.request_id)["usage"]["reasoning_tokens"] == thoughts
    app.assert_money_whole()


def test_a_stream_shows_its_reasoning_tokens_in_the_usage_chunk(app: LiveApp) -> None:
    with app.openai() as client:
        stream = client.chat.completions.create(
            model="o4-mini",
            messages=MESSAGES,
            max_completion_tokens=20,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)

    (call,) = app.fakes.openai.calls
    assert sent_limits(call.body) == {"max_completion_tokens": 20}
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == REASONING_TOKENS
    app.assert_money_whole()


def raw_request_id(error: openai.APIStatusError) -> str:
    return error.response.headers["x-request-id"]
