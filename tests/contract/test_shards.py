"""Wallet shards through the DynamoDB adapter, on every backend: a split bucket holds, settles,
voids and takes money in across its shards, each shard with its own ledger series, and no
shard refuses a call that the whole bucket could pay."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from forge.domain.errors import BudgetExceeded
from forge.domain.money import Bucket
from forge.domain.records import Hold, KeyCaps, LedgerEntry, LedgerKind, Wallet
from forge.ledger.reconcile import reconcile
from forge.ledger.sweeper import sweep
from forge.money_in import adjustments
from forge.store.dynamo.base import shard_of
from forge.store.dynamo.store import DynamoStore
from tests.contract.conftest import Backend
from tests.contract.money import ACCOUNT, NOW, api_key, hold, open_account, receipt, top_up


def series(store: DynamoStore, bucket: Bucket = Bucket.CREDIT) -> dict[int, list[LedgerEntry]]:
    return {
        w.shard: store.list_entries(ACCOUNT, bucket, w.shard)
        for w in store.wallet_shards(ACCOUNT, bucket)
    }


def split_account(backend: Backend, shards: int, **balances: int) -> DynamoStore:
    """A store over an open account whose credit bucket is split into `shards`."""
    store = backend.store()
    open_account(store, **balances)
    store.shard_wallet(ACCOUNT, Bucket.CREDIT, shards)
    return store


def per_shard(store: DynamoStore, counter: str, bucket: Bucket = Bucket.CREDIT) -> list[int]:
    """One counter (`available`, `held`...) of each of the bucket's shards, in shard order."""
    return [getattr(w, counter) for w in store.wallet_shards(ACCOUNT, bucket)]


def spent_concurrently(backend: Backend, held: Callable[[str], Hold]) -> int:
    """30 calls of 10,000 each from 24 threads, each its own warm container (it knows the
    shards); what they were charged."""

    def call(n: int) -> int:
        store = backend.store()
        store.get_wallet(ACCOUNT, Bucket.CREDIT)
        try:
            placed = store.reserve(held(f"req_{n}"))
        except BudgetExceeded:
            return 0
        store.settle(placed, 10_000, receipt(placed))
        return 10_000

    with ThreadPoolExecutor(24) as pool:
        return sum(pool.map(call, range(30)))


def assert_shards_conserved(store: DynamoStore, bucket: Bucket = Bucket.CREDIT) -> None:
    """Money rule 6 per shard, each with its own gap-free series, and for their sum."""
    shards = store.wallet_shards(ACCOUNT, bucket)
    for wallet in shards:
        entries = store.list_entries(ACCOUNT, bucket, wallet.shard)
        assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
        assert {e.shard for e in entries} <= {wallet.shard}
        assert sum(e.amount for e in entries) == wallet.balance
        assert wallet.available + wallet.held == wallet.balance
        assert min(wallet.available, wallet.held) >= 0
    transfers: dict[str | None, int] = {}
    for entries in series(store, bucket).values():
        for e in entries:
            if e.kind is LedgerKind.TRANSFER:
                transfers[e.source] = transfers.get(e.source, 0) + e.amount
    assert set(transfers.values()) <= {0}
    total = store.get_wallet(ACCOUNT, bucket)
    assert total.balance == sum(w.balance for w in shards)
    assert reconcile(store, NOW).ok


def on_shard(shard: int, shards: int, amount: int, prefix: str = "req") -> Hold:
    """A hold whose request id picks `shard`."""
    request_id = next(
        f"{prefix}_{n}" for n in range(10_000) if shard_of(f"{prefix}_{n}", shards) == shard
    )
    return hold(request_id, amount)


def test_splitting_spreads_what_is_available_with_transfers_that_sum_to_zero(
    backend: Backend,
) -> None:
    store = backend.store()
    open_account(store, credit=1_000_003)

    shards = store.shard_wallet(ACCOUNT, Bucket.CREDIT, 4)

    assert [(w.shard, w.shards, w.available) for w in shards] == [
        (0, 4, 250_001),
        (1, 4, 250_001),
        (2, 4, 250_001),
        (3, 4, 250_000),
    ]
    total = store.get_wallet(ACCOUNT, Bucket.CREDIT)
    assert (total.balance, total.available, total.held, total.shards) == (
        1_000_003,
        1_000_003,
        0,
        4,
    )
    entries = series(store)
    assert [e.kind for e in entries[0]] == [LedgerKind.TOPUP, LedgerKind.TRANSFER]
    assert [(e.seq, e.amount, e.balance_after) for e in entries[3]] == [(1, 250_000, 250_000)]
    assert_shards_conserved(store)
    with pytest.raises(ValueError, match="not merged"):
        store.shard_wallet(ACCOUNT, Bucket.CREDIT, 2)
    assert [w.shards for w in store.shard_wallet(ACCOUNT, Bucket.CREDIT, 6)] == [6] * 6
    assert_shards_conserved(store)


