"""Statements over the emulated S3: built from the archive, checked against the ledger table,
stored once, downloaded by link. History is written through the real store on chosen days."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from forge.domain.archive import StatementFormat
from forge.domain.calendar import Month
from forge.domain.errors import (
    InvalidRequest,
    LedgerChainBroken,
    StatementMismatch,
    StatementNotReady,
)
from forge.domain.money import Bucket, format_micros
from forge.domain.records import Hold, LedgerEntry, LedgerKind, Receipt
from forge.ledger.statements import (
    build_month_for_all,
    build_statement,
    ensure_statement,
    render_csv,
    render_html,
)
from forge.settings import get_settings
from forge.store.dynamo.store import DynamoStore
from forge.store.dynamo.views import LedgerViews
from forge.store.s3archive import S3Archive
from forge.wiring import s3_client
from forge_tools.emulator import Emulator, Resources
from tests.ledger_history import History

EVENTS = Path(__file__).resolve().parents[2] / "events"
Handler = Callable[..., Any]
MARCH = Month(2025, 3)


def chain_of(
    account_id: str, *changes: tuple[datetime, LedgerKind, int], bucket: Bucket = Bucket.CREDIT
) -> list[LedgerEntry]:
    """A valid chain of entries for one account and bucket (archive-only tests)."""
    entries, balance = [], 0
    for seq, (when, kind, amount) in enumerate(changes, start=1):
        balance += amount
        entries.append(
            LedgerEntry(
                entry_id=f"le_{account_id}_{bucket.value}_{seq}",
                account_id=account_id,
                bucket=bucket,
                seq=seq,
                kind=kind,
                amount=amount,
                balance_after=balance,
                created_at=when,
                request_id=f"req_{account_id}_{seq}",
            )
        )
    return entries


def day(month: int, d: int) -> datetime:
    return datetime(2025, month, d, 10, tzinfo=UTC)


def rows_of(body: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body.decode("utf-8"))))


@pytest.fixture
def archive(aws_stack: Resources) -> S3Archive:
    """The archive exactly as the functions build it: production client factory, settings."""
    return S3Archive(s3_client(), get_settings().archive_bucket)


def put_all(archive: S3Archive, entries: Sequence[LedgerEntry]) -> None:
    for entry in entries:
        assert archive.put_entry(entry) is True


def test_a_statement_of_archived_entries_lists_the_charge_and_closes_on_the_last_balance(
    emulator: Emulator,
    aws_stack: Resources,
    archive: S3Archive,
    load_handler: Callable[[str], Handler],
    lambda_context: Any,
    ledger_stream_event: Callable[[], dict[str, Any]],
) -> None:
    # Given a top-up and a settled charge, written by the gateway's store and archived from
    # the ledger stream by the archiver
    store = DynamoStore(
        emulator.client("dynamodb"),
        aws_stack.tables["BudgetTable"],
        aws_stack.tables["LedgerTable"],
    )
    store.create_account("acct_stmt", "Statement Co")
    store.credit("acct_stmt", Bucket.CREDIT, 5_000_000, kind=LedgerKind.TOPUP, entry_id="le_t")
    hold = Hold(
        request_id="req_stmt",
        account_id="acct_stmt",
        key_id="key_s",
        bucket=Bucket.CREDIT,
        amount=40_000,
        expires_at=datetime.now(UTC) + timedelta(minutes=15),
    )
    store.reserve(hold)
    store.settle(
        hold,
        1_246,
        Receipt(
            request_id="req_stmt",
            account_id="acct_stmt",
            key_id="key_s",
            project_id="proj_s",
            requested_model="gpt-4o-mini",
            status="succeeded",
            final_route="openai/gpt-4o-mini",
        ),
    )
    assert load_handler("archiver")(ledger_stream_event(), lambda_context) == {
        "batchItemFailures": []
    }
    ledger = store.list_entries("acct_stmt", Bucket.CREDIT)
    month = Month.of(ledger[-1].created_at)

    # When the month's statement is ensured after the month has settled
    views = LedgerViews(emulator.client("dynamodb"), aws_stack.tables["LedgerTable"])
    key = ensure_statement(archive, views, "acct_stmt", month, now=month.end + timedelta(hours=2))

    # Then it lists the charge, and its closing balance is the last balance_after
    assert key == f"statements/acct_stmt/{month}.csv"
    rows = rows_of(archive.read_statement("acct_stmt", month))
    credit = [r for r in rows if r["bucket"] == "credit"]
    [charge] = [r for r in credit if r["row_type"] == "entry" and r["kind"] == "charge"]
    assert (charge["request_id"], charge["amount"]) == ("req_stmt", "-0.001246")
    assert (charge["model"], charge["key_id"]) == ("gpt-4o-mini", "key_s")
    [closing] = [r for r in credit if r["row_type"] == "closing"]
    assert closing["balance_after"] == format_micros(ledger[-1].balance_after) == "4.998754"
    assert ledger[-1].balance_after == store.get_wallet("acct_stmt", Bucket.CREDIT).balance
    assert archive.statement_exists("acct_stmt", month)


def test_the_presigned_link_downloads_the_csv(archive: S3Archive, history: History) -> None:
    # Given a stored statement
    history.moves("acct_dl", (day(3, 2), LedgerKind.TOPUP, 1_000_000))
    ensure_statement(archive, history.views, "acct_dl", "2025-03")
    stored = archive.read_statement("acct_dl", "2025-03")

    # When the presigned URL is fetched with a plain HTTP client
    url = archive.presigned_statement_url("acct_dl", "2025-03", expires_in=300)
    response = httpx.get(url)

    # Then it is the CSV, served as a named attachment
    assert response.status_code == 200, response.text
    assert response.content == stored
    assert response.headers["content-disposition"] == (
        'attachment; filename="tokens-forge-acct_dl-2025-03.csv"'
    )
    assert "X-Amz-Expires=300" in url
    assert b"1.000000" in response.content

    # And the HTML page beside it downloads as a named .html attachment
    html_url = archive.presigned_statement_url(
        "acct_dl", "2025-03", expires_in=300, fmt=StatementFormat.HTML
    )
    page = httpx.get(html_url)
    assert page.status_code == 200, page.text
    assert page.content == archive.read_statement("acct_dl", "2025-03", StatementFormat.HTML)
    assert page.headers["content-disposition"] == (
        'attachment; filename="tokens-forge-acct_dl-2025-03.html"'
    )
    assert page.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("seconds", [0, 901, 3600])
def test_presigned_links_are_short_lived(archive: S3Archive, seconds: int) -> None:
    with pytest.raises(ValueError, match="expires_in"):
        archive.presigned_statement_url("acct_dl", "2025-03", expires_in=seconds)


def test_the_schedule_builds_last_month_for_every_active_account_once(
    emulator: Emulator,
    aws_stack: Resources,
    archive: S3Archive,
    history: History,
    load_handler: Callable[[str], Handler],
    lambda_context: Any,
) -> None:
    # Given March activity for two accounts, and only February activity for a third
    history.moves("acct_a", (day(3, 3), LedgerKind.TOPUP, 700))
    history.moves(
        "acct_b", (day(2, 3), LedgerKind.TOPUP, 900), (day(3, 9), LedgerKind.CHARGE, -100)
    )
    history.moves("acct_c", (day(2, 20), LedgerKind.TOPUP, 5))
    s3, bucket = emulator.client("s3"), aws_stack.buckets["ArchiveBucket"]
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    event = json.loads((EVENTS / "statements.json").read_text())  # fired 2025-04-01T03:00Z
    handler = load_handler("statements")

    # When the monthly schedule fires, and fires again (a retry)
    first = handler(event, lambda_context)
    second = handler(event, lambda_context)

    # Then March statements (CSV and HTML) exist for the active accounts only, built once
    expected = ["statements/acct_a/2025-03.csv", "statements/acct_b/2025-03.csv"]
    assert first == second == {"month": "2025-03", "statements": expected, "failed": {}}
    versions = s3.list_object_versions(Bucket=bucket, Prefix="statements/")["Versions"]
    assert sorted(v["Key"] for v in versions) == sorted(
        [*expected, *(k.removesuffix(".csv") + ".html" for k in expected)]
    )
    b_rows = rows_of(archive.read_statement("acct_b", "2025-03"))
    credit = {r["row_type"]: r for r in b_rows if r["bucket"] == "credit"}
    assert (credit["opening"]["balance_after"], credit["closing"]["balance_after"]) == (
        "0.000900",
        "0.000800",
    )


def test_a_direct_invocation_builds_one_statement(
    archive: S3Archive,
    history: History,
    load_handler: Callable[[str], Handler],
    lambda_context: Any,
) -> None:
    history.moves("acct_one", (day(2, 3), LedgerKind.GRANT, 42), bucket=Bucket.RMB)
    handler = load_handler("statements")

    result = handler({"account_id": "acct_one", "month": "2025-02"}, lambda_context)

    assert result == {
        "account_id": "acct_one",
        "month": "2025-02",
        "key": "statements/acct_one/2025-02.csv",
    }
    rmb = [
        r for r in rows_of(archive.read_statement("acct_one", "2025-02")) if r["bucket"] == "rmb"
    ]
    assert [r["row_type"] for r in rmb if r["row_type"] in ("entry", "closing")] == [
        "entry",
        "closing",
    ]
    with pytest.raises(InvalidRequest, match="YYYY-MM"):
        handler({"account_id": "acct_one", "month": "2025-13"}, lambda_context)
    with pytest.raises(InvalidRequest):
        handler({"account_id": "acct_one"}, lambda_context)


def test_a_broken_chain_publishes_nothing_and_fails_the_run(
    archive: S3Archive,
    history: History,
    load_handler: Callable[[str], Handler],
    lambda_context: Any,
) -> None:
    # Given one account whose archive lost seq 2, and one healthy account
    broken = history.moves(
        "acct_bad",
        (day(3, 1), LedgerKind.TOPUP, 100),
        (day(3, 2), LedgerKind.CHARGE, -10),
        (day(3, 3), LedgerKind.CHARGE, -10),
        archive=False,
    )
    put_all(archive, [broken[0], broken[2]])
    history.moves("acct_ok", (day(3, 1), LedgerKind.TOPUP, 100))

    # When statements are built
    with pytest.raises(LedgerChainBroken):
        ensure_statement(archive, history.views, "acct_bad", MARCH)
    run = build_month_for_all(archive, history.views, MARCH)

    # Then the broken account gets no statement, the healthy one does, and the run says so
    assert run.failed == {"acct_bad": "ledger_chain_broken"}
    assert run.statements == ["statements/acct_ok/2025-03.csv"]
    assert not archive.statement_exists("acct_bad", MARCH)
    with pytest.raises(RuntimeError, match="acct_bad"):
        load_handler("statements")({"month": "2025-03"}, lambda_context)


def test_an_open_month_gets_a_provisional_statement_replaced_once_settled(
    archive: S3Archive, history: History
) -> None:
    # Given a March top-up, asked for in mid-March
    history.move("acct_open", day(3, 5), LedgerKind.TOPUP, 10)
    key = ensure_statement(archive, history.views, "acct_open", MARCH, now=day(3, 20))

    # Then the stored statement is provisional and does not count as existing
    provisional = rows_of(archive.read_statement("acct_open", MARCH))
    assert "closing_provisional" in {r["row_type"] for r in provisional}
    assert not archive.statement_exists("acct_open", MARCH)

    # When more activity follows and the month has settled
    history.move("acct_open", day(3, 25), LedgerKind.CHARGE, -3)
    settled = MARCH.end + timedelta(hours=2)
    assert ensure_statement(archive, history.views, "acct_open", MARCH, now=settled) == key

    # Then the final statement replaced it, with the later entry
    final = rows_of(archive.read_statement("acct_open", MARCH))
    assert [r["balance_after"] for r in final if r["row_type"] == "closing"] == [
        "0.000007",  # credit
        "0.000000",  # rmb
    ]
    assert archive.statement_exists("acct_open", MARCH)


def test_months_that_have_not_started_have_no_statement(
    archive: S3Archive, history: History
) -> None:
    with pytest.raises(InvalidRequest, match="no statement"):
        ensure_statement(archive, history.views, "acct_open", "2025-04", now=day(3, 20))


def test_a_final_statement_is_immutable(
    emulator: Emulator, aws_stack: Resources, archive: S3Archive, history: History
) -> None:
    # Given a closed month's statement, built once, in a versioned bucket
    s3, bucket = emulator.client("s3"), aws_stack.buckets["ArchiveBucket"]
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    entries = history.moves(
        "acct_re", (day(3, 1), LedgerKind.TOPUP, 10), (day(3, 2), LedgerKind.CHARGE, -4)
    )
    ensure_statement(archive, history.views, "acct_re", MARCH)
    statement = build_statement("acct_re", MARCH, entries)
    assert archive.read_statement("acct_re", MARCH) == render_csv(statement)
    html = StatementFormat.HTML
    assert archive.read_statement("acct_re", MARCH, html) == render_html(statement)

    # When it is rebuilt (twice), it is the same bytes and nothing is written again
    ensure_statement(archive, history.views, "acct_re", MARCH, rebuild=True)
    ensure_statement(archive, history.views, "acct_re", MARCH, rebuild=True)
    versions = s3.list_object_versions(Bucket=bucket, Prefix="statements/")["Versions"]
    assert len(versions) == 2

    # And a stored final statement that a rebuild would not reproduce is never replaced:
    # reuse keeps it, a rebuild refuses and reports the mismatch
    archive.put_statement("acct_re", MARCH, b"stale\r\n")
    ensure_statement(archive, history.views, "acct_re", MARCH)
    with pytest.raises(StatementMismatch) as caught:
        ensure_statement(archive, history.views, "acct_re", MARCH, rebuild=True)
    assert caught.value.details["format"] == "csv"
    assert archive.read_statement("acct_re", MARCH) == b"stale\r\n"


def test_entries_and_activity_are_read_by_month(archive: S3Archive) -> None:
    entries = chain_of(
        "acct_m",
        (day(2, 1), LedgerKind.TOPUP, 10),
        (day(3, 1), LedgerKind.CHARGE, -1),
        (day(4, 1), LedgerKind.CHARGE, -1),
    )
    rmb = chain_of("acct_m", (day(3, 7), LedgerKind.GRANT, 4), bucket=Bucket.RMB)
    put_all(archive, [*reversed(entries), *rmb])

    assert archive.entries("acct_m") == [*entries, *rmb]  # by (bucket, seq)
    assert archive.entries("acct_m", through=MARCH) == [*entries[:2], *rmb]
    assert archive.entries("acct_nobody") == []
    assert archive.accounts_with_activity("2025-04") == ["acct_m"]
    assert archive.accounts_with_activity(MARCH) == ["acct_m"]
    assert archive.accounts_with_activity("2025-05") == []


# Reconciliation with the ledger table ---------------------------------------------------------
def statement_keys(emulator: Emulator, stack: Resources) -> list[str]:
    listed = emulator.client("s3").list_objects_v2(
        Bucket=stack.buckets["ArchiveBucket"], Prefix="statements/"
    )
    return [item["Key"] for item in listed.get("Contents", [])]


def test_an_archive_behind_the_ledger_publishes_nothing_until_it_catches_up(
    emulator: Emulator, aws_stack: Resources, archive: S3Archive, history: History
) -> None:
    # Given a March charge on the ledger that the stream has not archived yet
    history.move("acct_lag", day(3, 1), LedgerKind.TOPUP, 100)
    late = history.move("acct_lag", day(3, 31), LedgerKind.CHARGE, -10, archive=False)

    # When March's statement is built, the archive alone would close on 100: refused
    with pytest.raises(StatementNotReady) as caught:
        ensure_statement(archive, history.views, "acct_lag", MARCH)
    assert (caught.value.status, caught.value.details["seq"]) == (503, 2)
    assert statement_keys(emulator, aws_stack) == []

    # Then, once the entry is archived, the statement closes on the ledger's balance
    archive.put_entry(late)
    ensure_statement(archive, history.views, "acct_lag", MARCH)
    credit = [
        r for r in rows_of(archive.read_statement("acct_lag", MARCH)) if r["bucket"] == "credit"
    ]
    assert [r["balance_after"] for r in credit if r["row_type"] == "closing"] == ["0.000090"]


def test_an_archive_that_disagrees_with_the_ledger_publishes_nothing(
    emulator: Emulator, aws_stack: Resources, archive: S3Archive, history: History
) -> None:
    # Given an archive whose chain adds up but is not the ledger's: its charge was -20, the
    # ledger's is -10 (say an object written by hand)
    topup = history.move("acct_odd", day(3, 1), LedgerKind.TOPUP, 100)
    charge = history.move("acct_odd", day(3, 2), LedgerKind.CHARGE, -10, archive=False)
    archive.put_entry(charge.model_copy(update={"amount": -20, "balance_after": 80}))
    assert build_statement("acct_odd", MARCH, [topup, charge]).buckets[0].closing_balance == 90

    # When its statement is built, it is refused, and nothing is published
    with pytest.raises(LedgerChainBroken, match="not the ledger's"):
        ensure_statement(archive, history.views, "acct_odd", MARCH)
    assert statement_keys(emulator, aws_stack) == []
