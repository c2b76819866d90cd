"""The archiver under redelivery, on the ledger table's real stream: batches delivered again, in
another order, and with a poisoned record in them, leave exactly one JSON line per entry;
batches cut at other boundaries overlap what is archived, and each entry still reads back
once, into its statement and its compacted month."""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from forge.domain.archive import ArchiveRun, entry_object_key, entry_series_prefix, object_seqs
from forge.domain.calendar import Month
from forge.domain.errors import ArchiveUnavailable
from forge.domain.money import Bucket
from forge.domain.records import LedgerEntry, LedgerKind
from forge.ledger.statements import compact_month, ensure_statement
from forge.store.s3archive import S3Archive
from forge_tools.emulator import Emulator, Resources
from forge_tools.s3_requests import S3Requests
from tests.ledger_history import History, simulate_month

Handler = Callable[..., Any]


def archived_lines(emulator: Emulator, stack: Resources) -> list[dict[str, Any]]:
    """Every JSON line of every archive object, in key order."""
    s3, bucket = emulator.client("s3"), stack.buckets["ArchiveBucket"]
    lines = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="ledger/"):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read().decode()
            lines += [json.loads(line) for line in body.splitlines() if line.strip()]
    return lines


@pytest.fixture
def history(emulator: Emulator, aws_stack: Resources) -> History:
    return History(
        emulator.client("dynamodb"),
        aws_stack.tables["BudgetTable"],
        aws_stack.tables["LedgerTable"],
    )


def test_redelivered_and_poisoned_batches_archive_each_entry_exactly_once(
    emulator: Emulator,
    aws_stack: Resources,
    history: History,
    load_handler: Callable[[str], Handler],
    lambda_context: Any,
    ledger_stream_event: Callable[[], dict[str, Any]],
) -> None:
    # Given a month of record on the ledger table, its stream cut into batches of 7
    story = simulate_month(history, Month(2025, 3))
    records = ledger_stream_event()["Records"]
    entries = [e for b in Bucket for e in history.store.list_entries(story.account_id, b)]
    # (moto's INSERT image of an aggregate an update created holds only its keys)
    kinds = [r["dynamodb"]["NewImage"].get("record_type", {}).get("S") for r in records]
    assert kinds.count("ledger_entry") == len(entries)
    batches = [{"Records": records[i : i + 7]} for i in range(0, len(records), 7)]
    handler = load_handler("archiver")

    # When every batch is delivered, then all again in reverse order (a replay after a
    # failure), then the first batch once more with a poisoned ledger record in the middle
    for batch in batches + batches[::-1]:
        assert handler(copy.deepcopy(batch), lambda_context) == {"batchItemFailures": []}
    poisoned = copy.deepcopy(next(r for r in records if "ledger_entry" in json.dumps(r)))
    poisoned["dynamodb"]["SequenceNumber"] = "999999999999"
    poisoned["dynamodb"]["NewImage"]["balance_after"] = {"S": "lots"}
    first = copy.deepcopy(batches[0]["Records"])
    outcome = handler({"Records": [*first[:3], poisoned, *first[3:]]}, lambda_context)

    # Then only the poisoned record is reported, and the archive holds each entry once
    assert outcome == {"batchItemFailures": [{"itemIdentifier": "999999999999"}]}
    lines = archived_lines(emulator, aws_stack)
    assert sorted(line["entry_id"] for line in lines) == sorted(e.entry_id for e in entries)
    archive = S3Archive(emulator.client("s3"), aws_stack.buckets["ArchiveBucket"])
    assert archive.entries(story.account_id) == sorted(
        entries, key=lambda e: (e.bucket.value, e.seq)
    )


def test_an_entry_from_a_newer_schema_is_reported_not_misread(
    aws_stack: Resources,
    history: History,
    load_handler: Callable[[str], Handler],
    lambda_context: Any,
    ledger_stream_event: Callable[[], dict[str, Any]],
) -> None:
    history.move("acct_schema", Month(2025, 3).start, LedgerKind.TOPUP, 1_000_000)
    [record] = [r for r in ledger_stream_event()["Records"] if "ledger_entry" in json.dumps(r)]
    later = copy.deepcopy(record)
    later["dynamodb"]["SequenceNumber"] = "42"
    later["dynamodb"]["NewImage"]["schema_version"] = {"N": "2"}

    outcome = load_handler("archiver")({"Records": [record, later]}, lambda_context)

    assert outcome == {"batchItemFailures": [{"itemIdentifier": "42"}]}


def object_versions(emulator: Emulator, stack: Resources) -> dict[str, int]:
    s3, bucket = emulator.client("s3"), stack.buckets["ArchiveBucket"]
    listed = s3.list_object_versions(Bucket=bucket, Prefix="ledger/")
    return dict(Counter(v["Key"] for v in listed.get("Versions", [])))


