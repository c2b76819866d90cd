"""The ledger table's aggregate items: each run's totals, and hourly usage cells.

They are ADDed to inside the very transaction that writes what they count (the receipt of a
settle, a void or a refusal; the entry of a refund), so they are exact and count each thing
once: a cancelled transaction adds nothing, and a committed one cannot commit again because
its receipt (or refund guard) exists. The views read a few of them instead of every receipt.

Their keys are in forge.store.dynamo.schema (run totals: `RUNSUM#{account}#{run_id}`; usage
cells: `USAGE#{account}`, by hour and a hash of the combination). Their own partition keys
keep a view's Query among aggregates only (never sorting through the account's entries and
receipts) and the partition key still names the caller's account.
The dimensions are plain attributes beside the counters (names may contain '#', so the sort
key carries only a hash of them). `record_type` is `run_total` or `usage_cell`: the
archiver's stream filter takes only inserts of `ledger_entry` items, so none reaches it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from forge.domain.money import Bucket
from forge.domain.records import LedgerEntry, Receipt
from forge.domain.views import TimeRange, UsageCell, UsageLine, UsageTotals
from forge.store.dynamo import schema
from forge.store.dynamo.items import to_item


def _dimensions(cell: UsageCell) -> dict[str, str | None]:
    return {
        "bucket": cell.bucket.value if cell.bucket else None,
        "key_id": cell.key_id,
        "project_id": cell.project_id,
        "requested_model": cell.requested_model,
        "final_route": cell.final_route,
    }


def usage_cell_key(account_id: str, cell: UsageCell, shard: int = 0) -> schema.Key:
    return schema.usage_cell_key(account_id, cell.hour, list(_dimensions(cell).values()), shard)


def _add(
    table: str,
    key: Mapping[str, str],
    attributes: Mapping[str, Any],
    totals: UsageTotals,
    first: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One transaction item: create the aggregate if needed, ADD `totals` to its counters;
    `first` attributes keep the value of the first write (if_not_exists).
    Every name goes through a placeholder (several counters are DynamoDB reserved words)."""
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    sets, adds = [], []
    for n, (name, value) in enumerate((k, v) for k, v in attributes.items() if v is not None):
        names[f"#s{n}"], values[f":s{n}"] = name, value
        sets.append(f"#s{n} = :s{n}")
    for n, (name, value) in enumerate((first or {}).items()):
        names[f"#f{n}"], values[f":f{n}"] = name, value
        sets.append(f"#f{n} = if_not_exists(#f{n}, :f{n})")
    counters = {name: value for name, value in totals.model_dump().items() if value}
    for n, (name, value) in enumerate(counters.items()):
        names[f"#a{n}"], values[f":a{n}"] = name, value
        adds.append(f"#a{n} :a{n}")
    return {
        "Update": {
            "TableName": table,
            "Key": to_item(key),
            "UpdateExpression": f"SET {', '.join(sets)} ADD {', '.join(adds)}",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": to_item(values),
        }
    }


def _cell_update(table: str, account_id: str, cell: UsageCell, shard: int = 0) -> dict[str, Any]:
    attributes = {
        "record_type": schema.USAGE_CELL_RECORD,
        "account_id": account_id,
        "hour": schema.hour_key(cell.hour),
        **_dimensions(cell),
    }
    return _add(table, usage_cell_key(account_id, cell, shard), attributes, cell.totals)


def _run_update(
    table: str,
    account_id: str,
    run_id: str,
    bucket: Bucket | None,
    totals: UsageTotals,
    at: datetime,
) -> dict[str, Any]:
    attributes = {
        "record_type": schema.RUN_TOTAL_RECORD,
        "account_id": account_id,
        "run_id": run_id,
        "bucket": bucket.value if bucket else None,
    }
    # The run joins the account's runs listing (ledger-by-time) when its first call is written.
    first = schema.run_index_attributes(account_id, run_id, bucket, at)
    key = schema.run_total_key(account_id, run_id, bucket)
    return _add(table, key, attributes, totals, first)


def receipt_updates(table: str, receipt: Receipt, shard: int = 0) -> list[dict[str, Any]]:
    """What a receipt adds: its hour's usage cell (the cell of its hold's shard, for a split
    bucket), and its run's total if it has a run."""
    cell = UsageCell.of_receipt(receipt)
    updates = [_cell_update(table, receipt.account_id, cell, shard)]
    if receipt.run_id:
        updates.append(
            _run_update(
                table,
                receipt.account_id,
                receipt.run_id,
                receipt.bucket,
                cell.totals,
                receipt.created_at,
            )
        )
    return updates


def refund_updates(table: str, entry: LedgerEntry, run_id: str | None) -> list[dict[str, Any]]:
    """What a refund entry adds: `refunded` in its request's combination, in the hour the
    refund was written (usage follows the ledger), and in its request's run."""
    cell = UsageCell.of_refund(entry)
    updates = [_cell_update(table, entry.account_id, cell)]
    if run_id:
        updates.append(
            _run_update(
                table, entry.account_id, run_id, entry.bucket, cell.totals, entry.created_at
            )
        )
    return updates


# Reading them back (plain values: numbers already ints) -----------------------------------
def _totals(item: Mapping[str, Any]) -> UsageTotals:
    counters = {name: item.get(name, 0) for name in UsageTotals.model_fields}
    return UsageTotals.model_validate(counters)


def usage_cell(item: Mapping[str, Any]) -> UsageCell:
    bucket = item.get("bucket")
    return UsageCell(
        hour=datetime.strptime(str(item["hour"]), schema.HOUR_FORMAT).replace(tzinfo=UTC),
        bucket=Bucket(bucket) if bucket else None,
        key_id=item["key_id"],
        project_id=item["project_id"],
        requested_model=item["requested_model"],
        final_route=item.get("final_route"),
        totals=_totals(item),
    )


def run_line(item: Mapping[str, Any]) -> UsageLine:
    bucket = item.get("bucket")
    return UsageLine(
        group=str(item["run_id"]), bucket=Bucket(bucket) if bucket else None, totals=_totals(item)
    )


def cells_request(table: str, account_id: str, hours: TimeRange) -> dict[str, Any]:
    """The Query for every cell of the hours [start, end): a bare `{hour}` sorts before that
    hour's cells, so BETWEEN the two bounds is exactly the half-open range."""
    if hours.start is None or hours.end is None:
        raise ValueError("cells are read over a closed range of hours")
    return {
        "TableName": table,
        "KeyConditionExpression": "pk = :pk AND sk BETWEEN :low AND :high",
        "ExpressionAttributeValues": {
            ":pk": {"S": schema.usage_pk(account_id)},
            ":low": {"S": schema.hour_key(hours.start)},
            ":high": {"S": schema.hour_key(hours.end)},
        },
        "ConsistentRead": True,
    }


def run_totals_request(table: str, account_id: str, run_id: str) -> dict[str, Any]:
    """The Query for a run's totals (one item per bucket it spent from)."""
    return {
        "TableName": table,
        "KeyConditionExpression": "pk = :pk",
        "ExpressionAttributeValues": {":pk": {"S": schema.run_total_pk(account_id, run_id)}},
        "ConsistentRead": True,
    }
