"""POST /v1/chat/completions and POST /v1/embeddings: OpenAI's shapes, with receipt headers."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from forge.api.calls import CallHeadersDep, idempotent, paid_response
from forge.api.deps import GatewayDep, KeyDep, SettingsDep, StoreDep
from forge.api.schemas import PAID_SUCCESS
from forge.api.sse import openai_events
from forge.api.strict import StrictJsonRoute
from forge.domain import strict_json
from forge.domain.errors import InvalidRequest
from forge.domain.records import ApiKey
from forge.domain.requests import ChatCompletionRequest, EmbeddingsRequest
from forge.domain.upstream import Completion
from forge.gateway import Gateway, RequestLimits

router = APIRouter(route_class=StrictJsonRoute)


@router.post("/v1/chat/completions", response_model=None, responses=PAID_SUCCESS)
async def chat_completions(
    body: ChatCompletionRequest,
    request: Request,
    key: KeyDep,
    gateway: GatewayDep,
    store: StoreDep,
    settings: SettingsDep,
    headers: CallHeadersDep,
) -> Response:
    if body.stream_options is not None and not body.stream:
        raise InvalidRequest(
            "stream_options is only allowed with stream=true", param="stream_options"
        )
    limits = headers.limits()
    request_id = request.state.request_id
    return await idempotent(
        lambda: _serve(gateway, key, body, request_id, limits),
        store=store,
        settings=settings,
        account_id=key.account_id,
        request_id=request_id,
        headers=headers,
        body=body.model_dump(exclude_none=True),
    )


def _json(completion: Completion) -> bytes:
    return strict_json.dumps(completion.body)


async def _serve(
    gateway: Gateway,
    key: ApiKey,
    body: ChatCompletionRequest | EmbeddingsRequest,
    request_id: str,
    limits: RequestLimits,
) -> Response:
    result = await gateway.serve(key, body, request_id, limits, _json)
    return paid_response(result, openai_events)


@router.post("/v1/embeddings", response_model=None)
async def embeddings(
    body: EmbeddingsRequest,
    request: Request,
    key: KeyDep,
    gateway: GatewayDep,
    store: StoreDep,
    settings: SettingsDep,
    headers: CallHeadersDep,
) -> Response:
    limits = headers.limits()
    request_id = request.state.request_id
    return await idempotent(
        lambda: _serve(gateway, key, body, request_id, limits),
        store=store,
        settings=settings,
        account_id=key.account_id,
        request_id=request_id,
        headers=headers,
        body=body.model_dump(exclude_none=True),
    )
