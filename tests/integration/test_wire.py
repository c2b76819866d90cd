"""The wire as the official SDKs read it: the `openai` and `anthropic` clients against the app
in process (their own transport, httpx2, over ASGI) and the emulated store, with the demo
provider upstream. What the SDKs parse (stream chunks, embeddings, models, errors, request
ids) is what they must get."""

from __future__ import annotations

import array
import asyncio
import base64
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
from fastapi import FastAPI

from forge.api import create_app
from forge.api.deps import get_gateway
from forge.domain.catalog import load_catalog
from forge.domain.money import Bucket, RouteType, Usage, charge_for
from forge.domain.requests import ChatCompletionRequest
from forge.gateway import Gateway, estimated_input_tokens
from forge.money_in.accounts import create_account, credit_wallet, issue_key
from forge.providers.anthropic_format.inbound import chat_body_from_messages
from forge.providers.demo import count_usage, create_demo_app, embed_input, reply_words
from forge.providers.openai import OpenAICompatProvider
from forge.store.dynamo.store import DynamoStore
from forge.wiring import get_store
from forge_tools.emulator import Resources
from tests.fakes import Fault
from tests.integration.providers_kit import MODELS, PROVIDERS, Fakes, reported_usage, start_fakes
from tests.integration.providers_kit import gateway as kit_gateway

MESSAGES = [{"role": "user", "content": "What did my last call cost?"}]


@dataclass
class Wire:
    """The app, a funded key, and the official clients pointed at it."""

    app: FastAPI
    key: str
    account_id: str
    store: DynamoStore

    def _transport(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=self.app))

    def openai(self) -> openai.AsyncOpenAI:
        """No retries: every answer is the gateway's first."""
        return openai.AsyncOpenAI(
            base_url="http://gw/v1", api_key=self.key, max_retries=0, http_client=self._transport()
        )

    def anthropic(self) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(
            base_url="http://gw", api_key=self.key, max_retries=0, http_client=self._transport()
        )

    def raw(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://gw",
            headers={"Authorization": f"Bearer {self.key}"},
        )


def wire_over(store: DynamoStore, gateway: Gateway) -> Wire:
    account_id = create_account(store, "wire")
    for bucket in Bucket:
        credit_wallet(store, account_id, bucket, "1", source="test", memo="fund")
    plaintext, _ = issue_key(store, account_id)
    app = create_app()
    app.dependency_overrides[get_gateway] = lambda: gateway
    return Wire(app, plaintext, account_id, store)


def demo_gateway(store: DynamoStore, upstream: httpx.AsyncBaseTransport | None = None) -> Gateway:
    transport = upstream or httpx.ASGITransport(app=create_demo_app())
    provider = OpenAICompatProvider("http://demo.test/v1", "k", transport=transport)
    return Gateway(store, {"demo": provider}, load_catalog(), hold_ttl_seconds=960)


@pytest.fixture
def wire(aws_stack: Resources) -> Iterator[Wire]:
    store = get_store()
    yield wire_over(store, demo_gateway(store))


async def get(wire: Wire, path: str) -> httpx.Response:
    async with wire.raw() as client:
        return await client.get(path)


def charges(wire: Wire) -> int:
    return sum(1 for bucket in Bucket for e in wire.store.list_entries(wire.account_id, bucket))


# Validation answers 400 ------------------------------------------------------------------
def test_an_invalid_body_is_a_bad_request_for_both_sdks(wire: Wire) -> None:
    # Given a funded key; when each SDK sends a body with a field out of its range
    async def calls() -> tuple[openai.BadRequestError, anthropic.BadRequestError]:
        async with wire.openai() as oai, wire.anthropic() as claude:
            with pytest.raises(openai.BadRequestError) as chat:
                await oai.chat.completions.create(
                    model="demo-official",
                    messages=MESSAGES,  # type: ignore[arg-type]
                    max_tokens=0,
                )
            with pytest.raises(anthropic.BadRequestError) as message:
                await claude.messages.create(
                    model="demo-official",
                    max_tokens=16,
                    messages=[{"role": "user", "content": "hi"}],
                    extra_body={"temperature": 1.5},  # Anthropic's range ends at 1
                )
            return chat.value, message.value

    chat, message = asyncio.run(calls())

    # Then both raise their BadRequestError (400), naming the field, and nothing is charged
    assert chat.status_code == 400 and chat.code == "invalid_request"
    assert chat.param == "max_tokens"
    assert message.status_code == 400
    assert message.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert message.body["error"]["param"] == "temperature"  # type: ignore[index]
    balance_only = 2  # the two top-ups
    assert charges(wire) == balance_only


