"""The official `openai` Python SDK against the gateway, used the way its README shows."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest
from pydantic import BaseModel

from forge.domain.errors import InvalidRequest
from tests.compat.clients import OPENAI_PYTHON, Client
from tests.compat.conftest import CHAT_MODEL, DEMO_EMBEDDING_MODEL, EMBEDDING_MODEL, Gateway

CLIENT = OPENAI_PYTHON
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
FLOATS = pytest.approx([0.1, -0.2, 0.3], abs=1e-6)  # what the fake OpenAI embeds


class Answer(BaseModel):
    city: str
    temperature: int
    sunny: bool


@pytest.fixture(scope="module")
def sdk(client: Client, gateway: Gateway) -> Iterator[openai.OpenAI]:
    assert openai.__version__ == client.versions()["openai"]
    with openai.OpenAI(base_url=gateway.base_url, api_key=gateway.api_key, max_retries=0) as sdk:
        yield sdk


@pytest.fixture(scope="module")
def sdk_with_bad_key(client: Client, gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.base_url, api_key="sk-forge-wrong", max_retries=0) as sdk:
        yield sdk


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.mark.compat("chat completion, `_request_id`")
def test_chat(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(model=CHAT_MODEL, messages=ask("Hello there"))

    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert completion._request_id and completion._request_id.startswith("req_")


@pytest.mark.compat("stream, the plain loop, no `stream_options`")
def test_stream_plain_loop(sdk: openai.OpenAI) -> None:
    expected = sdk.chat.completions.create(model=CHAT_MODEL, messages=ask("Stream it"))

    stream = sdk.chat.completions.create(model=CHAT_MODEL, messages=ask("Stream it"), stream=True)
    text = ""
    for chunk in stream:
        text += chunk.choices[0].delta.content or ""

    assert text == expected.choices[0].message.content


@pytest.mark.compat(
    "stream with `stream_options.include_usage`",
    note="as from OpenAI, the last chunk has the usage and no `choices`",
)
def test_stream_with_usage(sdk: openai.OpenAI) -> None:
    expected = sdk.chat.completions.create(model=CHAT_MODEL, messages=ask("Count me in"))

    stream = sdk.chat.completions.create(
        model=CHAT_MODEL,
        messages=ask("Count me in"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    *deltas, last = chunks
    text = ""
    for chunk in deltas:
        text += chunk.choices[0].delta.content or ""
    assert text == expected.choices[0].message.content
    assert last.choices == [] and last.usage is not None and expected.usage is not None
    assert last.usage.completion_tokens == expected.usage.completion_tokens


@pytest.mark.compat("`responses.create`")
def test_responses(sdk: openai.OpenAI) -> None:
    response = sdk.responses.create(model=CHAT_MODEL, input="Say hello")

    assert response.status == "completed"
    assert response.output_text
    assert response.usage is not None and response.usage.output_tokens > 0


@pytest.mark.compat("`responses.create`, stream")
def test_responses_stream(sdk: openai.OpenAI) -> None:
    expected = sdk.responses.create(model=CHAT_MODEL, input="Stream a response")

    text, completed = "", None
    with sdk.responses.create(model=CHAT_MODEL, input="Stream a response", stream=True) as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                text += event.delta
            elif event.type == "response.completed":
                completed = event.response

    assert text == expected.output_text
    assert completed is not None and completed.output_text == text


@pytest.mark.compat("`chat.completions.parse` (structured output)")
def test_structured_output(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.parse(
        model=CHAT_MODEL, messages=ask("Weather report, as data"), response_format=Answer
    )

    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Answer), completion.choices[0].message


@pytest.mark.compat("tools")
def test_tools(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(
        model=CHAT_MODEL, messages=ask("What is the weather in Paris?"), tools=[WEATHER_TOOL]
    )

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}


@pytest.mark.compat("tools, stream")
def test_tools_stream(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model=CHAT_MODEL,
        messages=ask("What is the weather in Paris?"),
        tools=[WEATHER_TOOL],
        stream=True,
        stream_options={"include_usage": True},
    )
    names, arguments, finish = "", "", None
    for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                names += (call.function and call.function.name) or ""
                arguments += (call.function and call.function.arguments) or ""
            finish = choice.finish_reason or finish

    assert (names, finish) == ("get_weather", "tool_calls")
    assert json.loads(arguments) == {"city": "Paris"}


@pytest.mark.compat("embeddings, default `encoding_format` (the SDK asks for base64)")
def test_embeddings_default_format(sdk: openai.OpenAI) -> None:
    raw = sdk.embeddings.with_raw_response.create(model=EMBEDDING_MODEL, input=["one", "two"])

    assert all(isinstance(e["embedding"], str) for e in raw.http_response.json()["data"])
    embeddings = raw.parse()
    assert [e.embedding for e in embeddings.data] == [FLOATS, FLOATS]
    assert embeddings.usage.prompt_tokens > 0


@pytest.mark.compat("embeddings, default `encoding_format`, a route whose provider sends floats")
def test_embeddings_default_format_from_a_float_provider(sdk: openai.OpenAI) -> None:
    floats = sdk.embeddings.create(model=DEMO_EMBEDDING_MODEL, input="one", encoding_format="float")

    raw = sdk.embeddings.with_raw_response.create(model=DEMO_EMBEDDING_MODEL, input="one")

    assert isinstance(raw.http_response.json()["data"][0]["embedding"], str), "base64 was asked"
    expected = pytest.approx(floats.data[0].embedding, abs=1e-6)
    assert raw.parse().data[0].embedding == expected


@pytest.mark.compat('embeddings, `encoding_format="float"`')
def test_embeddings_float(sdk: openai.OpenAI) -> None:
    embeddings = sdk.embeddings.create(model=EMBEDDING_MODEL, input="one", encoding_format="float")

    assert embeddings.data[0].embedding == FLOATS


@pytest.mark.compat("`models.retrieve`")
def test_models_retrieve(sdk: openai.OpenAI) -> None:
    model = sdk.models.retrieve(CHAT_MODEL)

    assert (model.id, model.object) == (CHAT_MODEL, "model")


@pytest.mark.compat("error: a bad key raises AuthenticationError")
def test_bad_key(sdk_with_bad_key: openai.OpenAI) -> None:
    with pytest.raises(openai.AuthenticationError) as raised:
        sdk_with_bad_key.chat.completions.create(model=CHAT_MODEL, messages=ask("Hi"))

    assert (raised.value.status_code, raised.value.code) == (401, "invalid_api_key")


@pytest.mark.compat("error: an unknown model raises NotFoundError")
def test_unknown_model(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        sdk.chat.completions.create(model="no-such-model", messages=ask("Hi"))

    assert (raised.value.status_code, raised.value.code) == (404, "model_not_found")


@pytest.mark.compat("error: an invalid body raises BadRequestError")
def test_invalid_body(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.chat.completions.create(model=CHAT_MODEL, messages=ask("Hi"), max_tokens=-1)

    error = raised.value
    assert (error.status_code, error.code, error.param) == (400, InvalidRequest.code, "max_tokens")
