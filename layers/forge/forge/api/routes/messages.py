"""POST /v1/messages: Anthropic's Messages API (non-stream and SSE), so Claude clients such as
the official `anthropic` SDK work against the gateway, through the same catalog, budgets,
ledger and receipts as chat completions. Errors leave in Anthropic's error shape."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from forge.api.calls import CallHeadersDep, idempotent, receipt_headers, stream_headers
from forge.api.deps import GatewayDep, SettingsDep, StoreDep
from forge.api.schemas import ChatCompletionRequest, MessagesRequest
from forge.errors import ForgeError, InvalidJson, InvalidRequest
from forge.formats.anthropic import (
    MessagesStreamWriter,
    chat_body_from_messages,
    error_event,
    message_from_completion,
)
from forge.gateway import Gateway, RequestLimits, StreamItem, receipt_summary
from forge.records import ApiKey

router = APIRouter()

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def anthropic_error(exc: ForgeError, request_id: str | None) -> JSONResponse:
    """A ForgeError in Anthropic's shape; our stable code and details ride along."""
    error_type = _ERROR_TYPES.get(
        exc.status, "api_error" if exc.status >= 500 else "invalid_request_error"
    )
    body = error_event(error_type, exc.message, code=exc.code, **exc.details)
    headers = {"x-request-id": request_id} if request_id else {}
    return JSONResponse(body, status_code=exc.status, headers=headers)


@router.post("/v1/messages", response_model=None)
async def create_message(
    request: Request,
    gateway: GatewayDep,
    store: StoreDep,
    settings: SettingsDep,
    headers: CallHeadersDep,
    x_api_key: Annotated[str | None, Header(alias="x-api-key")] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> Response:
    request_id: str = request.state.request_id
    try:
        if x_api_key:
            key = await gateway.authenticate_key(x_api_key)
        else:
            key = await gateway.authenticate(authorization)
        body = await _parse(request)
        limits = headers.limits()
        chat = _as_chat(body)
        return await idempotent(
            lambda: _serve(gateway, key, chat, request_id, limits),
            store=store,
            settings=settings,
            account_id=key.account_id,
            request_id=request_id,
            headers=headers,
            body=body.model_dump(exclude_none=True),
        )
    except ForgeError as exc:
        return anthropic_error(exc, request_id)


async def _parse(request: Request) -> MessagesRequest:
    try:
        raw = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidJson("The request body is not valid JSON") from None
    try:
        return MessagesRequest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        location = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise InvalidRequest(f"{location}: {first.get('msg')}", param=location) from None


def _as_chat(body: MessagesRequest) -> ChatCompletionRequest:
    chat = chat_body_from_messages(body.model_dump(exclude_none=True))
    if chat["stream"]:
        chat["stream_options"] = {"include_usage": True}
    try:
        return ChatCompletionRequest.model_validate(chat)
    except ValidationError as exc:
        first = exc.errors()[0]
        location = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise InvalidRequest(
            f"messages: {location}: {first.get('msg')}", param="messages"
        ) from None


async def _serve(
    gateway: Gateway,
    key: ApiKey,
    chat: ChatCompletionRequest,
    request_id: str,
    limits: RequestLimits,
) -> Response:
    plan = await gateway.plan(key, chat, request_id, limits)
    await gateway.reserve(plan)
    if chat.stream:
        result = await gateway.open_stream(plan)
        writer = MessagesStreamWriter(plan.route.upstream_model, request_id)
        return StreamingResponse(
            _messages_sse(result.items, writer),
            media_type="text/event-stream",
            headers=stream_headers(plan),
        )
    completion, receipt = await gateway.complete(plan)
    message = message_from_completion(completion, receipt.usage, receipt.cache_write_input_tokens)
    return JSONResponse(message, headers=receipt_headers(plan, receipt))


def _event(payload: dict[str, Any]) -> bytes:
    data = json.dumps(payload, separators=(",", ":"))
    return f"event: {payload['type']}\ndata: {data}\n\n".encode()


async def _messages_sse(
    items: AsyncGenerator[StreamItem, None], writer: MessagesStreamWriter
) -> AsyncIterator[bytes]:
    """The gateway's relayed stream as Messages events: message_start, content blocks,
    message_delta (with the charged usage and the receipt), message_stop; or an error
    event when the upstream stream was cut after its first byte."""
    try:
        async for item in items:
            if item.kind == "chunk":
                events = writer.chunk(item.payload)
            elif item.kind == "end" and item.receipt is not None:
                receipt = item.receipt
                events = writer.finish(
                    receipt.usage,
                    receipt.cache_write_input_tokens,
                    {"receipt": receipt_summary(receipt)},
                )
            else:
                error = item.payload.get("error") or {}
                events = writer.fail(
                    error_event(
                        "api_error",
                        str(error.get("message", "The upstream stream was interrupted")),
                        code=error.get("code"),
                        receipt=error.get("receipt"),
                    )
                )
            for event in events:
                yield _event(event)
    finally:
        await items.aclose()
