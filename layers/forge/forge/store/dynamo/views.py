"""The ledger table's read side: account views and statement checks, by keys and indexes only.

Items written by DynamoStore carry sparse index attributes (stamped in `_put_entry` and
`_put_receipt` from the helpers below), so every view is one Query on a partition that
names the caller's account:

| index           | partition                    | sort                         | serves          |
|-----------------|------------------------------|------------------------------|-----------------|
| (table)         | `ACCT#{account}`             | `ENTRY#{bucket}#{seq:012d}`  | statement check |
| ledger-by-time  | `ENTRIES#{account}`          | `{time}#{bucket}#{seq:012d}` | ledger          |
| ledger-by-time  | `RECEIPTS#{account}`         | `{time}#{request_id}`        | usage (edges)   |
| ledger-by-scope | `ENTRIES#{account}#{bucket}` | `{time}#{seq:012d}`          | ledger, bucket  |
| ledger-by-scope | `RUN#{account}#{run_id}`     | `{time}#{request_id}`        | a run's calls   |
| (table)         | `RUNSUM#{account}#{run_id}`  | `{bucket}`                   | a run's totals  |
| (table)         | `USAGE#{account}`            | `{hour}#{hash}`              | usage           |

`{time}` is the UTC instant with fixed microseconds (`2025-03-04T05:06:07.000000Z`), so text
order is time order. A page cursor is the query's LastEvaluatedKey, encoded, and is checked
against the caller and the query before DynamoDB sees it. Totals come from the aggregate
items of adapters/ledger_totals, so no view reads more than a page of receipts, except the
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
from decimal import Decimal
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from forge.domain.calendar import as_utc
from forge.domain.errors import BudgetStoreUnavailable, InvalidCursor, NotFound
from forge.domain.money import Bucket
from forge.domain.records import LedgerEntry, LedgerKind, Receipt
from forge.domain.views import Page, TimeRange, UsageCell, UsageLine, UsageRead, UsageTotals
from forge.store.dynamo import totals as ledger_totals
from forge.store.dynamo.types import TypeDeserializer, TypeSerializer

BY_TIME_INDEX = "ledger-by-time"
BY_SCOPE_INDEX = "ledger-by-scope"
_INDEX_KEYS = {BY_TIME_INDEX: ("time_pk", "time_sk"), BY_SCOPE_INDEX: ("scope_pk", "scope_sk")}
_CURSOR_VERSION = 1
_MAX_CURSOR_CHARS = 2048
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def time_key(moment: datetime) -> str:
    """A sortable UTC instant: fixed width, so text order is time order."""
    return as_utc(moment).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_index_attributes(entry: LedgerEntry) -> dict[str, str]:
    """What `_put_entry` adds to a ledger entry item so the views can find it."""
    at = time_key(entry.created_at)
    return {
        "time_pk": f"ENTRIES#{entry.account_id}",
        "time_sk": f"{at}#{entry.bucket.value}#{entry.seq:012d}",
        "scope_pk": f"ENTRIES#{entry.account_id}#{entry.bucket.value}",
        "scope_sk": f"{at}#{entry.seq:012d}",
    }


def receipt_index_attributes(receipt: Receipt) -> dict[str, str]:
    """What `_put_receipt` adds to a receipt item; only receipts of a run join a run."""
    at = time_key(receipt.created_at)
    values = {
        "time_pk": f"RECEIPTS#{receipt.account_id}",
        "time_sk": f"{at}#{receipt.request_id}",
    }
    if receipt.run_id:
        values["scope_pk"] = f"RUN#{receipt.account_id}#{receipt.run_id}"
        values["scope_sk"] = f"{at}#{receipt.request_id}"
    return values


@contextmanager
def _ledger_errors() -> Iterator[None]:
    """AWS failures become the store's 503, like every other read of the tables."""
    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise BudgetStoreUnavailable("The ledger is unavailable; try again") from exc


def _account_pk(account_id: str) -> str:
    return f"ACCT#{account_id}"


def _to_item(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(v) for k, v in values.items() if v is not None}


def _from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: _deserializer.deserialize(v) for k, v in item.items()}
    return {k: int(v) if isinstance(v, Decimal) else v for k, v in out.items()}


