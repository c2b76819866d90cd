"""The official `openai` JS SDK against the gateway: js/openai.mjs plays every case once under
the pinned Node.js and prints what it observed; each test here asserts on one case."""

from __future__ import annotations

import json
from typing import Any

import pytest

from forge.domain.errors import InvalidRequest
from tests.compat.clients import OPENAI_JS, Client
from tests.compat.conftest import Gateway, run_node

CLIENT = OPENAI_JS
FLOATS = pytest.approx([0.1, -0.2, 0.3], abs=1e-6)  # what the fake OpenAI embeds


@pytest.fixture(scope="module")
def results(client: Client, gateway: Gateway) -> dict[str, Any]:
    return run_node("openai.mjs", gateway)


def observed(results: dict[str, Any], case: str) -> dict[str, Any]:
    """What a case saw, failing with the SDK's error if it threw."""
    result: dict[str, Any] = results[case]
    assert "error" not in result, f"{case} threw {json.dumps(result['error'])}"
    return result


def raised(results: dict[str, Any], case: str) -> dict[str, Any]:
    """The error a case expected its call to throw."""
    result: dict[str, Any] = results[case]
    assert "error" in result, f"{case} did not throw: {result}"
    error: dict[str, Any] = result["error"]
    return error


@pytest.mark.compat("chat completion, `_request_id`")
def test_chat(results: dict[str, Any]) -> None:
    chat = observed(results, "chat")

    assert chat["content"] and chat["finish_reason"] == "stop"
    assert chat["completion_tokens"] > 0
    assert chat["request_id"].startswith("req_")


@pytest.mark.compat("stream, the plain loop, no `stream_options`")
def test_stream_plain_loop(results: dict[str, Any]) -> None:
    stream = observed(results, "stream_plain_loop")

    assert stream["text"] == stream["expected"]


@pytest.mark.compat(
    "stream with `stream_options.include_usage`",
    note="as from OpenAI, the last chunk has the usage and no `choices`",
)
def test_stream_with_usage(results: dict[str, Any]) -> None:
    stream = observed(results, "stream_with_usage")

    assert stream["text"] == stream["expected"]
    assert stream["last_choices"] == [] and stream["last_usage"]["completion_tokens"] > 0


@pytest.mark.compat("`responses.create`")
def test_responses(results: dict[str, Any]) -> None:
    response = observed(results, "responses")

    assert response["status"] == "completed" and response["output_text"]
    assert response["usage"]["output_tokens"] > 0


@pytest.mark.compat("`responses.create`, stream")
def test_responses_stream(results: dict[str, Any]) -> None:
    stream = observed(results, "responses_stream")

    assert stream["text"] == stream["expected"] == stream["completed"]


@pytest.mark.compat("`chat.completions.parse` (structured output, zod)")
def test_structured_output(results: dict[str, Any]) -> None:
    parsed = observed(results, "structured_output")["parsed"]

    assert set(parsed) == {"city", "temperature", "sunny"}, parsed


@pytest.mark.compat("tools")
def test_tools(results: dict[str, Any]) -> None:
    tools = observed(results, "tools")

    assert tools == {
        "finish_reason": "tool_calls",
        "name": "get_weather",
        "arguments": {"city": "Paris"},
    }


@pytest.mark.compat("tools, stream")
def test_tools_stream(results: dict[str, Any]) -> None:
    tools = observed(results, "tools_stream")

    assert tools == {
        "finish_reason": "tool_calls",
        "name": "get_weather",
        "arguments": {"city": "Paris"},
    }


@pytest.mark.compat("embeddings, default `encoding_format` (the SDK asks for base64)")
def test_embeddings_default_format(results: dict[str, Any]) -> None:
    embeddings = observed(results, "embeddings_default_format")

    assert embeddings["wire_types"] == ["string", "string"]
    assert embeddings["embeddings"] == [FLOATS, FLOATS]
    assert embeddings["prompt_tokens"] > 0


@pytest.mark.compat("embeddings, default `encoding_format`, a route whose provider sends floats")
def test_embeddings_default_format_from_a_float_provider(results: dict[str, Any]) -> None:
    embeddings = observed(results, "embeddings_default_format_from_a_float_provider")

    assert embeddings["wire_types"] == ["string"], "base64 was asked"
    assert embeddings["embeddings"] == [pytest.approx(embeddings["expected"], abs=1e-6)]


@pytest.mark.compat('embeddings, `encoding_format: "float"`')
def test_embeddings_float(results: dict[str, Any]) -> None:
    assert observed(results, "embeddings_float")["embeddings"] == [FLOATS]


@pytest.mark.compat("`models.retrieve`")
def test_models_retrieve(results: dict[str, Any]) -> None:
    assert observed(results, "models_retrieve") == {"id": "gpt-4o-mini", "object": "model"}


@pytest.mark.compat("error: a bad key throws AuthenticationError")
def test_bad_key(results: dict[str, Any]) -> None:
    error = raised(results, "bad_key")

    assert (error["class"], error["status"], error["code"]) == (
        "AuthenticationError",
        401,
        "invalid_api_key",
    )


@pytest.mark.compat("error: an unknown model throws NotFoundError")
def test_unknown_model(results: dict[str, Any]) -> None:
    error = raised(results, "unknown_model")

    assert (error["class"], error["status"], error["code"]) == (
        "NotFoundError",
        404,
        "model_not_found",
    )


@pytest.mark.compat("error: an invalid body throws BadRequestError")
def test_invalid_body(results: dict[str, Any]) -> None:
    error = raised(results, "invalid_body")

    assert (error["class"], error["status"], error["code"], error["param"]) == (
        "BadRequestError",
        400,
        InvalidRequest.code,
        "max_tokens",
    )
