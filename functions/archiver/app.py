"""Archiver Lambda: ledger table stream -> one S3 object per ledger entry (idempotent).

Each record is archived on its own; a record that fails is reported in batchItemFailures by
its SequenceNumber, so Lambda retries from there and the good records are not lost.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from forge.store.dynamo.stream import archive_record
from forge.wiring import get_archive

logger = Logger()
processor = BatchProcessor(event_type=EventType.DynamoDBStreams)


def record_handler(record: DynamoDBRecord) -> None:
    """Archive one stream record; raising marks just this record as failed."""
    sequence_number = record.dynamodb.sequence_number if record.dynamodb else None
    try:
        entry = archive_record(get_archive(), record.raw_event)
    except Exception:
        logger.exception("ledger record not archived", extra={"sequence_number": sequence_number})
        raise
    if entry is not None:
        logger.debug("ledger entry archived", extra={"entry_id": entry.entry_id})


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dict(
        process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    )