# Cursors ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Query:
    """One indexed listing: which partition, which slice of its sort keys, in which order."""

    account_id: str
    index: str
    partition: str
    sk_prefix: str  # of the table's own sort key: ENTRY# or RCPT#
    window: TimeRange = field(default_factory=TimeRange)
    newest_first: bool = False

    @property
    def key_names(self) -> tuple[str, str]:
        return _INDEX_KEYS[self.index]

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
            "ExpressionAttributeValues": _to_item(values),
            "ScanIndexForward": not self.newest_first,
        }
        if limit is not None:
            request["Limit"] = limit
        return request

    def cursor_of(self, item: Mapping[str, Any]) -> str:
        """The LastEvaluatedKey a page ending on `item` would return, encoded."""
        names = ("pk", "sk", *self.key_names)
        plain = {name: _deserializer.deserialize(item[name]) for name in names}
        raw = json.dumps({"v": _CURSOR_VERSION, "k": plain}, separators=(",", ":"), sort_keys=True)
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    def start_key(self, cursor: str) -> dict[str, Any]:
        """The ExclusiveStartKey a cursor stands for, if it was issued for this very query.

        A cursor naming another account is 404 (its pages do not exist for this caller);
        anything else that does not fit this query is InvalidCursor (422)."""
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
        if key["pk"] != _account_pk(self.account_id):
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
        return _to_item(key)


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
        if bucket is None:
            index, partition = BY_TIME_INDEX, f"ENTRIES#{account_id}"
        else:
            index, partition = BY_SCOPE_INDEX, f"ENTRIES#{account_id}#{bucket.value}"
        query = _Query(account_id, index, partition, "ENTRY#", window or TimeRange(), newest_first)
        items, next_cursor = self._page(query, limit, cursor)
        return Page([self._entry(account_id, item) for item in items], next_cursor)

    def receipts(self, account_id: str, window: TimeRange) -> Iterator[Receipt]:
        """Every receipt of the account created in `window`, oldest first."""
        query = _Query(account_id, BY_TIME_INDEX, f"RECEIPTS#{account_id}", "RCPT#", window)
        for item in self._all(query):
            yield self._receipt(account_id, item)

    def refunds(self, account_id: str, window: TimeRange) -> Iterator[LedgerEntry]:
        """Every refund entry of the account (both buckets) written in `window`."""
        query = _Query(account_id, BY_TIME_INDEX, f"ENTRIES#{account_id}", "ENTRY#", window)
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
            cell = ledger_totals.usage_cell(_from_item(item))
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
        items = [_from_item(item) for item in self._drain(request)]
        if any(item.get("account_id") != account_id for item in items):  # keys say so already
            raise BudgetStoreUnavailable("The ledger returned another account's totals")
        lines = [ledger_totals.run_line(item) for item in items]
        return sorted(lines, key=lambda line: line.bucket.value if line.bucket else "")

    # Statement checks ------------------------------------------------------------------------
    def entries_by_seq(
        self, account_id: str, bucket: Bucket, first: int, last: int
    ) -> list[LedgerEntry]:
        """The entries first..last of one bucket, straight from the table (strongly
        consistent): what a statement's closing balance is checked against."""
        low = f"ENTRY#{bucket.value}#{first:012d}"
        high = f"ENTRY#{bucket.value}#{last:012d}"
        request = {
            "TableName": self._ledger,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :low AND :high",
            "ExpressionAttributeValues": _to_item(
                {":pk": _account_pk(account_id), ":low": low, ":high": high}
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
                    Key=_to_item(
                        {"pk": _account_pk(account_id), "sk": f"ENTRY#{bucket.value}#{1:012d}"}
                    ),
                )
                if "Item" in got:
                    firsts.append(self._entry(account_id, got["Item"]).created_at)
        return min(map(as_utc, firsts)) if firsts else None

    # Building blocks -------------------------------------------------------------------------
    def _run_query(self, account_id: str, run_id: str) -> _Query:
        return _Query(account_id, BY_SCOPE_INDEX, f"RUN#{account_id}#{run_id}", "RCPT#")

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
            entry = LedgerEntry.model_validate(_from_item(item))
        except ValidationError as exc:
            raise BudgetStoreUnavailable("The ledger holds an unreadable entry") from exc
        if entry.account_id != account_id:  # the keys say so already; a view never leaks
            raise BudgetStoreUnavailable("The ledger returned another account's entry")
        return entry

    @staticmethod
    def _receipt(account_id: str, item: Mapping[str, Any]) -> Receipt:
        try:
            receipt = Receipt.model_validate(_from_item(item))
        except ValidationError as exc:
            raise BudgetStoreUnavailable("The ledger holds an unreadable receipt") from exc
        if receipt.account_id != account_id:
            raise BudgetStoreUnavailable("The ledger returned another account's receipt")
        return receipt
