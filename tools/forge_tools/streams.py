"""A local stand-in for Lambda's DynamoDB Stream event source mapping.

Polls the ledger table's stream and hands each batch, as a real DynamoDB Stream event, to the
archiver's handler. Like Lambda with ReportBatchItemFailures, a batch that reports failures is
retried from the first failed record, so nothing is skipped and redelivery is normal.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from forge_tools.lambda_local import LambdaContext, to_lambda_record

logger = logging.getLogger(__name__)
Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


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

    def _shard_ids(self) -> list[str]:
        shards = self._streams.describe_stream(StreamArn=self._arn)["StreamDescription"]["Shards"]
        return [str(shard["ShardId"]) for shard in shards]

    def _run(self) -> None:
        # Where each shard's next batch starts. A fresh iterator per poll, rather than following
        # NextShardIterator: moto rolls a cancelled transaction back by restoring a deep copy of
        # its tables, which orphans the stream shard an old iterator points at.
        positions: dict[str, tuple[str, str | None]] = {}
        while not self._stop.wait(self._interval):
            try:
                for shard_id in self._shard_ids():
                    position = positions.get(shard_id, ("TRIM_HORIZON", None))
                    positions[shard_id] = self._poll(shard_id, position)
            except Exception:  # keep polling: a local archiver bug must not kill the stack
                logger.exception("stream_poll_failed")

    def _poll(self, shard_id: str, position: tuple[str, str | None]) -> tuple[str, str | None]:
        """Deliver one batch from `position`; return where the next batch starts."""
        kind, sequence = position
        request = {"StreamArn": self._arn, "ShardId": shard_id, "ShardIteratorType": kind}
        if sequence is not None:
            request["SequenceNumber"] = sequence
        iterator = self._streams.get_shard_iterator(**request)["ShardIterator"]
        records = self._streams.get_records(ShardIterator=iterator, Limit=self._batch_size)[
            "Records"
        ]
        if not records:
            return position
        event = {"Records": [to_lambda_record(r, self._arn, self._region) for r in records]}
        context = LambdaContext(function_name="ArchiverFunction")
        failures = self._handler(event, context).get("batchItemFailures") or []
        if failures:  # like Lambda: retry the batch from the first failed record
            first_failed = str(failures[0]["itemIdentifier"])
            logger.warning("archive_batch_retry", extra={"sequence_number": first_failed})
            return "AT_SEQUENCE_NUMBER", first_failed
        return "AFTER_SEQUENCE_NUMBER", str(records[-1]["dynamodb"]["SequenceNumber"])
