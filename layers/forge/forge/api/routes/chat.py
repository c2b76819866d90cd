"""POST /v1/chat/completions: non-stream and SSE, with receipt headers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse

from forge.api.deps import GatewayDep, KeyDep
from forge.api.schemas import ChatCompletionRequest
from forge.errors import InvalidRequest
from forge.gateway import CallPlan, receipt_summary
from forge.money import format_micros

router = APIRouter()


def _route_headers(plan: CallPlan) -> dict[str, str]:
    return {
        "x-request-id": plan.request_id,
        "x-forge-route": plan.route.name,
        "x-forge-route-type": plan.route.route_type.value,
        "x-forge-upstream-model": plan.route.upstream_model,
        "x-forge-attempts": str(len(plan.attempts)),
        "x-forge-bucket": plan.hold.bucket.value,
    }


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest,
    request: Request,
    key: KeyDep,
    gateway: GatewayDep,
    run_id: Annotated[str | None, Header(alias="x-run-id", max_length=128)] = None,
) -> JSONResponse | StreamingResponse:
    if body.stream_options is not None and not body.stream:
        raise InvalidRequest(
            "stream_options is only allowed with stream=true", param="stream_options"
        )
    plan = gateway.plan(key, body, request.state.request_id, run_id)
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
        "x-forge-balance-after-micros": str(summary["balance_after_micros"]),
        "x-forge-ledger-entry": str(summary["ledger_entry_id"]),
    }
    return JSONResponse(completion, headers=headers)
