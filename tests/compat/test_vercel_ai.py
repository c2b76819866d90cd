"""The Vercel AI SDK's default OpenAI provider against the gateway: js/vercel-ai.mjs plays
every case once under the pinned Node.js; each test here asserts on one case."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.compat.clients import VERCEL_AI, Client
from tests.compat.conftest import Gateway, run_node

CLIENT = VERCEL_AI


@pytest.fixture(scope="module")
def results(client: Client, gateway: Gateway) -> dict[str, Any]:
    return run_node("vercel-ai.mjs", gateway)


def observed(results: dict[str, Any], case: str) -> dict[str, Any]:
    result: dict[str, Any] = results[case]
    assert "error" not in result, f"{case} threw {json.dumps(result['error'])}"
    return result


@pytest.mark.compat("`generateText`, `createOpenAI(...)(model)` (the Responses API)")
def test_generate_text(results: dict[str, Any]) -> None:
    result = observed(results, "generate_text")

    assert result["text"] and result["finish_reason"] == "stop"
    assert result["output_tokens"] > 0


@pytest.mark.compat("`streamText`, `createOpenAI(...)(model)` (the Responses API)")
def test_stream_text(results: dict[str, Any]) -> None:
    result = observed(results, "stream_text")

    assert result["text"] == result["expected"]
    assert result["finish_reason"] == "stop" and result["output_tokens"] > 0


@pytest.mark.compat("`generateText`, `.chat(model)` (chat completions)")
def test_generate_text_chat(results: dict[str, Any]) -> None:
    result = observed(results, "generate_text_chat")

    assert result["text"] and result["finish_reason"] == "stop"
    assert result["output_tokens"] > 0


@pytest.mark.compat("`streamText`, `.chat(model)` (chat completions)")
def test_stream_text_chat(results: dict[str, Any]) -> None:
    result = observed(results, "stream_text_chat")

    assert result["text"] == result["expected"]
    assert result["finish_reason"] == "stop" and result["output_tokens"] > 0


@pytest.mark.compat("`embed`, `.embedding(model)`")
def test_embed(results: dict[str, Any]) -> None:
    result = observed(results, "embed")

    assert result["embedding"] == pytest.approx([0.1, -0.2, 0.3], abs=1e-6)
    assert result["tokens"] > 0
