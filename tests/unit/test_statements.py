"""Statements and archive records, pure: chain verification, month boundaries, exact CSV."""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from forge.domain.archive import archive_key, archive_line, parse_archive_lines, statement_key
from forge.domain.calendar import Month
from forge.domain.errors import InvalidRequest, LedgerChainBroken
from forge.domain.money import Bucket
from forge.domain.records import LedgerEntry, LedgerKind
from forge.ledger.statements import (
    CSV_COLUMNS,
    StatementRequest,
    build_statement,
    render_csv,
    verify_chain,
)
from forge.store.dynamo.stream import MalformedStreamRecord, ledger_entry_from_stream_record

EVENTS = Path(__file__).resolve().parents[2] / "events"
ACCOUNT = "acct_unit"
Move = tuple[datetime, LedgerKind, int]


def at(month: int, day: int, hour: int = 12) -> datetime:
    return datetime(2025, month, day, hour, tzinfo=UTC)


def chain(moves: Sequence[Move], bucket: Bucket = Bucket.CREDIT) -> list[LedgerEntry]:
    """A valid ledger: seq from 1, balance_after the running sum."""
    entries, balance = [], 0
    for seq, (when, kind, amount) in enumerate(moves, start=1):
        balance += amount
        entries.append(
            LedgerEntry(
                entry_id=f"le_{bucket.value}_{seq}",
                account_id=ACCOUNT,
                bucket=bucket,
                seq=seq,
                kind=kind,
                amount=amount,
                balance_after=balance,
                created_at=when,
                request_id=f"req_{seq}" if kind is LedgerKind.CHARGE else None,
                key_id="key_1" if kind is LedgerKind.CHARGE else None,
                project_id="proj_1" if kind is LedgerKind.CHARGE else None,
                model="gpt-4o-mini" if kind is LedgerKind.CHARGE else None,
                route="openai/gpt-4o-mini" if kind is LedgerKind.CHARGE else None,
            )
        )
    return entries


# Feb: top-up 10.00; Mar: two charges, a refund; Apr: a charge.
CREDIT_MOVES: list[Move] = [
    (at(2, 10), LedgerKind.TOPUP, 10_000_000),
    (at(3, 1, 0), LedgerKind.CHARGE, -1_234),
    (at(3, 15), LedgerKind.CHARGE, -2_000_000),
    (at(3, 31, 23), LedgerKind.REFUND, 500),
    (at(4, 1, 0), LedgerKind.CHARGE, -7),
]
RMB_MOVES: list[Move] = [(at(3, 2), LedgerKind.GRANT, 50_000_000)]


def ledger() -> list[LedgerEntry]:
    return chain(CREDIT_MOVES) + chain(RMB_MOVES, Bucket.RMB)


def csv_rows(body: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body.decode("utf-8"))))


# Chain verification -------------------------------------------------------------------------
def test_a_valid_chain_verifies() -> None:
    verify_chain(chain(CREDIT_MOVES))  # no exception


def test_wrong_balance_after_is_refused() -> None:
    entries = chain(CREDIT_MOVES)
    entries[2] = entries[2].model_copy(update={"balance_after": entries[2].balance_after + 1})
    with pytest.raises(LedgerChainBroken) as caught:
        build_statement(ACCOUNT, "2025-03", entries)
    assert caught.value.details["seq"] == 3
    assert caught.value.status == 500


def test_a_gap_in_seq_is_refused() -> None:
    entries = chain(CREDIT_MOVES)
    del entries[1]  # seq 2 never archived
    with pytest.raises(LedgerChainBroken, match="expected 2, found 3"):
        build_statement(ACCOUNT, "2025-03", entries)


def test_a_chain_not_starting_at_one_is_refused() -> None:
    with pytest.raises(LedgerChainBroken, match="expected 1"):
        build_statement(ACCOUNT, "2025-03", chain(CREDIT_MOVES)[1:])


def test_a_duplicated_seq_is_refused() -> None:
    entries = chain(CREDIT_MOVES)
    twin = entries[1].model_copy(update={"entry_id": "le_twin"})
    with pytest.raises(LedgerChainBroken):
        build_statement(ACCOUNT, "2025-03", [*entries, twin])