# A chat stream: the usage chunk only when asked, the receipt as a comment -------------------
def demo_answer(model: str, max_tokens: int | None = None) -> tuple[str, dict[str, Any], int]:
    """What the demo provider answers (its documented counts) and what that costs."""
    words, _ = reply_words(MESSAGES, max_tokens)
    usage = count_usage(MESSAGES, len(words))
    route = next(m for m in load_catalog().models if m.id == model).routes[0]
    billable = Usage(
        input_tokens=usage["prompt_tokens"],
        cached_input_tokens=usage["prompt_tokens_details"]["cached_tokens"],
        output_tokens=usage["completion_tokens"],
    )
    return " ".join(words), usage, charge_for(billable, route.effective_prices)


@pytest.mark.parametrize("options", [None, {"include_usage": False}])
def test_a_stream_that_did_not_ask_for_usage_reads_with_the_plain_choices_loop(
    wire: Wire, options: dict[str, bool] | None
) -> None:
    # Given a client that does not ask for the usage chunk (no stream_options, or false)
    extra: dict[str, Any] = {} if options is None else {"stream_options": options}

    # When it reads the stream with the most common loop there is
    async def read() -> tuple[str, list[Any], str]:
        async with wire.openai() as client:
            raw = await client.chat.completions.with_raw_response.create(
                model="demo-official",
                messages=MESSAGES,  # type: ignore[arg-type]
                stream=True,
                **extra,
            )
            text, chunks = "", []
            async for chunk in raw.parse():
                text += chunk.choices[0].delta.content or ""  # IndexError on a choices: [] chunk
                chunks.append(chunk)
            return text, chunks, raw.headers["x-request-id"]

    text, chunks, request_id = asyncio.run(read())

    # Then every chunk has a choice, none carries usage, and the text is the whole answer
    expected_text, _, charge = demo_answer("demo-official")
    assert text == expected_text
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    # And the charge is still known: the receipt behind the request id
    receipt = asyncio.run(get(wire, f"/v1/requests/{request_id}")).json()
    assert receipt["charge"] == charge > 0  # micro-units


def test_a_stream_that_asks_for_usage_ends_with_the_usage_chunk(wire: Wire) -> None:
    # Given a client that asks for usage; when it streams through the official SDK
    async def read() -> list[Any]:
        async with wire.openai() as client:
            stream = await client.chat.completions.create(
                model="demo-official",
                messages=MESSAGES,  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True},
            )
            return [chunk async for chunk in stream]

    chunks = asyncio.run(read())

    # Then the last chunk is OpenAI's usage chunk (no choices) with the provider's numbers
    text, usage, charge = demo_answer("demo-official")
    final = chunks[-1]
    assert final.choices == [] and final.usage is not None
    assert final.usage.prompt_tokens == usage["prompt_tokens"]
    assert final.usage.completion_tokens == usage["completion_tokens"]
    assert final.usage.total_tokens == usage["prompt_tokens"] + usage["completion_tokens"]
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == text
    assert all(c.usage is None for c in chunks[:-1])
    # And it carries the receipt, as it always has
    assert (final.model_extra or {})["receipt"]["charge_micros"] == charge


@pytest.mark.parametrize("include_usage", [False, True])
def test_the_receipt_rides_as_a_comment_before_done(wire: Wire, include_usage: bool) -> None:
    # When a stream is read as raw SSE
    body = {"model": "demo-official", "messages": MESSAGES, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}

    async def read() -> httpx.Response:
        async with wire.raw() as client:
            return await client.post("/v1/chat/completions", json=body)

    response = asyncio.run(read())
    events = response.text.split("\n\n")

    # Then it ends with the receipt comment, then [DONE]; every other event is data
    assert events[-2:] == ["data: [DONE]", ""]
    comment = events[-3]
    assert comment.startswith(": receipt {")
    receipt = json.loads(comment.removeprefix(": receipt "))
    assert all(e.startswith("data: ") for e in events[:-3])
    assert ('"usage"' in events[-4]) is include_usage
    # And it is the receipt the ledger and GET /v1/requests/{id} hold
    _, _, charge = demo_answer("demo-official")
    assert receipt["request_id"] == response.headers["x-request-id"]
    assert receipt["charge_micros"] == charge
    entry = wire.store.list_entries(wire.account_id, Bucket.CREDIT)[-1]
    assert (receipt["ledger_entry_id"], -entry.amount) == (entry.entry_id, charge)
    stored = asyncio.run(get(wire, f"/v1/requests/{receipt['request_id']}")).json()
    assert stored["charge"] == charge


