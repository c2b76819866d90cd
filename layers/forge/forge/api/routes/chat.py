"""POST /v1/chat/completions and POST /v1/embeddings: OpenAI's shapes, with receipt headers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from forge.api.calls import idempotent, receipt_headers, request_limits, stream_headers
from forge.api.deps import GatewayDep, KeyDep, SettingsDep, StoreDep
from forge.api.schemas import ChatCompletionRequest, EmbeddingsRequest
from forge.errors import InvalidRequest
from forge.gateway import Gateway, RequestLimits
from forge.records import ApiKey

router = APIRouter()
RunId = Annotated[str | None, Header(alias="x-run-id")]
RunBudget = Annotated[str | None, Header(alias="x-run-budget")]
MaxCharge = Annotated[str | None, Header(alias="x-max-request-charge")]
IdempotencyKey = Annotated[str | None, Header(alias="idempotency-key")]


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest,
    request: Request,
    key: KeyDep,
    gateway: GatewayDep,
    store: StoreDep,
    settings: SettingsDep,
    run_id: RunId = None,
    run_budget: RunBudget = None,
    max_charge: MaxCharge = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    if body.stream_options is not None and not body.stream:
        raise InvalidRequest(
            "stream_options is only allowed with stream=true", param="stream_options"
        )
    limits = request_limits(run_id, run_budget, max_charge)
    request_id = request.state.request_id
    return await idempotent(
        lambda: _serve(gateway, key, body, request_id, limits),
        store=store,
        settings=settings,
        account_id=key.account_id,
        request_id=request_id,
        idempotency_key=idempotency_key,
        body=body.model_dump(exclude_none=True),
        budget_headers={"run_id": run_id, "run_budget": run_budget, "max_charge": max_charge},
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
    run_id: RunId = None,
    run_budget: RunBudget = None,
    max_charge: MaxCharge = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    limits = request_limits(run_id, run_budget, max_charge)
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
        idempotency_key=idempotency_key,
        body=body.model_dump(exclude_none=True),
        budget_headers={"run_id": run_id, "run_budget": run_budget, "max_charge": max_charge},
    )
