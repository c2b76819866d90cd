"""Money in over HTTP: the payment provider's signed webhook, and redeeming a code."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, ConfigDict, Field

from forge.api.deps import KeyDep, SettingsDep, StoreDep
from forge.api.strict import StrictJsonRoute
from forge.domain.errors import WebhooksNotConfigured
from forge.domain.money import format_micros
from forge.money_in.codes import claim_code
from forge.money_in.webhooks import apply_payment, parse_event, verify_signature
from forge.secrets import webhook_secret

router = APIRouter(route_class=StrictJsonRoute)


class PaymentAck(BaseModel):
    """The answer to the provider: 2xx for credited, duplicate and ignored alike, so it stops
    retrying; `status` says which."""

    object: Literal["payment_event"] = "payment_event"
    event_id: str
    status: Literal["credited", "duplicate", "ignored"]
    ledger_entry_id: str | None = None


class RedeemRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=64)


class Redemption(BaseModel):
    """The grant's ledger entry essentials and the bucket's balance right after it."""

    object: Literal["redemption"] = "redemption"
    code: str
    ledger_entry_id: str
    kind: str
    bucket: str
    currency: str
    amount: str
    amount_micros: int
    balance: str
    balance_micros: int
    created_at: datetime


@router.post("/v1/webhooks/payments")
async def payment_webhook(
    request: Request,
    settings: SettingsDep,
    store: StoreDep,
    forge_signature: Annotated[str | None, Header()] = None,
) -> PaymentAck:
    """No API key: the HMAC over the raw body is the authentication, checked before parsing."""
    secret = await asyncio.to_thread(webhook_secret, settings)
    if not secret:
        raise WebhooksNotConfigured("Payment webhooks are not configured; nothing was credited")
    body = await request.body()
    verify_signature(secret, body, forge_signature)
    event = parse_event(body)
    outcome = await asyncio.to_thread(apply_payment, store, event)
    return PaymentAck(
        event_id=outcome.event_id, status=outcome.status, ledger_entry_id=outcome.ledger_entry_id
    )


@router.post("/v1/redeem")
async def redeem(body: RedeemRequest, key: KeyDep, store: StoreDep) -> Redemption:
    """Claim a code for the caller's own account (once per account)."""
    entry = await asyncio.to_thread(claim_code, store, key.account_id, body.code)
    return Redemption(
        code=(entry.source or "").removeprefix("code:"),
        ledger_entry_id=entry.entry_id,
        kind=entry.kind.value,
        bucket=entry.bucket.value,
        currency=entry.bucket.currency,
        amount=format_micros(entry.amount),
        amount_micros=entry.amount,
        balance=format_micros(entry.balance_after),
        balance_micros=entry.balance_after,
        created_at=entry.created_at,
    )
