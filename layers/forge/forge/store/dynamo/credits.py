"""Money in and corrections: `credit()` moves a wallet and writes its ledger entry in one
transaction, together with the guards that make it happen at most once (the CreditStore port).

The wallet's `seq` is the compare-and-set: the entry's balance_after is exact because the
transaction only commits if no other entry was written since the wallet was read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from forge.domain.errors import BudgetExceeded, BudgetStoreUnavailable, ConcurrentUpdate
from forge.domain.money import Bucket, format_micros
from forge.domain.money_in import (
    CodeClaim,
    CodeStatus,
    CodeUse,
    CreditGuard,
    PaymentMarker,
    RefundMarker,
)
from forge.domain.records import LedgerEntry, LedgerKind, Receipt
from forge.store.dynamo import schema
from forge.store.dynamo.base import contended_attempts, epoch
from forge.store.dynamo.items import to_item
from forge.store.dynamo.ledger import put_entry
from forge.store.dynamo.shards import DynamoShards, move_wallet
from forge.store.dynamo.totals import refund_updates


class DynamoCredits(DynamoShards):
    def credit(
        self,
        account_id: str,
        bucket: Bucket,
        amount: int,
        *,
        kind: LedgerKind,
        entry_id: str,
        source: str | None = None,
        memo: str | None = None,
        guards: Sequence[CreditGuard] = (),
        refund_of: Receipt | None = None,
    ) -> LedgerEntry:
        """Add (or, for a negative adjustment, remove) money and write its ledger entry.

        `guards` commit with the money or not at all; a failed guard raises GuardFailed with
        its position. A refund names the receipt it refunds: the entry carries its request,
        key, project, model and route, and the views' aggregates count it in the same
        transaction."""
        if (refund_of is not None) != (kind is LedgerKind.REFUND):
            raise ValueError("a refund, and only a refund, names the receipt it refunds")
        guard_items = [self._guard_item(guard) for guard in guards]
        # Money comes in on shard 0 (the bucket's own wallet; a split bucket's other shards
        # draw from it as they run short). Money taken out is first gathered there.
        if amount < 0:
            self._gather(account_id, bucket, 0, -amount)
        with self._wallet_lock(account_id, bucket):
            for _ in contended_attempts():
                wallet = self._shard(account_id, bucket, 0)
                entry = LedgerEntry(
                    entry_id=entry_id,
                    account_id=account_id,
                    bucket=bucket,
                    seq=wallet.seq + 1,
                    kind=kind,
                    amount=amount,
                    balance_after=wallet.balance + amount,
                    created_at=self._clock(),
                    request_id=refund_of.request_id if refund_of else None,
                    key_id=refund_of.key_id if refund_of else None,
                    project_id=refund_of.project_id if refund_of else None,
                    model=refund_of.requested_model if refund_of else None,
                    route=refund_of.final_route if refund_of else None,
                    source=source,
                    memo=memo,
                )
                counted = refund_updates(self._ledger, entry, refund_of.run_id) if refund_of else []
                try:
                    self._transact(
                        [
                            *guard_items,
                            move_wallet(self._budget, wallet, entry),
                            put_entry(self._ledger, entry),
                            *counted,
                        ],
                        guards=len(guard_items),
                    )
                    return entry
                except ConcurrentUpdate:
                    if self._entry_landed(entry):
                        return entry  # our answer was lost and botocore's retry met our entry
                    if wallet.available < -amount:
                        raise BudgetExceeded(
                            "The adjustment would take the balance below zero",
                            envelope=f"bucket:{bucket.value}",
                            limit=format_micros(wallet.balance),
                            remaining=format_micros(wallet.available),
                        ) from None
                    continue
        raise BudgetStoreUnavailable("The wallet is too busy; try again")

    def get_payment_marker(self, event_id: str) -> PaymentMarker | None:
        """How a payment event was credited, if it was."""
        item = self._get(schema.payment_marker_key(event_id))
        return PaymentMarker.model_validate({**item, "event_id": event_id}) if item else None

    def _guard_item(self, guard: CreditGuard) -> dict[str, Any]:
        """The transaction item of one guard: a marker that must not exist yet, or (a code
        use) one more claim on a code whose condition says it is still claimable."""
        match guard:
            case PaymentMarker():
                return self._put_new(
                    self._budget,
                    {
                        **schema.payment_marker_key(guard.event_id),
                        "record_type": schema.PAYMENT_EVENT_RECORD,
                        "account_id": guard.account_id,
                        "bucket": guard.bucket.value,
                        "amount": guard.amount,
                        "payment_id": guard.payment_id,
                        "ledger_entry_id": guard.ledger_entry_id,
                        "received_at": guard.received_at.isoformat(),
                    },
                )
            case CodeClaim():
                return self._put_new(
                    self._budget,
                    {
                        **schema.code_claim_key(guard.code, guard.account_id),
                        "record_type": schema.CODE_CLAIM_RECORD,
                        "account_id": guard.account_id,
                        "ledger_entry_id": guard.ledger_entry_id,
                        "claimed_at": guard.claimed_at.isoformat(),
                    },
                )
            case CodeUse():
                return {
                    "Update": {
                        "TableName": self._budget,
                        "Key": to_item(schema.code_key(guard.code)),
                        "UpdateExpression": "ADD claim_count :one",
                        "ConditionExpression": "code_status = :active"
                        " AND (attribute_not_exists(max_claims) OR claim_count < max_claims)"
                        " AND (attribute_not_exists(valid_until_epoch)"
                        " OR valid_until_epoch > :now)",
                        "ExpressionAttributeValues": to_item(
                            {":one": 1, ":active": CodeStatus.ACTIVE.value, ":now": epoch(guard.at)}
                        ),
                    }
                }
            case RefundMarker():
                return self._put_new(
                    self._budget,
                    {
                        **schema.refund_marker_key(guard.account_id, guard.request_id),
                        "record_type": schema.REFUND_RECORD,
                        "account_id": guard.account_id,
                        "request_id": guard.request_id,
                        "charge_entry_id": guard.charge_entry_id,
                        "bucket": guard.bucket.value,
                        "amount": guard.amount,
                        "ledger_entry_id": guard.ledger_entry_id,
                        "refunded_at": guard.refunded_at.isoformat(),
                    },
                )
