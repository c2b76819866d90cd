"""Receipts read back as they were written. A receipt whose attempts include one without an
HTTP status (a route skipped as unhealthy, a timeout, a refused connection) used to be
stored without that attempt's `status` (nested None values are dropped on the way to
DynamoDB) and then failed validation on every read: a persistent 503 "The ledger holds an
unreadable receipt" on its run view, a failing receipt lookup and refund, and a sweeper that
stopped at the hold carrying such a receipt."""

from __future__ import annotations

from datetime import timedelta

from forge.domain.ids import new_id
from forge.domain.money import Bucket
from forge.domain.records import Attempt, Hold, HoldOutcome, Receipt, utcnow
from forge.ledger.sweeper import sweep
from forge.money_in.accounts import create_account, credit_wallet
from forge.money_in.adjustments import refund_charge
from forge.store.dynamo.views import LedgerViews
from forge.wiring import get_store
from forge_tools.emulator import Resources

# What the gateway records when a route is skipped, and when an upstream never answers
SKIPPED = Attempt(
    route="demo:down",
    upstream_model="down-1",
    status=None,
    latency_ms=0,
    outcome="skipped",
    reason="failing repeatedly; skipped for a while",
)
TIMED_OUT = Attempt(
    route="demo:slow",
    upstream_model="slow-1",
    status=None,
    latency_ms=30_000,
    outcome="error",
    reason="timeout",
    action="fallback",
)
SERVED = Attempt(route="demo:x", upstream_model="x-1", status=200, latency_ms=12, outcome="ok")


def held(account_id: str, *, expires_in: timedelta = timedelta(minutes=16)) -> Hold:
    return Hold(
        request_id=new_id("req"),
        account_id=account_id,
        key_id="key_r",
        run_id="run-with-gaps",
        bucket=Bucket.CREDIT,
        amount=5_000,
        expires_at=utcnow() + expires_in,
    )


def receipt_of(hold: Hold) -> Receipt:
    return Receipt(
        request_id=hold.request_id,
        account_id=hold.account_id,
        key_id=hold.key_id,
        project_id="default",
        run_id=hold.run_id,
        requested_model="demo-official",
        status="succeeded",
        attempts=[SKIPPED, TIMED_OUT, SERVED],
        final_route="demo:x",
        hold=hold.amount,
    )


def funded_account() -> str:
    store = get_store()
    account_id = create_account(store, "stored receipts")
    credit_wallet(store, account_id, Bucket.CREDIT, "1", source="test", memo="fund")
    return account_id


def test_a_receipt_with_attempts_that_got_no_status_reads_back(aws_stack: Resources) -> None:
    store = get_store()
    account_id = funded_account()
    hold = held(account_id)
    store.reserve(hold)
    written = store.settle(hold, 4_000, receipt_of(hold))

    assert store.get_receipt(account_id, hold.request_id) == written
    page = LedgerViews(store._db, store._ledger).run_calls(account_id, "run-with-gaps", limit=10)
    assert page.items == [written]
    refund = refund_charge(store, account_id, hold.request_id)
    assert refund.amount == 4_000


def test_the_sweeper_settles_an_outcome_whose_receipt_has_such_attempts(
    aws_stack: Resources,
) -> None:
    store = get_store()
    account_id = funded_account()
    hold = held(account_id, expires_in=timedelta(minutes=-1))
    store.reserve(hold)
    store.record_outcome(hold, HoldOutcome(charge=3_000, receipt=receipt_of(hold)))

    report = sweep(store, utcnow())

    assert report.settled == [hold.request_id]
    receipt = store.get_receipt(account_id, hold.request_id)
    assert receipt is not None and receipt.attempts == [SKIPPED, TIMED_OUT, SERVED]
    assert receipt.charge == 3_000
