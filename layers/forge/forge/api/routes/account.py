"""Account views: balance, receipts, statements. Every lookup is keyed by the caller's own
account id, so another tenant's ids simply do not exist from here."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path

from forge.api.deps import ArchiveDep, KeyDep, SettingsDep, StoreDep
from forge.api.schemas import BalanceView, BucketBalance, StatementLink
from forge.errors import NotFound
from forge.money import Bucket, format_micros
from forge.records import Receipt
from forge.statements import ensure_statement

router = APIRouter()


@router.get("/v1/balance")
async def get_balance(key: KeyDep, store: StoreDep) -> BalanceView:
    buckets = []
    for bucket in Bucket:
        wallet = await asyncio.to_thread(store.get_wallet, key.account_id, bucket)
        buckets.append(
            BucketBalance(
                bucket=bucket.value,
                currency=bucket.currency,
                balance=format_micros(wallet.balance),
                held=format_micros(wallet.held),
                available=format_micros(wallet.available),
                balance_micros=wallet.balance,
                held_micros=wallet.held,
                available_micros=wallet.available,
            )
        )
    return BalanceView(account_id=key.account_id, buckets=buckets)


@router.get("/v1/requests/{request_id}")
async def get_receipt(
    key: KeyDep, store: StoreDep, request_id: Annotated[str, Path(max_length=64)]
) -> Receipt:
    receipt = await asyncio.to_thread(store.get_receipt, key.account_id, request_id)
    if receipt is None:
        raise NotFound(f"No request '{request_id}' for this account", param="request_id")
    return receipt


@router.get("/v1/statements/{month}")
async def get_statement(
    key: KeyDep,
    archive: ArchiveDep,
    settings: SettingsDep,
    month: Annotated[str, Path(pattern=r"^\d{4}-\d{2}$")],
) -> StatementLink:
    """A short-lived link to the caller's own statement, built first if it does not exist."""
    await asyncio.to_thread(ensure_statement, archive, key.account_id, month)
    ttl = settings.statement_url_ttl_seconds
    url = await asyncio.to_thread(archive.presigned_statement_url, key.account_id, month, ttl)
    return StatementLink(month=month, url=url, expires_in=ttl)
