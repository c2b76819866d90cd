"""POST /v1/messages: Anthropic's Messages API (non-stream and SSE), so Claude clients such as
the official `anthropic` SDK work against the gateway, through the same catalog, budgets,
ledger and receipts as chat completions. Errors leave in Anthropic's error shape."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import Response
from pydantic import ValidationError

from forge.api.calls import PaidCallsDep
from forge.api.deps import GatewayDep
from forge.api.errors import validation_error
from forge.api.schemas import PAID_SUCCESS, AnthropicErrorResponse, error_responses
from forge.api.sse import SseFormat, messages_error, messages_sse
from forge.api.strict import StrictJsonRoute
from forge.domain import strict_json
from forge.domain.errors import InvalidJson, InvalidRequest
from forge.domain.requests import ChatCompletionRequest, MessagesRequest
from forge.domain.upstream import Completion
from forge.gateway import StreamResult
from forge.providers.anthropic_format.inbound import (
    chat_body_from_messages,
    message_from_completion,
)
from forge.providers.anthropic_format.stream_writer import MessagesStreamWriter

router = APIRouter(
    route_class=StrictJsonRoute,
    responses={**error_responses(AnthropicErrorResponse), **PAID_SUCCESS},
)


@router.post("/v1/messages", response_model=None)
async def create_message(
    request: Request,
    gateway: GatewayDep,
    calls: PaidCallsDep,
    x_api_key: Annotated[str | None, Header(alias="x-api-key")] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> Response:
    """Errors leave in Anthropic's shape (forge.api.errors maps this path so)."""
    if x_api_key:
        key = await gateway.authenticate_key(x_api_key)
    else:
        key = await gateway.authenticate(authorization)
    body = await _parse(request)
    chat = _as_chat(body)
    return await calls.serve(key, chat, body.model_dump(exclude_none=True), _message, MESSAGES_SSE)


async def _parse(request: Request) -> MessagesRequest:
    try:
        raw = strict_json.loads(await request.body())
    except strict_json.StrictJsonError as exc:
        raise InvalidJson(f"The request body is not valid JSON: {exc.msg}") from None
    try:
        return MessagesRequest.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(list(exc.errors())) from None


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


def _message(completion: Completion) -> bytes:
    message = message_from_completion(
        completion.body, completion.usage, completion.cache_write_tokens
    )
    return strict_json.dumps(message)


def _messages_events(result: StreamResult) -> AsyncIterator[bytes]:
    writer = MessagesStreamWriter(result.plan.route.upstream_model, result.plan.request_id)
    return messages_sse(result.items, writer)


MESSAGES_SSE = SseFormat(_messages_events, messages_error)