def test_entries_out_of_time_order_across_months_are_refused() -> None:
    # seq 3 stamped in March but seq 2 in April: splitting by month cannot reconcile.
    moves = [
        (at(3, 1), LedgerKind.TOPUP, 100),
        (at(4, 1), LedgerKind.CHARGE, -1),
        (at(3, 31), LedgerKind.CHARGE, -2),
    ]
    with pytest.raises(LedgerChainBroken, match="out of time order"):
        build_statement(ACCOUNT, "2025-03", chain(moves))


def test_a_break_after_the_month_does_not_block_earlier_statements() -> None:
    entries = chain(CREDIT_MOVES)
    entries[-1] = entries[-1].model_copy(update={"balance_after": 0})  # April is broken
    march = build_statement(ACCOUNT, "2025-03", entries)
    assert march.buckets[0].closing_balance == 10_000_000 - 1_234 - 2_000_000 + 500
    with pytest.raises(LedgerChainBroken):
        build_statement(ACCOUNT, "2025-04", entries)


def test_entries_of_another_account_are_refused() -> None:
    stranger = chain(CREDIT_MOVES)[0].model_copy(update={"account_id": "acct_other"})
    with pytest.raises(ValueError, match="another account"):
        build_statement(ACCOUNT, "2025-03", [stranger])


# Opening and closing balances across months ---------------------------------------------------
def test_march_opens_with_february_and_closes_with_its_last_entry() -> None:
    statement = build_statement(ACCOUNT, "2025-03", ledger())
    credit, rmb = statement.buckets
    assert (credit.bucket, rmb.bucket) == (Bucket.CREDIT, Bucket.RMB)
    assert credit.opening_balance == 10_000_000
    assert [r.seq for r in credit.rows] == [2, 3, 4]
    assert credit.closing_balance == 7_999_266 == credit.rows[-1].balance_after
    assert credit.totals[LedgerKind.CHARGE] == -2_001_234
    assert credit.totals[LedgerKind.REFUND] == 500
    assert credit.totals[LedgerKind.TOPUP] == 0
    assert credit.opening_balance + sum(r.amount for r in credit.rows) == credit.closing_balance
    assert (rmb.opening_balance, rmb.closing_balance) == (0, 50_000_000)
    assert [r.kind for r in rmb.rows] == [LedgerKind.GRANT]


def test_the_first_month_opens_at_zero_and_later_months_chain_on() -> None:
    entries = ledger()
    feb = build_statement(ACCOUNT, "2025-02", entries).buckets[0]
    mar = build_statement(ACCOUNT, "2025-03", entries).buckets[0]
    apr = build_statement(ACCOUNT, "2025-04", entries).buckets[0]
    may = build_statement(ACCOUNT, "2025-05", entries).buckets[0]
    assert (feb.opening_balance, feb.closing_balance) == (0, 10_000_000)
    assert feb.closing_balance == mar.opening_balance
    assert mar.closing_balance == apr.opening_balance
    assert (apr.closing_balance, [r.seq for r in apr.rows]) == (7_999_259, [5])
    # A month without activity carries the balance through and lists nothing.
    assert (may.opening_balance, may.closing_balance, may.rows) == (7_999_259, 7_999_259, [])


def test_a_month_before_any_activity_is_all_zero() -> None:
    jan = build_statement(ACCOUNT, "2025-01", ledger())
    for part in jan.buckets:
        assert (part.opening_balance, part.closing_balance, part.rows) == (0, 0, [])


def test_month_membership_uses_utc() -> None:
    # 2025-03-31 23:30 at UTC-2 is 2025-04-01 01:30 UTC: an April entry.
    late = datetime(2025, 3, 31, 23, 30, tzinfo=timezone(timedelta(hours=-2)))
    entries = chain([(at(3, 1), LedgerKind.TOPUP, 100), (late, LedgerKind.CHARGE, -1)])
    assert [r.seq for r in build_statement(ACCOUNT, "2025-03", entries).buckets[0].rows] == [1]
    assert [r.seq for r in build_statement(ACCOUNT, "2025-04", entries).buckets[0].rows] == [2]
    assert archive_key(entries[1]) == "ledger/acct_unit/2025/04/credit-000000000002.jsonl"


