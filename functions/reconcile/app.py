"""Reconcile Lambda (daily): proves conservation for every account and bucket; any drift
fails the invocation, so the Errors metric and its alarm see it."""

from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger

from forge.ledger.reconcile import reconcile
from forge.wiring import get_store

logger = Logger()


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    report = reconcile(get_store(), datetime.now(UTC))
    summary = report.model_dump(mode="json")
    if not report.ok:
        logger.error("ledger drift", extra=summary)
        raise RuntimeError(f"{len(report.drifts)} drift(s) found; see the log for the entries")
    logger.info("reconciled", extra=summary)
    return summary
