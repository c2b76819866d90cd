"""The ledger table's read side: account views and statement checks, by keys and indexes only.

Items written by DynamoStore carry sparse index attributes (schema.entry_index_attributes and
schema.receipt_index_attributes), so every view is one Query on a partition that names the
caller's account; forge.store.dynamo.schema lists the partitions and sort keys.

`{time}` is the UTC instant with fixed microseconds (`2025-03-04T05:06:07.000000Z`), so text
order is time order. A page cursor is the query's LastEvaluatedKey, encoded, and is checked
against the caller and the query before DynamoDB sees it. Totals come from the aggregate
items of forge.store.dynamo.totals, so no view reads more than a page of receipts, except the
receipts of an hour that a usage range cuts through.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from forge.domain.calendar import as_utc
from forge.domain.errors import BudgetStoreUnavailable, InvalidCursor, NotFound
from forge.domain.money import Bucket
from forge.domain.records import LedgerEntry, LedgerKind, Receipt
from forge.domain.views import Page, TimeRange, UsageCell, UsageLine, UsageRead, UsageTotals
from forge.store.dynamo import schema
from forge.store.dynamo import totals as ledger_totals
from forge.store.dynamo.items import decode_value, from_item, to_item
from forge.store.dynamo.schema import time_key

_CURSOR_VERSION = 1
_MAX_CURSOR_CHARS = 2048


@contextmanager
def _ledger_errors() -> Iterator[None]:
    """AWS failures become the store's 503, like every other read of the tables."""
    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise BudgetStoreUnavailable("The ledger is unavailable; try again") from exc


# Cursors ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Query:
    """One indexed listing: which partition, which slice of its sort keys, in which order."""

    account_id: str
    index: str
    partition: str
    sk_prefix: str  # of the table's own sort key: schema.ENTRY_PREFIX or RECEIPT_PREFIX
    window: TimeRange = field(default_factory=TimeRange)
    newest_first: bool = False

    @property
    def key_names(self) -> tuple[str, str]:
        return schema.INDEX_KEYS[self.index]

    @property
    def bounds(self) -> tuple[str | None, str | None]:
        start, end = self.window.start, self.window.end
        return (time_key(start) if start else None, time_key(end) if end else None)

    def request(self, table: str, limit: int | None) -> dict[str, Any]:
        pk_name, sk_name = self.key_names
        condition = "#p = :p"
        values: dict[str, Any] = {":p": self.partition}
        low, high = self.bounds
        # [low, high): a sort key is "{time}#...", so it sorts after the bare "{time}" bound.
        if low and high:
            condition += " AND #s BETWEEN :low AND :high"
            values |= {":low": low, ":high": high}
        elif low:
            condition += " AND #s >= :low"
            values[":low"] = low
        elif high:
            condition += " AND #s < :high"
            values[":high"] = high
        names = {"#p": pk_name}
        if "#s" in condition:
            names["#s"] = sk_name
        request: dict[str, Any] = {
            "TableName": table,
            "IndexName": self.index,
            "KeyConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": to_item(values),
            "ScanIndexForward": not self.newest_first,
        }
        if limit is not None:
            request["Limit"] = limit
        return request

    def owns(self, pk: str) -> bool:
        """Whether an item of this partition key belongs to the caller's account."""
        return pk == schema.account_pk(self.account_id)

    def cursor_of(self, item: Mapping[str, Any]) -> str:
        """The LastEvaluatedKey a page ending on `item` would return, encoded."""
        names = ("pk", "sk", *self.key_names)
        plain = {name: decode_value(item[name]) for name in names}
        raw = json.dumps({"v": _CURSOR_VERSION, "k": plain}, separators=(",", ":"), sort_keys=True)
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    def start_key(self, cursor: str) -> dict[str, Any]:
        """The ExclusiveStartKey a cursor stands for, if it was issued for this very query.

        A cursor naming another account is 404 (its pages do not exist for this caller);
        anything else that does not fit this query is InvalidCursor (400)."""
        if not cursor or len(cursor) > _MAX_CURSOR_CHARS:
            raise InvalidCursor("The cursor is not valid for this listing", param="cursor")
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            decoded = json.loads(raw)
        except (binascii.Error, ValueError) as exc:
            raise InvalidCursor("The cursor is not valid for this listing", param="cursor") from exc
        pk_name, sk_name = self.key_names
        names = {"pk", "sk", pk_name, sk_name}
        key = decoded.get("k") if isinstance(decoded, dict) else None
        if (
            not isinstance(decoded, dict)
            or decoded.get("v") != _CURSOR_VERSION
            or set(decoded) != {"v", "k"}
            or not isinstance(key, dict)
            or set(key) != names
            or not all(isinstance(v, str) for v in key.values())
        ):
            raise InvalidCursor("The cursor is not valid for this listing", param="cursor")
        if not self.owns(key["pk"]):
            raise NotFound("No such page for this account", param="cursor")
        low, high = self.bounds
        if (
            key[pk_name] != self.partition
            or not key["sk"].startswith(self.sk_prefix)
            or (low is not None and key[sk_name] < low)
            or (high is not None and key[sk_name] >= high)
        ):
            raise InvalidCursor(
                "The cursor belongs to another listing (other filters?)", param="cursor"
            )
        return to_item(key)


