"""Resolving holds (the other half of the BudgetStore port): settle or void exactly once, keep
an outcome that could not be settled for the sweeper, and find the holds it must resolve.

A hold resolves in one transaction that moves the wallet, resolves the hold item under
`status = pending` (so a second resolution fails, HoldAlreadyResolved), releases its
envelopes, writes the receipt (and, for a settle, the ledger entry), and adds the receipt to
the views' aggregates, so they count it exactly once. Settling conditions on the wallet's
`seq` as well, so the entry's balance_after is exact; a lost race re-reads and retries.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from forge.domain.errors import BudgetStoreUnavailable, ConcurrentUpdate, HoldAlreadyResolved
from forge.domain.records import Hold, HoldOutcome, HoldStatus, LedgerEntry, LedgerKind, Receipt
from forge.store.dynamo import schema
from forge.store.dynamo.base import (
    cancellation_codes,
    contended_attempts,
    epoch,
    is_condition_failure,
    store_errors,
)
from forge.store.dynamo.holds import release_envelopes
from forge.store.dynamo.items import dump, from_item, to_item
from forge.store.dynamo.ledger import put_entry, put_receipt
from forge.store.dynamo.shards import DynamoShards
from forge.store.dynamo.totals import receipt_updates

RESOLVED_HOLD_RETENTION_SECONDS = 7 * 24 * 3600  # then TTL garbage-collects the hold item


def _resolve_hold(table: str, hold: Hold, status: HoldStatus) -> dict[str, Any]:
    return {
        "Update": {
            "TableName": table,
            "Key": to_item(schema.hold_key(hold.request_id)),
            "UpdateExpression": "SET #status = :to, resolved_at = :now, #ttl = :ttl"
            " REMOVE pending_shard",
            # Exactly once, and with the terms the hold holds: a gateway that lost the answer
            # of a rehold still knows the hold before it moved, and releasing that amount (or
            # bucket) would leave `held` short of the pending hold.
            "ConditionExpression": "#status = :pending AND #amount = :amount AND #bucket = :bucket",
            "ExpressionAttributeNames": {
                "#status": "status",
                "#ttl": "ttl",
                "#amount": "amount",
                "#bucket": "bucket",
            },
            "ExpressionAttributeValues": to_item(
                {
                    ":to": status.value,
                    ":pending": HoldStatus.PENDING.value,
                    ":amount": hold.amount,
                    ":bucket": hold.bucket.value,
                    ":now": datetime.now(UTC).isoformat(),
                    ":ttl": int(time.time()) + RESOLVED_HOLD_RETENTION_SECONDS,
                }
            ),
        }
    }


class _NotHeldHere(Exception):
    """A release met a shard that does not hold the hold."""


class DynamoSettlement(DynamoShards):
    def settle(self, hold: Hold, charge: int, receipt: Receipt) -> Receipt:
        """Charge `charge` (<= hold), release the rest, write the ledger entry and the receipt:
        one transaction, exactly once per hold."""
        if not 0 <= charge <= hold.amount:
            raise ValueError("a settlement charges between zero and the hold")
        with self._wallet_lock(hold.account_id, hold.bucket, hold.shard):
            for _ in contended_attempts():
                wallet = self._shard(hold.account_id, hold.bucket, hold.shard)
                if wallet.held < hold.amount:  # not held here: the caller lost track of it
                    break
                entry = LedgerEntry(
                    entry_id=f"le_{hold.request_id}",
                    account_id=hold.account_id,
                    bucket=hold.bucket,
                    shard=hold.shard,
                    seq=wallet.seq + 1,
                    kind=LedgerKind.CHARGE,
                    amount=-charge,
                    balance_after=wallet.balance - charge,
                    created_at=self._clock(),
                    request_id=hold.request_id,
                    key_id=receipt.key_id,
                    project_id=receipt.project_id,
                    model=receipt.requested_model,
                    route=receipt.final_route,
                )
                final = receipt.model_copy(
                    update={
                        "charge": charge,
                        "bucket": hold.bucket,
                        # A split bucket's balance is the sum of its shards, which this call
                        # did not read: the receipt does not guess it.
                        "balance_after": entry.balance_after if wallet.shards == 1 else None,
                        "ledger_entry_id": entry.entry_id,
                    }
                )
                move = {
                    "Update": {
                        "TableName": self._budget,
                        "Key": to_item(schema.wallet_key(hold.account_id, hold.bucket, hold.shard)),
                        "UpdateExpression": "SET balance = :balance, seq = :next,"
                        " available = available + :release, held = held - :hold",
                        "ConditionExpression": "seq = :seq AND held >= :hold",
                        "ExpressionAttributeValues": to_item(
                            {
                                ":balance": entry.balance_after,
                                ":next": entry.seq,
                                ":seq": wallet.seq,
                                ":release": hold.amount - charge,
                                ":hold": hold.amount,
                            }
                        ),
                    }
                }
                items = [
                    _resolve_hold(self._budget, hold, HoldStatus.SETTLED),
                    move,
                    put_entry(self._ledger, entry),
                    put_receipt(self._ledger, final),
                    *receipt_updates(self._ledger, final, hold.shard),
                    *release_envelopes(self._budget, hold, charge),
                ]
                try:
                    self._transact(items, hold_index=0)
                    return final
                except ConcurrentUpdate:
                    continue
            else:
                raise BudgetStoreUnavailable("Could not settle; the hold stays for the sweeper")
        return self.settle(self._where_held(hold), charge, receipt)

    def void(self, hold: Hold, receipt: Receipt) -> Receipt:
        """Release the whole hold (no upstream served the call) and write the receipt."""
        try:
            return self._void(hold, receipt)
        except _NotHeldHere:
            return self._void(self._where_held(hold), receipt)

    def _void(self, hold: Hold, receipt: Receipt) -> Receipt:
        release = {
            "Update": {
                "TableName": self._budget,
                "Key": to_item(schema.wallet_key(hold.account_id, hold.bucket, hold.shard)),
                "UpdateExpression": "SET available = available + :hold, held = held - :hold",
                "ConditionExpression": "held >= :hold",
                "ExpressionAttributeValues": to_item({":hold": hold.amount}),
            }
        }
        final = receipt.model_copy(update={"charge": 0, "bucket": hold.bucket})
        resolve = _resolve_hold(self._budget, hold, HoldStatus.VOIDED)
        envelopes = release_envelopes(self._budget, hold, 0)
        items = [resolve, release, put_receipt(self._ledger, final)]
        items += receipt_updates(self._ledger, final, hold.shard)
        for _ in contended_attempts():
            try:
                self._transact([*items, *envelopes], hold_index=0)
                return final
            except ConcurrentUpdate as exc:
                codes = cancellation_codes(exc.__cause__)
            if codes[1:2] == ["ConditionalCheckFailed"]:
                raise _NotHeldHere  # the shard does not hold it: the caller lost track of it
            if codes[2:3] == ["ConditionalCheckFailed"]:
                # The request already has its receipt: a refusal written while the store was
                # failing, after a reservation whose answer was lost. That receipt (nothing
                # charged) stands, counted once; release the hold without writing another.
                items = [resolve, release]
            # Otherwise a transaction conflict; the hold item's condition is the guard.
        raise BudgetStoreUnavailable("Could not release the hold; it stays for the sweeper")

    def get_hold(self, request_id: str) -> Hold | None:
        item = self._get(schema.hold_key(request_id))
        return Hold.model_validate(item) if item else None

    def record_outcome(self, hold: Hold, outcome: HoldOutcome) -> None:
        """Remember an upstream result that could not be settled, for the sweeper."""
        with store_errors():
            try:
                self._db.update_item(
                    TableName=self._budget,
                    Key=to_item(schema.hold_key(hold.request_id)),
                    UpdateExpression="SET outcome = :outcome",
                    ConditionExpression="#status = :pending",
                    ExpressionAttributeNames={"#status": "status"},
                    ExpressionAttributeValues=to_item(
                        {":outcome": dump(outcome), ":pending": HoldStatus.PENDING.value}
                    ),
                )
            except ClientError as exc:
                if not is_condition_failure(exc):
                    raise
                raise HoldAlreadyResolved from exc

    def expired_holds(self, now: datetime) -> list[Hold]:
        """Pending holds whose expiry has passed, from the sparse pending-holds index."""
        holds: list[Hold] = []
        with store_errors():
            for shard in range(schema.PENDING_SHARDS):
                kwargs: dict[str, Any] = {
                    "TableName": self._budget,
                    "IndexName": schema.PENDING_HOLDS_INDEX,
                    "KeyConditionExpression": "pending_shard = :shard AND expires_at_epoch < :now",
                    "ExpressionAttributeValues": to_item(
                        {":shard": str(shard), ":now": epoch(now)}
                    ),
                }
                while True:
                    page = self._db.query(**kwargs)
                    holds += [Hold.model_validate(from_item(i)) for i in page["Items"]]
                    if "LastEvaluatedKey" not in page:
                        break
                    kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return [h for h in holds if h.status is HoldStatus.PENDING]
