"""Compaction's pure parts: deterministic gzip, closing records, and statements built from a
chain point (a compacted month's closing) equal to statements built from all history."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forge.domain.archive import (
    BucketClose,
    ChainPoint,
    MonthClose,
    archive_line,
    closing_key,
    deterministic_gzip,
    monthly_key,
)
from forge.domain.calendar import Month
from forge.domain.errors import LedgerChainBroken
from forge.domain.money import Bucket
from forge.domain.records import LedgerEntry, LedgerKind
from forge.ledger.statements import build_statement, render_csv, render_html, verify_chain

ACCOUNT = "acct_unit"


def chain(amounts: list[tuple[int, int]]) -> list[LedgerEntry]:
    """Credit entries (month number of 2025, amount), seq from 1."""
    entries, balance = [], 0
    for seq, (month, amount) in enumerate(amounts, start=1):
        balance += amount
        entries.append(
            LedgerEntry(
                entry_id=f"le_{seq}",
                account_id=ACCOUNT,
                bucket=Bucket.CREDIT,
                seq=seq,
                kind=LedgerKind.TOPUP if amount > 0 else LedgerKind.CHARGE,
                amount=amount,
                balance_after=balance,
                created_at=datetime(2025, month, min(seq, 28), 12, tzinfo=UTC),
            )
        )
    return entries


@given(st.binary(max_size=4096))
def test_deterministic_gzip_is_gzip_and_the_same_bytes_every_time(data: bytes) -> None:
    packed = deterministic_gzip(data)
    assert gzip.decompress(packed) == data
    assert packed == deterministic_gzip(data)
    # No time, no name: flags 0, mtime 0; the header is a constant
    assert packed[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"


def test_keys_put_a_month_in_its_partition_and_an_accounts_closings_together() -> None:
    month = Month(2026, 11)
    assert monthly_key("acct_a", month, Bucket.RMB) == (
        "ledger-monthly/month=2026-11/acct_a.rmb.jsonl.gz"
    )
    assert closing_key("acct_a", month) == "ledger-closing/acct_a/2026-11.json"


def test_a_closing_record_round_trips_and_says_what_it_holds() -> None:
    close = MonthClose(
        account_id=ACCOUNT,
        month="2025-03",
        buckets=[
            BucketClose(
                bucket=Bucket.CREDIT,
                opening_seq=4,
                opening_balance=10,
                closing_seq=9,
                closing_balance=3,
                sha256="ab",
            )
        ],
    )
    assert MonthClose.model_validate_json(close.model_dump_json()) == close
    part = close.part(Bucket.CREDIT)
    assert (part.entries, part.opening, part.closing) == (5, ChainPoint(4, 10), ChainPoint(9, 3))


def test_a_chain_checked_from_a_point_must_continue_it() -> None:
    entries = chain([(1, 100), (2, -10), (2, -5)])
    verify_chain(entries[1:], ChainPoint(1, 100))
    with pytest.raises(LedgerChainBroken, match="expected 2"):
        verify_chain(entries[2:], ChainPoint(1, 100))
    with pytest.raises(LedgerChainBroken, match="balance_after"):
        verify_chain(entries[1:], ChainPoint(1, 99))


@given(st.lists(st.tuples(st.integers(1, 6), st.integers(-1_000, 1_000)), max_size=30))
def test_a_statement_from_the_previous_closing_is_the_one_from_all_history(
    moves: list[tuple[int, int]],
) -> None:
    entries = chain(sorted(moves, key=lambda m: m[0]))
    month = Month(2025, 4)
    full = build_statement(ACCOUNT, month, entries)
    before = [e for e in entries if Month.of(e.created_at) < month]
    start = ChainPoint(before[-1].seq, before[-1].balance_after) if before else ChainPoint()
    rest = [e for e in entries if Month.of(e.created_at) == month]
    from_closing = build_statement(ACCOUNT, month, rest, starts={Bucket.CREDIT: start})
    assert from_closing == full
    assert render_csv(from_closing) == render_csv(full)
    assert render_html(from_closing) == render_html(full)
    assert b"".join(archive_line(e) for e in from_closing.buckets[0].rows) == b"".join(
        archive_line(e) for e in rest
    )