# CSV ---------------------------------------------------------------------------------------
def test_csv_is_byte_identical_whatever_the_input_order() -> None:
    entries = ledger()
    shuffled = entries[:]
    random.Random(7).shuffle(shuffled)
    first = render_csv(build_statement(ACCOUNT, "2025-03", entries))
    again = render_csv(build_statement(ACCOUNT, "2025-03", shuffled))
    assert first == again
    assert first.startswith(b"row_type,account_id,date,")
    assert b"\r\n" in first


def test_csv_lists_balances_entries_and_totals_with_exact_amounts() -> None:
    rows = csv_rows(render_csv(build_statement(ACCOUNT, "2025-03", ledger())))
    assert list(rows[0]) == list(CSV_COLUMNS)
    credit = [r for r in rows if r["bucket"] == "credit"]
    # Two March charges, same key/project/model/route, on two days: one group each, two days.
    assert [r["row_type"] for r in credit] == (
        ["opening"]
        + ["entry"] * 3
        + ["total"] * (len(LedgerKind) - 1)  # no transfer row: the bucket is not split
        + ["charges_by_key", "charges_by_project", "charges_by_model", "charges_by_route"]
        + ["charges_by_day"] * 2
        + ["closing"]
    )
    opening, first_charge = credit[0], credit[1]
    assert (opening["date"], opening["balance_after"]) == ("2025-03-01T00:00:00Z", "10.000000")
    assert first_charge == {
        "row_type": "entry",
        "account_id": ACCOUNT,
        "date": "2025-03-01T00:00:00Z",
        "entry_id": "le_credit_2",
        "bucket": "credit",
        "currency": "USD",
        "seq": "2",
        "kind": "charge",
        "amount": "-0.001234",
        "balance_after": "9.998766",
        "request_id": "req_2",
        "key_id": "key_1",
        "project_id": "proj_1",
        "model": "gpt-4o-mini",
        "route": "openai/gpt-4o-mini",
        "source": "",
        "memo": "",
        "count": "",
    }
    totals = {r["kind"]: r["amount"] for r in credit if r["row_type"] == "total"}
    assert totals == {
        "topup": "0.000000",
        "grant": "0.000000",
        "charge": "-2.001234",
        "refund": "0.000500",
        "adjustment": "0.000000",
    }
    counts = {r["kind"]: r["count"] for r in credit if r["row_type"] == "total"}
    assert counts == {"topup": "0", "grant": "0", "charge": "2", "refund": "1", "adjustment": "0"}
    [by_key] = [r for r in credit if r["row_type"] == "charges_by_key"]
    assert (by_key["key_id"], by_key["count"], by_key["amount"]) == ("key_1", "2", "-2.001234")
    days = [
        (r["date"], r["count"], r["amount"]) for r in credit if r["row_type"] == "charges_by_day"
    ]
    assert days == [("2025-03-01", "1", "-0.001234"), ("2025-03-15", "1", "-2.000000")]
    assert credit[-1]["date"] == "2025-04-01T00:00:00Z"
    assert credit[-1]["balance_after"] == "7.999266"
    rmb = [r for r in rows if r["bucket"] == "rmb"]
    assert {r["currency"] for r in rmb} == {"CNY"}
    assert rmb[-1]["balance_after"] == "50.000000"


def test_csv_neutralises_spreadsheet_formulas_in_client_text() -> None:
    entries = chain([(at(3, 1), LedgerKind.TOPUP, 5), (at(3, 2), LedgerKind.CHARGE, -1)])
    entries[1] = entries[1].model_copy(update={"model": '=HYPERLINK("http://evil")'})
    rows = csv_rows(render_csv(build_statement(ACCOUNT, "2025-03", entries)))
    charge = next(r for r in rows if r["kind"] == "charge" and r["row_type"] == "entry")
    assert charge["model"] == '\'=HYPERLINK("http://evil")'
    assert charge["amount"] == "-0.000001"  # numbers are left alone


