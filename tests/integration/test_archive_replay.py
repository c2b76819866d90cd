"""forge-admin archive replay on the emulator: the entries a failed archiver batch left out are
archived from the ledger table, in the archiver's lines, never twice and never as a second
object version; for a window, or for the on-failure records in the archiver's failure queue
(SQS)."""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from forge import wiring
from forge.domain.archive import archive_line, entry_series_prefix, object_seqs
from forge.domain.calendar import Month
from forge.domain.records import LedgerEntry, LedgerKind
from forge.store.dynamo.items import from_item
from forge.store.dynamo.stream import ledger_entry_from_stream_record
from forge.store.s3archive import S3Archive
from forge_tools import admin
from forge_tools.emulator import Emulator, Resources
from tests.conftest import clear_cached_factories
from tests.ledger_history import History, simulate_month

Handler = Callable[..., Any]
Record = dict[str, Any]


@pytest.fixture
def history(emulator: Emulator, aws_stack: Resources) -> History:
    return History(
        emulator.client("dynamodb"),
        aws_stack.tables["BudgetTable"],
        aws_stack.tables["LedgerTable"],
    )


@pytest.fixture
def bucket(emulator: Emulator, aws_stack: Resources) -> str:
    """The archive bucket, versioned as template.yaml declares it."""
    name = aws_stack.buckets["ArchiveBucket"]
    emulator.client("s3").put_bucket_versioning(
        Bucket=name, VersioningConfiguration={"Status": "Enabled"}
    )
    return name


@pytest.fixture
def queue_url(emulator: Emulator, bucket: str) -> str:
    """A fresh queue standing in for the stack's ArchiveFailureQueue."""
    return str(emulator.client("sqs").create_queue(QueueName=f"{bucket}-failures")["QueueUrl"])


def table_entries(emulator: Emulator, stack: Resources) -> list[LedgerEntry]:
    """Every ledger entry in the table, by a plain Scan (not the code under test)."""
    pages = emulator.client("dynamodb").get_paginator("scan")
    return [
        LedgerEntry.model_validate(plain)
        for page in pages.paginate(TableName=stack.tables["LedgerTable"])
        for plain in map(from_item, page["Items"])
        if plain.get("record_type") == "ledger_entry"
    ]


def entry_records(event: dict[str, Any]) -> list[Record]:
    """The stream records the archiver's event filter (template.yaml) lets through."""
    return [
        r
        for r in event["Records"]
        if r["eventName"] == "INSERT"
        and r["dynamodb"]["NewImage"].get("record_type") == {"S": "ledger_entry"}
    ]


def archive_versions(emulator: Emulator, bucket: str) -> dict[str, list[str]]:
    """The version ids of every object under ledger/, by key (no delete markers allowed)."""
    listed = emulator.client("s3").list_object_versions(Bucket=bucket, Prefix="ledger/")
    assert not listed.get("DeleteMarkers")
    versions: dict[str, list[str]] = {}
    for version in listed.get("Versions", []):
        versions.setdefault(version["Key"], []).append(version["VersionId"])
    return versions


def series_seqs(entries: Iterable[LedgerEntry]) -> set[tuple[str, int]]:
    return {(entry_series_prefix(e), e.seq) for e in entries}


def coverage(versions: Iterable[str]) -> Counter[tuple[str, int]]:
    """How many archive objects hold each (series, seq), from their keys alone."""
    held: Counter[tuple[str, int]] = Counter()
    for key in versions:
        found = object_seqs(key)
        assert found is not None, key
        held.update((found[0], seq) for seq in found[1])
    return held


def object_body(emulator: Emulator, bucket: str, key: str) -> bytes:
    return bytes(emulator.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())


