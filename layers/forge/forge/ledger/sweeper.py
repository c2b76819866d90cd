"""The sweeper: resolves holds whose request is certainly dead (its expiry has passed).

A hold with a recorded outcome (the upstream answered but settling failed) is settled at that
charge; any other is voided, releasing all of it. Racing a late settle is harmless: a hold
resolves exactly once, whoever gets there first.
"""

from __future__ import annotations

import logging
from datetime import datetime

from pydantic import BaseModel, Field

from forge.domain.errors import HoldAlreadyResolved
from forge.domain.metrics import HOLDS_SWEPT, SWEEP_FAILURES, Metric, charge_metrics
from forge.domain.records import Hold, Receipt
from forge.ports import NO_METER, BudgetStore, Meter, emit_quietly

logger = logging.getLogger(__name__)

# Failures in a row after which the store itself, not one hold, is taken to be failing.
_FAILURES_IN_A_ROW = 3


class SweepIncomplete(RuntimeError):
    """Some expired holds could not be resolved; the rest were (the next run retries these)."""

    def __init__(self, request_ids: list[str]) -> None:
        super().__init__(f"{len(request_ids)} expired hold(s) not resolved")
        self.request_ids = request_ids


class SweepReport(BaseModel):
    settled: list[str] = Field(default_factory=list)
    voided: list[str] = Field(default_factory=list)
    already_resolved: list[str] = Field(default_factory=list)


def _expired_receipt(hold: Hold) -> Receipt:
    return Receipt(
        request_id=hold.request_id,
        account_id=hold.account_id,
        key_id=hold.key_id,
        project_id=hold.project_id,
        requested_model=hold.requested_model,
        run_id=hold.run_id,
        status="failed",
        hold=hold.amount,
        bucket=hold.bucket,
        error_code="hold_expired",
        note="the request ended without settling; the sweeper released its hold",
    )


def sweep(store: BudgetStore, now: datetime, meter: Meter = NO_METER) -> SweepReport:
    """Resolve every expired hold; count what was swept (and charged), and a sweep that failed
    part-way. One hold that cannot be resolved does not stop the others behind it: the run
    goes on, then raises SweepIncomplete (the next run retries it). Failures in a row mean the
    store is failing: the run stops there and the error propagates."""
    report = SweepReport()
    charged: list[Metric] = []
    unresolved: list[str] = []
    in_a_row = 0
    try:
        for hold in store.expired_holds(now):
            try:
                charged += _resolve(store, hold, report)
                in_a_row = 0
            except Exception as exc:
                in_a_row += 1
                if in_a_row == _FAILURES_IN_A_ROW:
                    raise
                unresolved.append(hold.request_id)
                logger.error(
                    "sweep_hold_failed",
                    extra={"request_id": hold.request_id, "error": type(exc).__name__},
                )
        if unresolved:
            raise SweepIncomplete(unresolved)
    except Exception:
        emit_quietly(meter, lambda: [*sweep_metrics(report, failed=True), *charged])
        raise
    emit_quietly(meter, lambda: [*sweep_metrics(report, failed=False), *charged])
    if report.settled or report.voided:
        logger.warning("holds_swept", extra=report.model_dump())
    return report


def _resolve(store: BudgetStore, hold: Hold, report: SweepReport) -> list[Metric]:
    """Settle an expired hold at its recorded charge, or void it; the charge's metrics."""
    try:
        if hold.outcome is not None:
            receipt = hold.outcome.receipt.model_copy(
                update={"settlement": "settled", "note": "settled late by the sweeper"}
            )
            store.settle(hold, hold.outcome.charge, receipt)
            report.settled.append(hold.request_id)
            return charge_metrics(hold.bucket, hold.outcome.charge)
        store.void(hold, _expired_receipt(hold))
        report.voided.append(hold.request_id)
    except HoldAlreadyResolved:
        report.already_resolved.append(hold.request_id)
    return []


def sweep_metrics(report: SweepReport, *, failed: bool) -> list[Metric]:
    """Holds resolved by one run (0 included: a run that stops reporting has stopped running),
    and whether the run failed."""
    return [
        Metric(HOLDS_SWEPT, len(report.settled) + len(report.voided)),
        Metric(SWEEP_FAILURES, int(failed)),
    ]
