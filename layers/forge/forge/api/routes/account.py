"""Account views: balance, receipts, ledger, usage, runs, statements. Every lookup is keyed by
the caller's own account id, so another tenant's ids simply do not exist from here (404)."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BeforeValidator

from forge.api.deps import ArchiveDep, KeyDep, SettingsDep, StoreDep
from forge.api.schemas import (
    BalanceView,
    BucketBalance,
    LedgerPage,
    RunCallView,
    RunView,
    StatementLink,
    StatementList,
    StatementMonthView,
    UsageLineView,
    UsageView,
)
from forge.domain.archive import StatementFormat
from forge.domain.calendar import Month
from forge.domain.errors import NotFound
from forge.domain.money import Bucket, format_micros
from forge.domain.records import Receipt, utcnow
from forge.domain.views import (
    MAX_PAGE_SIZE,
    MAX_USAGE_RANGE,
    TimeRange,
    UsageGroupBy,
    UsageLine,
    hour_ceiling,
    summarize_usage,
)
from forge.ledger.entry_view import LedgerEntryView
from forge.ledger.statements import available_months, ensure_statement
from forge.store.dynamo.views import LedgerViews
from forge.wiring import get_ledger_views

router = APIRouter()

ViewsDep = Annotated[LedgerViews, Depends(get_ledger_views)]
# Query strings: `from`/`to` take a date (UTC midnight) or an ISO 8601 instant; `to` is exclusive.
# yyyy-mm, years 0001-9999 (no look-ahead: pydantic's regex engine has none)
MONTH_PATTERN = r"^([1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])-(0[1-9]|1[0-2])$"
_DATE_FIRST = re.compile(r"\d{4}-\d{2}-\d{2}")


def _date_first(value: object) -> object:
    """A date or an ISO 8601 instant, as documented: pydantic would also take a number of
    seconds since 1970 ("-6.8e-06" is a 1969 instant), which the schema's date-time is not."""
    if isinstance(value, str) and not _DATE_FIRST.match(value):
        raise ValueError("expected a date (YYYY-MM-DD) or an ISO 8601 date-time")
    return value


FromQuery = Annotated[datetime | None, Query(alias="from"), BeforeValidator(_date_first)]
ToQuery = Annotated[datetime | None, Query(alias="to"), BeforeValidator(_date_first)]
CursorQuery = Annotated[str | None, Query(max_length=2048)]
ProjectQuery = Annotated[str | None, Query(max_length=64)]
_FORMATS: list[Literal["csv", "html"]] = ["csv", "html"]


@router.get("/v1/balance")
async def get_balance(key: KeyDep, store: StoreDep) -> BalanceView:
    buckets = []
    for bucket in Bucket:
        wallet = await asyncio.to_thread(store.get_wallet, key.account_id, bucket)
        buckets.append(
            BucketBalance(
                bucket=bucket.value,
                currency=bucket.currency,
                balance=format_micros(wallet.balance),
                held=format_micros(wallet.held),
                available=format_micros(wallet.available),
                balance_micros=wallet.balance,
                held_micros=wallet.held,
                available_micros=wallet.available,
            )
        )
    return BalanceView(account_id=key.account_id, buckets=buckets)


@router.get("/v1/requests/{request_id}")
async def get_receipt(
    key: KeyDep, store: StoreDep, request_id: Annotated[str, Path(max_length=64)]
) -> Receipt:
    # A Responses API id is `resp_<request id>`: either finds the receipt.
    request_id = request_id.removeprefix("resp_")
    receipt = await asyncio.to_thread(store.get_receipt, key.account_id, request_id)
    if receipt is None:
        raise NotFound(f"No request '{request_id}' for this account", param="request_id")
    return receipt


# Ledger, usage, runs ---------------------------------------------------------------------------
def _usage_view(line: UsageLine) -> UsageLineView:
    sums = line.totals
    return UsageLineView(
        group=line.group,
        bucket=line.bucket.value if line.bucket else None,
        currency=line.bucket.currency if line.bucket else None,
        requests=sums.requests,
        succeeded=sums.succeeded,
        partial=sums.partial,
        failed=sums.failed,
        attempts=sums.attempts,
        input_tokens=sums.input_tokens,
        cached_input_tokens=sums.cached_input_tokens,
        output_tokens=sums.output_tokens,
        charge=format_micros(sums.charge),
        charge_micros=sums.charge,
        refunded=format_micros(sums.refunded),
        refunded_micros=sums.refunded,
    )


def _call_view(receipt: Receipt) -> RunCallView:
    return RunCallView(
        request_id=receipt.request_id,
        created_at=receipt.created_at,
        status=receipt.status,
        requested_model=receipt.requested_model,
        final_route=receipt.final_route,
        upstream_model=receipt.upstream_model,
        key_id=receipt.key_id,
        project_id=receipt.project_id,
        attempts=[a.model_dump(mode="json") for a in receipt.attempts],
        input_tokens=receipt.usage.input_tokens,
        cached_input_tokens=receipt.usage.cached_input_tokens,
        output_tokens=receipt.usage.output_tokens,
        charge=format_micros(receipt.charge),
        charge_micros=receipt.charge,
        bucket=receipt.bucket.value if receipt.bucket else None,
        settlement=receipt.settlement,
        error_code=receipt.error_code,
        note=receipt.note,
    )


