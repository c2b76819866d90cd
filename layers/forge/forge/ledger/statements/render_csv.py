"""A statement as CSV: one row per ledger entry, between each bucket's opening and closing
rows, followed by its totals and charge summaries."""

from __future__ import annotations

import csv
import io

from forge.domain.calendar import Month
from forge.domain.money import format_micros
from forge.domain.records import LedgerEntry, LedgerKind
from forge.ledger.entry_view import LedgerEntryView
from forge.ledger.statements.model import (
    BucketStatement,
    ChargeGrouping,
    Statement,
    series_seq,
    utc_timestamp,
)

CSV_COLUMNS = (
    "row_type",
    "account_id",
    "date",
    "entry_id",
    "bucket",
    "currency",
    "seq",
    "kind",
    "amount",
    "balance_after",
    "request_id",
    "key_id",
    "project_id",
    "model",
    "route",
    "source",
    "memo",
    "count",
)
# Spreadsheets run cells that start with these as formulas; model names come from clients.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _text(value: str | None) -> str:
    if value is None:
        return ""
    return "'" + value if value.startswith(_FORMULA_START) else value


def _entry_row(entry: LedgerEntry, balance: int) -> dict[str, str]:
    view = LedgerEntryView.of(entry)
    return {
        "row_type": "entry",
        "date": utc_timestamp(view.created_at),
        "entry_id": _text(view.entry_id),
        "seq": series_seq(entry),
        "kind": view.kind,
        "amount": view.amount,
        "balance_after": format_micros(balance),
        **{name: _text(value) for name, value in view.facts().items()},
    }


def _bucket_csv_rows(statement: Statement, part: BucketStatement) -> list[dict[str, str]]:
    month = Month.parse(statement.month)
    rows: list[dict[str, str]] = [
        {
            "row_type": "opening",
            "date": utc_timestamp(month.start),
            "balance_after": format_micros(part.opening_balance),
        }
    ]
    rows += [_entry_row(e, b) for e, b in zip(part.rows, part.balances, strict=True)]
    rows += [
        {
            "row_type": "total",
            "kind": kind.value,
            "amount": format_micros(part.totals.get(kind, 0)),
            "count": str(part.counts.get(kind, 0)),
        }
        for kind in part.totals
    ]
    for grouping in ChargeGrouping:
        rows += [
            {
                "row_type": f"charges_by_{grouping.value}",
                "kind": LedgerKind.CHARGE.value,
                grouping.column: _text(group.name),
                "amount": format_micros(group.amount),
                "count": str(group.count),
            }
            for group in part.charges_by.get(grouping, [])
        ]
    rows += [
        {
            "row_type": "charges_by_day",
            "kind": LedgerKind.CHARGE.value,
            "date": day.name,
            "amount": format_micros(day.amount),
            "count": str(day.count),
        }
        for day in part.daily_charges
    ]
    rows.append(
        {
            "row_type": "closing" if statement.final else "closing_provisional",
            "date": utc_timestamp(month.end),
            "balance_after": format_micros(part.closing_balance),
        }
    )
    return rows


def render_csv(statement: Statement) -> bytes:
    """The statement as CSV bytes (UTF-8, RFC 4180 line ends). Same statement, same bytes.

    Per bucket: `opening`, one `entry` row per ledger entry, a `total` (and count) per kind,
    `charges_by_{key,project,model,route,day}` summaries, then `closing` (or
    `closing_provisional` while the month is open)."""
    account = _text(statement.account_id)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for part in statement.buckets:
        common = {"account_id": account, "bucket": part.bucket.value, "currency": part.currency}
        for cells in _bucket_csv_rows(statement, part):
            values = {**common, **cells}
            writer.writerow([values.get(column, "") for column in CSV_COLUMNS])
    return out.getvalue().encode("utf-8")
