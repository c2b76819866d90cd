"""POST /v1/chat/completions and POST /v1/embeddings: OpenAI's shapes, with receipt headers."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from forge.api.calls import CallHeadersDep, idempotent, receipt_headers, stream_headers
from forge.api.deps import GatewayDep, KeyDep, SettingsDep, StoreDep
from forge.api.schemas import ChatCompletionRequest, EmbeddingsRequest
from forge.errors import InvalidRequest
from forge.gateway import Gateway, RequestLimits
from forge.records import ApiKey

router = APIRouter()


@router.post("/v1/chat/completions", response_model=None)
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


async def _serve(
    gateway: Gateway,
    key: ApiKey,
    body: ChatCompletionRequest,
    request_id: str,
    limits: RequestLimits,
) -> Response:
    plan = await gateway.plan(key, body, request_id, limits)
    await gateway.reserve(plan)
    if body.stream:
        result = await gateway.open_stream(plan)
        return StreamingResponse(
            result.events, media_type="text/event-stream", headers=stream_headers(plan)
        )
    completion, receipt = await gateway.complete(plan)
    return JSONResponse(completion, headers=receipt_headers(plan, receipt))


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

    async def serve() -> Response:
        plan = await gateway.plan(key, body, request_id, limits)
        await gateway.reserve(plan)
        result, receipt = await gateway.complete(plan)
        return JSONResponse(result, headers=receipt_headers(plan, receipt))

    return await idempotent(
        serve,
        store=store,
        settings=settings,
        account_id=key.account_id,
        request_id=request_id,
        headers=headers,
        body=body.model_dump(exclude_none=True),
    )