def test_a_messages_stream_is_unchanged(wire: Wire) -> None:
    # When a Claude client streams through the anthropic SDK
    async def read() -> tuple[str, Any]:
        async with (
            wire.anthropic() as client,
            client.messages.stream(
                model="demo-official",
                max_tokens=64,
                messages=MESSAGES,  # type: ignore[arg-type]
            ) as stream,
        ):
            text = "".join([piece async for piece in stream.text_stream])
            return text, await stream.get_final_message()

    text, message = asyncio.run(read())

    # Then the text and the usage are the provider's, as before
    expected_text, usage, _ = demo_answer("demo-official", 64)
    assert text == expected_text
    assert message.usage.input_tokens == usage["prompt_tokens"]
    assert message.usage.output_tokens == usage["completion_tokens"]


# Embeddings in the encoding asked for -----------------------------------------------------
INPUTS = ["the ledger", "the receipt"]


def float32(values: list[float]) -> list[float]:
    """What survives a float32 round trip: the precision OpenAI's base64 carries."""
    return list(struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values)))


def decoded(embedding: str) -> list[float]:
    """As the openai SDK decodes it (openai/lib/_parsing/_embeddings.py): float32 bytes."""
    return array.array("f", base64.b64decode(embedding)).tolist()


def test_embeddings_come_in_the_encoding_the_sdk_asks_for(wire: Wire) -> None:
    # Given the demo upstream, which answers floats whatever it is asked
    vectors, _ = embed_input(INPUTS)

    async def calls() -> tuple[Any, Any, Any, httpx.Response]:
        async with wire.openai() as client, wire.raw() as raw:
            return (
                await client.embeddings.create(model="demo-embedding", input=INPUTS),
                await client.embeddings.create(
                    model="demo-embedding", input=INPUTS, encoding_format="float"
                ),
                await client.embeddings.create(
                    model="demo-embedding", input=INPUTS, encoding_format="base64"
                ),
                await raw.post(
                    "/v1/embeddings",
                    json={"model": "demo-embedding", "input": INPUTS, "encoding_format": "base64"},
                ),
            )

    default, floats, asked_base64, wire_base64 = asyncio.run(calls())

    # Then the SDK's default (it asks for base64 and decodes it) gets the vectors at float32
    assert [e.embedding for e in default.data] == [float32(v) for v in vectors]
    # An explicit float gets the upstream's floats as they were
    assert [e.embedding for e in floats.data] == vectors
    # And base64 is base64 on the wire: little-endian float32, as the SDKs decode it
    assert all(isinstance(e.embedding, str) for e in asked_base64.data)
    assert [decoded(e.embedding) for e in asked_base64.data] == [float32(v) for v in vectors]
    body = wire_base64.json()
    assert [decoded(item["embedding"]) for item in body["data"]] == [float32(v) for v in vectors]
    assert body["usage"]["prompt_tokens"] > 0 and wire_base64.headers["x-forge-charge-micros"]


def test_an_upstream_answering_base64_is_decoded_for_a_float_client(aws_stack: Resources) -> None:
    # Given an upstream that answers base64 whatever it is asked
    vector = [0.25, -0.5, 0.125]

    def upstream(request: httpx.Request) -> httpx.Response:
        packed = base64.b64encode(struct.pack("<3f", *vector)).decode()
        item = {"object": "embedding", "index": 0, "embedding": packed}
        usage = {"prompt_tokens": 3, "total_tokens": 3}
        return httpx.Response(200, json={"object": "list", "data": [item], "usage": usage})

    store = get_store()
    wire = wire_over(store, demo_gateway(store, httpx.MockTransport(upstream)))

    # When a client asks for floats, and another says nothing
    async def calls() -> list[httpx.Response]:
        async with wire.raw() as client:
            return [
                await client.post("/v1/embeddings", json={"model": "demo-embedding", **extra})
                for extra in ({"input": "x", "encoding_format": "float"}, {"input": "x"})
            ]

    # Then both get floats (float is the default)
    for answer in asyncio.run(calls()):
        assert answer.status_code == 200, answer.text
        assert answer.json()["data"][0]["embedding"] == vector


def test_an_unknown_encoding_format_is_a_bad_request(wire: Wire) -> None:
    async def call() -> openai.BadRequestError:
        async with wire.openai() as client:
            with pytest.raises(openai.BadRequestError) as refused:
                await client.embeddings.create(
                    model="demo-embedding",
                    input="x",
                    encoding_format="float16",  # type: ignore[arg-type]
                )
            return refused.value

    refused = asyncio.run(call())
    assert (refused.code, refused.param) == ("invalid_request", "encoding_format")