def test_batches_cut_at_other_boundaries_overlap_and_every_entry_reads_back_once(
    emulator: Emulator,
    aws_stack: Resources,
    history: History,
    load_handler: Callable[[str], Handler],
    lambda_context: Any,
    ledger_stream_event: Callable[[], dict[str, Any]],
) -> None:
    # Given a month of record on the ledger table, archived from its stream in batches of 7
    # into a versioned bucket (as template.yaml declares it)
    s3, bucket = emulator.client("s3"), aws_stack.buckets["ArchiveBucket"]
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    month = Month(2025, 3)
    story = simulate_month(history, month)
    records = ledger_stream_event()["Records"]
    handler = load_handler("archiver")
    for start in range(0, len(records), 7):
        assert handler({"Records": copy.deepcopy(records[start : start + 7])}, lambda_context) == {
            "batchItemFailures": []
        }
    archive = S3Archive(s3, bucket)
    once = archive.entries(story.account_id)
    statement = ensure_statement(
        archive, history.views, story.account_id, month, now=month.end + timedelta(hours=2)
    )

    # When the whole stream is delivered again, cut in batches of 5 and of 11 (a retry after a
    # partial failure starts where the failure was)
    for size in (5, 11):
        for start in range(0, len(records), size):
            batch = {"Records": copy.deepcopy(records[start : start + size])}
            assert handler(batch, lambda_context) == {"batchItemFailures": []}

    # Then objects overlap (the test is not vacuous), no object was written twice,
    entries = [e for b in Bucket for e in history.store.list_entries(story.account_id, b)]
    versions = object_versions(emulator, aws_stack)
    held = Counter(
        (found[0], seq) for key in versions if (found := object_seqs(key)) for seq in found[1]
    )
    assert max(held.values()) > 1 and set(versions.values()) == {1}
    assert set(held) == {(entry_series_prefix(e), e.seq) for e in entries}
    # each entry reads back once, as the table holds it,
    assert archive.entries(story.account_id) == once
    assert sorted(once, key=lambda e: e.entry_id) == sorted(entries, key=lambda e: e.entry_id)
    # every entry counts as archived,
    assert len(archive.archived_keys(entries)) == len(entries)
    # and the month's statement and its compaction see each entry once
    # (rebuilt: StatementMismatch if its bytes differ from the first build's)
    assert (
        ensure_statement(
            archive,
            history.views,
            story.account_id,
            month,
            rebuild=True,
            now=month.end + timedelta(hours=2),
        )
        == statement
    )
    close = compact_month(
        archive, history.views, story.account_id, month, now=month.end + timedelta(hours=2)
    )
    assert sum(part.entries for part in close.buckets) == len(
        [e for e in entries if Month.of(e.created_at) == month]
    )


def entry(seq: int, amount: int = 5) -> LedgerEntry:
    return LedgerEntry(
        entry_id=f"le_{seq}",
        account_id="acct_runs",
        bucket=Bucket.CREDIT,
        seq=seq,
        kind=LedgerKind.TOPUP,
        amount=amount,
        balance_after=5 * seq,
        created_at=Month(2025, 3).start + timedelta(hours=seq),
    )


def test_overlapping_objects_read_back_each_entry_once(
    emulator: Emulator, aws_stack: Resources
) -> None:
    # Given entries 1-4 in one object, and 2 and 3-4 archived again on their own
    s3 = emulator.client("s3")
    archive = S3Archive(s3, aws_stack.buckets["ArchiveBucket"])
    entries = [entry(seq) for seq in range(1, 6)]
    assert archive.put_entries(entries[:4]) == 4
    assert archive.put_entry(entries[1]) is True
    assert archive.put_run(ArchiveRun(tuple(entries[2:4]))) is True
    assert archive.put_entries(entries[:4]) == 0  # the same run again: nothing written
    assert archive.put_entry(entries[4]) is True

    # When the account's entries are read: every object, each entry once
    requests = S3Requests(s3)
    assert archive.entries("acct_runs") == entries
    assert requests.by_operation["GetObject"] == 4


def test_objects_that_disagree_about_an_entry_are_refused(
    emulator: Emulator, aws_stack: Resources
) -> None:
    s3, bucket = emulator.client("s3"), aws_stack.buckets["ArchiveBucket"]
    archive = S3Archive(s3, bucket)
    archive.put_entries([entry(1), entry(2)])
    archive.put_entry(entry(2, amount=6))  # another amount, under the same seq
    with pytest.raises(ArchiveUnavailable, match="disagree about seq 2"):
        archive.entries("acct_runs")


def test_an_object_holding_other_seqs_than_its_key_names_is_refused(
    emulator: Emulator, aws_stack: Resources
) -> None:
    s3, bucket = emulator.client("s3"), aws_stack.buckets["ArchiveBucket"]
    prefix = entry_series_prefix(entry(1))
    body = ArchiveRun((entry(1), entry(2))).body
    s3.put_object(Bucket=bucket, Key=entry_object_key(prefix, 1, 3), Body=body)
    with pytest.raises(ArchiveUnavailable, match="does not match its key"):
        S3Archive(s3, bucket).entries("acct_runs")


def test_a_ledger_object_under_a_name_the_archiver_never_writes_is_refused(
    emulator: Emulator, aws_stack: Resources
) -> None:
    s3, bucket = emulator.client("s3"), aws_stack.buckets["ArchiveBucket"]
    key = entry_series_prefix(entry(1)) + "1.jsonl"  # not 12 digits: never an archiver's key
    s3.put_object(Bucket=bucket, Key=key, Body=ArchiveRun((entry(1),)).body)
    with pytest.raises(ArchiveUnavailable, match="has no entry key"):
        S3Archive(s3, bucket).entries("acct_runs")


def test_entries_inside_a_run_count_as_archived(emulator: Emulator, aws_stack: Resources) -> None:
    archive = S3Archive(emulator.client("s3"), aws_stack.buckets["ArchiveBucket"])
    archive.put_entries([entry(seq) for seq in range(1, 6)])
    wanted = [entry(3), entry(5), entry(7)]
    prefix = entry_series_prefix(entry(1))
    assert archive.archived_keys(wanted) == {
        entry_object_key(prefix, 3),
        entry_object_key(prefix, 5),
    }
