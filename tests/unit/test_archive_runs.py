"""Archive objects of runs of entries, pure: how a batch's entries are cut into objects, and
what an object's key says it holds."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from forge.domain.archive import (
    MAX_RUN,
    archive_key,
    archive_line,
    archive_runs,
    entry_object_key,
    object_seqs,
)
from forge.domain.money import Bucket
from forge.domain.records import LedgerEntry, LedgerKind

PREFIX = "ledger/acct-1/2025/03/credit-"


def entry(
    seq: int, *, bucket: Bucket = Bucket.CREDIT, shard: int = 0, month: int = 3, amount: int = 1
) -> LedgerEntry:
    return LedgerEntry(
        entry_id=f"le_{bucket.value}_{shard}_{seq}",
        account_id="acct-1",
        bucket=bucket,
        shard=shard,
        seq=seq,
        kind=LedgerKind.TOPUP,
        amount=amount,
        balance_after=seq,
        created_at=datetime(2025, month, 28, 12, 0, seq % 60, tzinfo=UTC),
    )


def test_consecutive_entries_of_one_series_are_one_object_named_by_first_and_last_seq() -> None:
    [run] = archive_runs([entry(3), entry(4), entry(5)])
    assert run.key == f"{PREFIX}000000000003-000000000005.jsonl"
    assert run.body == b"".join(archive_line(entry(s)) for s in (3, 4, 5))


def test_an_entry_alone_keeps_the_per_entry_key() -> None:
    [run] = archive_runs([entry(7)])
    assert run.key == archive_key(entry(7)) == f"{PREFIX}000000000007.jsonl"


def test_a_batch_is_cut_by_series_month_and_gaps_whatever_its_order() -> None:
    batch = [
        *(entry(s) for s in (1, 2, 4, 5, 6)),  # a gap after 2 (seq 3 failed to decode)
        entry(1, bucket=Bucket.RMB),
        entry(1, shard=2),
        entry(2, shard=2),
        entry(7, month=4),  # the next month's first entry
    ]
    shuffled = random.Random(7).sample(batch, len(batch))
    keys = sorted(run.key for run in archive_runs(shuffled))
    assert keys == [
        "ledger/acct-1/2025/03/credit-000000000001-000000000002.jsonl",
        "ledger/acct-1/2025/03/credit-000000000004-000000000006.jsonl",
        "ledger/acct-1/2025/03/credit.02-000000000001-000000000002.jsonl",
        "ledger/acct-1/2025/03/rmb-000000000001.jsonl",
        "ledger/acct-1/2025/04/credit-000000000007.jsonl",
    ]
    assert sorted(e.entry_id for r in archive_runs(shuffled) for e in r.entries) == sorted(
        e.entry_id for e in batch
    )


def test_a_redelivered_record_in_one_batch_is_archived_once() -> None:
    [run] = archive_runs([entry(1), entry(2), entry(1)])
    assert [e.seq for e in run.entries] == [1, 2]


def test_two_different_entries_claiming_one_seq_are_refused() -> None:
    with pytest.raises(ValueError, match="seq 2"):
        archive_runs([entry(1), entry(2), entry(2, amount=5)])


def test_a_run_longer_than_max_run_is_cut() -> None:
    runs = archive_runs(entry(s) for s in range(1, MAX_RUN + 3))
    assert [(r.entries[0].seq, r.entries[-1].seq) for r in runs] == [
        (1, MAX_RUN),
        (MAX_RUN + 1, MAX_RUN + 2),
    ]


@pytest.mark.parametrize(
    ("key", "held"),
    [
        (f"{PREFIX}000000000009.jsonl", (PREFIX, range(9, 10))),
        (f"{PREFIX}000000000009-000000000012.jsonl", (PREFIX, range(9, 13))),
        (
            "ledger/a-b/2025/03/credit.31-000000000001-000000000002.jsonl",
            ("ledger/a-b/2025/03/credit.31-", range(1, 3)),
        ),
        (f"{PREFIX}000000000012-000000000009.jsonl", None),  # a run cannot end before it starts
        (f"{PREFIX}000000000009.json", None),
        (f"{PREFIX}9.jsonl", None),
        ("statements/acct-1/2025-03.csv", None),
    ],
)
def test_an_object_key_says_which_seqs_it_holds(key: str, held: tuple[str, range] | None) -> None:
    assert object_seqs(key) == held


def test_keys_sort_by_their_first_seq_singles_and_runs_alike() -> None:
    keys = [
        entry_object_key(PREFIX, 10, 12),
        entry_object_key(PREFIX, 2),
        entry_object_key(PREFIX, 10),
        entry_object_key(PREFIX, 3, 9),
    ]
    firsts = [held[1].start for key in sorted(keys) if (held := object_seqs(key))]
    assert firsts == sorted(firsts) == [2, 3, 10, 10]