# GET /v1/models/{id} ------------------------------------------------------------------------
def test_a_model_is_retrieved_as_the_list_shows_it(wire: Wire) -> None:
    # When the SDK lists the models, then retrieves each
    async def calls() -> tuple[list[Any], list[Any]]:
        async with wire.openai() as client:
            listed = [m async for m in client.models.list()]
            return listed, [await client.models.retrieve(m.id) for m in listed]

    listed, retrieved = asyncio.run(calls())

    # Then each is OpenAI's model object, with the same prices, bucket and routes as listed
    assert {m.id for m in listed} >= {"demo-official", "demo-routed", "demo-embedding"}
    for one, card in zip(listed, retrieved, strict=True):
        assert (card.id, card.object, card.owned_by) == (one.id, "model", "tokens-forge")
        assert isinstance(card.created, int)
        assert card.model_extra == one.model_extra
    routed = next(m for m in retrieved if m.id == "demo-routed")
    assert (routed.model_extra or {})["bucket"] == "rmb"
    assert (routed.model_extra or {})["prices"]["currency"] == "CNY"


@pytest.mark.parametrize(
    "model",
    [
        "no-such-model",
        "gpt-4o",  # in the catalog, but no provider of its routes is offered here
    ],
)
def test_a_model_not_offered_is_not_found(wire: Wire, model: str) -> None:
    async def call() -> openai.NotFoundError:
        async with wire.openai() as client:
            with pytest.raises(openai.NotFoundError) as missing:
                await client.models.retrieve(model)
            return missing.value

    missing = asyncio.run(call())
    assert (missing.status_code, missing.code, missing.param) == (404, "model_not_found", "model")
    assert missing.type == "invalid_request_error"


def test_a_model_the_key_may_not_use_is_not_found(aws_stack: Resources) -> None:
    # Given a key that may only use official routes
    store = get_store()
    wire = wire_over(store, demo_gateway(store))
    official = frozenset({RouteType.OFFICIAL})
    wire.key, _ = issue_key(store, wire.account_id, route_types=official)

    # When it retrieves a model served only by routed routes, and one it may use
    async def calls() -> tuple[openai.NotFoundError, Any]:
        async with wire.openai() as client:
            with pytest.raises(openai.NotFoundError) as missing:
                await client.models.retrieve("demo-routed")
            return missing.value, await client.models.retrieve("demo-official")

    missing, found = asyncio.run(calls())

    # Then the first is not found, as the list leaves it out; the second is there
    assert missing.code == "model_not_found"
    assert found.id == "demo-official"


# The anthropic SDK's request id -------------------------------------------------------------
def test_messages_answers_carry_request_id_for_the_anthropic_sdk(wire: Wire) -> None:
    # When a Claude client makes a call, and then one the gateway refuses
    async def calls() -> tuple[Any, anthropic.NotFoundError]:
        async with wire.anthropic() as client:
            message = await client.messages.create(
                model="demo-official",
                max_tokens=32,
                messages=MESSAGES,  # type: ignore[arg-type]
            )
            with pytest.raises(anthropic.NotFoundError) as refused:
                await client.messages.create(
                    model="no-such-model",
                    max_tokens=32,
                    messages=MESSAGES,  # type: ignore[arg-type]
                )
            return message, refused.value

    message, refused = asyncio.run(calls())

    # Then the SDK reads the gateway's request id from both, the one its receipt is kept under
    assert message._request_id is not None and message._request_id.startswith("req_")
    assert refused.request_id is not None and refused.request_id.startswith("req_")
    assert refused.response.headers["x-request-id"] == refused.request_id
    for request_id in (message._request_id, refused.request_id):
        receipt = asyncio.run(get(wire, f"/v1/requests/{request_id}"))
        assert receipt.status_code == 200 and receipt.json()["request_id"] == request_id


# POST /v1/messages/count_tokens ---------------------------------------------------------------
COUNTED = {
    "system": "Be terse.",
    "messages": [
        {"role": "user", "content": "How much is left in my wallet?"},
        {"role": "assistant", "content": "Which bucket?"},
        {"role": "user", "content": "Credit, please."},
    ],
    "tools": [
        {
            "name": "get_balance",
            "description": "A wallet's balance",
            "input_schema": {"type": "object", "properties": {"bucket": {"type": "string"}}},
        }
    ],
}


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    yield from start_fakes()


@pytest.fixture
def providers_wire(aws_stack: Resources, fakes: Fakes) -> Wire:
    """The gateway over the OpenAI, Anthropic and Gemini fakes (tests.integration.providers_kit)."""
    fakes.reset()
    store = get_store()
    return wire_over(store, kit_gateway(store, fakes))


