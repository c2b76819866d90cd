"""Month compaction over the emulated S3: one gzipped object per account and bucket and a
closing record, byte-identical on every run, resumable after a crash, and statements that read
their month and not the account's history. History is written through the real store."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from forge.domain.archive import closing_key, monthly_key
from forge.domain.calendar import Month
from forge.domain.errors import InvalidRequest, LedgerChainBroken, StatementNotReady
from forge.domain.money import Bucket
from forge.domain.records import LedgerEntry, LedgerKind
from forge.ledger.statements import compact_month, ensure_statement, read_month
from forge.store.s3archive import S3Archive
from forge_tools.emulator import Resources
from forge_tools.s3_requests import S3Requests
from tests.ledger_history import History, at

EVENTS = Path(__file__).resolve().parents[2] / "events"
JAN, FEB, MARCH = Month(2025, 1), Month(2025, 2), Month(2025, 3)
AFTER = datetime(2025, 6, 1, tzinfo=UTC)  # every month here has closed and settled


@pytest.fixture
def requests(s3: Any) -> Iterator[S3Requests]:
    counted = S3Requests(s3)
    yield counted
    s3.meta.events.unregister("before-call.s3", counted._count)


def months_of_activity(history: History, account_id: str, months: list[Month]) -> None:
    """A top-up and three charges in each month, and a grant to the RMB wallet in the first."""
    history.move(account_id, at(months[0], 1), LedgerKind.GRANT, 9_000, Bucket.RMB)
    for month in months:
        history.move(account_id, at(month, 2), LedgerKind.TOPUP, 1_000_000)
        for day in (5, 12, 28):
            history.move(account_id, at(month, day), LedgerKind.CHARGE, -1_234 * day)


def stored(s3: Any, bucket: str, prefixes: tuple[str, ...]) -> dict[str, bytes]:
    found = {}
    for prefix in prefixes:
        for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
            found[item["Key"]] = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return found


COMPACTED = ("ledger-monthly/", "ledger-closing/")


def test_a_closed_month_compacts_to_one_gzipped_object_per_bucket_and_a_closing_record(
    s3: Any, aws_stack: Resources, archive: S3Archive, history: History
) -> None:
    # Given two months of activity
    months_of_activity(history, "acct_c", [JAN, FEB])

    # When both months are compacted
    jan = compact_month(archive, history.views, "acct_c", JAN, now=AFTER)
    feb = compact_month(archive, history.views, "acct_c", FEB, now=AFTER)

    # Then each month holds its own entries, in seq order, as the per-entry objects' lines
    bucket = aws_stack.buckets["ArchiveBucket"]
    objects = stored(s3, bucket, COMPACTED)
    assert sorted(objects) == [
        closing_key("acct_c", JAN),
        closing_key("acct_c", FEB),
        monthly_key("acct_c", JAN, Bucket.CREDIT),
        monthly_key("acct_c", JAN, Bucket.RMB),
        monthly_key("acct_c", FEB, Bucket.CREDIT),
    ]
    per_entry = archive.entries("acct_c", since=FEB, through=FEB)
    lines = gzip.decompress(objects[monthly_key("acct_c", FEB, Bucket.CREDIT)])
    assert lines == b"".join(e.model_dump_json().encode() + b"\n" for e in per_entry)
    # And the gzip header carries no time and no file name
    header = objects[monthly_key("acct_c", FEB, Bucket.CREDIT)][:10]
    assert header[3] == 0 and header[4:8] == b"\0\0\0\0"
    # And the closing records chain: February opens where January closed
    assert feb.part(Bucket.CREDIT).opening == jan.part(Bucket.CREDIT).closing
    assert (feb.part(Bucket.CREDIT).entries, jan.part(Bucket.RMB).entries) == (4, 1)
    assert feb.part(Bucket.RMB).entries == 0  # no entry, no object: its balance carries over
    assert feb.part(Bucket.RMB).closing_balance == 9_000
    wallet = history.store.get_wallet("acct_c", Bucket.CREDIT)
    closing = feb.part(Bucket.CREDIT)
    assert (closing.closing_seq, closing.closing_balance) == (wallet.seq, wallet.balance)


def test_compaction_is_deterministic_and_a_rerun_writes_nothing(
    s3: Any, aws_stack: Resources, archive: S3Archive, history: History, requests: S3Requests
) -> None:
    # Given a compacted month
    months_of_activity(history, "acct_d", [JAN, FEB])
    compact_month(archive, history.views, "acct_d", JAN, now=AFTER)
    bucket = aws_stack.buckets["ArchiveBucket"]
    first = stored(s3, bucket, COMPACTED)

    # When it is compacted again: one GET (the closing record) and nothing written
    requests.reset()
    compact_month(archive, history.views, "acct_d", JAN, now=AFTER)
    assert dict(requests.by_operation) == {"GetObject": 1}

    # And when everything compacted is deleted and compacted from scratch
    for key in first:
        s3.delete_object(Bucket=bucket, Key=key)
    compact_month(archive, history.views, "acct_d", JAN, now=AFTER)

    # Then the bytes are identical
    assert stored(s3, bucket, COMPACTED) == first


class CrashingArchive(S3Archive):
    """Dies (as a Lambda timeout would) after writing `survives` compacted objects."""

    def __init__(self, client: Any, bucket: str, survives: int) -> None:
        super().__init__(client, bucket)
        self.survives = survives

    def put_compacted(
        self, account_id: str, month: Month, bucket: Bucket, body: bytes, shard: int = 0
    ) -> bool:
        if self.survives == 0:
            raise RuntimeError("crash")
        self.survives -= 1
        return super().put_compacted(account_id, month, bucket, body, shard)


@pytest.mark.parametrize("survives", [0, 1])
def test_a_compaction_that_crashed_resumes_to_the_same_bytes(
    s3: Any, aws_stack: Resources, archive: S3Archive, history: History, survives: int
) -> None:
    # Given a month with both buckets, whose compaction crashed after `survives` objects
    months_of_activity(history, "acct_r", [JAN])
    bucket = aws_stack.buckets["ArchiveBucket"]
    crashing = CrashingArchive(s3, bucket, survives)
    with pytest.raises(RuntimeError):
        compact_month(crashing, history.views, "acct_r", JAN, now=AFTER)
    assert archive.month_close("acct_r", JAN) is None  # not done: no closing record
    assert len(stored(s3, bucket, ("ledger-monthly/",))) == survives

    # When it runs again
    close = compact_month(archive, history.views, "acct_r", JAN, now=AFTER)

    # Then it completes, with what an uninterrupted compaction writes
    resumed = stored(s3, bucket, COMPACTED)
    for key in resumed:
        s3.delete_object(Bucket=bucket, Key=key)
    assert compact_month(archive, history.views, "acct_r", JAN, now=AFTER) == close
    assert stored(s3, bucket, COMPACTED) == resumed


def test_a_leftover_object_that_differs_is_refused_and_the_month_stays_open(
    s3: Any, aws_stack: Resources, archive: S3Archive, history: History
) -> None:
    months_of_activity(history, "acct_x", [JAN])
    bucket = aws_stack.buckets["ArchiveBucket"]
    s3.put_object(
        Bucket=bucket, Key=monthly_key("acct_x", JAN, Bucket.CREDIT), Body=gzip.compress(b"{}\n")
    )

    with pytest.raises(LedgerChainBroken, match="differs"):
        compact_month(archive, history.views, "acct_x", JAN, now=AFTER)
    assert archive.month_close("acct_x", JAN) is None


def test_only_a_settled_month_that_reconciles_is_compacted(
    s3: Any, aws_stack: Resources, archive: S3Archive, history: History
) -> None:
    # Given a March whose last charge the stream has not archived yet
    history.move("acct_lag", at(MARCH, 1), LedgerKind.TOPUP, 100)
    late = history.move("acct_lag", at(MARCH, 31), LedgerKind.CHARGE, -10, archive=False)

    # Then March is not compacted while open or settling, nor while the archive is behind
    with pytest.raises(InvalidRequest, match="not closed"):
        compact_month(archive, history.views, "acct_lag", MARCH, now=MARCH.end)
    with pytest.raises(StatementNotReady):
        compact_month(archive, history.views, "acct_lag", MARCH, now=AFTER)
    bucket = aws_stack.buckets["ArchiveBucket"]
    assert stored(s3, bucket, COMPACTED) == {}

    # And once the entry is archived, it is
    archive.put_entry(late)
    close = compact_month(archive, history.views, "acct_lag", MARCH, now=AFTER)
    assert close.part(Bucket.CREDIT).closing_balance == 90


def test_a_statement_reads_the_same_from_compacted_months_as_from_entries(
    archive: S3Archive, history: History
) -> None:
    # Given a final statement built from the per-entry objects
    months_of_activity(history, "acct_s", [JAN, FEB, MARCH])
    ensure_statement(archive, history.views, "acct_s", MARCH, now=AFTER)
    before = archive.final_statement("acct_s", MARCH)

    # When the months are compacted, the stored statement is what a rebuild reads from them
    for month in (JAN, FEB, MARCH):
        compact_month(archive, history.views, "acct_s", month, now=AFTER)
    assert read_month(archive, "acct_s", MARCH).compacted
    ensure_statement(archive, history.views, "acct_s", MARCH, rebuild=True, now=AFTER)
    assert archive.final_statement("acct_s", MARCH) == before


def statement_gets(archive: S3Archive, history: History, requests: S3Requests, acct: str) -> int:
    """The GETs of building March's statement (not stored before, so built)."""
    requests.reset()
    ensure_statement(archive, history.views, acct, MARCH, now=AFTER)
    return requests.gets


