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
from forge.domain.records import Hold, Receipt
from forge.ports import BudgetStore

logger = logging.getLogger(__name__)


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


def sweep(store: BudgetStore, now: datetime) -> SweepReport:
    report = SweepReport()
    for hold in store.expired_holds(now):
        try:
            if hold.outcome is not None:
                receipt = hold.outcome.receipt.model_copy(
                    update={"settlement": "settled", "note": "settled late by the sweeper"}
                )
                store.settle(hold, hold.outcome.charge, receipt)
                report.settled.append(hold.request_id)
            else:
                store.void(hold, _expired_receipt(hold))
                report.voided.append(hold.request_id)
        except HoldAlreadyResolved:
            report.already_resolved.append(hold.request_id)
    if report.settled or report.voided:
        logger.warning("holds_swept", extra=report.model_dump())
    return report
