"""Archiver Lambda: ledger table stream -> S3, one object per run of consecutive ledger entries
of a series in the batch (idempotent; forge.domain.archive).

A record that cannot be read, or whose run's object could not be written, is reported in
batchItemFailures by its SequenceNumber, so Lambda retries from there and the records before
it are not archived again. A batch where every record failed fails the invocation, so Lambda
bisects it (BisectBatchOnFunctionError) down to the record at fault.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from forge.store.dynamo.stream import archive_batch
from forge.wiring import get_archive

logger = Logger()


class BatchFailed(RuntimeError):
    """Every record of the batch failed: an invocation error, not a partial response."""


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    records = event.get("Records", [])
    failed = archive_batch(get_archive(), records)
    if records and len(failed) == len(records):
        raise BatchFailed(f"none of the batch's {len(records)} records was archived")
    logger.debug("ledger batch archived", extra={"records": len(records), "failed": len(failed)})
    return {"batchItemFailures": [{"itemIdentifier": number} for number in failed]}
