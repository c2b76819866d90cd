"""The FastAPI application: request ids, routers, and the error mapping.

One factory, three surfaces: `all` (what `make dev` and the tests serve), `paid` (the calls that
reach a provider, streamed on AWS by the proxy function under uvicorn) and `account` (views,
keys, projects, audit, redeem, webhooks and the web console's files, buffered through Mangum by a
short-timeout function that holds no provider key). Each surface imports only its own routes."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, FastAPI
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from forge.api.errors import ANTHROPIC_PATHS, install_error_handlers
from forge.api.schemas import ErrorResponse, error_responses
from forge.domain.ids import new_id


class RequestIdMiddleware:
    """Gives every request its id (the hold and receipt key) and returns it as x-request-id,
    and on Anthropic's paths also as `request-id`, where the anthropic SDK reads it
    (`response._request_id`, `error.request_id`). Pure ASGI rather than BaseHTTPMiddleware,
    so streamed responses pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_id("req")
        scope.setdefault("state", {})["request_id"] = request_id
        anthropic = str(scope.get("path", "")).startswith(ANTHROPIC_PATHS)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if "x-request-id" not in headers:
                    headers.append("x-request-id", request_id)
                if anthropic and "request-id" not in headers:
                    # the same id, an idempotent replay's original included
                    headers.append("request-id", headers["x-request-id"])
            await send(message)

        await self.app(scope, receive, send_with_id)


Surface = Literal["all", "paid", "account"]


def _routers(surface: Surface) -> list[APIRouter]:
    routers: list[APIRouter] = []
    if surface in ("all", "paid"):
        # /v1/models is here: only the function holding the provider keys knows which
        # providers, hence which models, it can serve.
        from forge.api.routes import chat, completions, messages, models, responses

        routers += [
            models.router,
            chat.router,
            responses.router,
            completions.router,
            messages.router,
        ]
    if surface in ("all", "account"):
        from forge.api.routes import account, console, keys, listings, money

        routers += [account.router, listings.router, money.router, keys.router, console.router]
    return routers


def create_paid_app() -> FastAPI:
    """The proxy function's app (functions/proxy/run.sh serves it with uvicorn)."""
    return create_app("paid")


def create_account_app() -> FastAPI:
    """The account function's app (functions/account/app.py serves it through Mangum)."""
    return create_app("account")


def create_app(surface: Surface = "all") -> FastAPI:
    app = FastAPI(
        title="Tokens Forge",
        version="0.1.0",
        docs_url=None,
        redoc_url=None,
        responses=error_responses(ErrorResponse),
    )
    app.add_middleware(RequestIdMiddleware)
    install_error_handlers(app)
    for router in _routers(surface):
        app.include_router(router)
    return app
