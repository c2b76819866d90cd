"""Holds through the DynamoDB adapter, on both backends: reserve across the bucket and every
envelope, settle exactly once, void, move to a fallback route, record an outcome, expire."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from forge.domain.errors import BudgetExceeded, HoldAlreadyResolved
from forge.domain.money import Bucket
from forge.domain.records import HoldOutcome, HoldStatus, KeyCaps, ProjectCaps
from forge.ledger.reconcile import reconcile
from forge.ledger.sweeper import sweep
from tests.contract.conftest import Backend
from tests.contract.money import (
    NOW,
    api_key,
    assert_conserved,
    hold,
    open_account,
    receipt,
)

ACCOUNT_ID = "acct_contract"


def test_settle_charges_once_and_writes_entry_and_receipt(backend: Backend) -> None:
    store = backend.store()
    open_account(store)
    held = hold("req_1", 5_000)
    store.reserve(held)
    wallet = store.get_wallet(held.account_id, Bucket.CREDIT)
    assert (wallet.balance, wallet.held, wallet.available) == (1_000_000, 5_000, 995_000)

    final = store.settle(held, 1_234, receipt(held))

    assert (final.charge, final.balance_after, final.ledger_entry_id) == (
        1_234,
        1_000_000 - 1_234,
        "le_req_1",
    )
    assert store.get_receipt(held.account_id, "req_1") == final
    entries = store.list_entries(held.account_id, Bucket.CREDIT)
    assert [(e.seq, e.amount, e.kind.value, e.request_id) for e in entries] == [
        (1, 1_000_000, "topup", None),
        (2, -1_234, "charge", "req_1"),
    ]
    stored = store.get_hold("req_1")
    assert stored is not None and stored.status is HoldStatus.SETTLED
    for again in (
        lambda: store.settle(held, 1_234, receipt(held)),
        lambda: store.void(held, receipt(held)),
    ):
        with pytest.raises(HoldAlreadyResolved):
            again()
    wallet = store.get_wallet(held.account_id, Bucket.CREDIT)
    assert (wallet.balance, wallet.held, wallet.available, wallet.seq) == (998_766, 0, 998_766, 2)
    assert_conserved(store)


def test_settle_refuses_a_charge_above_the_hold(backend: Backend) -> None:
    store = backend.store()
    open_account(store)
    held = hold("req_1", 100)
    store.reserve(held)
    with pytest.raises(ValueError):
        store.settle(held, 101, receipt(held))


def test_void_releases_the_whole_hold(backend: Backend) -> None:
    store = backend.store()
    open_account(store)
    held = hold("req_1", 400)
    store.reserve(held)
    final = store.void(held, receipt(held, "failed"))
    assert (final.charge, final.bucket) == (0, Bucket.CREDIT)
    wallet = store.get_wallet(held.account_id, Bucket.CREDIT)
    assert (wallet.balance, wallet.available, wallet.held, wallet.seq) == (
        1_000_000,
        1_000_000,
        0,
        1,
    )
    assert store.get_receipt(held.account_id, "req_1") == final
    stored = store.get_hold("req_1")
    assert stored is not None and stored.status is HoldStatus.VOIDED
    with pytest.raises(HoldAlreadyResolved):
        store.void(held, receipt(held, "failed"))


def test_a_hold_cannot_be_reserved_twice(backend: Backend) -> None:
    store = backend.store()
    open_account(store)
    store.reserve(hold("req_1", 10))
    # The same reservation again is what botocore's retry sends after a lost answer: it
    # meets its own hold and holds nothing more.
    store.reserve(hold("req_1", 10))
    with pytest.raises(BudgetExceeded):  # other terms: the hold item exists, so refused
        store.reserve(hold("req_1", 11))
    assert store.get_wallet("acct_contract", Bucket.CREDIT).held == 10


def test_a_refusal_names_the_bucket_and_what_was_left(backend: Backend) -> None:
    store = backend.store()
    open_account(store, credit=50)
    with pytest.raises(BudgetExceeded) as refused:
        store.reserve(hold("req_1", 51))
    assert refused.value.details == {
        "envelope": "bucket:credit",
        "limit": "0.000050",
        "remaining": "0.000050",
        "requested": "0.000051",
    }
    assert store.get_hold("req_1") is None
    store.reserve(hold("req_2", 50))  # exactly what is left fits
    assert store.get_wallet("acct_contract", Bucket.CREDIT).available == 0


ENVELOPES = [
    ("key:daily", KeyCaps(daily=1000), None, None),
    ("key:monthly", KeyCaps(monthly=1000), None, None),
    ("key:total", KeyCaps(total=1000), None, None),
    ("project:daily", KeyCaps(), ProjectCaps(daily=1000), None),
    ("project:monthly", KeyCaps(), ProjectCaps(monthly=1000), None),
    ("run", KeyCaps(run_budget=1000), None, "run-1"),
]


@pytest.mark.parametrize(("envelope", "caps", "project", "run_id"), ENVELOPES)
def test_each_envelope_stops_spend_at_its_limit_and_names_itself(
    backend: Backend,
    envelope: str,
    caps: KeyCaps,
    project: ProjectCaps | None,
    run_id: str | None,
) -> None:
    store = backend.store()
    open_account(store)
    key = api_key(caps={Bucket.CREDIT: caps})
    first = hold("req_1", 600, key=key, project=project, run_id=run_id)
    store.reserve(first)
    store.settle(first, 600, receipt(first))

    with pytest.raises(BudgetExceeded) as refused:
        store.reserve(hold("req_2", 401, key=key, project=project, run_id=run_id))
    assert refused.value.details == {
        "envelope": envelope,
        "limit": "0.001000",
        "remaining": "0.000400",
        "requested": "0.000401",
    }
    assert store.get_hold("req_2") is None
    store.reserve(hold("req_3", 400, key=key, project=project, run_id=run_id))
    rooms = store.rooms(key.account_id, Bucket.CREDIT, first.envelopes)
    assert rooms == {"bucket:credit": (999_400, 999_000), envelope: (1000, 0)}
    report = reconcile(store, NOW)
    assert report.ok, report.drifts
    assert report.pending_holds == 1


def test_an_envelope_below_the_hold_refuses_without_writing(backend: Backend) -> None:
    store = backend.store()
    open_account(store)
    key = api_key(caps={Bucket.CREDIT: KeyCaps(daily=10)})
    with pytest.raises(BudgetExceeded) as refused:
        store.reserve(hold("req_1", 11, key=key))
    assert refused.value.details["envelope"] == "key:daily"
    assert refused.value.details["remaining"] == "0.000010"


def test_settle_moves_envelopes_by_the_charge(backend: Backend) -> None:
    store = backend.store()
    open_account(store)
    key = api_key(caps={Bucket.CREDIT: KeyCaps(daily=5_000, total=9_000)})
    held = hold("req_1", 3_000, key=key, project=ProjectCaps(monthly=8_000), run_id="r")
    store.reserve(held)
    store.settle(held, 1_000, receipt(held))
    consumed = {e.name: store.get_item(e.pk, e.sk) for e in held.envelopes}
    assert {name: (i or {}).get("consumed") for name, i in consumed.items()} == {
        "key:daily": 1_000,
        "key:total": 1_000,
        "project:monthly": 1_000,
    }
    assert {name: ((i or {})["held"], (i or {})["settled"]) for name, i in consumed.items()} == {
        name: (0, 1_000) for name in consumed
    }


def test_rehold_moves_a_pending_hold_within_and_across_buckets(backend: Backend) -> None:
    store = backend.store()
    open_account(store, rmb=100_000)
    key = api_key(caps={Bucket.CREDIT: KeyCaps(daily=10_000), Bucket.RMB: KeyCaps(total=50_000)})
    first = hold("req_1", 2_000, key=key)
    store.reserve(first)

    bigger = hold("req_1", 3_000, key=key)
    store.rehold(first, bigger)
    assert store.get_wallet(ACCOUNT_ID, Bucket.CREDIT).held == 3_000
    assert store.get_item(first.envelopes[0].pk, first.envelopes[0].sk)["consumed"] == 3_000  # type: ignore[index]

    routed = hold("req_1", 40_000, key=key, bucket=Bucket.RMB)
    store.rehold(bigger, routed)
    credit, rmb = (store.get_wallet(ACCOUNT_ID, b) for b in (Bucket.CREDIT, Bucket.RMB))
    assert (credit.held, credit.available, rmb.held, rmb.available) == (
        0,
        1_000_000,
        40_000,
        60_000,
    )
    assert store.get_item(first.envelopes[0].pk, first.envelopes[0].sk)["consumed"] == 0  # type: ignore[index]

    with pytest.raises(BudgetExceeded) as refused:  # the RMB bucket cannot pay this much
        store.rehold(routed, hold("req_1", 100_001, key=key, bucket=Bucket.RMB))
    assert refused.value.details["envelope"] == "key:total"
    with pytest.raises(BudgetExceeded) as refused:
        store.rehold(routed, hold("req_1", 2_000_000, key=api_key(), bucket=Bucket.CREDIT))
    assert refused.value.details["envelope"] == "bucket:credit"
    stored = store.get_hold("req_1")
    assert stored is not None and (stored.bucket, stored.amount) == (Bucket.RMB, 40_000)

    store.settle(routed, 10_000, receipt(routed))
    with pytest.raises(HoldAlreadyResolved):
        store.rehold(routed, hold("req_1", 1_000, key=key, bucket=Bucket.RMB))
    with pytest.raises(ValueError):
        store.rehold(routed, hold("req_2", 1_000, key=key))
    assert_conserved(store)
    assert reconcile(store, NOW).ok


def test_expired_holds_come_from_the_sparse_index_and_the_sweeper_resolves_them(
    backend: Backend,
) -> None:
    store = backend.store()
    open_account(store)
    expired = [hold(f"req_old_{n}", 100, expires_in=timedelta(minutes=-n)) for n in range(1, 21)]
    fresh = hold("req_fresh", 100)
    for h in [*expired, fresh]:
        store.reserve(h)
    store.void(expired[0], receipt(expired[0], "failed"))  # resolved: leaves the index
    store.record_outcome(expired[1], HoldOutcome(charge=60, receipt=receipt(expired[1])))

    listed = store.expired_holds(NOW)
    assert sorted(h.request_id for h in listed) == sorted(h.request_id for h in expired[1:])
    assert next(h for h in listed if h.request_id == "req_old_2").outcome is not None

    report = sweep(store, NOW)
    assert report.settled == ["req_old_2"]
    assert sorted(report.voided) == sorted(h.request_id for h in expired[2:])
    assert store.expired_holds(NOW) == []
    assert store.expired_holds(NOW + timedelta(hours=1))[0].request_id == "req_fresh"
    with pytest.raises(HoldAlreadyResolved):
        store.record_outcome(expired[1], HoldOutcome(charge=1, receipt=receipt(expired[1])))
    wallet = store.get_wallet(ACCOUNT_ID, Bucket.CREDIT)
    assert (wallet.balance, wallet.held) == (1_000_000 - 60, 100)
    report_after = reconcile(store, NOW)
    assert report_after.ok, report_after.drifts


def test_reconcile_reports_a_tampered_wallet(backend: Backend) -> None:
    store = backend.store()
    open_account(store)
    store.put_item(
        "ACCT#acct_contract",
        "BUCKET#credit",
        {
            "account_id": ACCOUNT_ID,
            "bucket": "credit",
            "balance": 1_000_000,
            "held": 0,
            "available": 1_000_001,
            "seq": 1,
        },
        new=False,
    )
    report = reconcile(store, NOW)
    assert [(d.check, d.account_id, d.expected, d.actual) for d in report.drifts] == EXPECTED_DRIFTS


EXPECTED_DRIFTS = [("available_plus_held", "acct_contract", 1_000_000, 1_000_001)]


@pytest.mark.items_vary
def test_concurrent_reserve_and_settle_never_overdraw(backend: Backend) -> None:
    store = backend.store()
    open_account(store, credit=1_000)  # room for 10 holds of 100

    def request(n: int) -> str:
        other = backend.store()  # every request from its own container
        held = hold(f"req_{n}", 100)
        try:
            other.reserve(held)
        except BudgetExceeded:
            return "refused"
        other.settle(held, 60, receipt(held))
        return "settled"

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(request, range(24)))
    settled = outcomes.count("settled")
    wallet = store.get_wallet(ACCOUNT_ID, Bucket.CREDIT)
    assert settled >= 10 and "refused" in outcomes
    assert wallet.balance == 1_000 - 60 * settled >= 0 and wallet.held == 0
    assert_conserved(store)
