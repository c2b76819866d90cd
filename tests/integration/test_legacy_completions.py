"""POST /v1/completions (legacy) through the official `openai` SDK, against the app under
uvicorn whose routes call the fake providers (real HTTP) and the emulated store: the prompt
becomes one chat user message on every route, max_tokens defaults to 16, the answer comes
back as `text_completion` objects (chunks when streamed, usage only when asked), and the
charge is what the provider's own usage report costs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from forge.domain.money import Bucket, Usage
from forge.store.dynamo.store import DynamoStore
from forge.wiring import get_store
from forge_tools.emulator import Resources
from tests.fakes.base import Call
from tests.integration.providers_kit import (
    MODELS,
    PROVIDERS,
    Fakes,
    cost,
    reported_usage,
    start_fakes,
)
from tests.integration.sdk_app import ServedApp, serve_app


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
    assert call.status == 200, call
    return call


def usage_of(usage: Any) -> Usage:
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    details = usage.prompt_tokens_details
    return Usage(
        input_tokens=usage.prompt_tokens,
        cached_input_tokens=details.cached_tokens if details else 0,
        output_tokens=usage.completion_tokens,
    )


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_completion_is_one_user_message_capped_at_16_tokens_and_charged_exactly(
    app: ServedApp, provider: str
) -> None:
    before = app.balance()

    raw = app.sdk().completions.with_raw_response.create(
        model=provider, prompt="Say this is a test of the ledger"
    )
    completion = raw.parse()

    call = served(app, provider)
    request_id = raw.headers["x-request-id"]
    assert completion.id == f"cmpl-{request_id}" and completion.object == "text_completion"
    assert completion.model.startswith(MODELS[provider])
    choice = completion.choices[0]
    assert choice.text == call.text and choice.index == 0 and choice.logprobs is None
    assert choice.finish_reason in ("stop", "length")
    assert raw.headers["x-forge-max-tokens"] == "16"  # OpenAI's legacy default
    usage = reported_usage(provider, call.usage or {})
    assert usage.output_tokens <= 16
    assert completion.usage is not None and usage_of(completion.usage) == usage
    charge = int(raw.headers["x-forge-charge-micros"])
    assert charge == cost(usage, app.prices(provider)) > 0
    assert app.balance() == (before[0] - charge, 0)
    receipt = app.receipt(request_id)
    assert (receipt.status, receipt.charge, receipt.requested_model) == (
        "succeeded",
        charge,
        provider,
    )
    entry = app.store.list_entries(app.key.account_id, Bucket.CREDIT)[-1]
    assert (entry.entry_id, entry.amount) == (raw.headers["x-forge-ledger-entry"], -charge)
    app.assert_money_whole()


def test_the_prompt_and_sampling_parameters_reach_the_upstream_as_chat(app: ServedApp) -> None:
    app.sdk().completions.create(
        model="openai",
        prompt=["Once upon a time"],
        max_tokens=40,
        temperature=0.2,
        top_p=0.5,
        stop=["\n"],
        seed=7,
        user="end-user-1",
        best_of=1,
        n=1,
        echo=False,
    )

    body = served(app, "openai").body
    assert body["messages"] == [{"role": "user", "content": "Once upon a time"}]
    assert (body["max_tokens"], body["temperature"], body["top_p"]) == (40, 0.2, 0.5)
    assert (body["stop"], body["seed"], body["user"]) == (["\n"], 7, "end-user-1")
    assert not {"prompt", "best_of", "echo", "n"} & set(body)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_stream_sends_text_completion_chunks_and_usage_when_asked(
    app: ServedApp, provider: str
) -> None:
    before = app.balance()

    chunks = list(
        app.sdk().completions.create(
            model=provider,
            prompt="Stream a story about the ledger",
            max_tokens=60,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    call = served(app, provider)
    assert all(c.object == "text_completion" for c in chunks)
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("cmpl-req_")
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == call.text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    *body, last = chunks
    assert last.choices == [] and last.usage is not None
    assert all(c.usage is None for c in body)
    usage = reported_usage(provider, call.usage or {})
    assert usage_of(last.usage) == usage
    receipt = app.receipt(chunks[0].id.removeprefix("cmpl-"))
    assert receipt.stream and receipt.status == "succeeded"
    assert receipt.charge == cost(usage, app.prices(provider)) > 0
    assert (last.model_extra or {})["receipt"]["charge_micros"] == receipt.charge
    assert app.balance() == (before[0] - receipt.charge, 0)
    app.assert_money_whole()


def test_a_stream_without_include_usage_sends_no_usage_chunk_but_is_charged(
    app: ServedApp,
) -> None:
    chunks = list(app.sdk().completions.create(model="openai", prompt="quiet", stream=True))

    assert chunks and all(c.choices and c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    usage = reported_usage("openai", served(app, "openai").usage or {})
    receipt = app.receipt(chunks[0].id.removeprefix("cmpl-"))
    assert receipt.usage == usage and receipt.charge == cost(usage, app.prices("openai"))
    app.assert_money_whole()


REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("several prompts", {"prompt": ["one", "two"]}, "prompt"),
    ("token ids", {"prompt": [1, 2, 3]}, "prompt"),
    ("token id lists", {"prompt": [[1, 2], [3]]}, "prompt"),
    ("echo", {"echo": True}, "echo"),
    ("suffix", {"suffix": " the end"}, "suffix"),
    ("best_of", {"best_of": 2}, "best_of"),
    ("n", {"n": 2}, "n"),
    ("logprobs", {"logprobs": 1}, "logprobs"),
    ("unknown field", {"tools": []}, "tools"),
]


@pytest.mark.parametrize(
    ("body", "param"), [(b, p) for _, b, p in REFUSED], ids=[name for name, _, _ in REFUSED]
)
def test_what_one_completion_cannot_carry_is_refused_with_400_and_charges_nothing(
    app: ServedApp, body: dict[str, Any], param: str
) -> None:
    before = app.balance()
    fields = dict(body)
    prompt = fields.pop("prompt", "hello")

    with pytest.raises(openai.BadRequestError) as refused:
        app.sdk().completions.create(model="openai", prompt=prompt, extra_body=fields)

    error = refused.value.body
    assert isinstance(error, dict), error
    assert (error["param"], error["code"]) == (param, "unsupported_parameter"), error
    assert error["type"] == "invalid_request_error" and refused.value.status_code == 400
    assert app.fakes["openai"].calls == []
    assert app.balance() == before
    app.assert_money_whole()
