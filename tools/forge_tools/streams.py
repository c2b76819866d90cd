"""A local stand-in for Lambda's DynamoDB Stream event source mapping.

Polls the ledger table's stream and hands each batch, as a real DynamoDB Stream event, to the
archiver's handler. Like Lambda with ReportBatchItemFailures, a batch that reports failures is
retried from the first failed record, so nothing is skipped and redelivery is normal.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)
Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


@dataclass
class LocalLambdaContext:
    """The parts of Lambda's context object that handlers and Powertools read."""

    function_name: str = "ArchiverFunction"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:000000000000:function:ArchiverFunction"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/ArchiverFunction"
    log_stream_name: str = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


class StreamPoller:
    def __init__(
        self,
        dynamodb: Any,
        streams: Any,
        table_name: str,
        handler: Handler,
        *,
        region: str,
        interval: float = 0.2,
        batch_size: int = 100,
    ) -> None:
        self._streams = streams
        self._handler = handler
        self._region = region
        self._interval = interval
        self._batch_size = batch_size
        self._stop = threading.Event()
        self._arn = dynamodb.describe_table(TableName=table_name)["Table"]["LatestStreamArn"]
        self._thread = threading.Thread(target=self._run, name="ledger-stream", daemon=True)

    def start(self) -> StreamPoller:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _iterators(self) -> dict[str, str]:
        shards = self._streams.describe_stream(StreamArn=self._arn)["StreamDescription"]["Shards"]
        return {
            shard["ShardId"]: self._streams.get_shard_iterator(
                StreamArn=self._arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            for shard in shards
        }

    def _run(self) -> None:
        iterators = self._iterators()
        while not self._stop.wait(self._interval):
            for shard_id, iterator in list(iterators.items()):
                try:
                    iterators[shard_id] = self._poll(shard_id, iterator)
                except Exception:  # keep polling: a local archiver bug must not kill the stack
                    logger.exception("stream_poll_failed")

    def _poll(self, shard_id: str, iterator: str) -> str:
        page = self._streams.get_records(ShardIterator=iterator, Limit=self._batch_size)
        records = page["Records"]
        if not records:
            return str(page["NextShardIterator"])
        event = {"Records": [self._lambda_record(r) for r in records]}
        failures = self._handler(event, LocalLambdaContext()).get("batchItemFailures") or []
        if not failures:
            return str(page["NextShardIterator"])
        first_failed = failures[0]["itemIdentifier"]
        logger.warning("archive_batch_retry", extra={"sequence_number": first_failed})
        return str(
            self._streams.get_shard_iterator(
                StreamArn=self._arn,
                ShardId=shard_id,
                ShardIteratorType="AT_SEQUENCE_NUMBER",
                SequenceNumber=first_failed,
            )["ShardIterator"]
        )

    def _lambda_record(self, record: dict[str, Any]) -> dict[str, Any]:
        """GetRecords output -> the record shape Lambda delivers (timestamps as epoch numbers)."""
        dynamodb = dict(record["dynamodb"])
        created = dynamodb.get("ApproximateCreationDateTime")
        if created is not None and hasattr(created, "timestamp"):
            dynamodb["ApproximateCreationDateTime"] = int(created.timestamp())
        return {
            "eventID": record["eventID"],
            "eventName": record["eventName"],
            "eventVersion": record.get("eventVersion", "1.1"),
            "eventSource": "aws:dynamodb",
            "awsRegion": self._region,
            "dynamodb": dynamodb,
            "eventSourceARN": self._arn,
        }
