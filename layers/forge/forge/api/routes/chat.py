"""POST /v1/chat/completions: non-stream and SSE, with receipt headers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from forge.api.deps import GatewayDep, KeyDep, SettingsDep, StoreDep
from forge.api.idempotent import IdempotentCall
from forge.api.schemas import ChatCompletionRequest
from forge.envelopes import parse_header_amount, parse_run_id
from forge.errors import ForgeError, InvalidRequest
from forge.gateway import CallPlan, Gateway, RequestLimits, receipt_summary
from forge.idempotency import fingerprint, validate_key
from forge.money import format_micros
from forge.records import ApiKey

router = APIRouter()


def _route_headers(plan: CallPlan) -> dict[str, str]:
    return {
        "x-request-id": plan.request_id,
        "x-forge-route": plan.route.name,
        "x-forge-route-type": plan.route.route_type.value,
        "x-forge-upstream-model": plan.route.upstream_model,
        "x-forge-attempts": str(len(plan.attempts)),
        "x-forge-bucket": plan.hold.bucket.value,
        "x-forge-max-tokens": str(plan.max_output),
    }


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest,
    request: Request,
    key: KeyDep,
    gateway: GatewayDep,
    store: StoreDep,
    settings: SettingsDep,
    run_id: Annotated[str | None, Header(alias="x-run-id")] = None,
    run_budget: Annotated[str | None, Header(alias="x-run-budget")] = None,
    max_charge: Annotated[str | None, Header(alias="x-max-request-charge")] = None,
    idempotency_key: Annotated[str | None, Header(alias="idempotency-key")] = None,
) -> Response:
    if body.stream_options is not None and not body.stream:
        raise InvalidRequest(
            "stream_options is only allowed with stream=true", param="stream_options"
        )
    limits = RequestLimits(
        run_id=parse_run_id(run_id),
        run_budget=parse_header_amount(run_budget, "X-Run-Budget"),
        max_charge=parse_header_amount(max_charge, "X-Max-Request-Charge"),
    )
    request_id = request.state.request_id
    if idempotency_key is None:
        return await _serve(gateway, key, body, request_id, limits)
    call = IdempotentCall(
        store,
        key.account_id,
        validate_key(idempotency_key),
        fingerprint(
            body.model_dump(exclude_none=True),
            {"run_id": run_id, "run_budget": run_budget, "max_charge": max_charge},
        ),
        request_id,
        lease_seconds=settings.hold_ttl_seconds,
        wait_seconds=settings.upstream_timeout_seconds,
    )
    replayed = await call.begin()
    if replayed is not None:
        return replayed
    try:
        response = await _serve(gateway, key, body, request_id, limits)
    except ForgeError:
        await call.release()  # nothing was charged: a retry may run afresh
        raise
    return await call.capture(response)


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
        headers = {
            **_route_headers(plan),
            "x-forge-hold": format_micros(plan.hold.amount),
            "cache-control": "no-cache",
        }
        return StreamingResponse(result.events, media_type="text/event-stream", headers=headers)
    completion, receipt = await gateway.complete(plan)
    summary = receipt_summary(receipt)
    headers = {
        **_route_headers(plan),
        "x-forge-charge": summary["charge"],
        "x-forge-charge-micros": str(summary["charge_micros"]),
        "x-forge-settlement": summary["settlement"],
    }
    if receipt.settlement == "settled":
        headers["x-forge-balance-after-micros"] = str(summary["balance_after_micros"])
        headers["x-forge-ledger-entry"] = str(summary["ledger_entry_id"])
    return JSONResponse(completion, headers=headers)
