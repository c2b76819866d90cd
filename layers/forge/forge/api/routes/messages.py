"""POST /v1/messages: Anthropic's Messages API (non-stream and SSE), so Claude clients such as
the official `anthropic` SDK work against the gateway, through the same catalog, budgets,
ledger and receipts as chat completions; and POST /v1/messages/count_tokens. Errors leave in
Anthropic's error shape."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, TypeVar

from fastapi import APIRouter, BackgroundTasks, Header, Request
from fastapi.responses import Response
from pydantic import ValidationError

from forge.api.calls import PaidCallsDep
from forge.api.deps import GatewayDep, record_use_later
from forge.api.errors import validation_error
from forge.api.schemas import (
    PAID_SUCCESS,
    AnthropicErrorResponse,
    MessageTokensCount,
    error_responses,
)
from forge.api.sse import SseFormat, messages_error, messages_sse
from forge.api.strict import StrictJsonRoute
from forge.domain import strict_json
from forge.domain.errors import InvalidJson, InvalidRequest
from forge.domain.records import ApiKey
from forge.domain.requests import (
    ChatCompletionRequest,
    MessagesCountTokensRequest,
    MessagesRequest,
)
from forge.domain.upstream import Completion
from forge.gateway import Gateway, StreamResult
from forge.gateway.auth import require_model_calls
from forge.providers.anthropic_format.inbound import (
    chat_body_from_messages,
    message_from_completion,
)
from forge.providers.anthropic_format.stream_writer import MessagesStreamWriter

Body = TypeVar("Body", bound=MessagesCountTokensRequest)

router = APIRouter(
    route_class=StrictJsonRoute,
    responses={**error_responses(AnthropicErrorResponse), **PAID_SUCCESS},
)


@router.post("/v1/messages", response_model=None)
async def create_message(
    request: Request,
    gateway: GatewayDep,
    calls: PaidCallsDep,
    background: BackgroundTasks,
    x_api_key: Annotated[str | None, Header(alias="x-api-key")] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> Response:
    """Errors leave in Anthropic's shape (forge.api.errors maps this path so)."""
    key = await _authenticate(gateway, background, x_api_key, authorization)
    body = await _parse(request, MessagesRequest)
    chat = _as_chat(body)
    return await calls.serve(key, chat, body.model_dump(exclude_none=True), _message, MESSAGES_SSE)


@router.post(
    "/v1/messages/count_tokens",
    responses={200: {"description": "The prompt's input tokens"}},
)
async def count_message_tokens(
    request: Request,
    response: Response,
    gateway: GatewayDep,
    background: BackgroundTasks,
    x_api_key: Annotated[str | None, Header(alias="x-api-key")] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> MessageTokensCount:
    """The prompt's input tokens on the route a call to this model would take: the
    provider's own count where it has a count endpoint (Anthropic, Gemini), else the
    gateway's documented estimate; `x-forge-token-count` says which. Free: nothing is held
    or charged."""
    key = await _authenticate(gateway, background, x_api_key, authorization)
    body = await _parse(request, MessagesCountTokensRequest)
    count = await gateway.count_tokens(key, _as_chat(body))
    response.headers["x-forge-token-count"] = count.source
    response.headers["x-forge-route"] = count.route.name
    return MessageTokensCount(input_tokens=count.input_tokens)


async def _authenticate(
    gateway: Gateway, background: BackgroundTasks, x_api_key: str | None, authorization: str | None
) -> ApiKey:
    """Anthropic's x-api-key, or a bearer key as every other route takes it; one that may
    call models (its use recorded once the answer has gone)."""
    if x_api_key:
        key = await gateway.authenticate_key(x_api_key)
    else:
        key = await gateway.authenticate(authorization)
    require_model_calls(key)
    record_use_later(background, gateway.record_use, key)
    return key


async def _parse(request: Request, model: type[Body]) -> Body:
    try:
        raw = strict_json.loads(await request.body())
    except strict_json.StrictJsonError as exc:
        raise InvalidJson(f"The request body is not valid JSON: {exc.msg}") from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(list(exc.errors())) from None


def _as_chat(body: MessagesCountTokensRequest) -> ChatCompletionRequest:
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
