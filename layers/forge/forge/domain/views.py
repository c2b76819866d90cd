"""Account views: what a caller may see of its own ledger and receipts, as pages and totals.

Pure: the queries live in forge.store.dynamo.views. Amounts stay integer micro-units of one
bucket, and totals are kept per bucket, never summed across buckets (USD and CNY do not add).
Usage is kept as hourly cells (one per combination of bucket, key, project, model and route),
so a range costs its hours and combinations, not its calls.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from forge.domain.calendar import Month, as_utc
from forge.domain.errors import InvalidRequest
from forge.domain.money import Bucket
from forge.domain.records import LedgerEntry, Receipt

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
# Usage reads one cell per hour and combination in the range: keep the range bounded.
MAX_USAGE_RANGE = timedelta(days=366)
HOUR = timedelta(hours=1)


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


class UsageTotals(BaseModel):
    """Requests, tokens, charge and refunds of a set of receipts, all in one bucket."""

    requests: int = 0
    succeeded: int = 0
    partial: int = 0
    failed: int = 0
    attempts: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    charge: int = 0
    refunded: int = 0  # refund entries credited back, counted when they were written

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

    def add_totals(self, other: UsageTotals) -> None:
        for name in UsageTotals.model_fields:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @classmethod
    def of(cls, receipt: Receipt) -> UsageTotals:
        totals = cls()
        totals.add(receipt)
        return totals


def hour_of(moment: datetime) -> datetime:
    """The start of the UTC hour `moment` falls in."""
    return as_utc(moment).replace(minute=0, second=0, microsecond=0)


def hour_ceiling(moment: datetime) -> datetime:
    """The first hour boundary at or after `moment`."""
    start = hour_of(moment)
    return start if start == as_utc(moment) else start + HOUR


class UsageCell(BaseModel):
    """One UTC hour of usage of one combination of bucket, key, project, requested model and
    final route: what a receipt or a refund adds to, and what the views add up."""

    model_config = ConfigDict(frozen=True)

    hour: datetime  # the hour's start, UTC
    bucket: Bucket | None  # None only for a request refused before a route was chosen
    key_id: str
    project_id: str
    requested_model: str
    final_route: str | None
    totals: UsageTotals

    @classmethod
    def of_receipt(cls, receipt: Receipt) -> UsageCell:
        return cls(
            hour=hour_of(receipt.created_at),
            bucket=receipt.bucket,
            key_id=receipt.key_id,
            project_id=receipt.project_id,
            requested_model=receipt.requested_model,
            final_route=receipt.final_route,
            totals=UsageTotals.of(receipt),
        )

    @classmethod
    def of_refund(cls, entry: LedgerEntry) -> UsageCell:
        """A refund counts where its request counted (the entry names the request's key,
        project, model and route), in the hour the refund was written."""
        return cls(
            hour=hour_of(entry.created_at),
            bucket=entry.bucket,
            key_id=entry.key_id or "",
            project_id=entry.project_id or "",
            requested_model=entry.model or "",
            final_route=entry.route,
            totals=UsageTotals(refunded=entry.amount),
        )

    def group(self, group_by: UsageGroupBy) -> str:
        """The group this cell counts in. Model is the requested (catalog) model, route the
        one that served it, as on the ledger entry; day is the UTC date."""
        match group_by:
            case UsageGroupBy.KEY:
                return self.key_id
            case UsageGroupBy.PROJECT:
                return self.project_id
            case UsageGroupBy.MODEL:
                return self.requested_model
            case UsageGroupBy.ROUTE:
                return self.final_route or ""
            case UsageGroupBy.DAY:
                return self.hour.date().isoformat()


@dataclass(frozen=True)
class UsageRead:
    """How usage over a closed range is read: the stored cells of `hours` (whole hours), except
    in the `edges`, the parts of an hour the range covers only partly, which are rebuilt from
    that hour's receipts and refunds so that a bound inside an hour stays exact."""

    hours: TimeRange
    edges: tuple[TimeRange, ...]

    @classmethod
    def of(cls, window: TimeRange) -> UsageRead:
        start, end = window.start, window.end
        if start is None or end is None:
            raise ValueError("usage is read over a closed range")
        cut_start, cut_end = hour_of(start) != start, hour_of(end) != end
        if cut_start and cut_end and hour_of(start) == hour_of(end):
            edges: tuple[TimeRange, ...] = (TimeRange(start, end),)
        else:
            edges = tuple(
                edge
                for cut, edge in (
                    (cut_start, TimeRange(start, hour_of(start) + HOUR)),
                    (cut_end, TimeRange(hour_of(end), end)),
                )
                if cut
            )
        return cls(TimeRange(hour_of(start), hour_ceiling(end)), edges)

    def edge_at(self, hour: datetime) -> TimeRange | None:
        """The edge inside `hour`, if the range covers that hour only partly."""
        return next((e for e in self.edges if e.start and hour_of(e.start) == hour), None)


class UsageLine(BaseModel):
    model_config = ConfigDict(frozen=True)

    group: str
    bucket: Bucket | None  # None only for a request refused before a route was chosen
    totals: UsageTotals


def _lines(
    cells: Iterable[UsageCell], group: str | None, group_by: UsageGroupBy | None
) -> list[UsageLine]:
    totals: dict[tuple[str, str], tuple[Bucket | None, UsageTotals]] = {}
    for cell in cells:
        name = cell.group(group_by) if group_by else (group or "")
        bucket_key = cell.bucket.value if cell.bucket else ""
        slot = totals.setdefault((name, bucket_key), (cell.bucket, UsageTotals()))
        slot[1].add_totals(cell.totals)
    return [
        UsageLine(group=name, bucket=bucket, totals=sums)
        for (name, _), (bucket, sums) in sorted(totals.items())
    ]


def summarize_usage(
    cells: Iterable[UsageCell], group_by: UsageGroupBy
) -> tuple[list[UsageLine], list[UsageLine]]:
    """(one line per group and bucket, one total per bucket), sorted."""
    collected = list(cells)
    return _lines(collected, None, group_by), _lines(collected, "total", None)
