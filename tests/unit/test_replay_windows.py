"""Archive replay, pure: Lambda's on-failure record for a DynamoDB stream batch read into the
window to replay, and overlapping windows merged."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from forge.domain.archive import archive_key, entry_object_key, entry_series_prefix
from forge.domain.archive_replay import StreamFailureRecord, contains, merge_windows
from forge.domain.money import Bucket
from forge.domain.records import LedgerEntry, LedgerKind
from forge.domain.views import TimeRange

# The shape Lambda documents for a DynamoDB stream's on-failure record (no records in it).
ON_FAILURE = {
    "requestContext": {
        "requestId": "316aa6d0-8154-xmpl-9af7-85d5f4a6bc81",
        "functionArn": "arn:aws:lambda:us-east-2:123456789012:function:myfunction",
        "condition": "RetryAttemptsExhausted",
        "approximateInvokeCount": 11,
    },
    "responseContext": {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    },
    "version": "1.0",
    "timestamp": "2019-11-14T00:13:49.717Z",
    "DDBStreamBatchInfo": {
        "shardId": "shardId-00000001573689847184-864758bb",
        "startSequenceNumber": "800000000003126276362",
        "endSequenceNumber": "800000000003126276370",
        "approximateArrivalOfFirstRecord": "2019-11-14T00:13:19Z",
        "approximateArrivalOfLastRecord": "2019-11-14T00:13:21Z",
        "batchSize": 9,
        "streamArn": "arn:aws:dynamodb:us-east-2:123456789012:table/mytable/stream/"
        "2019-11-14T00:04:06.388",
    },
}


def at(minute: int, second: int = 0) -> datetime:
    return datetime(2019, 11, 14, 0, minute, second, tzinfo=UTC)


def test_the_window_is_the_batch_arrivals_widened_by_a_minute_each_side() -> None:
    record = StreamFailureRecord.model_validate_json(json.dumps(ON_FAILURE))

    assert record.batch.shard_id == "shardId-00000001573689847184-864758bb"
    assert record.replay_window() == TimeRange(at(12, 19), at(14, 21))
    assert record.replay_window(timedelta(0)) == TimeRange(at(13, 19), at(13, 21))


@pytest.mark.parametrize(
    "body",
    [
        # a Kinesis stream's record, an asynchronous invocation's, no arrival times, not JSON
        json.dumps(
            {k: v for k, v in ON_FAILURE.items() if k != "DDBStreamBatchInfo"}
            | {"KinesisBatchInfo": ON_FAILURE["DDBStreamBatchInfo"]}
        ),
        json.dumps({"requestContext": {}, "requestPayload": {"Records": []}}),
        json.dumps({"DDBStreamBatchInfo": {"shardId": "s", "batchSize": 1}}),
        "not json",
    ],
)
def test_other_messages_are_not_on_failure_records(body: str) -> None:
    with pytest.raises(ValidationError):
        StreamFailureRecord.model_validate_json(body)


def test_overlapping_and_touching_windows_merge_and_others_stay_apart() -> None:
    windows = [
        TimeRange(at(30), at(32)),
        TimeRange(at(10), at(12)),
        TimeRange(at(11), at(13)),  # overlaps the one before
        TimeRange(at(13), at(14)),  # touches it
        TimeRange(at(11, 30), at(11, 40)),  # inside
    ]

    merged = merge_windows(windows)

    assert merged == [TimeRange(at(10), at(14)), TimeRange(at(30), at(32))]
    assert all(any(contains(m, w) for m in merged) for w in windows)
    assert not contains(merged[1], windows[1])
    assert merge_windows([]) == []
    with pytest.raises(ValueError, match="bounded"):
        merge_windows([TimeRange(at(1), None)])


def test_an_entry_key_is_its_series_prefix_and_its_seq() -> None:
    entry = LedgerEntry(
        entry_id="le_1",
        account_id="acct_u",
        bucket=Bucket.RMB,
        seq=42,
        kind=LedgerKind.TOPUP,
        amount=1,
        balance_after=1,
        created_at=datetime(2025, 3, 31, 23, 59, 59, tzinfo=UTC),
    )

    assert entry_series_prefix(entry) == "ledger/acct_u/2025/03/rmb-"
    assert archive_key(entry) == "ledger/acct_u/2025/03/rmb-000000000042.jsonl"
    assert entry_object_key(entry_series_prefix(entry), 41) < archive_key(entry)