def ledger_state(wire: Wire) -> tuple[int, list[tuple[int, int]]]:
    entries = sum(1 for b in Bucket for _ in wire.store.list_entries(wire.account_id, b))
    wallets = [wire.store.get_wallet(wire.account_id, b) for b in Bucket]
    return entries, [(w.balance, w.held) for w in wallets]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_count_tokens_is_what_the_call_is_billed_for_or_the_estimate(
    providers_wire: Wire, fakes: Fakes, provider: str
) -> None:
    wire = providers_wire
    before = ledger_state(wire)

    # When a Claude client counts a prompt (system, turns, tools) on a model of each provider
    async def count() -> tuple[Any, Any]:
        async with wire.anthropic() as client:
            raw = await client.messages.with_raw_response.count_tokens(
                model=provider,
                **COUNTED,  # type: ignore[arg-type]
            )
            return raw, await raw.parse()

    raw, counted = asyncio.run(count())

    # Then nothing was held or charged for it
    assert ledger_state(wire) == before
    assert raw.headers["x-forge-route"] == f"{provider}:{MODELS[provider]}"
    assert raw.headers["request-id"] == raw.headers["x-request-id"]

    # And the count is the provider's where it has a count endpoint: what the same prompt is
    # then billed as input
    async def call() -> Any:
        async with wire.anthropic() as client:
            return await client.messages.create(
                model=provider,
                max_tokens=16,
                **COUNTED,  # type: ignore[arg-type]
            )

    asyncio.run(call())
    served = next(c for c in fakes[provider].calls if c.usage is not None)
    billed = reported_usage(provider, served.usage or {}).input_tokens
    if provider == "openai":  # no count endpoint: the documented estimate, said so
        chat = ChatCompletionRequest.model_validate(
            chat_body_from_messages({"model": provider, **COUNTED})
        )
        assert raw.headers["x-forge-token-count"] == "estimate"
        assert counted.input_tokens == estimated_input_tokens(chat) >= billed
        assert [c.path for c in fakes.openai.calls] == ["/v1/chat/completions"]
    else:
        assert raw.headers["x-forge-token-count"] == "provider"
        assert counted.input_tokens == billed > 0


def test_a_provider_count_that_fails_falls_back_to_the_estimate(
    providers_wire: Wire, fakes: Fakes
) -> None:
    # Given Anthropic's count endpoint failing
    fakes.anthropic.fail(MODELS["anthropic"], Fault("status", status=529))

    # When a client counts, by bearer key this time
    async def count() -> httpx.Response:
        async with providers_wire.raw() as client:
            return await client.post(
                "/v1/messages/count_tokens", json={"model": "anthropic", **COUNTED}
            )

    answer = asyncio.run(count())

    # Then it still gets a count, marked as the estimate
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-forge-token-count"] == "estimate"
    assert answer.json()["input_tokens"] > 0
    assert [c.status for c in fakes.anthropic.calls] == [529]


def test_count_tokens_refusals_are_anthropic_errors(providers_wire: Wire) -> None:
    wire = providers_wire
    before = ledger_state(wire)

    async def refusals() -> list[anthropic.APIStatusError]:
        errors: list[anthropic.APIStatusError] = []
        async with wire.anthropic() as client:
            for model, messages, error in (
                ("no-such-model", COUNTED["messages"], anthropic.NotFoundError),
                ("anthropic", [], anthropic.BadRequestError),
                ("embed", COUNTED["messages"], anthropic.BadRequestError),  # not a chat model
            ):
                with pytest.raises(error) as refused:
                    await client.messages.count_tokens(
                        model=model,
                        messages=messages,  # type: ignore[arg-type]
                    )
                errors.append(refused.value)
            client.api_key = "sk-forge-wrong"
            with pytest.raises(anthropic.AuthenticationError) as unknown:
                await client.messages.count_tokens(
                    model="anthropic",
                    messages=COUNTED["messages"],  # type: ignore[arg-type]
                )
            errors.append(unknown.value)
        return errors

    errors = asyncio.run(refusals())

    assert [e.body["type"] for e in errors] == ["error"] * 4  # type: ignore[index]
    assert [e.body["error"]["type"] for e in errors] == [  # type: ignore[index]
        "not_found_error",
        "invalid_request_error",
        "invalid_request_error",
        "authentication_error",
    ]
    assert all(e.request_id and e.request_id.startswith("req_") for e in errors)
    assert ledger_state(wire) == before