def replay(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    """`forge-admin archive replay ...` in process; its one line of output, parsed."""
    capsys.readouterr()  # what came before (the archiver's logs) is not the command's
    admin.main(["archive", "replay", *argv])
    return printed_summary(capsys)


def printed_summary(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1, lines
    return dict(json.loads(lines[0]))


def counts(summary: dict[str, Any]) -> tuple[int, int, int, int]:
    """(entries seen, archived now, already archived, missing when checked)."""
    return (
        summary["entries_seen"],
        summary["entries_archived"],
        summary["already_archived"],
        summary["entries_missing"],
    )


@contextmanager
def s3_refusing(held: set[tuple[str, int]]) -> Iterator[None]:
    """S3 answers 503 to every PutObject of an object holding any of `held` (series, seq) sent
    by this process's S3 client (the one the archiver builds), as during an outage of those
    writes."""

    def refuse(params: dict[str, Any], **_: Any) -> None:
        if held.intersection(coverage([params.get("Key", "")])):
            raise ClientError(
                {
                    "Error": {"Code": "ServiceUnavailable", "Message": "injected outage"},
                    "ResponseMetadata": {"HTTPStatusCode": 503},
                },
                "PutObject",
            )

    events = wiring.s3_client().meta.events
    events.register("before-parameter-build.s3.PutObject", refuse, unique_id="refuse-puts")
    try:
        yield
    finally:
        events.unregister("before-parameter-build.s3.PutObject", unique_id="refuse-puts")


def on_failure_record(emulator: Emulator, failed: list[Record]) -> dict[str, Any]:
    """What Lambda sends the on-failure destination for a batch it gave up on: where its
    records were and when they arrived, never the records."""
    arrivals = sorted(
        datetime.fromtimestamp(r["dynamodb"]["ApproximateCreationDateTime"], UTC) for r in failed
    )
    stream_arn = failed[0]["eventSourceARN"]
    streams = emulator.client("dynamodbstreams")
    [shard] = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"]
    return {
        "requestContext": {
            "requestId": "c9b8fa9f-5a7f-4c2e-af9c-0c604cde93a5",
            "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:ArchiverFunction",
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": 11,
        },
        "responseContext": {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled",
        },
        "version": "1.0",
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "DDBStreamBatchInfo": {
            "shardId": shard["ShardId"],
            "startSequenceNumber": failed[0]["dynamodb"]["SequenceNumber"],
            "endSequenceNumber": failed[-1]["dynamodb"]["SequenceNumber"],
            "approximateArrivalOfFirstRecord": arrivals[0].strftime("%Y-%m-%dT%H:%M:%SZ"),
            "approximateArrivalOfLastRecord": arrivals[-1].strftime("%Y-%m-%dT%H:%M:%SZ"),
            "batchSize": len(failed),
            "streamArn": stream_arn,
        },
    }


def queued(emulator: Emulator, queue_url: str) -> tuple[int, int]:
    """(visible, in flight) messages of the queue."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    got = emulator.client("sqs").get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)
    return int(got["Attributes"][names[0]]), int(got["Attributes"][names[1]])


def test_a_failed_batch_is_rebuilt_from_the_table_as_the_archiver_writes_it(
    emulator: Emulator,
    aws_stack: Resources,
    bucket: str,
    history: History,
    load_handler: Callable[[str], Handler],
    lambda_context: Any,
    ledger_stream_event: Callable[[], dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a month of paid calls, payments, a code, a refund and an adjustment on the table
    simulate_month(history, Month(2025, 3))
    entries = table_entries(emulator, aws_stack)
    records = entry_records(ledger_stream_event())
    assert len(records) == len(entries)
    # and the archiver's writes of every object holding every third entry refused by S3, in
    # batches of 5, until Lambda gave up on those records
    poisoned = series_seqs(e for r in records[::3] if (e := ledger_entry_from_stream_record(r)))
    handler = load_handler("archiver")
    failed: list[str] = []
    with s3_refusing(poisoned):
        for start in range(0, len(records), 5):
            batch = {"Records": copy.deepcopy(records[start : start + 5])}
            try:
                answer = handler(batch, lambda_context)["batchItemFailures"]
            except RuntimeError:  # every record failed: the invocation fails
                numbers = [r["dynamodb"]["SequenceNumber"] for r in batch["Records"]]
                answer = [{"itemIdentifier": number} for number in numbers]
            failed += [f["itemIdentifier"] for f in answer]
    archived = coverage(archive_versions(emulator, bucket))
    missing = series_seqs(entries) - set(archived)
    assert poisoned <= missing and len(failed) == len(missing)
    assert set(archived) | missing == series_seqs(entries)

    # When an operator replays the months they were written in
    summary = replay(capsys, "--from", "2025-02-01", "--to", "2025-04-01")

    # Then it archived exactly the missing entries
    assert counts(summary) == (
        len(entries),
        len(missing),
        len(entries) - len(missing),
        len(missing),
    )
    assert summary["from"] == "2025-02-01T00:00:00Z" and summary["dry_run"] is False
    # and the archive is complete: each entry in one object, of one version, and nothing else
    versions = archive_versions(emulator, bucket)
    assert coverage(versions) == Counter(series_seqs(entries))
    assert all(len(ids) == 1 for ids in versions.values())
    # in the lines the archiver makes of the entries' stream records
    from_stream = [e for r in records if (e := ledger_entry_from_stream_record(r))]
    lines = b"".join(object_body(emulator, bucket, key) for key in versions)
    assert sorted(lines.splitlines(keepends=True)) == sorted(map(archive_line, from_stream))
    # and the failed records, delivered to the archiver after all, change no object, and every
    # entry still reads back once
    account = entries[0].account_id
    late = [r for r in records if r["dynamodb"]["SequenceNumber"] in failed]
    assert handler({"Records": copy.deepcopy(late)}, lambda_context) == {"batchItemFailures": []}
    after = archive_versions(emulator, bucket)
    assert all(after[key] == ids for key, ids in versions.items())
    assert all(len(ids) == 1 for ids in after.values())
    archive = S3Archive(emulator.client("s3"), bucket)
    assert archive.entries(account) == sorted(entries, key=lambda e: (e.bucket.value, e.seq))


def test_a_dry_run_writes_nothing_and_a_second_replay_writes_nothing(
    emulator: Emulator,
    bucket: str,
    history: History,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given six top-ups on one day, of which the archiver wrote the first two
    day = datetime(2025, 3, 10, 8, tzinfo=UTC)
    moves = [(day + timedelta(hours=h), LedgerKind.TOPUP, 1_000_000) for h in range(6)]
    entries = history.moves("acct_twice", *moves, archive=False)
    archive = S3Archive(emulator.client("s3"), bucket)
    assert all(archive.put_entry(e) for e in entries[:2])
    window = ("--from", "2025-03-10", "--to", "2025-03-11")

    # When a dry run looks first, then replay runs twice
    dry = replay(capsys, *window, "--dry-run")
    after_dry = archive_versions(emulator, bucket)
    first = replay(capsys, *window)
    after_first = archive_versions(emulator, bucket)
    second = replay(capsys, *window)

    # Then the dry run reported the four missing entries and wrote nothing
    assert counts(dry) == (6, 0, 2, 4) and dry["dry_run"] is True
    assert coverage(after_dry) == Counter(series_seqs(entries[:2]))
    # the first replay archived them in one object, the second wrote nothing, and no object
    # has a second version
    assert counts(first) == (6, 4, 2, 4)
    assert counts(second) == (6, 0, 6, 0)
    assert archive_versions(emulator, bucket) == after_first
    assert len(after_first) == 3 and coverage(after_first) == Counter(series_seqs(entries))
    assert all(len(ids) == 1 for ids in after_first.values())


def test_entries_outside_the_window_are_not_touched(
    emulator: Emulator,
    bucket: str,
    history: History,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given unarchived entries just before [10:00, 11:00), at its start, inside and at its end
    start = datetime(2025, 3, 10, 10, tzinfo=UTC)
    times = [start - timedelta(microseconds=1), start, start + timedelta(minutes=30)]
    times.append(start + timedelta(hours=1))
    before, at_start, inside, at_end = history.moves(
        "acct_window", *[(t, LedgerKind.TOPUP, 1) for t in times], archive=False
    )
    # and another account's entry inside it, already archived
    other = history.move("acct_other", start + timedelta(minutes=5), LedgerKind.TOPUP, 1)
    assert S3Archive(emulator.client("s3"), bucket).put_entry(other)
    archived = archive_versions(emulator, bucket)

    # When the window is replayed (bounds in two ISO forms)
    summary = replay(capsys, "--from", "2025-03-10T10:00:00Z", "--to", "2025-03-10T11:00:00+00:00")

    # Then only the entries inside it were written; the archived one kept its only version
    assert counts(summary) == (3, 2, 1, 2)
    versions = archive_versions(emulator, bucket)
    assert coverage(versions) == Counter(series_seqs([at_start, inside, other]))
    assert {k: v for k, v in versions.items() if k in archived} == archived
    assert not series_seqs([before, at_end]) & set(coverage(versions))


def test_the_failure_queue_records_are_replayed_and_their_messages_deleted(
    emulator: Emulator,
    aws_stack: Resources,
    bucket: str,
    queue_url: str,
    history: History,
    load_handler: Callable[[str], Handler],
    lambda_context: Any,
    ledger_stream_event: Callable[[], dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given three entries written just now, and one stamped an hour ago
    now = datetime.now(UTC)
    recent = history.moves("acct_recent", *[(now, LedgerKind.TOPUP, 1_000_000)] * 3)
    earlier = history.move("acct_earlier", now - timedelta(hours=1), LedgerKind.TOPUP, 5)
    records = entry_records(ledger_stream_event())
    batch = [r for r in records if "acct_recent" in r["dynamodb"]["Keys"]["pk"]["S"]]
    # and the archiver failing that batch whole (its bucket gone) until Lambda gave up on it
    monkeypatch.setenv("ARCHIVE_BUCKET", f"{bucket}-gone")
    clear_cached_factories()
    with pytest.raises(RuntimeError, match="none of the batch's 3 records was archived"):
        load_handler("archiver")({"Records": copy.deepcopy(batch)}, lambda_context)
    monkeypatch.setenv("ARCHIVE_BUCKET", bucket)
    clear_cached_factories()
    assert archive_versions(emulator, bucket) == {}
    # and parked its on-failure record in the failure queue
    body = json.dumps(on_failure_record(emulator, batch))
    emulator.client("sqs").send_message(QueueUrl=queue_url, MessageBody=body)

    # When the operator replays from the queue
    summary = replay(capsys, "--from-queue", queue_url)

    # Then the batch's window was replayed, and its message deleted
    assert summary["messages"] == summary["windows"] == summary["messages_deleted"] == 1
    assert summary["messages_unreadable"] == []
    assert counts(summary) == (3, 3, 0, 3)
    versions = archive_versions(emulator, bucket)
    assert coverage(versions) == Counter(series_seqs(recent))  # not the hour-old entry
    assert not series_seqs([earlier]) & set(coverage(versions))
    assert queued(emulator, queue_url) == (0, 0)


def test_a_dry_run_of_the_queue_deletes_nothing_and_a_foreign_message_stays(
    emulator: Emulator,
    bucket: str,
    queue_url: str,
    history: History,
    ledger_stream_event: Callable[[], dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given an unarchived entry written just now, the on-failure record of its stream record,
    # and a message in the queue that is not an on-failure record
    entry = history.move("acct_queue", datetime.now(UTC), LedgerKind.TOPUP, 7)
    sqs = emulator.client("sqs")
    record = json.dumps(on_failure_record(emulator, entry_records(ledger_stream_event())))
    sqs.send_message(QueueUrl=queue_url, MessageBody=record)
    foreign = sqs.send_message(QueueUrl=queue_url, MessageBody='{"hello": "queue"}')["MessageId"]

    # When a dry run reads the queue
    with pytest.raises(SystemExit) as exited:
        replay(capsys, "--from-queue", queue_url, "--dry-run")
    dry = printed_summary(capsys)

    # Then it reports the missing object, writes and deletes nothing, hides nothing, and says
    # (exit 1) that a message is not one it can replay
    assert exited.value.code == 1
    assert counts(dry) == (1, 0, 0, 1) and dry["messages_deleted"] == 0
    assert dry["messages_unreadable"] == [foreign]
    assert archive_versions(emulator, bucket) == {}
    assert queued(emulator, queue_url) == (2, 0)

    # When it runs for real, the record's message is replayed and deleted; the foreign one stays
    with pytest.raises(SystemExit) as exited:
        replay(capsys, "--from-queue", queue_url)
    assert exited.value.code == 1
    assert counts(printed_summary(capsys)) == (1, 1, 0, 1)
    assert coverage(archive_versions(emulator, bucket)) == Counter(series_seqs([entry]))
    assert queued(emulator, queue_url) == (1, 0)
    [left] = sqs.receive_message(QueueUrl=queue_url)["Messages"]
    assert left["MessageId"] == foreign


def test_with_a_stack_the_queue_is_its_failure_queue_output(
    emulator: Emulator,
    aws_stack: Resources,
    bucket: str,
    queue_url: str,
    history: History,
    ledger_stream_event: Callable[[], dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a deployed stack whose outputs name this test's tables, bucket and failure queue,
    # and a shell that names none of them
    outputs = {
        "BudgetTableName": aws_stack.tables["BudgetTable"],
        "LedgerTableName": aws_stack.tables["LedgerTable"],
        "ArchiveBucketName": bucket,
        "ArchiveFailureQueueUrl": queue_url,
    }
    template = {
        "Resources": {"Placeholder": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {name: {"Value": value} for name, value in outputs.items()},
    }
    stack = f"{bucket}-stack"
    emulator.client("cloudformation").create_stack(
        StackName=stack, TemplateBody=json.dumps(template)
    )
    stack_env = ("BUDGET_TABLE", "LEDGER_TABLE", "ARCHIVE_BUCKET", "ARCHIVE_FAILURE_QUEUE_URL")
    for name in (*stack_env, "FORGE_PROVIDER_SECRET_ID"):
        monkeypatch.setenv(name, "-")  # recorded, so what --stack sets is undone after the test
        monkeypatch.delenv(name)
    # and an on-failure record in the queue for an entry the archiver missed
    entry = history.move("acct_stack", datetime.now(UTC), LedgerKind.TOPUP, 3)
    record = json.dumps(on_failure_record(emulator, entry_records(ledger_stream_event())))
    emulator.client("sqs").send_message(QueueUrl=queue_url, MessageBody=record)

    # When --from-queue is given no URL
    summary = replay_with_stack(capsys, stack)

    # Then the stack's failure queue was replayed
    assert summary["queue"] == queue_url and summary["messages_deleted"] == 1
    assert coverage(archive_versions(emulator, bucket)) == Counter(series_seqs([entry]))
    assert queued(emulator, queue_url) == (0, 0)


def replay_with_stack(capsys: pytest.CaptureFixture[str], stack: str) -> dict[str, Any]:
    capsys.readouterr()
    admin.main(["--stack", stack, "archive", "replay", "--from-queue"])
    return printed_summary(capsys)


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        ([], "needs --from and --to, or --from-queue"),
        (["--from", "2025-03-01"], "needs --from and --to, or --from-queue"),
        (["--from-queue", "--from", "2025-03-01"], "drop --from and --to"),
        (["--from-queue"], "pass --from-queue QUEUE_URL, or --stack NAME"),
    ],
)
def test_replay_says_in_one_line_what_it_needs(
    aws_stack: Resources,
    argv: list[str],
    said: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("ARCHIVE_FAILURE_QUEUE_URL", raising=False)
    with pytest.raises(SystemExit) as exited:
        admin.main(["archive", "replay", *argv])
    assert exited.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("forge-admin: ") and said in line
