"""Account views: what a caller may see of its own ledger and receipts, as pages and totals.

Pure: the queries live in forge.adapters.ledger_views. Amounts stay integer micro-units of one
bucket, and totals are kept per bucket, never summed across buckets (USD and CNY do not add).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from forge.archive import Month, as_utc
from forge.errors import InvalidRequest
from forge.money import Bucket
from forge.records import Receipt

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
# Usage totals read every receipt in the range (one indexed query): keep the range bounded.
MAX_USAGE_RANGE = timedelta(days=366)


class InvalidCursor(InvalidRequest):
    """A page cursor that was not issued for this query (tampered, truncated, or reused with
    other filters). Never answered with another query's data."""

    code = "invalid_cursor"


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing; `next_cursor` is None on the last page."""

    items: list[T]
    next_cursor: str | None = None


@dataclass(frozen=True)
class TimeRange:
    """A half-open UTC interval [start, end); either side may be open."""

    start: datetime | None = None
    end: datetime | None = None

    @classmethod
    def of(cls, start: datetime | date | None, end: datetime | date | None) -> TimeRange:
        """Dates mean their UTC midnight; naive datetimes are UTC. `end` is exclusive."""
        window = cls(_moment(start), _moment(end))
        if window.start and window.end and window.start >= window.end:
            raise InvalidRequest("'from' must be before 'to'", param="from")
        return window

    def bounded(self, now: datetime, max_span: timedelta) -> TimeRange:
        """Close the range: from defaults to the start of `now`'s month, to defaults to now."""
        end = self.end or as_utc(now)
        start = self.start or Month.of(as_utc(now)).start
        if start >= end:
            raise InvalidRequest("'from' must be before 'to'", param="from")
        if end - start > max_span:
            raise InvalidRequest(f"The range may span at most {max_span.days} days", param="from")
        return TimeRange(start, end)


def _moment(value: datetime | date | None) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    return as_utc(value)


def page_size(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_PAGE_SIZE
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidRequest(f"limit must be 1..{MAX_PAGE_SIZE}", param="limit")
    return limit


# Usage ----------------------------------------------------------------------------------------
class UsageGroupBy(enum.StrEnum):
    KEY = "key"
    PROJECT = "project"
    MODEL = "model"
    ROUTE = "route"
    DAY = "day"


def usage_group(receipt: Receipt, group_by: UsageGroupBy) -> str:
    """The group a receipt counts in. Model is the requested (catalog) model, route the one
    that served it, as on the ledger entry; day is the receipt's UTC date."""
    match group_by:
        case UsageGroupBy.KEY:
            return receipt.key_id
        case UsageGroupBy.PROJECT:
            return receipt.project_id
        case UsageGroupBy.MODEL:
            return receipt.requested_model
        case UsageGroupBy.ROUTE:
            return receipt.final_route or ""
        case UsageGroupBy.DAY:
            return as_utc(receipt.created_at).date().isoformat()


class UsageTotals(BaseModel):
    """Requests, tokens and charge of a set of receipts, all in one bucket."""

    requests: int = 0
    succeeded: int = 0
    partial: int = 0
    failed: int = 0
    attempts: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    charge: int = 0

    def add(self, receipt: Receipt) -> None:
        self.requests += 1
        match receipt.status:
            case "succeeded":
                self.succeeded += 1
            case "partial":
                self.partial += 1
            case "failed":
                self.failed += 1
        self.attempts += len(receipt.attempts)
        self.input_tokens += receipt.usage.input_tokens
        self.cached_input_tokens += receipt.usage.cached_input_tokens
        self.output_tokens += receipt.usage.output_tokens
        self.charge += receipt.charge


class UsageLine(BaseModel):
    model_config = ConfigDict(frozen=True)

    group: str
    bucket: Bucket | None  # None only for a request refused before a route was chosen
    totals: UsageTotals


def _lines(
    receipts: Iterable[Receipt], group: str | None, group_by: UsageGroupBy | None
) -> list[UsageLine]:
    totals: dict[tuple[str, str], tuple[Bucket | None, UsageTotals]] = {}
    for receipt in receipts:
        name = usage_group(receipt, group_by) if group_by else (group or "")
        bucket_key = receipt.bucket.value if receipt.bucket else ""
        slot = totals.setdefault((name, bucket_key), (receipt.bucket, UsageTotals()))
        slot[1].add(receipt)
    return [
        UsageLine(group=name, bucket=bucket, totals=sums)
        for (name, _), (bucket, sums) in sorted(totals.items())
    ]


def summarize_usage(
    receipts: Iterable[Receipt], group_by: UsageGroupBy
) -> tuple[list[UsageLine], list[UsageLine]]:
    """(one line per group and bucket, one total per bucket), sorted."""
    collected = list(receipts)
    return _lines(collected, None, group_by), _lines(collected, "total", None)
