"""The ledger as written: entries and receipts in the ledger table, and what reconciliation
reads back (the LedgerReader port). Every entry and receipt carries the views' sparse index
attributes (schema.entry_index_attributes, schema.receipt_index_attributes).
"""

from __future__ import annotations

from typing import Any

from forge.domain.errors import BudgetStoreUnavailable, ConcurrentUpdate, GuardFailed
from forge.domain.money import Bucket
from forge.domain.records import (
    BudgetSnapshot,
    EnvelopeCounters,
    Hold,
    LedgerEntry,
    Receipt,
    Wallet,
)
from forge.store.dynamo import schema
from forge.store.dynamo.base import NOT_EXISTS, DynamoTables, contended_attempts, store_errors
from forge.store.dynamo.items import dump, from_item, to_item
from forge.store.dynamo.totals import receipt_updates


def put_entry(table: str, entry: LedgerEntry) -> dict[str, Any]:
    """The transaction item writing a ledger entry, once."""
    item = {
        **schema.entry_key(entry.account_id, entry.bucket, entry.seq),
        "record_type": schema.LEDGER_ENTRY_RECORD,
        **dump(entry),
        **schema.entry_index_attributes(entry),
    }
    return {"Put": {"TableName": table, "Item": to_item(item), "ConditionExpression": NOT_EXISTS}}


def put_receipt(table: str, receipt: Receipt) -> dict[str, Any]:
    """The transaction item writing a receipt, once."""
    item = {
        **schema.receipt_key(receipt.account_id, receipt.request_id),
        "record_type": schema.RECEIPT_RECORD,
        **dump(receipt),
        **schema.receipt_index_attributes(receipt),
    }
    return {"Put": {"TableName": table, "Item": to_item(item), "ConditionExpression": NOT_EXISTS}}


class DynamoLedger(DynamoTables):
    def put_receipt(self, receipt: Receipt) -> None:
        """A receipt for a request that never held money (refused before the reservation),
        counted in the views' aggregates in the same transaction. The receipt is its own
        guard: writing it again (a retry after a lost answer) changes nothing."""
        items = [put_receipt(self._ledger, receipt), *receipt_updates(self._ledger, receipt)]
        for _ in contended_attempts():
            try:
                self._transact(items, guards=1)
                return
            except GuardFailed:
                return  # written (and counted) before
            except ConcurrentUpdate:
                continue  # a transaction conflict on a busy aggregate: try again
        raise BudgetStoreUnavailable("Could not write the receipt; try again")

    def get_receipt(self, account_id: str, request_id: str) -> Receipt | None:
        with store_errors():
            got = self._db.get_item(
                TableName=self._ledger, Key=to_item(schema.receipt_key(account_id, request_id))
            )
        return Receipt.model_validate(from_item(got["Item"])) if "Item" in got else None

    def list_entries(self, account_id: str, bucket: Bucket) -> list[LedgerEntry]:
        """Every ledger entry of one bucket in sequence order (operator and test view)."""
        items = self._query(
            self._ledger, schema.account_pk(account_id), schema.entries_prefix(bucket)
        )
        return [LedgerEntry.model_validate(item) for item in items]

    def read_budget(self) -> BudgetSnapshot:
        """Every wallet, hold and envelope's counters, in one scan of the budget table."""
        snapshot = BudgetSnapshot()
        for item in self.scan_budget():
            pk, sk = str(item["pk"]), str(item["sk"])
            if schema.is_wallet(pk, sk):
                snapshot.wallets.append(Wallet.model_validate(item))
            elif schema.is_hold(pk):
                snapshot.holds.append(Hold.model_validate(item))
            elif schema.is_envelope(pk):
                counters = {k: int(item.get(k, 0)) for k in ("consumed", "held", "settled")}
                snapshot.envelopes.append(EnvelopeCounters(pk=pk, sk=sk, **counters))
        return snapshot
