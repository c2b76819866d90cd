"""Money in and corrections through the DynamoDB adapter, on both backends: top-ups with their
gap-free sequence, guarded credits (payment events, redeem codes, refunds) that commit with
their guard or not at all, and adjustments that never overdraw."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from forge.domain.errors import (
    BudgetExceeded,
    GuardFailed,
    InvalidRequest,
    NotFound,
    PaymentEventConflict,
    RedeemCodeAlreadyClaimed,
    RedeemCodeDisabled,
    RedeemCodeExhausted,
    RedeemCodeExpired,
    RefundAlreadyIssued,
)
from forge.domain.money import Bucket
from forge.domain.money_in import CodeUse, PaymentMarker
from forge.domain.records import LedgerKind
from forge.money_in.adjustments import adjust_wallet, refund_charge
from forge.money_in.codes import claim_code, create_code, disable_code, get_code, list_codes
from forge.money_in.webhooks import PaymentEvent, apply_payment
from tests.contract.conftest import Backend
from tests.contract.money import (
    ACCOUNT,
    NOW,
    OTHER,
    assert_conserved,
    hold,
    open_account,
    receipt,
    top_up,
)


def payment(event_id: str, amount: str = "2.5", payment_id: str = "pay_1") -> PaymentEvent:
    data = {"account_id": ACCOUNT, "bucket": "rmb", "amount": amount, "payment_id": payment_id}
    return PaymentEvent(id=event_id, type="payment.succeeded", created=0, data=data)


def test_credits_write_a_gap_free_sequence(backend: Backend) -> None:
    store = backend.store()
    open_account(store, credit=0)
    entries = [top_up(store, ACCOUNT, Bucket.CREDIT, n * 1_000, f"le_{n}") for n in (1, 2, 3)]
    assert [(e.seq, e.balance_after) for e in entries] == [(1, 1_000), (2, 3_000), (3, 6_000)]
    assert store.list_entries(ACCOUNT, Bucket.CREDIT) == entries
    assert store.list_entries(ACCOUNT, Bucket.RMB) == []
    wallet = store.get_wallet(ACCOUNT, Bucket.CREDIT)
    assert (wallet.balance, wallet.available, wallet.held, wallet.seq) == (6_000, 6_000, 0, 3)
    with pytest.raises(NotFound):
        store.get_wallet("acct_nobody", Bucket.CREDIT)


def test_an_adjustment_never_overdraws(backend: Backend) -> None:
    store = backend.store()
    open_account(store, credit=5_000)
    store.reserve(hold("req_1", 3_000))
    with pytest.raises(BudgetExceeded) as refused:
        adjust_wallet(store, ACCOUNT, Bucket.CREDIT, "-0.002001", reason="too much")
    assert refused.value.details["envelope"] == "bucket:credit"
    assert refused.value.details["remaining"] == "0.002000"
    entry = adjust_wallet(store, ACCOUNT, Bucket.CREDIT, "-0.002", reason="correction")
    assert (entry.kind, entry.amount, entry.balance_after) == (LedgerKind.ADJUSTMENT, -2_000, 3_000)
    wallet = store.get_wallet(ACCOUNT, Bucket.CREDIT)
    assert (wallet.available, wallet.held) == (0, 3_000)
    assert_conserved(store)


def test_a_payment_event_credits_once(backend: Backend) -> None:
    store = backend.store()
    open_account(store)
    first = apply_payment(store, payment("evt_1"))
    assert first.status == "credited" and first.entry is not None
    assert first.entry.amount == 2_500_000 and first.entry.source == "payment:pay_1"
    again = apply_payment(store, payment("evt_1"))
    assert (again.status, again.ledger_entry_id) == ("duplicate", first.ledger_entry_id)
    with pytest.raises(PaymentEventConflict):
        apply_payment(store, payment("evt_1", amount="3"))
    assert store.get_wallet(ACCOUNT, Bucket.RMB).balance == 2_500_000
    marker = store.get_item("PAYMENT#evt_1", "EVENT")
    assert marker is not None and marker["amount"] == 2_500_000
    assert_conserved(store)


def test_a_guard_that_fails_writes_nothing(backend: Backend) -> None:
    store = backend.store()
    open_account(store)
    now = datetime(2030, 1, 1, tzinfo=UTC)

    def marker(event_id: str) -> PaymentMarker:
        return PaymentMarker(
            event_id=event_id,
            account_id=ACCOUNT,
            bucket=Bucket.CREDIT,
            amount=5,
            payment_id="pi_1",
            ledger_entry_id=f"le_{event_id}",
            received_at=now,
        )

    store.credit(
        ACCOUNT, Bucket.CREDIT, 5, kind=LedgerKind.TOPUP, entry_id="le_1", guards=[marker("evt_1")]
    )
    with pytest.raises(GuardFailed) as failed:  # the same event again
        store.credit(
            ACCOUNT,
            Bucket.CREDIT,
            5,
            kind=LedgerKind.GRANT,
            entry_id="le_g",
            guards=[marker("evt_1")],
        )
    assert failed.value.index == 0
    unknown_code = CodeUse(code="FORGE-NONE-NONE-NONE", at=now)  # no such code: not claimable
    with pytest.raises(GuardFailed) as failed:
        store.credit(
            ACCOUNT,
            Bucket.CREDIT,
            5,
            kind=LedgerKind.GRANT,
            entry_id="le_g",
            guards=[marker("evt_2"), unknown_code],
        )
    assert failed.value.index == 1
    assert store.get_payment_marker("evt_2") is None  # the first guard did not land either
    assert store.get_wallet(ACCOUNT, Bucket.CREDIT).seq == 2  # the opening credit and evt_1
    with pytest.raises(ValueError):  # a refund, and only a refund, names its receipt
        store.credit(ACCOUNT, Bucket.CREDIT, 5, kind=LedgerKind.REFUND, entry_id="le_r")


def test_redeem_codes_grant_once_per_account_within_their_limits(backend: Backend) -> None:
    store = backend.store()
    open_account(store)
    open_account(store, OTHER)
    open_account(store, "acct_third")
    code = create_code(store, Bucket.CREDIT, "0.5", max_claims=2, memo="welcome", now=NOW)
    entry = claim_code(store, ACCOUNT, code.code.lower(), now=NOW)
    assert (entry.kind, entry.amount, entry.source) == (
        LedgerKind.GRANT,
        500_000,
        f"code:{code.code}",
    )
    with pytest.raises(RedeemCodeAlreadyClaimed):
        claim_code(store, ACCOUNT, code.code, now=NOW)
    claim_code(store, OTHER, code.code, now=NOW)
    with pytest.raises(RedeemCodeExhausted):
        claim_code(store, "acct_third", code.code, now=NOW)
    assert get_code(store, code.code).claim_count == 2

    expiring = create_code(store, Bucket.RMB, "1", expires=date(2026, 3, 4), now=NOW)
    with pytest.raises(RedeemCodeExpired):
        claim_code(store, ACCOUNT, expiring.code, now=NOW + timedelta(days=1))
    claim_code(store, ACCOUNT, expiring.code, now=NOW)
    disabled = disable_code(store, expiring.code)
    assert (disabled.code_status.value, disabled.claim_count) == ("disabled", 1)
    with pytest.raises(RedeemCodeDisabled):
        claim_code(store, OTHER, expiring.code, now=NOW)
    assert [c.code for c in list_codes(store)] == [code.code, expiring.code]
    for account in (ACCOUNT, OTHER):
        assert_conserved(store, account)


def test_a_refund_credits_back_once_and_counts_in_the_views(backend: Backend) -> None:
    store = backend.store()
    open_account(store)
    held = hold("req_1", 10_000, run_id="run-1")
    store.reserve(held)
    store.settle(held, 8_000, receipt(held))
    with pytest.raises(InvalidRequest):  # more than the charge
        refund_charge(store, ACCOUNT, "req_1", "0.008001")
    entry = refund_charge(store, ACCOUNT, "req_1", "0.003", reason="bad answer")
    assert (entry.kind, entry.amount, entry.source, entry.request_id) == (
        LedgerKind.REFUND,
        3_000,
        "refund:req_1",
        "req_1",
    )
    with pytest.raises(RefundAlreadyIssued):
        refund_charge(store, ACCOUNT, "req_1")
    with pytest.raises(NotFound):
        refund_charge(store, ACCOUNT, "req_unknown")
    [line] = backend.views().run_totals(ACCOUNT, "run-1")
    assert (line.totals.charge, line.totals.refunded, line.totals.requests) == (8_000, 3_000, 1)
    assert store.get_wallet(ACCOUNT, Bucket.CREDIT).balance == 1_000_000 - 5_000
    assert_conserved(store)
