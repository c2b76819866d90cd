"""Sweeper Lambda (every few minutes): resolves holds whose request is certainly dead."""

from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger

from forge.ledger.sweeper import sweep
from forge.wiring import get_meter, get_store

logger = Logger()


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    report = sweep(get_store(), datetime.now(UTC), get_meter())
    logger.info("sweep done", extra=report.model_dump())
    return report.model_dump()
