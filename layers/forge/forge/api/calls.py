"""What every paid call endpoint shares: budget headers in, receipt headers out, and
Idempotency-Key handling around the call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.responses import Response

from forge.adapters.dynamo import DynamoStore
from forge.api.idempotent import IdempotentCall
from forge.envelopes import parse_header_amount, parse_run_id
from forge.errors import ForgeError
from forge.gateway import CallPlan, RequestLimits, receipt_summary
from forge.idempotency import fingerprint, validate_key
from forge.money import format_micros
from forge.records import Receipt
from forge.settings import Settings


def request_limits(
    run_id: str | None, run_budget: str | None, max_charge: str | None
) -> RequestLimits:
    return RequestLimits(
        run_id=parse_run_id(run_id),
        run_budget=parse_header_amount(run_budget, "X-Run-Budget"),
        max_charge=parse_header_amount(max_charge, "X-Max-Request-Charge"),
    )


def route_headers(plan: CallPlan) -> dict[str, str]:
    """What served the call (after any retry or fallback), known before the body is sent."""
    return {
        "x-request-id": plan.request_id,
        "x-forge-route": plan.route.name,
        "x-forge-route-type": plan.route.route_type.value,
        "x-forge-upstream-model": plan.route.upstream_model,
        "x-forge-attempts": str(plan.calls),
        "x-forge-bucket": plan.hold.bucket.value,
        "x-forge-max-tokens": str(plan.max_output),
    }


def stream_headers(plan: CallPlan) -> dict[str, str]:
    return {
        **route_headers(plan),
        "x-forge-hold": format_micros(plan.hold.amount),
        "cache-control": "no-cache",
    }


def receipt_headers(plan: CallPlan, receipt: Receipt) -> dict[str, str]:
    summary = receipt_summary(receipt)
    headers = {
        **route_headers(plan),
        "x-forge-charge": summary["charge"],
        "x-forge-charge-micros": str(summary["charge_micros"]),
        "x-forge-settlement": summary["settlement"],
    }
    if receipt.settlement == "settled":
        headers["x-forge-balance-after-micros"] = str(summary["balance_after_micros"])
        headers["x-forge-ledger-entry"] = str(summary["ledger_entry_id"])
    return headers


async def idempotent(
    serve: Callable[[], Awaitable[Response]],
    *,
    store: DynamoStore,
    settings: Settings,
    account_id: str,
    request_id: str,
    idempotency_key: str | None,
    body: dict[str, Any],
    budget_headers: dict[str, str | None],
) -> Response:
    """Run `serve` once per Idempotency-Key: a retry replays the first answer, another body
    is a 409, a refusal that charged nothing releases the key."""
    if idempotency_key is None:
        return await serve()
    call = IdempotentCall(
        store,
        account_id,
        validate_key(idempotency_key),
        fingerprint(body, budget_headers),
        request_id,
        lease_seconds=settings.hold_ttl_seconds,
        wait_seconds=settings.upstream_timeout_seconds,
    )
    replayed = await call.begin()
    if replayed is not None:
        return replayed
    try:
        response = await serve()
    except ForgeError:
        await call.release()  # nothing was charged: a retry may run afresh
        raise
    return await call.capture(response)
