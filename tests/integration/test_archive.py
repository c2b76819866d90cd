"""The archiver: ledger stream records -> one S3 object per run of consecutive entries of a
series, idempotent, poison-tolerant."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.dynamodb.types import TypeSerializer
from botocore.config import Config

from forge.domain.archive import archive_line
from forge.domain.errors import ArchiveUnavailable
from forge.domain.money import Bucket
from forge.domain.records import Hold, LedgerEntry, LedgerKind, Receipt
from forge.store.dynamo.store import DynamoStore
from forge.store.s3archive import S3Archive
from forge_tools.emulator import Emulator, Resources

EVENTS = Path(__file__).resolve().parents[2] / "events"
Handler = Callable[..., Any]
ACCOUNT = "acct_arch"
_serializer = TypeSerializer()


def entry(
    seq: int, amount: int, balance_after: int, kind: LedgerKind = LedgerKind.CHARGE
) -> LedgerEntry:
    return LedgerEntry(
        entry_id=f"le_{seq}",
        account_id=ACCOUNT,
        bucket=Bucket.CREDIT,
        seq=seq,
        kind=kind,
        amount=amount,
        balance_after=balance_after,
        created_at=datetime(2025, 3, 10, 8, 0, seq, tzinfo=UTC),
        request_id=f"req_{seq}",
    )


def ledger_image(item: LedgerEntry) -> dict[str, Any]:
    """The item DynamoStore writes for an entry, as DynamoDB JSON."""
    values = {
        "pk": f"ACCT#{item.account_id}",
        "sk": f"ENTRY#{item.bucket.value}#{item.seq:012d}",
        "record_type": "ledger_entry",
        **item.model_dump(mode="json", exclude_none=True),
    }
    return {k: _serializer.serialize(v) for k, v in values.items()}


def stream_record(image: dict[str, Any], sequence_number: str) -> dict[str, Any]:
    return {
        "eventID": f"evt{sequence_number}",
        "eventName": "INSERT",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": 1741594800,
            "Keys": {"pk": image["pk"], "sk": image["sk"]},
            "NewImage": image,
            "SequenceNumber": sequence_number,
            "SizeBytes": 512,
            "StreamViewType": "NEW_IMAGE",
        },
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/ledger/stream/x",
    }


def sample_event() -> dict[str, Any]:
    return dict(json.loads((EVENTS / "archiver.json").read_text()))


def archived_keys(emulator: Emulator, stack: Resources) -> list[str]:
    listed = emulator.client("s3").list_objects_v2(
        Bucket=stack.buckets["ArchiveBucket"], Prefix="ledger/"
    )
    return [item["Key"] for item in listed.get("Contents", [])]


def object_body(emulator: Emulator, stack: Resources, key: str) -> bytes:
    got = emulator.client("s3").get_object(Bucket=stack.buckets["ArchiveBucket"], Key=key)
    return bytes(got["Body"].read())


def archive(stack: Resources, emulator: Emulator) -> S3Archive:
    return S3Archive(emulator.client("s3"), stack.buckets["ArchiveBucket"])


def test_the_sample_event_archives_the_entry_and_skips_the_receipt(
    emulator: Emulator,
    aws_stack: Resources,
    load_handler: Callable[[str], Handler],
    lambda_context: Any,
) -> None:
    # Given the sample stream batch: one ledger entry INSERT, one receipt INSERT
    handler = load_handler("archiver")

    # When the archiver handles it
    response = handler(sample_event(), lambda_context)

    # Then nothing failed and exactly the entry's object exists, holding its JSON line
    assert response == {"batchItemFailures": []}
    key = "ledger/acct_demo/2025/03/credit-000000000002.jsonl"
    assert archived_keys(emulator, aws_stack) == [key]
    body = (
        emulator.client("s3")
        .get_object(Bucket=aws_stack.buckets["ArchiveBucket"], Key=key)["Body"]
        .read()
    )
    [stored] = archive(aws_stack, emulator).entries("acct_demo")
    assert body == archive_line(stored)
    assert (stored.entry_id, stored.amount, stored.balance_after) == (
        "le_req_0195959d1f4d2b6e8c1a7f3e",
        -1246,
        4_999_998_754,
    )


def test_redelivering_a_batch_creates_no_duplicates_or_new_versions(
    emulator: Emulator,
    aws_stack: Resources,
    load_handler: Callable[[str], Handler],
    lambda_context: Any,
) -> None:
    # Given a versioned bucket (as in template.yaml), where an overwrite would leave a trace
    s3 = emulator.client("s3")
    bucket = aws_stack.buckets["ArchiveBucket"]
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    entries = [entry(1, 100, 100, LedgerKind.TOPUP), entry(2, -30, 70), entry(3, -20, 50)]
    event = {"Records": [stream_record(ledger_image(e), str(100 + e.seq)) for e in entries]}
    handler = load_handler("archiver")

    # When the same batch is delivered twice
    first = handler(event, lambda_context)
    second = handler(json.loads(json.dumps(event)), lambda_context)

    # Then the three consecutive entries are archived once, in one object of one version
    run = "ledger/acct_arch/2025/03/credit-000000000001-000000000003.jsonl"
    assert first == second == {"batchItemFailures": []}
    assert archived_keys(emulator, aws_stack) == [run]
    versions = s3.list_object_versions(Bucket=bucket, Prefix="ledger/")["Versions"]
    assert [v["Key"] for v in versions] == [run]
    assert object_body(emulator, aws_stack, run) == b"".join(archive_line(e) for e in entries)
    assert archive(aws_stack, emulator).entries(ACCOUNT) == entries


def test_put_entry_reports_an_already_archived_entry(
    emulator: Emulator, aws_stack: Resources
) -> None:
    store = archive(aws_stack, emulator)
    first = entry(1, 5, 5, LedgerKind.TOPUP)
    assert store.put_entry(first) is True
    assert store.put_entry(first) is False
    assert store.entries(ACCOUNT) == [first]


def test_one_poisoned_record_fails_alone(
    emulator: Emulator,
    aws_stack: Resources,
    load_handler: Callable[[str], Handler],
    lambda_context: Any,
) -> None:
    # Given a batch whose second record is a ledger entry missing its amounts
    good_1, good_2 = entry(1, 100, 100, LedgerKind.TOPUP), entry(2, -30, 70)
    poisoned = ledger_image(entry(9, -1, 1))
    del poisoned["amount"], poisoned["balance_after"]
    receipt = sample_event()["Records"][1]
    event = {
        "Records": [
            stream_record(ledger_image(good_1), "201"),
            stream_record(poisoned, "202"),
            stream_record(ledger_image(good_2), "203"),
            receipt,
        ]
    }

    # When the archiver handles it
    response = load_handler("archiver")(event, lambda_context)

    # Then exactly the poisoned record is reported, and the good ones are archived
    assert response == {"batchItemFailures": [{"itemIdentifier": "202"}]}
    assert archived_keys(emulator, aws_stack) == [
        "ledger/acct_arch/2025/03/credit-000000000001-000000000002.jsonl"
    ]
    assert archive(aws_stack, emulator).entries(ACCOUNT) == [good_1, good_2]


def test_a_batch_where_every_record_fails_fails_the_invocation(
    aws_stack: Resources,
    load_handler: Callable[[str], Handler],
    lambda_context: Any,
) -> None:
    poisoned = ledger_image(entry(1, 1, 1))
    del poisoned["seq"]
    with pytest.raises(RuntimeError, match="none of the batch's 1 records was archived"):
        load_handler("archiver")({"Records": [stream_record(poisoned, "1")]}, lambda_context)


def test_the_real_ledger_stream_is_archived_exactly(
    emulator: Emulator,
    aws_stack: Resources,
    load_handler: Callable[[str], Handler],
    lambda_context: Any,
    ledger_stream_event: Callable[[], dict[str, Any]],
) -> None:
    # Given a top-up and a settled charge written by the DynamoDB adapter
    ledger_table = aws_stack.tables["LedgerTable"]
    dynamodb = emulator.client("dynamodb")
    store = DynamoStore(dynamodb, aws_stack.tables["BudgetTable"], ledger_table)
    store.create_account(ACCOUNT, "Archive Ltd")
    store.credit(ACCOUNT, Bucket.CREDIT, 2_000_000, kind=LedgerKind.TOPUP, entry_id="le_top")
    hold = Hold(
        request_id="req_stream",
        account_id=ACCOUNT,
        key_id="key_1",
        bucket=Bucket.CREDIT,
        amount=50_000,
        expires_at=datetime.now(UTC) + timedelta(minutes=15),
    )
    store.reserve(hold)
    receipt = Receipt(
        request_id="req_stream",
        account_id=ACCOUNT,
        key_id="key_1",
        project_id="proj_1",
        requested_model="gpt-4o-mini",
        status="succeeded",
        final_route="openai/gpt-4o-mini",
    )
    store.settle(hold, 1_246, receipt)

    # When the table's stream records are delivered the way Lambda delivers them
    event = ledger_stream_event()
    # By key, as moto's INSERT image of an item an update created holds only its keys: the
    # entries and the receipt, and the usage cell it counts in (which the archiver passes over)
    keys = [
        (r["dynamodb"]["Keys"]["pk"]["S"], r["dynamodb"]["Keys"]["sk"]["S"])
        for r in event["Records"]
    ]
    assert {sk.split("#")[0] for pk, sk in keys if pk.startswith("ACCT#")} == {"ENTRY", "RCPT"}
    assert {pk.split("#")[0] for pk, _ in keys} == {"ACCT", "USAGE"}
    response = load_handler("archiver")(event, lambda_context)

    # Then the archive holds exactly the ledger, entry for entry
    assert response == {"batchItemFailures": []}
    expected = store.list_entries(ACCOUNT, Bucket.CREDIT)
    assert [e.kind for e in expected] == [LedgerKind.TOPUP, LedgerKind.CHARGE]
    assert archive(aws_stack, emulator).entries(ACCOUNT) == expected
    assert archived_keys(emulator, aws_stack) == [
        f"ledger/acct_arch/{expected[0].created_at:%Y/%m}/credit-000000000001-000000000002.jsonl"
    ]


def test_s3_failures_become_archive_unavailable(emulator: Emulator, aws_stack: Resources) -> None:
    missing_bucket = S3Archive(emulator.client("s3"), "forge-no-such-bucket")
    with pytest.raises(ArchiveUnavailable) as caught:
        missing_bucket.put_entry(entry(1, 1, 1))
    assert (caught.value.status, caught.value.code) == (503, "archive_unavailable")
    with pytest.raises(ArchiveUnavailable):
        missing_bucket.entries(ACCOUNT)

    dead = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:9",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    with pytest.raises(ArchiveUnavailable):
        S3Archive(dead, "bucket").statement_exists(ACCOUNT, "2025-03")