@router.get("/v1/ledger")
async def get_ledger(
    key: KeyDep,
    views: ViewsDep,
    bucket: Bucket | None = None,
    start: FromQuery = None,
    end: ToQuery = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    cursor: CursorQuery = None,
    order: Literal["desc", "asc"] = "desc",
) -> LedgerPage:
    """The caller's ledger entries by time (newest first unless order=asc), one page at a
    time; pass `next_cursor` back as `cursor`, with the same filters, for the next page."""
    window = TimeRange.of(start, end)
    page = await asyncio.to_thread(
        lambda: views.entries(
            key.account_id,
            bucket=bucket,
            window=window,
            limit=limit,
            cursor=cursor,
            newest_first=order == "desc",
        )
    )
    return LedgerPage(
        data=[LedgerEntryView.of(e) for e in page.items],
        has_more=page.next_cursor is not None,
        next_cursor=page.next_cursor,
    )


@router.get("/v1/usage")
async def get_usage(
    key: KeyDep,
    views: ViewsDep,
    group_by: UsageGroupBy = UsageGroupBy.MODEL,
    start: FromQuery = None,
    end: ToQuery = None,
    project_id: ProjectQuery = None,
) -> UsageView:
    """Requests, tokens and charges from the caller's receipts in [from, to) (default: this
    month so far), and refunds written in it, grouped by key, project, model, route or UTC
    day, per bucket; only one project's with `project_id` (its cells are read all the same:
    each names its project)."""
    window = TimeRange.of(start, end).bounded(utcnow(), MAX_USAGE_RANGE)
    assert window.start is not None and window.end is not None  # bounded() closes both
    # Without `to`, the current hour counts whole (all written until now) rather than cut
    # at this instant, which would mean reading the hour's receipts one by one.
    counted = window if end is not None else TimeRange(window.start, hour_ceiling(window.end))
    cells = await asyncio.to_thread(views.usage, key.account_id, counted)
    if project_id is not None:
        cells = [c for c in cells if c.project_id == project_id]
    lines, totals = summarize_usage(cells, group_by)
    return UsageView(
        start=window.start,
        end=window.end,
        group_by=group_by.value,
        data=[_usage_view(line) for line in lines],
        totals=[_usage_view(line) for line in totals],
    )


@router.get("/v1/runs/{run_id}")
async def get_run(
    key: KeyDep,
    views: ViewsDep,
    run_id: Annotated[str, Path(max_length=128)],
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 100,
    cursor: CursorQuery = None,
    project_id: ProjectQuery = None,
) -> RunView:
    """A run's calls (oldest first, paged) with every attempt, and the whole run's totals
    (kept as they are written, so this reads one page of calls whatever the run's size).
    With `project_id`, a page lists only that project's calls (it may then hold fewer than
    `limit`; follow `next_cursor`); the totals stay the whole run's."""
    page = await asyncio.to_thread(
        lambda: views.run_calls(key.account_id, run_id, limit=limit, cursor=cursor)
    )
    totals = await asyncio.to_thread(views.run_totals, key.account_id, run_id)
    if not totals:
        raise NotFound(f"No run '{run_id}' for this account", param="run_id")
    return RunView(
        run_id=run_id,
        totals=[_usage_view(line) for line in totals],
        calls=[
            _call_view(r) for r in page.items if project_id is None or r.project_id == project_id
        ],
        has_more=page.next_cursor is not None,
        next_cursor=page.next_cursor,
    )


# Statements ------------------------------------------------------------------------------------
@router.get("/v1/statements")
async def list_statements(key: KeyDep, views: ViewsDep) -> StatementList:
    """Every month the caller has a statement for: from its first ledger entry to now."""
    first = await asyncio.to_thread(views.first_entry_at, key.account_id)
    return StatementList(
        data=[
            StatementMonthView(
                month=m.month,
                status="final" if m.final else "provisional",
                formats=_FORMATS,
                url=f"/v1/statements/{m.month}",
            )
            for m in available_months(first, utcnow())
        ]
    )


@router.get("/v1/statements/{month}")
async def get_statement(
    key: KeyDep,
    archive: ArchiveDep,
    views: ViewsDep,
    settings: SettingsDep,
    month: Annotated[str, Path(pattern=MONTH_PATTERN)],
    format: StatementFormat = StatementFormat.CSV,
) -> StatementLink:
    """A short-lived link to the caller's own statement, built first if needed. Months
    before the account's first ledger entry, or after now, have none (404)."""
    wanted = Month.parse(month)
    first = await asyncio.to_thread(views.first_entry_at, key.account_id)
    months = {m.month: m for m in available_months(first, utcnow())}
    if str(wanted) not in months:
        raise NotFound(f"No statement for {wanted} in this account", param="month")
    await asyncio.to_thread(ensure_statement, archive, views, key.account_id, wanted)
    ttl = settings.statement_url_ttl_seconds
    url = await asyncio.to_thread(
        archive.presigned_statement_url, key.account_id, wanted, ttl, format
    )
    return StatementLink(
        month=str(wanted),
        format=format.value,
        status="final" if months[str(wanted)].final else "provisional",
        url=url,
        expires_in=ttl,
    )
