"""POST /v1/responses through the official `openai` SDK, against the app under uvicorn whose
routes call the fake OpenAI, Anthropic and Gemini servers (real HTTP, each provider's own
wire format) and the emulated store: the Responses request is translated to chat for every
route, the answer back to a Response (and its events), and the charge is exactly what the
provider's own usage report costs, computed here independently of the gateway."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from forge.domain.money import Bucket, Usage
from forge.store.dynamo.store import DynamoStore
from forge.wiring import get_store
from forge_tools.emulator import Resources
from tests.conftest import clear_cached_factories
from tests.fakes import Fault
from tests.fakes.base import Call
from tests.integration.providers_kit import (
    LONG_SYSTEM,
    MODELS,
    PROVIDERS,
    Fakes,
    catalog_for_tests,
    cost,
    reported_usage,
    route,
    start_fakes,
)
from tests.integration.sdk_app import ServedApp, serve_app

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
IMAGE = "https://example.com/a.png"
TEXT_EVENTS = [
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    yield from start_fakes()


@pytest.fixture
def store(aws_stack: Resources, fakes: Fakes) -> DynamoStore:
    fakes.reset()
    return get_store()


@pytest.fixture
def app(store: DynamoStore, fakes: Fakes) -> Iterator[ServedApp]:
    yield from serve_app(store, fakes)


def served(app: ServedApp, provider: str) -> Call:
    call = app.fakes[provider].calls[-1]
    assert call.status == 200, call  # the fake accepted the translated request
    return call


def usage_of(response: Any) -> Usage:
    usage = response.usage
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    return Usage(
        input_tokens=usage.input_tokens,
        cached_input_tokens=usage.input_tokens_details.cached_tokens,
        output_tokens=usage.output_tokens,
    )


def collapse(kinds: list[str]) -> list[str]:
    """Event types with runs of deltas folded into one."""
    out: list[str] = []
    for kind in kinds:
        if not (out and out[-1] == kind and kind.endswith(".delta")):
            out.append(kind)
    return out


# Non-stream ----------------------------------------------------------------------------------
@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_response_is_translated_for_every_route_and_charged_exactly(
    app: ServedApp, provider: str
) -> None:
    before = app.balance()

    raw = app.sdk().responses.with_raw_response.create(
        model=provider, instructions="Be terse.", input="Explain my bill", max_output_tokens=60
    )
    response = raw.parse()

    call = served(app, provider)
    request_id = raw.headers["x-request-id"]
    assert response.id == f"resp_{request_id}"
    assert response.object == "response" and response.status == "completed"
    assert response.output_text == call.text
    assert response.model.startswith(MODELS[provider])  # what actually served the call
    assert response.instructions == "Be terse." and response.max_output_tokens == 60
    usage = reported_usage(provider, call.usage or {})
    assert usage_of(response) == usage
    charge = int(raw.headers["x-forge-charge-micros"])
    assert charge == cost(usage, app.prices(provider)) > 0
    assert raw.headers["x-forge-route"] == f"{provider}:{MODELS[provider]}"
    assert app.balance() == (before[0] - charge, 0)
    receipt = app.receipt(request_id)
    assert (receipt.status, receipt.charge, receipt.usage) == ("succeeded", charge, usage)
    assert receipt.requested_model == provider and receipt.stream is False
    entry = app.store.list_entries(app.key.account_id, Bucket.CREDIT)[-1]
    assert (entry.entry_id, entry.amount) == (raw.headers["x-forge-ledger-entry"], -charge)
    app.assert_money_whole()


def test_the_response_id_finds_its_receipt(app: ServedApp) -> None:
    response = app.sdk().responses.create(model="openai", input="Where did my money go?")

    receipt = httpx.get(
        f"{app.url}/v1/requests/{response.id}",
        headers={"Authorization": f"Bearer {app.plaintext}"},
    )

    assert receipt.status_code == 200, receipt.text
    assert receipt.json()["request_id"] == response.id.removeprefix("resp_")


def test_the_translated_chat_body_carries_instructions_input_items_and_limits(
    app: ServedApp,
) -> None:
    app.sdk().responses.create(
        model="openai",
        instructions="Be terse.",
        input=[
            {"role": "developer", "content": "Answer in English."},
            {"role": "user", "content": [{"type": "input_text", "text": "Hello"}]},
            {"role": "assistant", "content": "Hi."},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": IMAGE, "detail": "low"},
                ],
            },
        ],
        max_output_tokens=40,
        temperature=0.5,
        top_p=0.9,
        user="end-user-1",
        metadata={"ticket": "42"},
        store=False,
    )

    body = served(app, "openai").body
    assert body["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "developer", "content": "Answer in English."},
        {"role": "user", "content": [{"type": "text", "text": "Hello"}]},
        {"role": "assistant", "content": "Hi."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {
                    "type": "image_url",
                    "image_url": {"url": IMAGE, "detail": "low"},
                },
            ],
        },
    ]
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["user"]) == (
        40,
        0.5,
        0.9,
        "end-user-1",
    )
    assert "metadata" not in body and "store" not in body


def test_cached_input_is_reported_and_charged_at_the_cached_price(app: ServedApp) -> None:
    client = app.sdk()
    client.responses.create(model="openai", instructions=LONG_SYSTEM, input="first")

    raw = client.responses.with_raw_response.create(
        model="openai", instructions=LONG_SYSTEM, input="second"
    )
    response = raw.parse()

    usage = reported_usage("openai", served(app, "openai").usage or {})
    assert usage.cached_input_tokens > 0
    assert usage_of(response) == usage
    assert response.usage is not None and response.usage.input_tokens_details.cached_tokens > 0
    assert int(raw.headers["x-forge-charge-micros"]) == cost(usage, app.prices("openai"))
    app.assert_money_whole()


@pytest.fixture
def fallback_app(store: DynamoStore, fakes: Fakes) -> Iterator[ServedApp]:
    """A model whose OpenAI route fails, with a dearer Claude route behind it."""
    model = {
        "id": "fallback",
        "routes": [
            route("openai", "gpt-primary"),
            route("anthropic", "claude-secondary", input="3", output="9"),
        ],
    }
    yield from serve_app(store, fakes, catalog_for_tests(model))


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "sse"])
def test_a_response_falls_back_and_is_charged_at_the_route_that_served_it(
    fallback_app: ServedApp, streamed: bool
) -> None:
    app = fallback_app
    app.fakes.openai.always("gpt-primary", Fault("status", status=503))
    before = app.balance()

    raw = app.sdk().responses.with_raw_response.create(
        model="fallback", input="Explain the fallback", stream=streamed
    )
    if streamed:
        events = list(raw.parse())
        assert events[-1].type == "response.completed"
        response = events[-1].response
    else:
        response = raw.parse()

    assert raw.headers["x-forge-route"] == "anthropic:claude-secondary"
    assert int(raw.headers["x-forge-attempts"]) > 1
    call = served(app, "anthropic")
    assert response.output_text == call.text
    usage = reported_usage("anthropic", call.usage or {})
    receipt = app.receipt(raw.headers["x-request-id"])
    assert receipt.final_route == "anthropic:claude-secondary"
    assert [a.outcome for a in receipt.attempts][-1] == "ok"
    assert receipt.charge == cost(usage, app.prices("fallback", route=1)) > 0
    assert app.balance() == (before[0] - receipt.charge, 0)
    app.assert_money_whole()


def test_an_envelope_that_cannot_pay_refuses_with_402_and_charges_nothing(
    app: ServedApp,
) -> None:
    before = app.balance()

    with pytest.raises(openai.APIStatusError) as refused:
        app.sdk().responses.create(
            model="openai",
            input="Explain my bill",
            extra_headers={"X-Max-Request-Charge": "0.000001"},
        )

    assert refused.value.status_code == 402
    error = refused.value.body
    assert isinstance(error, dict)
    assert (error["code"], error["envelope"]) == ("budget_exceeded", "request")
    assert app.fakes["openai"].calls == []
    assert app.balance() == before
    app.assert_money_whole()


# Stream --------------------------------------------------------------------------------------
@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_streamed_response_sends_the_documented_events_and_is_charged_exactly(
    app: ServedApp, provider: str
) -> None:
    before = app.balance()

    with app.sdk().responses.stream(model=provider, input="Stream my bill") as stream:
        events = list(stream)
        final = stream.get_final_response()

    call = served(app, provider)
    kinds = [e.type for e in events]
    assert collapse(kinds) == [
        "response.created",
        "response.in_progress",
        *TEXT_EVENTS,
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == call.text == final.output_text
    assert final.status == "completed" and final.id == events[0].response.id
    assert final.id.startswith("resp_req_")
    usage = reported_usage(provider, call.usage or {})
    assert usage_of(final) == usage
    receipt = app.receipt(final.id.removeprefix("resp_"))
    assert receipt.stream and receipt.status == "succeeded"
    assert receipt.charge == cost(usage, app.prices(provider)) > 0
    assert app.balance() == (before[0] - receipt.charge, 0)
    app.assert_money_whole()


def test_create_with_stream_true_yields_the_raw_events_the_last_with_its_receipt(
    app: ServedApp,
) -> None:
    events = list(app.sdk().responses.create(model="openai", input="raw events", stream=True))

    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    created = events[0].response
    assert created.status == "in_progress" and created.output == [] and created.usage is None
    added = next(e for e in events if e.type == "response.output_item.added")
    assert added.item.type == "message" and added.item.status == "in_progress"
    done = next(e for e in events if e.type == "response.output_item.done")
    assert done.item.status == "completed"
    assert done.item.content[0].text == served(app, "openai").text
    receipt = (events[-1].model_extra or {})["receipt"]
    assert receipt["request_id"] == events[-1].response.id.removeprefix("resp_")
    assert receipt["status"] == "succeeded" and receipt["settlement"] == "settled"
    assert receipt["charge_micros"] == app.receipt(receipt["request_id"]).charge > 0


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "sse"])
def test_an_answer_stopped_at_max_output_tokens_is_incomplete(
    app: ServedApp, streamed: bool
) -> None:
    client = app.sdk()
    if streamed:
        events = list(
            client.responses.create(
                model="openai", input="a long story", max_output_tokens=3, stream=True
            )
        )
        assert events[-1].type == "response.incomplete"
        response = events[-1].response
    else:
        response = client.responses.create(
            model="openai", input="a long story", max_output_tokens=3
        )

    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None and response.usage.output_tokens == 3
    assert response.output_text == served(app, "openai").text
    app.assert_money_whole()


# Tools ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("streamed", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_function_call_round_trips_through_every_route(
    app: ServedApp, provider: str, streamed: bool
) -> None:
    client = app.sdk()
    question = {"role": "user", "content": "What is the weather in Paris?"}

    if streamed:
        with client.responses.stream(model=provider, input=[question], tools=[WEATHER_TOOL]) as s:
            kinds = [e.type for e in s]
            first = s.get_final_response()
        assert "response.function_call_arguments.delta" in kinds
        assert "response.function_call_arguments.done" in kinds
    else:
        first = client.responses.create(model=provider, input=[question], tools=[WEATHER_TOOL])
    assert served(app, provider).body  # the first call reached the provider
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1, first.output
    assert calls[0].name == "get_weather" and json.loads(calls[0].arguments) == {"city": "Paris"}
    assert first.tools[0].type == "function" and first.tools[0].name == "get_weather"

    # The second turn sends the call and its output back as items: the provider accepts it.
    follow_up = client.responses.create(
        model=provider,
        input=[
            question,
            *[item.model_dump(exclude_none=True) for item in first.output],
            {
                "type": "function_call_output",
                "call_id": calls[0].call_id,
                "output": '{"temp_c": 21}',
            },
            {"role": "user", "content": "Thanks, summarise"},
        ],
        tools=[WEATHER_TOOL],
    )

    call = served(app, provider)
    assert follow_up.output_text == call.text and follow_up.status == "completed"
    assert app.receipt(follow_up.id.removeprefix("resp_")).status == "succeeded"
    app.assert_money_whole()


def test_tool_choice_and_parallel_calls_are_translated(app: ServedApp) -> None:
    app.sdk().responses.create(
        model="openai",
        input="What is the weather in Paris?",
        tools=[{**WEATHER_TOOL, "strict": False}],
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
    )

    body = served(app, "openai").body
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather in a city",
                "parameters": WEATHER_TOOL["parameters"],
                "strict": False,
            },
        }
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["parallel_tool_calls"] is False


# Structured output ---------------------------------------------------------------------------
class Weather(BaseModel):
    city: str
    temp_c: int
    sunny: bool


def test_parse_with_a_pydantic_text_format_returns_the_parsed_object(app: ServedApp) -> None:
    response = app.sdk().responses.parse(
        model="openai", input="The weather in Paris, as JSON", text_format=Weather
    )

    assert response.output_parsed == Weather(city="Paris", temp_c=21, sunny=True)
    response_format = served(app, "openai").body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "Weather"
    assert response_format["json_schema"]["strict"] is True
    assert set(response_format["json_schema"]["schema"]["properties"]) == {
        "city",
        "temp_c",
        "sunny",
    }
    app.assert_money_whole()


@pytest.mark.parametrize("provider", PROVIDERS)
def test_structured_output_is_carried_to_every_route(app: ServedApp, provider: str) -> None:
    # A Claude route gets Claude's structured outputs (output_config.format), Gemini its JSON
    # response schema: the schema is enforced upstream, never silently dropped.
    response = app.sdk().responses.parse(
        model=provider, input="The weather in Paris, as JSON", text_format=Weather
    )

    assert response.output_parsed == Weather(city="Paris", temp_c=21, sunny=True)
    body = served(app, provider).body
    if provider == "anthropic":
        output_format = body["output_config"]["format"]
        assert output_format["type"] == "json_schema"
        assert set(output_format["schema"]["properties"]) == {"city", "temp_c", "sunny"}
    app.assert_money_whole()


def test_json_object_format_becomes_a_json_object_response_format(app: ServedApp) -> None:
    app.sdk().responses.create(
        model="openai", input="JSON please", text={"format": {"type": "json_object"}}
    )

    assert served(app, "openai").body["response_format"] == {"type": "json_object"}


# Refusals ------------------------------------------------------------------------------------
REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("previous_response_id", {"previous_response_id": "resp_123"}, "previous_response_id"),
    ("conversation", {"conversation": "conv_123"}, "conversation"),
    ("background", {"background": True}, "background"),
    ("web_search", {"tools": [{"type": "web_search"}]}, "tools[0].type"),
    (
        "file_search",
        {"tools": [WEATHER_TOOL, {"type": "file_search", "vector_store_ids": ["vs_1"]}]},
        "tools[1].type",
    ),
    (
        "computer_use",
        {
            "tools": [
                {
                    "type": "computer_use_preview",
                    "display_width": 1024,
                    "display_height": 768,
                    "environment": "browser",
                }
            ]
        },
        "tools[0].type",
    ),
    (
        "code_interpreter",
        {"tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]},
        "tools[0].type",
    ),
    ("hosted tool_choice", {"tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
    (
        "input_file",
        {
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_file", "file_data": "data:application/pdf;base64,AA=="}
                    ],
                }
            ]
        },
        "input[0].content[0].type",
    ),
    (
        "input_image by file_id",
        {
            "input": [
                {
                    "role": "user",
                    "content": [{"type": "input_image", "file_id": "file_1", "detail": "auto"}],
                }
            ]
        },
        "input[0].content[0].file_id",
    ),
    ("item_reference", {"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    (
        "reasoning item",
        {"input": [{"type": "reasoning", "id": "rs_1", "summary": []}]},
        "input[0].type",
    ),
    ("include", {"include": ["reasoning.encrypted_content"]}, "include"),
    ("truncation auto", {"truncation": "auto"}, "truncation"),
    ("prompt template", {"prompt": {"id": "pmpt_1"}}, "prompt"),
    ("reasoning summary", {"reasoning": {"effort": "low", "summary": "auto"}}, "reasoning.summary"),
    ("top_logprobs", {"top_logprobs": 5}, "top_logprobs"),
    ("priority tier", {"service_tier": "priority"}, "service_tier"),
    ("unknown field", {"context_management": [{"type": "compaction"}]}, "context_management"),
]


@pytest.mark.parametrize(
    ("body", "param"), [(b, p) for _, b, p in REFUSED], ids=[name for name, _, _ in REFUSED]
)
def test_what_cannot_be_translated_is_refused_with_400_naming_the_param_and_charges_nothing(
    app: ServedApp, body: dict[str, Any], param: str
) -> None:
    before = app.balance()
    request: dict[str, Any] = {"model": "openai", "input": "hello", **body}

    with pytest.raises(openai.BadRequestError) as refused:
        app.sdk().responses.create(**request)

    error = refused.value.body
    assert isinstance(error, dict), error
    assert error["param"] == param, error
    assert error["type"] == "invalid_request_error" and error["code"] == "unsupported_parameter"
    assert refused.value.status_code == 400
    assert app.fakes["openai"].calls == []  # nothing reached a provider
    assert app.balance() == before
    app.assert_money_whole()


def test_accepted_no_op_fields_do_not_refuse(app: ServedApp) -> None:
    response = app.sdk().responses.create(
        model="openai",
        input="hello",
        store=True,
        background=False,
        include=[],
        truncation="disabled",
        service_tier="auto",
        max_tool_calls=3,
        reasoning={"effort": "low"},
        stream_options={"include_obfuscation": False},
        prompt_cache_key="bills",
        safety_identifier="user-hash",
    )

    assert response.status == "completed"
    body = served(app, "openai").body
    assert body["reasoning_effort"] == "low" and body["prompt_cache_key"] == "bills"


# A stream cut mid-way ------------------------------------------------------------------------
def test_a_stream_cut_by_the_upstream_ends_with_response_failed_and_charges_what_was_delivered(
    app: ServedApp,
) -> None:
    # Given an upstream that drops the connection after three words
    app.fakes.openai.fail(MODELS["openai"], Fault("cut", after=4))
    before = app.balance()

    events = list(app.sdk().responses.create(model="openai", input="cut me", stream=True))

    # Then the stream ends with response.failed, never response.completed
    kinds = [e.type for e in events]
    assert kinds[-1] == "response.failed" and "response.completed" not in kinds
    failed = events[-1].response
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.code == "server_error" and "charged" in failed.error.message
    delivered = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(delivered) == 3
    assert failed.output[0].type == "message" and failed.output[0].status == "incomplete"
    # And the charge is what was delivered (the documented estimate), the hold released
    receipt = app.receipt(failed.id.removeprefix("resp_"))
    assert receipt.status == "partial" and receipt.usage.output_tokens == len(delivered)
    assert receipt.charge == cost(receipt.usage, app.prices("openai")) > 0
    assert usage_of(failed) == receipt.usage
    assert (events[-1].model_extra or {})["receipt"]["status"] == "partial"
    assert app.balance() == (before[0] - receipt.charge, 0)
    app.assert_money_whole()


@pytest.fixture
def slow_app(
    aws_stack: Resources, fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ServedApp]:
    """The app committing a stream after 0.2 s of silence, its upstream calls timing out
    after 0.5 s."""
    fakes.reset()
    monkeypatch.setenv("FORGE_SSE_KEEPALIVE_SECONDS", "0.2")
    clear_cached_factories()
    yield from serve_app(get_store(), fakes, timeout=0.5)


def test_a_failure_after_the_stream_committed_is_an_error_event_and_charges_nothing(
    slow_app: ServedApp,
) -> None:
    # Given an upstream that never answers in time (the stream commits to 200 meanwhile)
    slow_app.fakes.openai.always(MODELS["openai"], Fault("timeout", seconds=2))
    before = slow_app.balance()

    stream = slow_app.sdk().responses.with_raw_response.create(
        model="openai", input="too slow", stream=True
    )
    request_id = stream.headers["x-request-id"]
    events = list(stream.parse())

    # Then one `error` event with the stable code: no response was ever created
    assert [e.type for e in events] == ["error"]
    assert events[0].code == "upstream_unavailable" and events[0].sequence_number == 0
    receipt = slow_app.receipt(request_id)
    assert (receipt.status, receipt.charge) == ("failed", 0)
    assert slow_app.balance() == before
    slow_app.assert_money_whole()


def test_an_idempotent_retry_replays_the_response_and_charges_once(app: ServedApp) -> None:
    client = app.sdk()
    headers = {"Idempotency-Key": "responses-once"}

    first = client.responses.with_raw_response.create(
        model="openai", input="once", extra_headers=headers
    )
    second = client.responses.with_raw_response.create(
        model="openai", input="once", extra_headers=headers
    )

    assert second.headers["x-forge-idempotent-replay"] == "true"
    assert second.parse().id == first.parse().id
    assert len(app.fakes.openai.calls) == 1
    charges = [e for e in app.store.list_entries(app.key.account_id, Bucket.CREDIT)]
    assert sum(1 for e in charges if e.amount < 0) == 1
    app.assert_money_whole()
