"""Bodies of the listings the web console reads: requests (filtered) and runs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from forge.api.schemas import RunCallView, UsageLineView
from forge.domain.records import Refusal


class RequestSummary(RunCallView):
    """One request of the requests listing: its receipt's essentials, attempts included."""

    object: Literal["request"] = "request"
    run_id: str | None = None
    route_type: str | None = None
    stream: bool = False
    refusal: Refusal | None = None


class RequestList(BaseModel):
    object: Literal["list"] = "list"
    data: list[RequestSummary]
    has_more: bool
    next_cursor: str | None = None


class RunSummaryView(UsageLineView):
    """One run's totals in one bucket (`group` is the run id) against its run budget there."""

    object: Literal["run_summary"] = "run_summary"
    run_id: str
    first_call_at: str
    budget: str | None = None  # None: no run budget
    budget_micros: int | None = None


class RunList(BaseModel):
    object: Literal["list"] = "list"
    data: list[RunSummaryView]
    has_more: bool
    next_cursor: str | None = None
