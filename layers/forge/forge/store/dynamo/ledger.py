"""The ledger as written: entries and receipts in the ledger table, what reconciliation reads
back (the LedgerReader port), and the entries of a time window that archive replay rebuilds
the archive from (LedgerScan). Every entry and receipt carries the views' sparse index
attributes (schema.entry_index_attributes, schema.receipt_index_attributes).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from forge.domain.calendar import as_utc
from forge.domain.errors import (
    BudgetStoreUnavailable,
    ConcurrentUpdate,
    GuardFailed,
    LedgerEntryUnreadable,
)
from forge.domain.money import Bucket
from forge.domain.records import (
    BudgetSnapshot,
    EnvelopeCounters,
    Hold,
    LedgerEntry,
    Receipt,
    Wallet,
)
from forge.domain.views import TimeRange
from forge.store.dynamo import schema
from forge.store.dynamo.base import NOT_EXISTS, DynamoTables, contended_attempts, store_errors
from forge.store.dynamo.items import dump, from_item, to_item
from forge.store.dynamo.stream import MalformedStreamRecord, ledger_entry_from_image
from forge.store.dynamo.totals import receipt_updates


def put_entry(table: str, entry: LedgerEntry) -> dict[str, Any]:
    """The transaction item writing a ledger entry, once."""
    item = {
        **schema.entry_key(entry.account_id, entry.bucket, entry.seq, entry.shard),
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

    def list_entries(self, account_id: str, bucket: Bucket, shard: int = 0) -> list[LedgerEntry]:
        """Every ledger entry of one series (a bucket, or one shard of a split bucket) in
        sequence order (operator and test view)."""
        items = self._query(
            self._ledger, schema.account_pk(account_id), schema.entries_prefix(bucket, shard)
        )
        return [LedgerEntry.model_validate(item) for item in items]

    def entries_between(self, window: TimeRange) -> Iterator[LedgerEntry]:
        """Every ledger entry created in `window`, of every account, read as the archiver reads
        a stream image (archive replay).

        A paginated Scan, not a Query: the time index (ledger-by-time) is partitioned by
        account, so a window across accounts has no key to query by, and replay is a rare
        operator command that can afford one strongly consistent pass over the table (the
        filter saves transfer, not read capacity). Entries written before the views' indexes
        existed carry no `time_sk`: the filter lets them through and their created_at places
        them, as it places every entry."""
        bounds: list[str] = []
        values: dict[str, Any] = {":entry": schema.LEDGER_ENTRY_RECORD}
        # time_sk is "{time}#{bucket}#{seq}" with a fixed-width time, so text order is time
        # order and an entry at exactly `end` sorts after the bare "{end}" (excluded).
        if window.start is not None:
            bounds.append("#t >= :low")
            values[":low"] = schema.time_key(window.start)
        if window.end is not None:
            bounds.append("#t < :high")
            values[":high"] = schema.time_key(window.end)
        condition = "#rt = :entry"
        names = {"#rt": "record_type"}
        if bounds:
            condition += f" AND (attribute_not_exists(#t) OR ({' AND '.join(bounds)}))"
            names["#t"] = "time_sk"
        request: dict[str, Any] = {
            "TableName": self._ledger,
            "FilterExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": to_item(values),
            "ConsistentRead": True,
        }
        while True:
            with store_errors():
                page = self._db.scan(**request)
            for item in page["Items"]:
                entry = _entry_of(item)
                if _inside(window, entry):
                    yield entry
            if "LastEvaluatedKey" not in page:
                return
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

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
                names = ("consumed", "held", "settled", "lent", "shard", "room", "received")
                counters = {k: int(item.get(k, 0)) for k in names}
                snapshot.envelopes.append(EnvelopeCounters(pk=pk, sk=sk, **counters))
        return snapshot


def _entry_of(item: dict[str, Any]) -> LedgerEntry:
    try:
        entry = ledger_entry_from_image(item)
    except MalformedStreamRecord as exc:
        key = {name: item.get(name, {}).get("S") for name in ("pk", "sk")}
        raise LedgerEntryUnreadable(f"Ledger item {key['pk']} {key['sk']}: {exc}") from exc
    if entry is None:  # the filter asked for entries only
        raise LedgerEntryUnreadable("The ledger scan returned an item that is not an entry")
    return entry


def _inside(window: TimeRange, entry: LedgerEntry) -> bool:
    at = as_utc(entry.created_at)
    return (window.start is None or window.start <= at) and (window.end is None or at < window.end)