def test_an_unsplit_wallet_is_one_shard_and_its_items_do_not_change(backend: Backend) -> None:
    store = backend.store()
    open_account(store)
    [wallet] = store.wallet_shards(ACCOUNT, Bucket.CREDIT)
    assert (wallet.shard, wallet.shards) == (0, 1)
    held = store.reserve(hold("req_1", 5_000))
    assert held.shard == 0
    final = store.settle(held, 1_000, receipt(held))
    assert final.balance_after == 999_000
    [item] = [i for i in backend.items(backend.budget_table) if i["sk"] == "BUCKET#credit"]
    assert "shard" not in item and "shards" not in item
    assert all("shard" not in i for i in backend.items(backend.ledger_table))


def test_a_split_bucket_holds_and_settles_on_the_shard_the_request_picks(
    backend: Backend,
) -> None:
    store = split_account(backend, 4)
    placed = store.reserve(on_shard(2, 4, 10_000))
    assert placed.shard == 2
    stored = store.get_hold(placed.request_id)
    assert stored is not None and stored.shard == 2
    assert per_shard(store, "held") == [0, 0, 10_000, 0]

    final = store.settle(placed, 4_000, receipt(placed))

    # The bucket's balance is the shards' sum, which the settle did not read.
    assert (final.charge, final.balance_after) == (4_000, None)
    charge = series(store)[2][-1]
    assert (charge.kind, charge.shard, charge.seq, charge.amount, charge.entry_id) == (
        LedgerKind.CHARGE,
        2,
        2,
        -4_000,
        final.ledger_entry_id,
    )
    assert charge.balance_after == 250_000 - 4_000
    assert store.get_wallet(ACCOUNT, Bucket.CREDIT).balance == 1_000_000 - 4_000
    voided = store.reserve(on_shard(1, 4, 3_000, prefix="void"))
    store.void(voided, receipt(voided, "failed"))
    assert per_shard(store, "held") == [0] * 4
    assert_shards_conserved(store)


def test_a_short_shard_is_refilled_from_the_others_rather_than_refusing(
    backend: Backend,
) -> None:
    store = split_account(backend, 4, credit=100_000)  # 25,000 each

    # Shard 1 has 25,000; the bucket has 100,000: the call fits and is held on shard 1.
    placed = store.reserve(on_shard(1, 4, 90_000))
    assert placed.shard == 1
    shards = store.wallet_shards(ACCOUNT, Bucket.CREDIT)
    assert shards[1].held == 90_000
    assert sum(w.available for w in shards) == 10_000
    # More than the whole bucket has left: refused, naming the bucket and what it has.
    with pytest.raises(BudgetExceeded) as refused:
        store.reserve(on_shard(3, 4, 10_001, prefix="big"))
    assert refused.value.details["envelope"] == "bucket:credit"
    assert refused.value.details["remaining"] == "0.010000"
    # Exactly what is left, spread over three shards, fits on one.
    last = store.reserve(on_shard(3, 4, 10_000, prefix="last"))
    assert per_shard(store, "available") == [0] * 4
    store.settle(placed, 90_000, receipt(placed))
    store.settle(last, 10_000, receipt(last))
    assert store.get_wallet(ACCOUNT, Bucket.CREDIT).balance == 0
    assert_shards_conserved(store)


def test_money_comes_in_on_shard_zero_and_goes_out_from_wherever_it_is(
    backend: Backend,
) -> None:
    store = split_account(backend, 4, credit=40_000)
    top_up(store, ACCOUNT, Bucket.CREDIT, 5_000, "le_more")
    assert per_shard(store, "available") == [
        15_000,
        10_000,
        10_000,
        10_000,
    ]
    # A debit larger than shard 0 holds gathers it there first.
    adjustments.adjust_wallet(store, ACCOUNT, Bucket.CREDIT, "-0.03", reason="correction")
    assert store.get_wallet(ACCOUNT, Bucket.CREDIT).available == 15_000
    with pytest.raises(BudgetExceeded):
        adjustments.adjust_wallet(store, ACCOUNT, Bucket.CREDIT, "-0.015001", reason="too much")
    assert store.get_wallet(ACCOUNT, Bucket.CREDIT).balance == 15_000
    assert_shards_conserved(store)


