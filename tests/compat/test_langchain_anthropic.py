"""LangChain's `ChatAnthropic` against the gateway's Messages API."""

from __future__ import annotations

import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.exceptions import ContextOverflowError

from tests.compat.clients import LANGCHAIN_ANTHROPIC, Client
from tests.compat.conftest import CLAUDE_MODEL, SMALL_CONTEXT, SMALL_CONTEXT_MODELS, Gateway

CLIENT = LANGCHAIN_ANTHROPIC


def chat(gateway: Gateway, model: str = CLAUDE_MODEL) -> ChatAnthropic:
    return ChatAnthropic(
        model=model,
        base_url=gateway.origin,
        api_key=gateway.api_key,
        max_tokens=64,
        max_retries=0,
    )


@pytest.mark.compat("`invoke`")
def test_invoke(client: Client, gateway: Gateway) -> None:
    answer = chat(gateway).invoke("Hello from LangChain")

    assert isinstance(answer.content, str) and answer.content
    assert answer.usage_metadata is not None and answer.usage_metadata["output_tokens"] > 0
    assert answer.response_metadata["stop_reason"] == "end_turn"


@pytest.mark.compat("`stream`")
def test_stream(client: Client, gateway: Gateway) -> None:
    model = chat(gateway)
    expected = model.invoke("Stream from LangChain")

    text = "".join(chunk.text for chunk in model.stream("Stream from LangChain"))

    assert text == expected.content


@pytest.mark.compat(
    "context too long raises `ContextOverflowError`",
    note="LangChain reads Anthropic's 'prompt is too long', which the gateway passes on",
)
def test_context_overflow(client: Client, gateway: Gateway) -> None:
    model = chat(gateway, SMALL_CONTEXT_MODELS["anthropic"])

    with pytest.raises(ContextOverflowError):
        model.invoke("too long " * SMALL_CONTEXT)
