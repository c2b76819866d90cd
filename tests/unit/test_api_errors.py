"""The one mapping of domain errors to HTTP: OpenAI's error shape, the request id, and
Retry-After when an error says when to come back."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI

from forge.api.app import RequestIdMiddleware
from forge.api.errors import install_error_handlers
from forge.domain.errors import BudgetStoreUnavailable, ModelNotFound, StatementNotReady


def app_raising(error: Exception) -> FastAPI:
    app = FastAPI()
    app.add_middleware(RequestIdMiddleware)
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise error

    return app


def get(app: FastAPI) -> httpx.Response:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get("/boom")

    return asyncio.run(run())


def test_a_statement_not_ready_says_when_to_retry() -> None:
    response = get(app_raising(StatementNotReady("behind", seq=2)))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "30"
    assert response.json()["error"]["code"] == "statement_not_ready"
    assert response.json()["error"]["seq"] == 2
    assert response.headers["x-request-id"].startswith("req_")


def test_errors_without_a_retry_hint_send_none() -> None:
    response = get(app_raising(ModelNotFound("nope", param="model")))
    assert response.status_code == 404
    assert "retry-after" not in response.headers
    assert response.json()["error"] == {
        "message": "nope",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }


def test_a_budget_store_outage_says_when_to_retry() -> None:
    response = get(app_raising(BudgetStoreUnavailable("the budget store did not answer")))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "budget_store_unavailable"
