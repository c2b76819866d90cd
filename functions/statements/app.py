"""Statement Lambda: the monthly schedule builds last month's statements for every account
with activity; a direct invocation {"account_id", "month"} builds one (add "rebuild": true to
check a final one against a fresh build)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from forge.ledger.statements import MonthlyRun, StatementRequest, run_statements
from forge.wiring import get_archive, get_ledger_views

logger = Logger()


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = StatementRequest.from_event(event)
    result = run_statements(get_archive(), get_ledger_views(), request)
    summary = result.model_dump(mode="json")
    if isinstance(result, MonthlyRun) and result.failed:
        # Fail the invocation so the Errors metric (and the schedule's retry) sees it.
        logger.error("some statements were not built", extra=summary)
        raise RuntimeError(f"statements for {result.month} failed: {sorted(result.failed)}")
    logger.info("statements built", extra=summary)
    return summary
