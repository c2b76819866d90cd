"""The HTML statement, pure: readable, escaped, byte-identical, and a chart that is the days'
spend; plus the months an account can ask for."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from forge.domain.calendar import Month
from forge.domain.money import Bucket
from forge.domain.records import LedgerEntry, LedgerKind
from forge.ledger.statements import available_months, build_statement, render_csv, render_html
from tests.statement_check import (
    Page,
    assert_csv_tells,
    assert_html_tells,
    ledger_month,
)

ACCOUNT = "acct_page"
MARCH = Month(2025, 3)


def at(day: int, hour: int = 12, month: int = 3) -> datetime:
    return datetime(2025, month, day, hour, tzinfo=UTC)


def chain(*moves: tuple[datetime, LedgerKind, int, str | None]) -> list[LedgerEntry]:
    """(when, kind, amount, model) -> a valid credit chain; charges get a key and a route."""
    entries, balance = [], 0
    for seq, (when, kind, amount, model) in enumerate(moves, start=1):
        balance += amount
        charge = kind is LedgerKind.CHARGE
        entries.append(
            LedgerEntry(
                entry_id=f"le_{seq}",
                account_id=ACCOUNT,
                bucket=Bucket.CREDIT,
                seq=seq,
                kind=kind,
                amount=amount,
                balance_after=balance,
                created_at=when,
                request_id=f"req_{seq}" if charge else None,
                key_id=f"key_{seq % 2}" if charge else None,
                project_id="proj" if charge else None,
                model=model,
                route="demo:demo-official-1" if charge else None,
                source=None if charge else "payment:pi_1",
            )
        )
    return entries


MOVES = chain(
    (at(20, month=2), LedgerKind.TOPUP, 5_000_000, None),
    (at(2, 9), LedgerKind.CHARGE, -1_200, "demo-official"),
    (at(2, 18), LedgerKind.CHARGE, -300, "demo-official"),
    (at(9), LedgerKind.CHARGE, -4_500, "gpt-4o-mini"),
    (at(10), LedgerKind.REFUND, 150, None),
    (at(30, 23), LedgerKind.CHARGE, -30, "demo-official"),
)


def test_the_page_says_what_the_ledger_says_and_the_csv_agrees() -> None:
    statement = build_statement(ACCOUNT, MARCH, MOVES)
    expected = ledger_month(MOVES, MARCH)
    assert_csv_tells(render_csv(statement), Bucket.CREDIT, expected, final=True)
    page = assert_html_tells(render_html(statement), Bucket.CREDIT, expected, final=True)
    bars = {b.attrs["data-day"]: b for b in page.section(Bucket.CREDIT) if b.tag == "rect"}
    assert list(bars) == ["2025-03-02", "2025-03-09", "2025-03-30"]
    # The biggest day's bar is full height, a tiny day still shows a sliver
    assert int(bars["2025-03-09"].attrs["height"]) == 120
    assert int(bars["2025-03-30"].attrs["height"]) == 1
    # Bars stand at their day of the month, so quiet days are gaps
    xs = [int(b.attrs["x"]) for b in bars.values()]
    assert (xs[1] - xs[0]) * 21 == (xs[2] - xs[1]) * 7  # 7 days, then 21 days
    [title] = [t for t in page.find("title") if t.within("head")]
    assert "2025-03" in title.text and ACCOUNT in title.text


def test_the_page_is_byte_identical_whatever_the_input_order() -> None:
    shuffled = MOVES[:]
    random.Random(3).shuffle(shuffled)
    assert render_html(build_statement(ACCOUNT, MARCH, MOVES)) == render_html(
        build_statement(ACCOUNT, MARCH, shuffled)
    )


def test_client_text_is_escaped_not_run() -> None:
    hostile = '<script>alert("x")</script>'
    entries = chain(
        (at(1), LedgerKind.TOPUP, 10, None),
        (at(2), LedgerKind.CHARGE, -1, hostile),
    )
    body = render_html(build_statement(ACCOUNT, MARCH, entries))
    assert b"<script>" not in body
    assert b"&lt;script&gt;" in body
    page = Page.parse(body)  # still well formed
    [row] = page.find("tr", data_name=hostile)
    assert row.within("table", data_group="model")


def test_a_quiet_month_has_an_empty_chart_and_a_provisional_one_says_so() -> None:
    statement = build_statement(ACCOUNT, "2025-04", MOVES, final=False)
    expected = ledger_month(MOVES, Month(2025, 4))
    page = assert_html_tells(render_html(statement), Bucket.CREDIT, expected, final=False)
    assert not [e for e in page.elements if e.tag == "rect"]
    assert len(page.find("svg")) == 2  # one (empty) chart per bucket
    [status] = page.find("strong", data_status="provisional")
    assert status.text == "Provisional"


def test_the_months_on_offer_run_from_the_first_entry_to_now() -> None:
    now = datetime(2025, 5, 1, 0, 30, tzinfo=UTC)
    months = available_months(at(20, month=2), now)
    assert [(m.month, m.final) for m in months] == [
        ("2025-05", False),
        ("2025-04", False),  # closed 30 minutes ago: the archive may still be catching up
        ("2025-03", True),
        ("2025-02", True),
    ]
    assert [m.month for m in available_months(at(20, month=2), now + timedelta(hours=1))][1:] == [
        "2025-04",
        "2025-03",
        "2025-02",
    ]
    assert available_months(None, now) == []
