"""LangChain's `ChatOpenAI` against the gateway's chat completions."""

from __future__ import annotations

import openai
import pytest
from langchain_openai import ChatOpenAI

from tests.compat.clients import LANGCHAIN_OPENAI, Client
from tests.compat.conftest import CHAT_MODEL, SMALL_CONTEXT, SMALL_CONTEXT_MODELS, Gateway

CLIENT = LANGCHAIN_OPENAI


def chat(gateway: Gateway, model: str = CHAT_MODEL) -> ChatOpenAI:
    return ChatOpenAI(
        model=model, base_url=gateway.base_url, api_key=gateway.api_key, max_retries=0
    )


@pytest.mark.compat("`invoke`")
def test_invoke(client: Client, gateway: Gateway) -> None:
    answer = chat(gateway).invoke("Hello from LangChain")

    assert isinstance(answer.content, str) and answer.content
    assert answer.usage_metadata is not None and answer.usage_metadata["output_tokens"] > 0
    assert answer.response_metadata["finish_reason"] == "stop"


@pytest.mark.compat("`stream`")
def test_stream(client: Client, gateway: Gateway) -> None:
    model = chat(gateway)
    expected = model.invoke("Stream from LangChain")

    text = "".join(str(chunk.content) for chunk in model.stream("Stream from LangChain"))

    assert text == expected.content


@pytest.mark.compat(
    "context too long: the error carries `code=context_length_exceeded`",
    note=(
        "as OpenAI's own; LangChain's `ContextOverflowError` needs the code in the message"
        " text, which openai-python 3.x no longer puts there, for OpenAI itself too"
    ),
)
def test_context_overflow(client: Client, gateway: Gateway) -> None:
    model = chat(gateway, SMALL_CONTEXT_MODELS["openai"])

    with pytest.raises(openai.BadRequestError) as raised:
        model.invoke("too long " * SMALL_CONTEXT)

    assert raised.value.code == "context_length_exceeded", raised.value.body
    assert raised.value.param == "messages", raised.value.body
