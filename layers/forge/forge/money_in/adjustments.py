"""Operator corrections: signed adjustments of a wallet, and refunds of a request's charge.

Each is one `credit()`, so a balance and its ledger entry always move together. A refund is
guarded by a `RefundMarker` in the same transaction, so a request is refunded at most once.
"""

from __future__ import annotations

from typing import Any

from forge.domain.errors import (
    GuardFailed,
    InvalidRequest,
    NotFound,
    RefundAlreadyIssued,
)
from forge.domain.ids import new_id
from forge.domain.money import Bucket, format_micros
from forge.domain.money_in import RefundMarker
from forge.domain.records import LedgerEntry, LedgerKind, utcnow
from forge.money_in.inputs import clean_memo, parse_amount
from forge.ports import CreditStore


def adjust_wallet(
    store: CreditStore, account_id: str, bucket: Bucket, amount: str, *, reason: str
) -> LedgerEntry:
    """Correct a balance by a signed amount, with the reason on the ledger entry. A negative
    adjustment never takes `available` below zero (the store refuses with BudgetExceeded)."""
    micros = parse_amount(amount, positive=False)
    if micros == 0:
        raise InvalidRequest("An adjustment cannot be zero", param="amount")
    memo = clean_memo(reason, "reason")
    if not memo:
        raise InvalidRequest("An adjustment needs a reason", param="reason")
    if not store.account_exists(account_id):
        raise NotFound(f"No account '{account_id}'", param="account")
    return store.credit(
        account_id,
        bucket,
        micros,
        kind=LedgerKind.ADJUSTMENT,
        entry_id=new_id("le"),
        source="operator",
        memo=memo,
    )


def describe_entry(entry: LedgerEntry) -> dict[str, Any]:
    """A ledger entry's essentials with decimal strings, for the CLI."""
    return {
        "entry_id": entry.entry_id,
        "kind": entry.kind.value,
        "bucket": entry.bucket.value,
        "amount": format_micros(entry.amount),
        "balance_after": format_micros(entry.balance_after),
        "source": entry.source,
        "memo": entry.memo,
    }


def refund_charge(
    store: CreditStore,
    account_id: str,
    request_id: str,
    amount: str | None = None,
    *,
    reason: str | None = None,
) -> LedgerEntry:
    """Credit back (part of) one request's charge to the bucket it was paid from: one `refund`
    ledger entry with source `refund:{request_id}` (naming the request, its key, project,
    model and route), at most once per request, guarded by a marker item written in the same
    transaction, which also counts it in the usage and run views. Spend caps already consumed
    stay consumed."""
    receipt = store.get_receipt(account_id, request_id)
    if receipt is None:
        raise NotFound(f"No request '{request_id}' in account '{account_id}'", param="request_id")
    if receipt.bucket is None or receipt.charge <= 0 or receipt.ledger_entry_id is None:
        raise InvalidRequest(f"Request '{request_id}' was not charged", param="request_id")
    micros = receipt.charge if amount is None else parse_amount(amount, positive=True)
    if micros > receipt.charge:
        raise InvalidRequest(
            f"A refund cannot exceed the charge ({format_micros(receipt.charge)}"
            f" {receipt.bucket.currency})",
            param="amount",
        )
    memo = clean_memo(reason, "reason") or f"refund of {request_id}"
    entry_id = f"le_refund_{request_id}"
    marker = RefundMarker(
        account_id=account_id,
        request_id=request_id,
        charge_entry_id=receipt.ledger_entry_id,
        bucket=receipt.bucket,
        amount=micros,
        ledger_entry_id=entry_id,
        refunded_at=utcnow(),
    )
    try:
        return store.credit(
            account_id,
            receipt.bucket,
            micros,
            kind=LedgerKind.REFUND,
            entry_id=entry_id,
            source=f"refund:{request_id}",
            memo=memo,
            guards=[marker],
            refund_of=receipt,
        )
    except GuardFailed:
        raise RefundAlreadyIssued(
            f"Request '{request_id}' has already been refunded", param="request_id"
        ) from None