def test_a_statements_s3_reads_do_not_grow_with_the_accounts_age(
    archive: S3Archive, history: History, requests: S3Requests
) -> None:
    # Given an account active since January and one active since last year's April, with the
    # same March
    young, old = [JAN, FEB, MARCH], [Month(2024, m) for m in range(4, 13)] + [JAN, FEB, MARCH]
    months_of_activity(history, "acct_young", young)
    months_of_activity(history, "acct_old", old)
    reads_uncompacted = {
        a: statement_gets(archive, history, requests, a) for a in ("acct_young", "acct_old")
    }
    for account_id, months in (("acct_young", young), ("acct_old", old)):
        for month in months:
            compact_month(archive, history.views, account_id, month, now=AFTER)
        for fmt in ("csv", "html"):  # built again below, from the compacted months
            archive._s3.delete_object(
                Bucket=archive._bucket, Key=f"statements/{account_id}/{MARCH}.{fmt}"
            )

    # When March's statement is built from the compacted archive
    reads = {a: statement_gets(archive, history, requests, a) for a in ("acct_young", "acct_old")}

    # Then both read the same few objects: March's closing record, its one object (the RMB
    # wallet did not move in March), and the two final statements ensure_statement looks for
    assert reads["acct_young"] == reads["acct_old"] == 1 + 1 + 2
    # where the per-entry archive read every entry since the account began
    assert reads_uncompacted["acct_old"] > reads_uncompacted["acct_young"] > reads["acct_old"]