class LedgerViews:
    """Reads a caller's ledger entries and receipts, always inside its own partitions."""

    def __init__(self, client: Any, ledger_table: str) -> None:
        self._db = client
        self._ledger = ledger_table

    # Views -----------------------------------------------------------------------------------
    def entries(
        self,
        account_id: str,
        *,
        bucket: Bucket | None = None,
        window: TimeRange | None = None,
        limit: int,
        cursor: str | None = None,
        newest_first: bool = True,
    ) -> Page[LedgerEntry]:
        """One page of ledger entries, by time, of one bucket or both."""
        index, partition = schema.entries_partition(account_id, bucket)
        query = _Query(
            account_id, index, partition, schema.ENTRY_PREFIX, window or TimeRange(), newest_first
        )
        items, next_cursor = self._page(query, limit, cursor)
        return Page([self._entry(account_id, item) for item in items], next_cursor)

    def receipts(self, account_id: str, window: TimeRange) -> Iterator[Receipt]:
        """Every receipt of the account created in `window`, oldest first."""
        index, partition = schema.receipts_partition(account_id)
        query = _Query(account_id, index, partition, schema.RECEIPT_PREFIX, window)
        for item in self._all(query):
            yield self._receipt(account_id, item)

    def refunds(self, account_id: str, window: TimeRange) -> Iterator[LedgerEntry]:
        """Every refund entry of the account (both buckets) written in `window`."""
        index, partition = schema.entries_partition(account_id)
        query = _Query(account_id, index, partition, schema.ENTRY_PREFIX, window)
        request = query.request(self._ledger, None)
        request["FilterExpression"] = "#kind = :refund"
        request["ExpressionAttributeNames"]["#kind"] = "kind"
        request["ExpressionAttributeValues"][":refund"] = {"S": LedgerKind.REFUND.value}
        for item in self._drain(request):
            yield self._entry(account_id, item)

    def usage(self, account_id: str, window: TimeRange) -> list[UsageCell]:
        """The usage cells of a closed range: one Query of the stored hourly cells. An hour the
        range covers only partly is rebuilt from that hour's receipts and refunds, read only
        when its cells show it has some; so a range costs hours x combinations, not calls."""
        plan = UsageRead.of(window)
        request = ledger_totals.cells_request(self._ledger, account_id, plan.hours)
        cells: list[UsageCell] = []
        busy: dict[TimeRange, UsageTotals] = {}
        for item in self._drain(request):
            cell = ledger_totals.usage_cell(from_item(item))
            edge = plan.edge_at(cell.hour)
            if edge is None:
                cells.append(cell)
            else:
                busy.setdefault(edge, UsageTotals()).add_totals(cell.totals)
        for edge, seen in busy.items():
            if seen.requests:
                cells += map(UsageCell.of_receipt, self.receipts(account_id, edge))
            if seen.refunded:
                cells += map(UsageCell.of_refund, self.refunds(account_id, edge))
        return cells

    def run_calls(
        self, account_id: str, run_id: str, *, limit: int, cursor: str | None = None
    ) -> Page[Receipt]:
        """One page of a run's receipts (its calls), oldest first."""
        query = self._run_query(account_id, run_id)
        items, next_cursor = self._page(query, limit, cursor)
        return Page([self._receipt(account_id, item) for item in items], next_cursor)

    def run_totals(self, account_id: str, run_id: str) -> list[UsageLine]:
        """A run's totals, one line per bucket (by bucket); none if the run has no calls."""
        request = ledger_totals.run_totals_request(self._ledger, account_id, run_id)
        items = [from_item(item) for item in self._drain(request)]
        if any(item.get("account_id") != account_id for item in items):  # keys say so already
            raise BudgetStoreUnavailable("The ledger returned another account's totals")
        lines = [ledger_totals.run_line(item) for item in items]
        return sorted(lines, key=lambda line: line.bucket.value if line.bucket else "")

    # Statement checks ------------------------------------------------------------------------
    def entries_by_seq(
        self, account_id: str, bucket: Bucket, first: int, last: int, shard: int = 0
    ) -> list[LedgerEntry]:
        """The entries first..last of one series (a bucket, or a shard of a split one),
        straight from the table (strongly consistent): what a statement's closing balance is
        checked against."""
        low = schema.entry_sort_key(bucket, first, shard)
        high = schema.entry_sort_key(bucket, last, shard)
        request = {
            "TableName": self._ledger,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :low AND :high",
            "ExpressionAttributeValues": to_item(
                {":pk": schema.account_pk(account_id), ":low": low, ":high": high}
            ),
            "ConsistentRead": True,
        }
        return [self._entry(account_id, item) for item in self._drain(request)]

    def first_entry_at(self, account_id: str) -> datetime | None:
        """When the account's first ledger entry (either bucket) was written, if ever."""
        firsts = []
        with _ledger_errors():
            for bucket in Bucket:
                got = self._db.get_item(
                    TableName=self._ledger,
                    Key=to_item(schema.entry_key(account_id, bucket, 1)),
                )
                if "Item" in got:
                    firsts.append(self._entry(account_id, got["Item"]).created_at)
        return min(map(as_utc, firsts)) if firsts else None

    # Building blocks -------------------------------------------------------------------------
    def _run_query(self, account_id: str, run_id: str) -> _Query:
        index, partition = schema.run_partition(account_id, run_id)
        return _Query(account_id, index, partition, schema.RECEIPT_PREFIX)

    def _page(
        self, query: _Query, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        # One more than asked says whether another page exists, so the last page has no cursor.
        request = query.request(self._ledger, limit + 1)
        if cursor is not None:
            request["ExclusiveStartKey"] = query.start_key(cursor)
        with _ledger_errors():
            page = self._db.query(**request)
        items = list(page["Items"])
        if len(items) > limit:
            items = items[:limit]
            return items, query.cursor_of(items[-1])
        if "LastEvaluatedKey" in page:  # the 1 MB page limit stopped the query early
            return items, query.cursor_of(page["LastEvaluatedKey"])
        return items, None

    def _all(self, query: _Query) -> Iterator[dict[str, Any]]:
        return self._drain(query.request(self._ledger, None))

    def _drain(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        with _ledger_errors():
            while True:
                page = self._db.query(**request)
                yield from page["Items"]
                if "LastEvaluatedKey" not in page:
                    return
                request = {**request, "ExclusiveStartKey": page["LastEvaluatedKey"]}

    @staticmethod
    def _entry(account_id: str, item: Mapping[str, Any]) -> LedgerEntry:
        try:
            entry = LedgerEntry.model_validate(from_item(item))
        except ValidationError as exc:
            raise BudgetStoreUnavailable("The ledger holds an unreadable entry") from exc
        if entry.account_id != account_id:  # the keys say so already; a view never leaks
            raise BudgetStoreUnavailable("The ledger returned another account's entry")
        return entry

    @staticmethod
    def _receipt(account_id: str, item: Mapping[str, Any]) -> Receipt:
        try:
            receipt = Receipt.model_validate(from_item(item))
        except ValidationError as exc:
            raise BudgetStoreUnavailable("The ledger holds an unreadable receipt") from exc
        if receipt.account_id != account_id:
            raise BudgetStoreUnavailable("The ledger returned another account's receipt")
        return receipt
