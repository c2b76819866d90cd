"""The catalog store and the account views (LedgerViews) over both backends: the catalog's
versioned writes and batched reads, and the views' indexed pages, cursors, windows, run calls,
run totals and usage."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from forge.domain.catalog import Catalog, load_catalog
from forge.domain.errors import InvalidCursor, NotFound
from forge.domain.money import Bucket
from forge.domain.views import TimeRange
from forge.money_in.adjustments import refund_charge
from tests.contract.conftest import Backend
from tests.contract.money import ACCOUNT, NOW, OTHER, hold, open_account, receipt, top_up


def models(count: int) -> Catalog:
    template = load_catalog().models[0]
    return Catalog(models=[template.model_copy(update={"id": f"m{n:03d}"}) for n in range(count)])


def test_the_catalog_store(backend: Backend) -> None:
    catalog = backend.catalog()
    assert catalog.read_catalog() is None
    assert catalog.seed(models(3)) == ["m000", "m001", "m002"]
    assert catalog.read_catalog() == models(3)
    changed = models(3).models[1].model_copy(update={"description": "changed"})
    catalog.put_model(changed)
    catalog.put_model(models(4).models[3])
    stored = catalog.read_catalog()
    assert stored is not None
    assert [m.id for m in stored.models] == ["m000", "m001", "m002", "m003"]
    assert stored.models[1].description == "changed"
    catalog.remove_model("m000")
    with pytest.raises(NotFound):
        catalog.remove_model("m000")
    catalog.seed(Catalog(models=[models(3).models[2]]), replace=True)
    stored = catalog.read_catalog()
    assert stored is not None and [m.id for m in stored.models] == ["m002"]


def test_a_large_catalog_is_written_and_read_in_batches(backend: Backend) -> None:
    catalog = backend.catalog()
    catalog.seed(models(150))  # several transactions of at most 100 items, two BatchGetItems
    assert catalog.read_catalog() == models(150)


def write_history(backend: Backend) -> list[str]:
    """25 ledger entries over two buckets, a minute apart, then 7 calls of one run and
    refunds; returns the request ids of the run's calls."""
    moment = [NOW - timedelta(hours=3)]
    store = backend.store(clock=lambda: moment[0])
    open_account(store, credit=0)
    open_account(store, OTHER, credit=0)
    for n in range(25):
        moment[0] += timedelta(minutes=1)
        bucket = Bucket.CREDIT if n % 3 else Bucket.RMB
        top_up(store, ACCOUNT, bucket, 1_000_000 + n, f"le_top_{n}")
    top_up(store, OTHER, Bucket.CREDIT, 5, "le_other")
    calls = []
    for n in range(7):
        moment[0] += timedelta(minutes=1)
        held = hold(f"req_run_{n}", 1_000, run_id="run-a")
        store.reserve(held)
        stamped = receipt(held).model_copy(update={"created_at": moment[0]})
        store.settle(held, 100 * n, stamped)
        calls.append(held.request_id)
    moment[0] += timedelta(minutes=1)
    refund_charge(store, ACCOUNT, "req_run_5", "0.0001")
    return calls


def test_ledger_pages_cursors_and_windows(backend: Backend) -> None:
    write_history(backend)
    views = backend.views()
    seen, cursor = [], None
    while True:
        page = views.entries(ACCOUNT, limit=10, cursor=cursor)
        seen += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(seen) == 25 + 7 + 1  # top-ups, charges (a free call too), the refund
    assert [e.created_at for e in seen] == sorted((e.created_at for e in seen), reverse=True)

    oldest = views.entries(ACCOUNT, bucket=Bucket.RMB, limit=5, newest_first=False)
    assert [e.seq for e in oldest.items] == [1, 2, 3, 4, 5]
    rest = views.entries(
        ACCOUNT, bucket=Bucket.RMB, limit=5, newest_first=False, cursor=oldest.next_cursor
    )
    assert [e.seq for e in rest.items] == [6, 7, 8, 9]
    assert rest.next_cursor is None

    window = TimeRange(
        start=NOW - timedelta(hours=3), end=NOW - timedelta(hours=3) + timedelta(minutes=6)
    )
    inside = views.entries(ACCOUNT, window=window, limit=50)
    assert [e.entry_id for e in inside.items] == [f"le_top_{n}" for n in (4, 3, 2, 1, 0)]

    with pytest.raises(InvalidCursor):
        views.entries(ACCOUNT, limit=5, cursor=oldest.next_cursor)  # another listing's cursor
    with pytest.raises(InvalidCursor):
        views.entries(ACCOUNT, limit=5, cursor="not-a-cursor")
    with pytest.raises(NotFound):
        views.entries(OTHER, bucket=Bucket.RMB, limit=5, cursor=oldest.next_cursor)
    assert [e.entry_id for e in views.entries(OTHER, limit=5).items] == ["le_other"]


def test_run_calls_totals_usage_and_statement_checks(backend: Backend) -> None:
    calls = write_history(backend)
    views = backend.views()
    first = views.run_calls(ACCOUNT, "run-a", limit=4)
    second = views.run_calls(ACCOUNT, "run-a", limit=4, cursor=first.next_cursor)
    assert [r.request_id for r in first.items + second.items] == calls
    assert second.next_cursor is None
    [line] = views.run_totals(ACCOUNT, "run-a")
    assert (line.totals.requests, line.totals.charge, line.totals.refunded) == (7, 2_100, 100)
    assert views.run_totals(ACCOUNT, "run-b") == []

    day = TimeRange(start=NOW - timedelta(days=1), end=NOW + timedelta(hours=1))
    cells = views.usage(ACCOUNT, day)
    assert sum(c.totals.charge for c in cells) == 2_100
    assert sum(c.totals.refunded for c in cells) == 100
    cut = TimeRange(start=NOW - timedelta(hours=3), end=NOW - timedelta(hours=2, minutes=30))
    partial = views.usage(ACCOUNT, cut)  # inside one hour: rebuilt from its receipts
    assert sum(c.totals.requests for c in partial) == 4  # the calls of minutes 26 to 29
    receipts = list(views.receipts(ACCOUNT, day))
    assert [r.request_id for r in receipts] == calls
    refunds = list(views.refunds(ACCOUNT, day))
    assert [(e.amount, e.request_id) for e in refunds] == [(100, "req_run_5")]

    entries = views.entries_by_seq(ACCOUNT, Bucket.CREDIT, 2, 4)
    assert [e.seq for e in entries] == [2, 3, 4]
    first_at = views.first_entry_at(ACCOUNT)
    assert first_at == NOW - timedelta(hours=3) + timedelta(minutes=1)
    assert views.first_entry_at("acct_nobody") is None
    assert isinstance(first_at, datetime)
