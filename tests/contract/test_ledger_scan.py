"""The ledger scan archive replay reads (LedgerScan.entries_between), on both backends: the
entries of a half-open window across accounts and buckets, entries written before the views'
indexes placed by their created_at, receipts and other items left out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from forge.domain.errors import LedgerEntryUnreadable
from forge.domain.money import Bucket
from forge.domain.records import LedgerEntry, LedgerKind
from forge.domain.views import TimeRange
from forge.store.dynamo.items import dump, to_item
from tests.contract.conftest import Backend
from tests.contract.money import ACCOUNT, OTHER, hold, open_account, receipt, top_up
from tests.ledger_history import Clock

START = datetime(2026, 3, 4, 10, tzinfo=UTC)
LEGACY = "acct_legacy"


def legacy_entry(backend: Backend, seq: int, at: datetime) -> LedgerEntry:
    """An entry as written before the views' indexes existed: no time_sk, no scope_sk."""
    entry = LedgerEntry(
        entry_id=f"le_legacy_{seq}",
        account_id=LEGACY,
        bucket=Bucket.CREDIT,
        seq=seq,
        kind=LedgerKind.TOPUP,
        amount=1,
        balance_after=seq,
        created_at=at,
    )
    item = {
        "pk": f"ACCT#{LEGACY}",
        "sk": f"ENTRY#credit#{seq:012d}",
        "record_type": "ledger_entry",
        **dump(entry),
    }
    backend.client.put_item(TableName=backend.ledger_table, Item=to_item(item))
    return entry


def test_entries_between_takes_every_account_s_entries_of_the_window(backend: Backend) -> None:
    clock = Clock()
    store = backend.store(clock=clock)
    open_account(store, ACCOUNT, credit=0)
    open_account(store, OTHER, credit=0)

    def at(moment: datetime, account_id: str, bucket: Bucket, name: str) -> LedgerEntry:
        clock.now = moment
        return top_up(store, account_id, bucket, 5, f"le_{name}")

    before = at(START - timedelta(microseconds=1), ACCOUNT, Bucket.CREDIT, "before")
    first = at(START, ACCOUNT, Bucket.CREDIT, "first")
    middle = at(START + timedelta(minutes=30), OTHER, Bucket.RMB, "middle")
    last = at(START + timedelta(hours=1, microseconds=-1), ACCOUNT, Bucket.RMB, "last")
    after = at(START + timedelta(hours=1), OTHER, Bucket.CREDIT, "after")
    old_inside = legacy_entry(backend, 1, START + timedelta(minutes=15))
    old_after = legacy_entry(backend, 2, START + timedelta(hours=2))
    store.put_receipt(receipt(hold("req_scan", 10)))  # a receipt: never an entry

    def ids(window: TimeRange) -> set[str]:
        return {e.entry_id for e in store.entries_between(window)}

    assert ids(TimeRange(START, START + timedelta(hours=1))) == {
        e.entry_id for e in (first, middle, last, old_inside)
    }
    assert ids(TimeRange(None, START)) == {before.entry_id}
    assert ids(TimeRange(START + timedelta(hours=1), None)) == {after.entry_id, old_after.entry_id}
    assert ids(TimeRange(START + timedelta(days=1), START + timedelta(days=2))) == set()


def test_an_entry_it_cannot_read_stops_the_scan_by_name(backend: Backend) -> None:
    entry = legacy_entry(backend, 1, START)
    newer = {"pk": f"ACCT#{LEGACY}", "sk": "ENTRY#credit#000000000002"}
    newer |= {"record_type": "ledger_entry", **dump(entry), "seq": 2, "schema_version": 99}
    backend.client.put_item(TableName=backend.ledger_table, Item=to_item(newer))

    with pytest.raises(LedgerEntryUnreadable, match="ENTRY#credit#000000000002"):
        list(backend.store().entries_between(TimeRange(None, None)))
