"""The official `anthropic` Python SDK against the gateway's Messages API (base URL without
/v1, the key as `x-api-key`), served by a Claude route through the fake Anthropic."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import pytest

from tests.compat.clients import ANTHROPIC_PYTHON, Client
from tests.compat.conftest import CLAUDE_MODEL, Gateway

CLIENT = ANTHROPIC_PYTHON
HELLO = [{"role": "user", "content": "Hello, Claude"}]


@pytest.fixture(scope="module")
def sdk(client: Client, gateway: Gateway) -> Iterator[anthropic.Anthropic]:
    assert anthropic.__version__ == client.versions()["anthropic"]
    with anthropic.Anthropic(
        base_url=gateway.origin, api_key=gateway.api_key, max_retries=0
    ) as sdk:
        yield sdk


@pytest.mark.compat("`messages.create`")
def test_messages(sdk: anthropic.Anthropic) -> None:
    message = sdk.messages.create(model=CLAUDE_MODEL, max_tokens=64, messages=HELLO)

    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0


@pytest.mark.compat("`messages.stream` helper")
def test_messages_stream(sdk: anthropic.Anthropic) -> None:
    expected = sdk.messages.create(model=CLAUDE_MODEL, max_tokens=64, messages=HELLO)

    with sdk.messages.stream(model=CLAUDE_MODEL, max_tokens=64, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()

    assert text == expected.content[0].text  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == expected.usage.output_tokens


@pytest.mark.compat("`messages.count_tokens`")
def test_count_tokens(sdk: anthropic.Anthropic) -> None:
    counted = sdk.messages.count_tokens(model=CLAUDE_MODEL, messages=HELLO)

    assert isinstance(counted.input_tokens, int) and counted.input_tokens > 0


@pytest.mark.compat("`message._request_id`")
def test_request_id(sdk: anthropic.Anthropic) -> None:
    raw = sdk.messages.with_raw_response.create(model=CLAUDE_MODEL, max_tokens=64, messages=HELLO)

    message = raw.parse()
    assert message._request_id is not None
    assert message._request_id == raw.headers["x-request-id"]  # the id of the gateway's receipt
