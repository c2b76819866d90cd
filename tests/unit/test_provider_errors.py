"""A provider's refusal in the client's dialect (forge.domain.provider_errors): each
provider's error body read in its dialect, mapped across families as the module's table
says, the gateway's code kept as forge_code, and nothing key-shaped passed on."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from forge.api.app import RequestIdMiddleware
from forge.api.errors import install_error_handlers
from forge.domain.errors import UpstreamRejected, UpstreamRejectedTooLarge
from forge.domain.provider_errors import ProviderError, redact, refusal_of
from forge.domain.routing import rejected
from forge.domain.upstream import FailureKind, UpstreamError
from forge.providers.http import error_from_response

OPENAI_OVERFLOW = {
    "error": {
        "message": "This model's maximum context length is 8192 tokens. However, your messages"
        " resulted in 8227 tokens. Please reduce the length of the messages.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}
ANTHROPIC_OVERFLOW = {
    "type": "error",
    "error": {
        "type": "invalid_request_error",
        "message": "prompt is too long: 191989 tokens > 180000 maximum",
    },
    "request_id": "req_011CWAgPbMohjStFaYrkLZCm",
}
ANTHROPIC_CONTEXT_LIMIT = {
    "type": "error",
    "error": {
        "type": "invalid_request_error",
        "message": "input length and `max_tokens` exceed context limit: 188240 + 21333 > 200000,"
        " decrease input length or `max_tokens` and try again",
    },
}
GEMINI_OVERFLOW = {
    "error": {
        "code": 400,
        "message": "The input token count (1200293) exceeds the maximum number of tokens"
        " allowed (1048576).",
        "status": "INVALID_ARGUMENT",
    }
}
VLLM_OVERFLOW = {  # an OpenAI-compatible server: no string code, the status as a number
    "object": "error",
    "message": "ignored",
    "error": {
        "message": "This model's maximum context length is 4096 tokens. However, you requested"
        " 5000 tokens.",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    },
}


def read(body: Any, status: int, dialect: Any) -> UpstreamError:
    return error_from_response(httpx.Response(status, json=body), dialect)


@pytest.mark.parametrize(
    ("body", "dialect"),
    [
        (OPENAI_OVERFLOW, "openai"),
        (ANTHROPIC_OVERFLOW, "anthropic"),
        (ANTHROPIC_CONTEXT_LIMIT, "anthropic"),
        (GEMINI_OVERFLOW, "gemini"),
        (VLLM_OVERFLOW, "openai"),
    ],
    ids=["openai", "anthropic", "anthropic-context-limit", "gemini", "vllm"],
)
def test_every_providers_context_overflow_is_context_length_exceeded(
    body: dict[str, Any], dialect: Any
) -> None:
    failure = read(body, 400, dialect)
    assert failure.kind is FailureKind.CLIENT

    refusal = refusal_of(failure.error, 400)

    assert (refusal.type, refusal.code, refusal.param) == (
        "invalid_request_error",
        "context_length_exceeded",
        "messages",
    )
    assert refusal.anthropic_type == "invalid_request_error"
    assert refusal.message == body["error"]["message"]


@pytest.mark.parametrize(
    ("error_type", "status", "openai_type", "openai_code"),
    [
        ("invalid_request_error", 400, "invalid_request_error", "upstream_rejected_request"),
        ("request_too_large", 413, "invalid_request_error", "request_too_large"),
        ("authentication_error", 401, "authentication_error", "invalid_api_key"),
        ("permission_error", 403, "permission_error", "permission_denied"),
        ("not_found_error", 404, "invalid_request_error", "not_found"),
        ("billing_error", 402, "insufficient_quota", "insufficient_quota"),
        ("rate_limit_error", 429, "rate_limit_error", "rate_limit_exceeded"),
        ("api_error", 500, "server_error", "server_error"),
        ("overloaded_error", 529, "server_error", "overloaded"),
        ("timeout_error", 504, "server_error", "timeout"),
    ],
)
def test_anthropic_error_types_map_to_openai_types_and_codes(
    error_type: str, status: int, openai_type: str, openai_code: str
) -> None:
    error = ProviderError("anthropic", status, message="no", type=error_type)
    refusal = refusal_of(error, status)
    assert (refusal.type, refusal.code, refusal.anthropic_type) == (
        openai_type,
        openai_code,
        error_type,
    )


@pytest.mark.parametrize(
    ("google_status", "status", "openai_type", "openai_code", "anthropic_type"),
    [
        ("INVALID_ARGUMENT", 400, "invalid_request_error", "upstream_rejected_request",
         "invalid_request_error"),
        ("FAILED_PRECONDITION", 400, "invalid_request_error", "upstream_rejected_request",
         "invalid_request_error"),
        ("UNAUTHENTICATED", 401, "authentication_error", "invalid_api_key",
         "authentication_error"),
        ("PERMISSION_DENIED", 403, "permission_error", "permission_denied", "permission_error"),
        ("NOT_FOUND", 404, "invalid_request_error", "not_found", "not_found_error"),
        ("RESOURCE_EXHAUSTED", 402, "insufficient_quota", "insufficient_quota", "billing_error"),
        ("RESOURCE_EXHAUSTED", 429, "rate_limit_error", "rate_limit_exceeded",
         "rate_limit_error"),
        ("INTERNAL", 500, "server_error", "server_error", "api_error"),
        ("UNAVAILABLE", 503, "server_error", "overloaded", "api_error"),
        ("DEADLINE_EXCEEDED", 504, "server_error", "timeout", "api_error"),
    ],
)  # fmt: skip
def test_gemini_statuses_map_to_openai_and_anthropic_types(
    google_status: str, status: int, openai_type: str, openai_code: str, anthropic_type: str
) -> None:
    failure = read({"error": {"code": status, "message": "no", "status": google_status}},
                   status, "gemini")  # fmt: skip
    refusal = refusal_of(failure.error, status)
    assert (refusal.type, refusal.code, refusal.anthropic_type) == (
        openai_type,
        openai_code,
        anthropic_type,
    )


@pytest.mark.parametrize(
    ("status", "anthropic_type"),
    [(400, "invalid_request_error"), (413, "request_too_large"), (422, "invalid_request_error"),
     (409, "invalid_request_error")],
)  # fmt: skip
def test_an_openai_refusal_on_messages_takes_the_anthropic_type_of_its_status(
    status: int, anthropic_type: str
) -> None:
    failure = read({"error": {"message": "no", "type": "invalid_request_error"}}, status, "openai")
    assert refusal_of(failure.error, status).anthropic_type == anthropic_type


def test_a_body_that_is_not_json_is_refused_by_its_status() -> None:
    failure = error_from_response(httpx.Response(413, text="<html>Too large</html>"), "anthropic")
    refusal = refusal_of(failure.error, 413)
    assert (refusal.code, refusal.anthropic_type) == ("request_too_large", "request_too_large")
    assert refusal.message == "The provider refused the request (HTTP 413)"


def test_the_key_sent_and_anything_key_shaped_are_removed_from_a_message() -> None:
    body = {"error": {"message": "key my-secret-key, sk-proj-abcdef1234, AIzaSyA1234567890123456789"
                                 " refused; the task-manager is fine"}}  # fmt: skip
    failure = error_from_response(httpx.Response(400, json=body), "openai", ("my-secret-key",))
    assert failure.message == (
        "key [redacted], [redacted], [redacted] refused; the task-manager is fine"
    )
    assert len(redact("x" * 10_000)) == 2000


def test_a_rejection_carries_the_providers_identity_and_the_gateways_code() -> None:
    refusal = rejected(read(ANTHROPIC_OVERFLOW, 400, "anthropic"), route="anthropic:claude")
    assert isinstance(refusal, UpstreamRejected) and refusal.status == 400
    assert (refusal.type, refusal.code, refusal.param) == (
        "invalid_request_error",
        "context_length_exceeded",
        "messages",
    )
    assert refusal.details == {
        "forge_code": "upstream_rejected_request",
        "upstream_status": 400,
        "route": "anthropic:claude",
    }
    too_large = rejected(read({"error": {"message": "big"}}, 413, "openai"))
    assert isinstance(too_large, UpstreamRejectedTooLarge) and too_large.status == 413
    assert too_large.details["forge_code"] == "upstream_rejected_request"


def app_raising(error: Exception) -> FastAPI:
    app = FastAPI()
    app.add_middleware(RequestIdMiddleware)
    install_error_handlers(app)

    @app.post("/v1/messages")
    @app.post("/v1/chat/completions")
    async def boom() -> None:
        raise error

    return app


def post(app: FastAPI, path: str) -> httpx.Response:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post(path)

    return asyncio.run(run())


def test_a_rejection_leaves_in_each_clients_shape() -> None:
    app = app_raising(rejected(read(GEMINI_OVERFLOW, 400, "gemini"), route="gemini:flash"))

    openai_shape = post(app, "/v1/chat/completions")
    anthropic_shape = post(app, "/v1/messages")

    message = GEMINI_OVERFLOW["error"]["message"]
    assert openai_shape.status_code == anthropic_shape.status_code == 400
    assert openai_shape.json() == {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
            "forge_code": "upstream_rejected_request",
            "upstream_status": 400,
            "route": "gemini:flash",
        }
    }
    assert anthropic_shape.json() == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": message,
            "code": "context_length_exceeded",
            "param": "messages",
            "forge_code": "upstream_rejected_request",
            "upstream_status": 400,
            "route": "gemini:flash",
        },
    }