def test_a_fallback_keeps_its_shard_in_the_bucket_and_picks_one_in_another(
    backend: Backend,
) -> None:
    store = split_account(backend, 4, rmb=80_000)
    store.shard_wallet(ACCOUNT, Bucket.RMB, 2)
    first = store.reserve(on_shard(3, 4, 1_000))
    bigger = store.rehold(first, hold(first.request_id, 2_000))
    assert bigger.shard == 3
    routed = store.rehold(bigger, hold(first.request_id, 3_000, bucket=Bucket.RMB))
    assert routed.shard == shard_of(first.request_id, 2)
    assert sum(w.held for w in store.wallet_shards(ACCOUNT, Bucket.CREDIT)) == 0
    assert store.wallet_shards(ACCOUNT, Bucket.RMB)[routed.shard].held == 3_000
    store.settle(routed, 2_500, receipt(routed))
    assert_shards_conserved(store)
    assert_shards_conserved(store, Bucket.RMB)


def test_a_container_that_has_not_seen_the_split_holds_on_shard_zero_then_learns(
    backend: Backend,
) -> None:
    store, fresh = backend.store(), backend.store()
    open_account(store)
    store.shard_wallet(ACCOUNT, Bucket.CREDIT, 4)
    request = on_shard(2, 4, 1_000)
    first = fresh.reserve(request)
    assert first.shard == 0  # right, only busier: shard 0 is always there
    fresh.settle(first, 1_000, receipt(first))  # its read of shard 0 says there are 4
    assert fresh.reserve(on_shard(2, 4, 1_000, prefix="next")).shard == 2
    assert_shards_conserved(store)


def test_the_sweeper_resolves_an_expired_hold_on_its_shard(backend: Backend) -> None:
    store = split_account(backend, 3)
    request = on_shard(1, 3, 7_000)
    store.reserve(request.model_copy(update={"expires_at": NOW - timedelta(seconds=1)}))
    report = sweep(store, NOW)
    assert report.voided == [request.request_id]
    assert per_shard(store, "held") == [0, 0, 0]
    assert_shards_conserved(store)


@pytest.mark.items_vary
def test_concurrent_calls_on_a_split_bucket_never_overdraw_it(backend: Backend) -> None:
    """24 threads, each its own container, spend a bucket whose shards run short at different
    times: every call the bucket could pay is served, none beyond, and every rule holds."""
    setup = split_account(backend, 4, credit=200_000)

    charged = spent_concurrently(backend, lambda rid: hold(rid, 10_000))

    assert charged == 200_000  # 20 of the 30 fit, whichever shard each landed on
    wallet = setup.get_wallet(ACCOUNT, Bucket.CREDIT)
    assert (wallet.balance, wallet.available, wallet.held) == (0, 0, 0)
    assert_shards_conserved(setup)


def test_a_split_wallet_is_summed_and_its_items_carry_their_shard(backend: Backend) -> None:
    store = split_account(backend, 2)
    items = {
        i["sk"]: i for i in backend.items(backend.budget_table) if i["sk"].startswith("BUCKET#c")
    }
    assert sorted(items) == ["BUCKET#credit", "BUCKET#credit#01"]
    assert (items["BUCKET#credit#01"]["shard"], items["BUCKET#credit"]["shards"]) == (1, 2)
    assert isinstance(store.get_wallet(ACCOUNT, Bucket.CREDIT), Wallet)