def test_a_provisional_statement_says_so() -> None:
    statement = build_statement(ACCOUNT, "2025-03", ledger(), final=False)
    rows = csv_rows(render_csv(statement))
    assert {r["row_type"] for r in rows} >= {"opening", "closing_provisional"}
    assert "closing" not in {r["row_type"] for r in rows}
    assert render_csv(statement) != render_csv(build_statement(ACCOUNT, "2025-03", ledger()))


# Months and keys ------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["2025-01", "1999-12", "2025-12"])
def test_real_months_parse(text: str) -> None:
    assert str(Month.parse(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "2025-13",
        "2025-00",
        "2025-1",
        "25-01",
        " 2025-01",
        "2025-01-01",
        "0000-01",
        "\uff12\uff10\uff12\uff15-01",
    ],
)
def test_other_month_strings_are_invalid_requests(text: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        Month.parse(text)
    assert caught.value.param == "month"
    assert caught.value.status == 400
    with pytest.raises(InvalidRequest):
        build_statement(ACCOUNT, text, [])


def test_months_step_across_years() -> None:
    assert Month.parse("2025-01").previous() == Month(2024, 12)
    assert Month.parse("2024-12").next() == Month(2025, 1)
    assert Month.parse("2025-03").end == datetime(2025, 4, 1, tzinfo=UTC)


def test_keys_follow_the_layout() -> None:
    entry = chain(CREDIT_MOVES)[2]
    assert archive_key(entry) == "ledger/acct_unit/2025/03/credit-000000000003.jsonl"
    assert statement_key(ACCOUNT, Month(2025, 3)) == "statements/acct_unit/2025-03.csv"
    with pytest.raises(InvalidRequest):
        statement_key("acct/../other", Month(2025, 3))


def test_an_archive_line_round_trips() -> None:
    entry = chain(CREDIT_MOVES)[1]
    line = archive_line(entry)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert parse_archive_lines(line) == [entry]


# Stream records ------------------------------------------------------------------------------
def stream_event() -> dict[str, list[dict[str, object]]]:
    return dict(json.loads((EVENTS / "archiver.json").read_text()))


def test_the_ledger_insert_becomes_its_entry_and_the_receipt_is_ignored() -> None:
    ledger_record, receipt_record = stream_event()["Records"]
    entry = ledger_entry_from_stream_record(ledger_record)
    assert entry is not None
    assert (entry.account_id, entry.bucket, entry.seq) == ("acct_demo", Bucket.CREDIT, 2)
    assert (entry.kind, entry.amount, entry.balance_after) == (
        LedgerKind.CHARGE,
        -1246,
        4_999_998_754,
    )
    assert entry.created_at == datetime(2025, 3, 14, 9, 26, 53, 589000, tzinfo=UTC)
    assert archive_key(entry) == "ledger/acct_demo/2025/03/credit-000000000002.jsonl"
    assert ledger_entry_from_stream_record(receipt_record) is None


def test_remove_events_carry_no_entry() -> None:
    record = stream_event()["Records"][0]
    removed = {**record, "eventName": "REMOVE"}
    assert ledger_entry_from_stream_record(removed) is None


def test_a_ledger_image_missing_fields_is_malformed() -> None:
    record = json.loads(json.dumps(stream_event()["Records"][0]))
    del record["dynamodb"]["NewImage"]["balance_after"]
    with pytest.raises(MalformedStreamRecord):
        ledger_entry_from_stream_record(record)


def test_a_record_without_image_or_shape_is_malformed() -> None:
    record = json.loads(json.dumps(stream_event()["Records"][0]))
    del record["dynamodb"]["NewImage"]
    with pytest.raises(MalformedStreamRecord, match="NewImage"):
        ledger_entry_from_stream_record(record)
    with pytest.raises(MalformedStreamRecord):
        ledger_entry_from_stream_record({"eventName": "INSERT"})


def test_a_scheduled_event_is_a_request_for_last_month() -> None:
    event = json.loads((EVENTS / "statements.json").read_text())
    request = StatementRequest.from_event(event)
    assert request.account_id is None and request.month is None
    assert request.time is not None
    assert Month.of(request.time).previous() == Month(2025, 3)
