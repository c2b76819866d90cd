"""Every error leaves in OpenAI's error shape with a stable code: mapped once, here."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from forge.errors import ForgeError

logger = logging.getLogger(__name__)


def error_body(
    message: str, type_: str, code: str, param: str | None = None, **details: Any
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code, **details}}


def _request_id(request: Request) -> dict[str, str]:
    rid = getattr(request.state, "request_id", None)
    return {"x-request-id": rid} if rid else {}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ForgeError)
    async def forge_error(request: Request, exc: ForgeError) -> JSONResponse:
        if exc.status >= 500:
            logger.warning("request_failed", extra={"code": exc.code, "status": exc.status})
        body = error_body(exc.message, exc.type, exc.code, exc.param, **exc.details)
        headers = _request_id(request)
        if exc.retry_after is not None:
            headers["retry-after"] = str(exc.retry_after)
        return JSONResponse(body, status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            body = error_body(
                "The request body is not valid JSON", "invalid_request_error", "invalid_json"
            )
            return JSONResponse(body, status_code=400, headers=_request_id(request))
        location = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = f"{location or 'body'}: {first.get('msg', 'invalid value')}"
        body = error_body(message, "invalid_request_error", "invalid_request", location or None)
        return JSONResponse(body, status_code=422, headers=_request_id(request))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else f"http_{exc.status_code}"
        if exc.status_code == 405:
            code = "method_not_allowed"
        body = error_body(str(exc.detail), "invalid_request_error", code)
        return JSONResponse(body, status_code=exc.status_code, headers=_request_id(request))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled_error")
        body = error_body(
            "Internal error; nothing was charged for it", "api_error", "internal_error"
        )
        return JSONResponse(body, status_code=500, headers=_request_id(request))