def test_a_caller_wrong_about_the_shard_releases_or_settles_where_the_hold_is(
    backend: Backend,
) -> None:
    """A reservation whose answer was lost can land on a shard its caller did not record (it
    re-picked one meanwhile): void and settle find the hold where it is, and a hold the bucket
    does not hold where its item says is refused, not retried without end."""
    store = split_account(backend, 4)
    voided, settled = on_shard(2, 4, 3_000, prefix="v"), on_shard(3, 4, 4_000, prefix="s")
    for placed in (voided, settled):
        store.reserve(placed)
    stale_void = voided.model_copy(update={"shard": 0})
    stale_settle = settled.model_copy(update={"shard": 1})

    store.void(stale_void, receipt(stale_void, "failed"))
    final = store.settle(stale_settle, 1_500, receipt(stale_settle))

    assert final.charge == 1_500
    assert series(store)[3][-1].request_id == settled.request_id
    assert per_shard(store, "held") == [0] * 4
    assert_shards_conserved(store)


def test_the_callers_hold_learns_its_shard_even_when_the_reservation_fails(
    backend: Backend,
) -> None:
    store = split_account(backend, 4, credit=1_000)
    request = on_shard(3, 4, 2_000)
    with pytest.raises(BudgetExceeded):
        store.reserve(request)
    assert request.shard == 3  # where a lost answer would have put it


# Envelopes of a split bucket ------------------------------------------------------------------
def capped(request: Hold, daily: int) -> Hold:
    """`request` held against a key whose daily cap is `daily` (one envelope)."""
    key = api_key(caps={Bucket.CREDIT: KeyCaps(daily=daily)})
    return hold(request.request_id, request.amount, key=key)


def test_a_capped_key_on_a_split_bucket_takes_from_its_shares_never_over_the_cap(
    backend: Backend,
) -> None:
    """Each shard's calls take the key's envelope from that shard's share of it, lent by the
    envelope's own item: the cap holds over all of them, and only the envelope as a whole
    refuses."""
    store = split_account(backend, 4)
    first = store.reserve(capped(on_shard(1, 4, 10_000), 40_000))
    store.settle(first, 6_000, receipt(first))
    second = store.reserve(capped(on_shard(2, 4, 10_000, prefix="two"), 40_000))
    [envelope] = second.envelopes
    items = {i["sk"]: i for i in backend.items(backend.budget_table) if i["pk"] == envelope.pk}
    own, share = items[envelope.sk], items[f"{envelope.sk}#02"]
    assert (
        own["consumed"] == own["lent"] == share["received"] + items[f"{envelope.sk}#01"]["received"]
    )
    assert share["held"] == 10_000 and share["limit"] == 40_000
    # 6,000 charged, 10,000 held: 24,000 is left of 40,000, wherever it is lent.
    with pytest.raises(BudgetExceeded) as refused:
        store.reserve(capped(on_shard(3, 4, 24_001, prefix="big"), 40_000))
    assert refused.value.details["envelope"] == "key:daily"
    assert refused.value.details["remaining"] == "0.024000"
    last = store.reserve(capped(on_shard(3, 4, 24_000, prefix="last"), 40_000))
    store.settle(second, 10_000, receipt(second))
    store.settle(last, 24_000, receipt(last))
    assert reconcile(store, NOW).ok
    spent = sum(
        -e.amount
        for entries in series(store).values()
        for e in entries
        if e.kind is LedgerKind.CHARGE
    )
    assert spent == 40_000  # exactly the cap, over three shards


def test_room_lent_under_one_limit_is_not_spent_under_a_lower_one(backend: Backend) -> None:
    """A cap lowered after its envelope lent room: a call under the new cap cannot spend the
    room lent under the old one, which goes back through the envelope's own item."""
    store = split_account(backend, 2)
    early = store.reserve(capped(on_shard(1, 2, 5_000), 100_000))  # lends about half of it
    store.settle(early, 5_000, receipt(early))
    with pytest.raises(BudgetExceeded):  # 5,000 spent of a new cap of 8,000: 3,000 left
        store.reserve(capped(on_shard(1, 2, 3_001, prefix="low"), 8_000))
    fits = store.reserve(capped(on_shard(1, 2, 3_000, prefix="fits"), 8_000))
    store.settle(fits, 3_000, receipt(fits))
    assert reconcile(store, NOW).ok


@pytest.mark.items_vary
def test_concurrent_calls_with_a_capped_key_on_a_split_bucket_never_overrun_it(
    backend: Backend,
) -> None:
    setup = split_account(backend, 4, credit=1_000_000)

    charged = spent_concurrently(backend, lambda rid: capped(hold(rid, 10_000), 150_000))

    assert charged == 150_000  # 15 of the 30 fit the cap, whichever shard each landed on
    assert reconcile(setup, NOW).ok
    assert_shards_conserved(setup)