def test_an_open_month_reads_its_entries_after_the_last_compacted_month(
    archive: S3Archive, history: History, requests: S3Requests
) -> None:
    # Given January compacted, nothing in February, March open
    months_of_activity(history, "acct_open", [JAN])
    compact_month(archive, history.views, "acct_open", JAN, now=AFTER)
    march = history.moves(
        "acct_open", (at(MARCH, 3), LedgerKind.CHARGE, -5), (at(MARCH, 4), LedgerKind.CHARGE, -6)
    )

    # When March's provisional statement is built mid-March
    requests.reset()
    ensure_statement(archive, history.views, "acct_open", MARCH, now=at(MARCH, 20))

    # Then it read January's closing record (twice: looked up as March's, then as the latest
    # before) and March's two entries, nothing of January's entries
    assert requests.gets == 1 + 1 + len(march)
    part = read_month(archive, "acct_open", MARCH)
    assert part.entries == march and not part.compacted
    opening = [e for e in history.store.list_entries("acct_open", Bucket.CREDIT)][-3]
    assert part.starts[Bucket.CREDIT].balance == opening.balance_after


def test_a_compacted_object_that_does_not_match_its_closing_record_is_refused(
    s3: Any, aws_stack: Resources, archive: S3Archive, history: History
) -> None:
    months_of_activity(history, "acct_t", [JAN])
    compact_month(archive, history.views, "acct_t", JAN, now=AFTER)
    bucket = aws_stack.buckets["ArchiveBucket"]
    key = monthly_key("acct_t", JAN, Bucket.CREDIT)
    lines = gzip.decompress(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).splitlines()
    entry = LedgerEntry.model_validate_json(lines[-1])
    forged = entry.model_copy(update={"memo": "edited"}).model_dump_json().encode()
    s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress(b"\n".join([*lines[:-1], forged])))

    with pytest.raises(LedgerChainBroken, match="closing record"):
        ensure_statement(archive, history.views, "acct_t", JAN, now=AFTER)


def test_the_monthly_schedule_compacts_last_month_then_builds_its_statements(
    archive: S3Archive,
    history: History,
    load_handler: Any,
    lambda_context: Any,
) -> None:
    # Given March activity, and the schedule of April 1st (events/statements.json)
    months_of_activity(history, "acct_h", [FEB, MARCH])
    event = json.loads((EVENTS / "statements.json").read_text())
    handler = load_handler("statements")

    # When it fires, twice
    first, second = handler(event, lambda_context), handler(event, lambda_context)

    # Then March is compacted and its statement was built from the compacted month
    built = {"month": "2025-03", "statements": ["statements/acct_h/2025-03.csv"], "failed": {}}
    assert first == second == built
    close = archive.month_close("acct_h", MARCH)
    assert close is not None and close.part(Bucket.CREDIT).entries == 4
    assert archive.month_close("acct_h", FEB) is None  # only the month the run is for


def test_a_compacted_month_needs_no_per_entry_object_once_they_expire(
    s3: Any, aws_stack: Resources, archive: S3Archive, history: History
) -> None:
    # Given February and March compacted, and their per-entry objects expired (lifecycle)
    months_of_activity(history, "acct_exp", [FEB, MARCH])
    for month in (FEB, MARCH):
        compact_month(archive, history.views, "acct_exp", month, now=AFTER)
    bucket = aws_stack.buckets["ArchiveBucket"]
    for key in stored(s3, bucket, ("ledger/acct_exp/",)):
        s3.delete_object(Bucket=bucket, Key=key)

    # Then March still has activity, and its statement is built from the compacted month
    assert archive.accounts_with_activity(MARCH) == ["acct_exp"]
    ensure_statement(archive, history.views, "acct_exp", MARCH, now=AFTER)
    statement = archive.final_statement("acct_exp", MARCH)
    assert statement is not None and statement.count(b"\r\nentry,") == 4
