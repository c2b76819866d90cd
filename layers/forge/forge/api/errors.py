"""Every error leaves in one place: OpenAI's error shape with a stable code, or Anthropic's on
`/v1/messages` (so each SDK raises its own error classes)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from forge.domain.errors import (
    ForgeError,
    HttpError,
    InternalError,
    InvalidJson,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
)
from forge.domain.provider_errors import anthropic_type_for_status
from forge.providers.anthropic_format.stream_writer import error_event

logger = logging.getLogger(__name__)

ANTHROPIC_PATHS = ("/v1/messages",)


def error_body(
    message: str, type_: str, code: str, param: str | None = None, **details: Any
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code, **details}}


def anthropic_body(exc: ForgeError) -> dict[str, Any]:
    """A ForgeError in Anthropic's shape; its code, param and details ride along. A
    provider's refusal keeps the provider's Anthropic type (forge.domain.provider_errors)."""
    error_type = exc.anthropic_type or anthropic_type_for_status(exc.status)
    extra = {"param": exc.param} if exc.param else {}
    return error_event(error_type, exc.message, code=exc.code, **extra, **exc.details)


def error_response(
    path: str, request_id: str | None, exc: ForgeError, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The one mapping from a domain error to HTTP, in the shape the route's clients expect."""
    if path.startswith(ANTHROPIC_PATHS):
        body = anthropic_body(exc)
    else:
        body = error_body(exc.message, exc.type, exc.code, exc.param, **exc.details)
    out = dict(headers or {})
    if request_id:
        out["x-request-id"] = request_id
    if exc.retry_after is not None:
        out["retry-after"] = str(exc.retry_after)
    return JSONResponse(body, status_code=exc.status, headers=out)


def _respond(
    request: Request, exc: ForgeError, headers: dict[str, str] | None = None
) -> JSONResponse:
    rid = getattr(request.state, "request_id", None)
    return error_response(request.url.path, rid, exc, headers)


def validation_error(errors: list[Any]) -> ForgeError:
    """The first pydantic error as a ForgeError: invalid JSON (`invalid_json`) or an invalid
    field (`invalid_request`, naming it in `param`); both 400, as OpenAI answers them."""
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        reason = (first.get("ctx") or {}).get("error")
        detail = f": {reason}" if reason else ""
        return InvalidJson(f"The request body is not valid JSON{detail}")
    loc = [str(p) for p in first.get("loc", ())]
    if loc[:1] in (["header"], ["query"], ["path"]):
        loc = loc[1:]  # a header, query or path parameter is named as the client sent it
    location = ".".join(p for p in loc if p != "body")
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return InvalidRequest(f"{location or 'body'}: {message}", param=location or None)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ForgeError)
    async def forge_error(request: Request, exc: ForgeError) -> JSONResponse:
        if exc.status >= 500:
            logger.warning("request_failed", extra={"code": exc.code, "status": exc.status})
        return _respond(request, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _respond(request, validation_error(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error: ForgeError
        if exc.status_code == 404:
            error = NotFound(str(exc.detail))
        elif exc.status_code == 405:
            error = MethodNotAllowed(str(exc.detail))
        elif exc.status_code == 400:  # the framework could not read the body
            error = InvalidJson("The request body is not valid JSON")
        else:
            error = HttpError(exc.status_code, str(exc.detail))
        return _respond(request, error, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled_error")
        error = InternalError("Internal error; nothing was charged for it")
        return _respond(request, error)
