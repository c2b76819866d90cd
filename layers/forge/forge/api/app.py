"""The FastAPI application: request ids, routers, and the error mapping."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from forge.api.errors import install_error_handlers
from forge.api.routes import account, chat, messages, models, money
from forge.api.schemas import ErrorResponse, error_responses
from forge.domain.ids import new_id


class RequestIdMiddleware:
    """Gives every request its id (the hold and receipt key) and returns it as x-request-id.
    Pure ASGI rather than BaseHTTPMiddleware, so streamed responses pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_id("req")
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if "x-request-id" not in headers:
                    headers.append("x-request-id", request_id)
            await send(message)

        await self.app(scope, receive, send_with_id)


def create_app() -> FastAPI:
    app = FastAPI(
        title="Tokens Forge",
        version="0.1.0",
        docs_url=None,
        redoc_url=None,
        responses=error_responses(ErrorResponse),
    )
    app.add_middleware(RequestIdMiddleware)
    install_error_handlers(app)
    app.include_router(models.router)
    app.include_router(chat.router)
    app.include_router(messages.router)
    app.include_router(account.router)
    app.include_router(money.router)
    return app
