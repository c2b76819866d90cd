"""A split bucket's statements and compacted months over the emulated S3: each shard's series is
verified and closed on its own, the rows of all series are merged by time with the bucket's
running balance, and a statement reads the same from per-entry objects as from compacted ones.
History is written through the real store (reserve and settle, transfers between shards)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

from forge.domain.archive import StatementFormat, monthly_key
from forge.domain.calendar import Month
from forge.domain.money import Bucket, decimal_to_micros
from forge.domain.records import Hold, LedgerKind, Receipt
from forge.ledger.reconcile import reconcile
from forge.ledger.statements import compact_month, ensure_statement, read_month
from forge.store.s3archive import S3Archive
from forge_tools.emulator import Resources
from tests.ledger_history import History, at

ACCOUNT = "acct_split"
JAN, FEB = Month(2025, 1), Month(2025, 2)
AFTER = datetime(2025, 6, 1, tzinfo=UTC)


def charge(history: History, when: datetime, request_id: str, amount: int) -> None:
    """A served call charged `amount` (held with a margin), on whichever shard it picks."""
    hold = Hold(
        request_id=request_id,
        account_id=ACCOUNT,
        key_id="key_s",
        bucket=Bucket.CREDIT,
        amount=amount + 500,
        expires_at=when + timedelta(minutes=16),
    )
    store = history.at(when)
    store.reserve(hold)
    receipt = Receipt(
        request_id=request_id,
        account_id=ACCOUNT,
        key_id="key_s",
        project_id="default",
        requested_model="demo-official",
        status="succeeded",
        final_route="demo:official",
        hold=hold.amount,
        created_at=when,
    )
    store.settle(hold, amount, receipt)


def archive_everything(history: History, archive: S3Archive) -> int:
    """What the archiver does from the stream: every entry of every series (transfers too)."""
    written = 0
    for shard in history.store.wallet_shards(ACCOUNT, Bucket.CREDIT):
        for entry in history.store.list_entries(ACCOUNT, Bucket.CREDIT, shard.shard):
            written += archive.put_entry(entry)
    return written


def split_history(history: History, archive: S3Archive) -> None:
    """January: a top-up, a split into 3 shards, charges that run shards short (so they
    borrow), another top-up; February: more charges."""
    history.move(ACCOUNT, at(JAN, 2), LedgerKind.TOPUP, 90_000)
    history.at(at(JAN, 3)).shard_wallet(ACCOUNT, Bucket.CREDIT, 3)  # 30,000 each
    for n, day in enumerate((5, 6, 7, 8, 12, 15, 20)):
        charge(history, at(JAN, day), f"jan_{n}", 9_000 + 1_000 * n)
    history.move(ACCOUNT, at(JAN, 25), LedgerKind.TOPUP, 50_000)
    for n, day in enumerate((3, 9, 14)):
        charge(history, at(FEB, day), f"feb_{n}", 15_000)
    archive_everything(history, archive)


def csv_rows(body: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body.decode())))


def test_a_split_buckets_statement_merges_its_series_with_the_buckets_running_balance(
    archive: S3Archive, history: History
) -> None:
    split_history(history, archive)
    shards = history.store.wallet_shards(ACCOUNT, Bucket.CREDIT)
    series = {w.shard: history.store.list_entries(ACCOUNT, Bucket.CREDIT, w.shard) for w in shards}
    assert all(series.values()) and len(series) == 3
    transfers = [e for s in series.values() for e in s if e.kind is LedgerKind.TRANSFER]
    assert len({e.source for e in transfers}) >= 2  # the split, and at least one refill
    assert reconcile(history.store, AFTER).ok

    ensure_statement(archive, history.views, ACCOUNT, JAN, now=AFTER)
    ensure_statement(archive, history.views, ACCOUNT, FEB, now=AFTER)

    jan = read_month(archive, ACCOUNT, JAN)
    jan_rows = csv_rows(archive.final_statement(ACCOUNT, JAN) or b"")
    credit = [r for r in jan_rows if r["bucket"] == "credit"]
    entries = [r for r in credit if r["row_type"] == "entry"]
    in_jan = [e for e in jan.entries if Month.of(e.created_at) == JAN]
    assert len(entries) == len(in_jan)
    # Rows by time; the balance column is the bucket's, whichever shard the row is on.
    assert [r["date"] for r in entries] == sorted(r["date"] for r in entries)
    running = 0
    for row in entries:
        running += decimal_to_micros(row["amount"])
        assert decimal_to_micros(row["balance_after"]) == running
    closing = next(r for r in credit if r["row_type"] == "closing")
    assert decimal_to_micros(closing["balance_after"]) == running
    assert {r["seq"].split("-")[0] for r in entries if "-" in r["seq"]} == {"01", "02"}
    totals = {r["kind"]: r["amount"] for r in credit if r["row_type"] == "total"}
    assert totals["transfer"] == "0.000000"
    # February opens where January closed, and closes on the shards' sum.
    feb_rows = csv_rows(archive.final_statement(ACCOUNT, FEB) or b"")
    feb_credit = [r for r in feb_rows if r["bucket"] == "credit"]
    assert feb_credit[0]["balance_after"] == closing["balance_after"]
    wallet = history.store.get_wallet(ACCOUNT, Bucket.CREDIT)
    feb_closing = next(r for r in feb_credit if r["row_type"] == "closing")
    assert decimal_to_micros(feb_closing["balance_after"]) == wallet.balance
    html = archive.final_statement(ACCOUNT, JAN, fmt=StatementFormat.HTML)
    assert html is not None and b"Moved between shards" in html


def test_a_split_buckets_months_compact_to_one_object_per_series_and_read_the_same(
    s3: Any, aws_stack: Resources, archive: S3Archive, history: History
) -> None:
    split_history(history, archive)
    ensure_statement(archive, history.views, ACCOUNT, FEB, now=AFTER)
    before = archive.final_statement(ACCOUNT, FEB)

    jan = compact_month(archive, history.views, ACCOUNT, JAN, now=AFTER)
    feb = compact_month(archive, history.views, ACCOUNT, FEB, now=AFTER)

    assert sorted((p.bucket.value, p.shard) for p in jan.buckets) == [
        ("credit", 0),
        ("credit", 1),
        ("credit", 2),
        ("rmb", 0),
    ]
    for shard in range(3):  # each series opens where it closed the month before
        assert feb.part(Bucket.CREDIT, shard).opening == jan.part(Bucket.CREDIT, shard).closing
        ledger = history.store.list_entries(ACCOUNT, Bucket.CREDIT, shard)
        assert feb.part(Bucket.CREDIT, shard).closing_seq == ledger[-1].seq
    bucket = aws_stack.buckets["ArchiveBucket"]
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="ledger-monthly/month=2025-01/")
    assert sorted(o["Key"] for o in listed["Contents"]) == sorted(
        monthly_key(ACCOUNT, JAN, Bucket.CREDIT, shard) for shard in range(3)
    )
    assert read_month(archive, ACCOUNT, FEB).compacted
    ensure_statement(archive, history.views, ACCOUNT, FEB, rebuild=True, now=AFTER)
    assert archive.final_statement(ACCOUNT, FEB) == before
    assert ACCOUNT in archive.accounts_with_activity(JAN)  # named by its series' objects
