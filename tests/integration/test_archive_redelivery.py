"""The archiver under redelivery, on the ledger table's real stream: batches delivered again, in
another order, and with a poisoned record in them, leave exactly one JSON line per entry."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from forge.domain.calendar import Month
from forge.domain.money import Bucket
from forge.domain.records import LedgerKind
from forge.store.s3archive import S3Archive
from forge_tools.emulator import Emulator, Resources
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
