"""Archive replay: the time windows the ledger archive is rebuilt over, and Lambda's on-failure
record that names them.

When the archiver gives up on a DynamoDB stream batch, Lambda sends its on-failure destination
where the batch was (shard, sequence numbers, approximate arrival times), never the records,
and the stream keeps records for 24 hours only. The ledger table is the source of truth, so a
failed batch is replayed from the table instead: every entry written around its arrival times.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from forge.domain.calendar import as_utc
from forge.domain.views import TimeRange

# An entry's created_at is stamped before its transaction commits, and the stream's arrival
# times are whole seconds: a minute either side covers both.
REPLAY_MARGIN = timedelta(minutes=1)


class StreamBatchInfo(BaseModel):
    """`DDBStreamBatchInfo`: where a failed batch of a DynamoDB stream was."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    first_arrival: datetime = Field(alias="approximateArrivalOfFirstRecord")
    last_arrival: datetime = Field(alias="approximateArrivalOfLastRecord")
    shard_id: str | None = Field(default=None, alias="shardId")
    start_sequence_number: str | None = Field(default=None, alias="startSequenceNumber")
    end_sequence_number: str | None = Field(default=None, alias="endSequenceNumber")
    batch_size: int | None = Field(default=None, alias="batchSize")
    stream_arn: str | None = Field(default=None, alias="streamArn")


class StreamFailureRecord(BaseModel):
    """The record Lambda sends an on-failure destination for a DynamoDB stream batch (the
    parts replay uses; `requestContext`, `responseContext` and the rest are ignored)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    batch: StreamBatchInfo = Field(alias="DDBStreamBatchInfo")
    timestamp: datetime | None = None

    def replay_window(self, margin: timedelta = REPLAY_MARGIN) -> TimeRange:
        """The arrival times of the batch's first and last records, widened by `margin`."""
        first, last = sorted((as_utc(self.batch.first_arrival), as_utc(self.batch.last_arrival)))
        return TimeRange(first - margin, last + margin)


@dataclass(frozen=True)
class QueuedMessage:
    """One message of a queue, as received: deleting it takes its latest receipt handle."""

    message_id: str
    receipt: str
    body: str


def merge_windows(windows: Iterable[TimeRange]) -> list[TimeRange]:
    """Overlapping or touching windows as the fewest disjoint ones, in time order, so a burst
    of failures is replayed with one read of the table rather than one per failure."""
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted(_closed(w) for w in windows):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return [TimeRange(start, end) for start, end in merged]


def contains(outer: TimeRange, inner: TimeRange) -> bool:
    """Whether the closed window `inner` lies within the closed window `outer`."""
    (outer_start, outer_end), (inner_start, inner_end) = _closed(outer), _closed(inner)
    return outer_start <= inner_start and inner_end <= outer_end


def _closed(window: TimeRange) -> tuple[datetime, datetime]:
    if window.start is None or window.end is None:
        raise ValueError("a replay window is bounded on both sides")
    return window.start, window.end
