"""The lists the web console reads, as public JSON like every other view: the caller's
requests (filtered by key, project, model, status, error code and time) and its runs with
their budgets. Keyed by the caller's own account; cursors continue only their own listing."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from forge.api.deps import KeyDep
from forge.api.listing_schemas import RequestList, RequestSummary, RunList, RunSummaryView
from forge.api.routes.account import CursorQuery, FromQuery, ToQuery, _call_view, _usage_view
from forge.domain.money import format_micros
from forge.domain.records import Receipt
from forge.domain.views import MAX_PAGE_SIZE, TimeRange
from forge.store.dynamo.listings import ConsoleListings, RequestFilter, RunSummary
from forge.wiring import get_console_listings

router = APIRouter()

ListingsDep = Annotated[ConsoleListings, Depends(get_console_listings)]
IdQuery = Annotated[str | None, Query(min_length=1, max_length=128)]


def _request_view(receipt: Receipt) -> RequestSummary:
    return RequestSummary(
        **_call_view(receipt).model_dump(),
        run_id=receipt.run_id,
        route_type=receipt.route_type.value if receipt.route_type else None,
        stream=receipt.stream,
        refusal=receipt.refusal,
    )


def _run_view(run: RunSummary) -> RunSummaryView:
    return RunSummaryView(
        **_usage_view(run.line).model_dump(),
        run_id=run.run_id,
        first_call_at=run.first_call_at,
        budget=format_micros(run.budget) if run.budget is not None else None,
        budget_micros=run.budget,
    )


@router.get("/v1/requests")
async def list_requests(
    key: KeyDep,
    listings: ListingsDep,
    key_id: IdQuery = None,
    project_id: IdQuery = None,
    model: IdQuery = None,
    status: Literal["succeeded", "partial", "failed"] | None = None,
    error_code: IdQuery = None,
    start: FromQuery = None,
    end: ToQuery = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    cursor: CursorQuery = None,
) -> RequestList:
    """The caller's requests, newest first, with their receipts' essentials. A page reads at
    most 1,000 receipts of the range: with narrow filters it may hold fewer than `limit` and
    still have a `next_cursor`."""
    match = RequestFilter(key_id, project_id, model, status, error_code)
    window = TimeRange.of(start, end)
    page = await asyncio.to_thread(
        lambda: listings.requests(
            key.account_id, match=match, window=window, limit=limit, cursor=cursor
        )
    )
    return RequestList(
        data=[_request_view(r) for r in page.items],
        has_more=page.next_cursor is not None,
        next_cursor=page.next_cursor,
    )


@router.get("/v1/runs")
async def list_runs(
    key: KeyDep,
    listings: ListingsDep,
    start: FromQuery = None,
    end: ToQuery = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    cursor: CursorQuery = None,
) -> RunList:
    """The caller's runs by their first call, newest first: one line per run and bucket,
    its totals against its run budget (`budget` null when the run has none)."""
    window = TimeRange.of(start, end)
    page = await asyncio.to_thread(
        lambda: listings.runs(key.account_id, window=window, limit=limit, cursor=cursor)
    )
    return RunList(
        data=[_run_view(r) for r in page.items],
        has_more=page.next_cursor is not None,
        next_cursor=page.next_cursor,
    )
