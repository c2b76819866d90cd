"""A provider's refusal keeps its identity: the official SDKs see the provider's type, code and
param (in their own dialect, mapped across families), the gateway's code rides along as
`forge_code`, and nothing is charged: the hold is voided, the receipt says failed with the
provider's code, and the books reconcile. Which statuses reach the client is unchanged.

Each provider's context-length refusal is scripted as its documentation and its users'
reports show it; the app runs under uvicorn with the shipped catalog (live_app)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from anthropic.types import MessageParam
from openai.types.chat import ChatCompletionMessageParam

from forge_tools.emulator import Resources
from tests.fakes import Fault
from tests.integration.live_app import LiveApp, live_app
from tests.integration.providers_kit import Fakes, start_fakes

# catalog model -> (provider, upstream model) in the shipped catalog
SERVED = {
    "gpt-4o-mini": ("openai", "gpt-4o-mini"),
    "claude-haiku-4-5": ("anthropic", "claude-haiku-4-5"),
    "gemini-2.5-flash": ("gemini", "gemini-2.5-flash"),
}
OVERFLOW: dict[str, dict[str, Any]] = {
    "openai": {
        "error": {
            "message": "This model's maximum context length is 128000 tokens. However, your"
            " messages resulted in 130012 tokens. Please reduce the length of the messages.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    },
    "anthropic": {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "prompt is too long: 210345 tokens > 200000 maximum",
        },
        "request_id": "req_011CWAgPbMohjStFaYrkLZCm",
    },
    "gemini": {
        "error": {
            "code": 400,
            "message": "The input token count (1200293) exceeds the maximum number of tokens"
            " allowed (1048576).",
            "status": "INVALID_ARGUMENT",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "badRequest",
                    "metadata": {"consumer": "projects/8675309"},
                }
            ],
        }
    },
}
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "A very long conversation."}
]
CLAUDE_MESSAGES: list[MessageParam] = [{"role": "user", "content": "A very long conversation."}]


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    yield from start_fakes()


@pytest.fixture
def app(aws_stack: Resources, fakes: Fakes, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveApp]:
    fakes.reset()
    with live_app(fakes, monkeypatch) as served:
        yield served


def overflow_next(app: LiveApp, model: str) -> None:
    provider, upstream = SERVED[model]
    app.fakes[provider].fail(upstream, Fault("status", 400, body=OVERFLOW[provider]))


def assert_refused_for_free(app: LiveApp, request_id: str, code: str, before: int) -> None:
    receipt = app.receipt(request_id)
    assert (receipt.status, receipt.error_code, receipt.charge) == ("failed", code, 0)
    assert [(a.status, a.action) for a in receipt.attempts] == [(400, "return")]
    assert app.balance() == (before, 0)
    app.assert_money_whole()


@pytest.mark.parametrize("model", list(SERVED))
def test_a_context_overflow_reaches_the_openai_sdk_as_context_length_exceeded(
    app: LiveApp, model: str
) -> None:
    overflow_next(app, model)
    before, _ = app.balance()

    with app.openai() as client, pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=20)

    error = raised.value
    assert (error.code, error.param, error.type) == (
        "context_length_exceeded",
        "messages",
        "invalid_request_error",
    )
    body = error.body
    assert isinstance(body, dict)
    provider, _ = SERVED[model]
    assert body["message"] == (OVERFLOW[provider].get("error") or {})["message"]
    assert body["forge_code"] == "upstream_rejected_request"
    assert body["upstream_status"] == 400 and body["route"].startswith(provider)
    assert "details" not in body and "8675309" not in str(body)  # Google's details stay home
    assert len(app.fakes[provider].calls) == 1  # no retry, no fallback
    request_id = error.response.headers["x-request-id"]
    assert_refused_for_free(app, request_id, "context_length_exceeded", before)


@pytest.mark.parametrize("model", list(SERVED))
def test_a_context_overflow_reaches_the_anthropic_sdk_as_an_invalid_request_error(
    app: LiveApp, model: str
) -> None:
    overflow_next(app, model)
    before, _ = app.balance()

    with app.anthropic() as client, pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.create(model=model, max_tokens=20, messages=CLAUDE_MESSAGES)

    body = raised.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    error = body["error"]
    assert error["type"] == "invalid_request_error"  # Anthropic's own type for a long prompt
    assert error["code"] == "context_length_exceeded"
    assert error["forge_code"] == "upstream_rejected_request"
    request_id = raised.value.response.headers["x-request-id"]
    assert_refused_for_free(app, request_id, "context_length_exceeded", before)


def test_a_streamed_call_refused_before_its_first_byte_is_an_http_error(app: LiveApp) -> None:
    overflow_next(app, "claude-haiku-4-5")

    with app.openai() as client, pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="claude-haiku-4-5", messages=MESSAGES, stream=True)

    assert (raised.value.code, raised.value.param) == ("context_length_exceeded", "messages")
    app.assert_money_whole()


def test_an_openai_refusal_passes_through_with_its_own_code_and_param(app: LiveApp) -> None:
    body = {
        "error": {
            "message": "Invalid 'messages[0].content': string too long.",
            "type": "invalid_request_error",
            "param": "messages[0].content",
            "code": "string_above_max_length",
        }
    }
    app.fakes.openai.fail("gpt-4o-mini", Fault("status", 400, body=body))

    with app.openai() as client, pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    error = raised.value
    assert (error.code, error.param) == ("string_above_max_length", "messages[0].content")
    assert isinstance(error.body, dict) and error.body["message"] == body["error"]["message"]
    receipt = app.receipt(error.response.headers["x-request-id"])
    assert receipt.error_code == "string_above_max_length" and receipt.charge == 0


def test_a_refusal_without_a_code_keeps_the_gateways_code(app: LiveApp) -> None:
    body = {
        "error": {"message": "We could not parse the JSON body", "type": "invalid_request_error"}
    }
    app.fakes.openai.fail("gpt-4o-mini", Fault("status", 400, body=body))

    with app.openai() as client, pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert raised.value.code == "upstream_rejected_request" and raised.value.param is None


def test_a_too_large_request_keeps_its_status_and_type_in_both_dialects(app: LiveApp) -> None:
    body = {
        "type": "error",
        "error": {"type": "request_too_large", "message": "Request exceeds the maximum size"},
    }
    app.fakes.anthropic.fail("claude-haiku-4-5", Fault("status", 413, body=body))
    app.fakes.anthropic.fail("claude-haiku-4-5", Fault("status", 413, body=body))

    with app.openai() as client, pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model="claude-haiku-4-5", messages=MESSAGES)
    with app.anthropic() as client, pytest.raises(anthropic.APIStatusError) as claude:
        client.messages.create(model="claude-haiku-4-5", max_tokens=20, messages=CLAUDE_MESSAGES)

    assert raised.value.status_code == claude.value.status_code == 413
    assert (raised.value.code, raised.value.type) == ("request_too_large", "invalid_request_error")
    claude_body = claude.value.body
    assert isinstance(claude_body, dict) and claude_body["error"]["type"] == "request_too_large"
    app.assert_money_whole()


@pytest.mark.parametrize("status", [429, 500, 503])
def test_statuses_that_are_retried_still_are(app: LiveApp, status: int) -> None:
    """A rate limit or a server error is no refusal of the request: retried, then served."""
    app.fakes.openai.fail("gpt-4o-mini", Fault("status", status))

    with app.openai() as client:
        answer = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
        )

    assert answer.headers["x-forge-attempts"] == "2"
    assert len(app.fakes.openai.calls) == 2


def test_no_provider_header_and_no_key_reaches_the_client(app: LiveApp) -> None:
    key = app.fakes.openai.api_key
    body = {
        "error": {
            "message": f"Your request was refused for key {key} (sk-proj-abc123*****wxyz)",
            "type": "invalid_request_error",
            "param": None,
            "code": "refused",
        }
    }
    headers = {"openai-organization": "org-operator", "x-request-id": "req_upstream_1"}
    app.fakes.openai.fail("gpt-4o-mini", Fault("status", 400, body=body, headers=headers))

    response = httpx.post(
        f"{app.url}/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": MESSAGES},
        headers={"Authorization": f"Bearer {app.key}"},
    )

    assert response.status_code == 400
    assert "openai-organization" not in response.headers
    assert response.headers["x-request-id"] != "req_upstream_1"
    assert key not in response.text and "sk-proj" not in response.text
    assert response.json()["error"]["message"].count("[redacted]") == 2
