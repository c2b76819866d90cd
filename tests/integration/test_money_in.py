"""Money in against the embedded emulator: payment events credit once, codes grant once per
account and never beyond max_claims, adjustments never overdraw. Threads hit the emulator
directly and start together, so the races are real; after each scenario the ledger must
still explain every balance."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import pytest
from fastapi.testclient import TestClient

from forge.api import create_app
from forge.domain.errors import (
    BudgetExceeded,
    ForgeError,
    InvalidRequest,
    NotFound,
    PaymentEventConflict,
    RedeemCodeAlreadyClaimed,
    RedeemCodeDisabled,
    RedeemCodeExhausted,
    RedeemCodeExpired,
    RedeemCodeNotFound,
)
from forge.domain.money import Bucket
from forge.domain.money_in import CodeStatus
from forge.domain.records import LedgerKind
from forge.money_in.accounts import create_account, credit_wallet
from forge.money_in.adjustments import adjust_wallet
from forge.money_in.codes import claim_code, create_code, disable_code, get_code, list_codes
from forge.money_in.webhooks import PAYMENT_SUCCEEDED, PaymentEvent, apply_payment, sign_payload
from forge.settings import get_settings
from forge.store.dynamo.store import DynamoStore
from forge.wiring import dynamodb_client, get_store
from forge_tools.emulator import Resources
from tests.conftest import clear_cached_factories


@pytest.fixture
def aws_stack(aws_stack_or_twin: Resources) -> Resources:
    """Every test of this module runs on the emulator and on the in-memory twin."""
    return aws_stack_or_twin


T = TypeVar("T")


def assert_conserved(store: DynamoStore, account_id: str) -> None:
    """Rule 6: per bucket, the ledger sums to the balance and available + held == balance."""
    for bucket in Bucket:
        wallet = store.get_wallet(account_id, bucket)
        entries = store.list_entries(account_id, bucket)
        assert sum(e.amount for e in entries) == wallet.balance
        assert wallet.available + wallet.held == wallet.balance
        assert wallet.available >= 0 and wallet.held >= 0
        assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
        running = 0
        for entry in entries:
            running += entry.amount
            assert entry.balance_after == running


def snapshot(store: DynamoStore, account_id: str) -> dict[Bucket, tuple[Any, int]]:
    return {
        b: (store.get_wallet(account_id, b), len(store.list_entries(account_id, b))) for b in Bucket
    }


def together(n: int, action: Callable[[int], T]) -> list[T | ForgeError]:
    """Run `action(i)` in n threads released at the same instant; domain errors are results."""
    barrier = threading.Barrier(n)

    def run(i: int) -> T | ForgeError:
        barrier.wait()
        try:
            return action(i)
        except ForgeError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run, range(n)))


def payment_event(
    account_id: str, amount: str = "12.50", event_id: str = "evt_1", bucket: str = "credit"
) -> PaymentEvent:
    return PaymentEvent.model_validate(
        {
            "id": event_id,
            "type": PAYMENT_SUCCEEDED,
            "created": 1_900_000_000,
            "data": {
                "account_id": account_id,
                "bucket": bucket,
                "amount": amount,
                "payment_id": f"pi_{event_id}",
            },
        }
    )


@pytest.fixture
def store(aws_stack: Resources) -> DynamoStore:
    return get_store()


@pytest.fixture
def account(store: DynamoStore) -> str:
    return create_account(store, "money-in test")


# Payment events -------------------------------------------------------------------------------
def test_a_payment_event_tops_up_once_with_its_source(store: DynamoStore, account: str) -> None:
    outcome = apply_payment(store, payment_event(account, "12.50", "evt_a"))

    assert outcome.status == "credited" and outcome.ledger_entry_id == "le_pay_evt_a"
    [entry] = store.list_entries(account, Bucket.CREDIT)
    assert (entry.entry_id, entry.kind, entry.amount) == (
        "le_pay_evt_a",
        LedgerKind.TOPUP,
        12_500_000,
    )
    assert entry.source == "payment:pi_evt_a" and entry.balance_after == 12_500_000
    assert store.get_wallet(account, Bucket.CREDIT).balance == 12_500_000
    assert store.list_entries(account, Bucket.RMB) == []
    assert_conserved(store, account)


def test_a_replayed_event_is_a_duplicate_that_changes_nothing(
    store: DynamoStore, account: str
) -> None:
    apply_payment(store, payment_event(account, "3", "evt_r"))
    before = snapshot(store, account)

    again = apply_payment(store, payment_event(account, "3", "evt_r"))

    assert again.status == "duplicate" and again.entry is None
    assert again.ledger_entry_id == "le_pay_evt_r"
    assert snapshot(store, account) == before
    assert_conserved(store, account)


def test_the_same_event_applied_from_8_threads_credits_exactly_once(
    store: DynamoStore, account: str
) -> None:
    credit_wallet(store, account, Bucket.RMB, "1", source="test", memo="other bucket")
    event = payment_event(account, "7.000001", "evt_race", bucket="rmb")

    outcomes = together(8, lambda _: apply_payment(store, event))

    statuses = Counter(getattr(o, "status", repr(o)) for o in outcomes)
    assert statuses == {"credited": 1, "duplicate": 7}
    entries = store.list_entries(account, Bucket.RMB)
    assert [e.kind for e in entries] == [LedgerKind.TOPUP, LedgerKind.TOPUP]
    assert [e.entry_id for e in entries].count("le_pay_evt_race") == 1
    assert store.get_wallet(account, Bucket.RMB).balance == 1_000_000 + 7_000_001
    assert_conserved(store, account)


def test_distinct_events_for_one_account_in_parallel_all_credit(
    store: DynamoStore, account: str
) -> None:
    outcomes = together(8, lambda i: apply_payment(store, payment_event(account, "1", f"evt_{i}")))

    assert [getattr(o, "status", o) for o in outcomes] == ["credited"] * 8
    assert store.get_wallet(account, Bucket.CREDIT).balance == 8_000_000
    assert_conserved(store, account)


def test_an_event_id_replayed_with_different_money_is_a_conflict(
    store: DynamoStore, account: str
) -> None:
    apply_payment(store, payment_event(account, "5", "evt_c"))
    before = snapshot(store, account)

    with pytest.raises(PaymentEventConflict):
        apply_payment(store, payment_event(account, "500", "evt_c"))

    assert snapshot(store, account) == before
    assert_conserved(store, account)


def test_a_payment_for_an_unknown_account_credits_nothing(store: DynamoStore) -> None:
    with pytest.raises(NotFound):
        apply_payment(store, payment_event("acct_nobody", "5", "evt_lost"))
    assert store.get_item("PAYMENT#evt_lost", "EVENT") is None  # a later retry can still apply


def test_other_event_types_are_ignored(store: DynamoStore, account: str) -> None:
    event = PaymentEvent(id="evt_x", type="payment.refunded", created=0, data={"amount": "9"})
    before = snapshot(store, account)
    assert apply_payment(store, event).status == "ignored"
    assert snapshot(store, account) == before
    assert store.get_item("PAYMENT#evt_x", "EVENT") is None


# Redeem codes ---------------------------------------------------------------------------------
def test_a_code_grants_its_amount_once_per_account(store: DynamoStore) -> None:
    first, second = create_account(store, "a"), create_account(store, "b")
    code = create_code(store, Bucket.RMB, "2.5", memo="launch promo")

    entry = claim_code(store, first, code.code.lower())  # typed in lower case: still the code

    assert (entry.kind, entry.amount, entry.bucket) == (LedgerKind.GRANT, 2_500_000, Bucket.RMB)
    assert entry.source == f"code:{code.code}" and entry.memo == "launch promo"
    before = snapshot(store, first)
    with pytest.raises(RedeemCodeAlreadyClaimed) as raised:
        claim_code(store, first, code.code)
    assert (raised.value.status, raised.value.code) == (409, "code_already_claimed")
    assert snapshot(store, first) == before

    claim_code(store, second, code.code)  # another account may claim it too
    assert store.get_wallet(second, Bucket.RMB).balance == 2_500_000
    assert get_code(store, code.code).claim_count == 2
    claims = store.query_items(f"CODE#{code.code}", "CLAIM#")
    assert sorted(c["account_id"] for c in claims) == sorted([first, second])
    for account_id in (first, second):
        assert_conserved(store, account_id)


def test_a_concurrent_double_claim_by_one_account_grants_once(
    store: DynamoStore, account: str
) -> None:
    code = create_code(store, Bucket.CREDIT, "1.25")

    outcomes = together(8, lambda _: claim_code(store, account, code.code))

    kinds = Counter(type(o).__name__ for o in outcomes)
    assert kinds == {"LedgerEntry": 1, "RedeemCodeAlreadyClaimed": 7}
    assert store.get_wallet(account, Bucket.CREDIT).balance == 1_250_000
    assert len(store.list_entries(account, Bucket.CREDIT)) == 1
    assert get_code(store, code.code).claim_count == 1
    assert_conserved(store, account)


def test_max_claims_holds_under_concurrency(store: DynamoStore) -> None:
    accounts = [create_account(store, f"claimer {i}") for i in range(10)]
    code = create_code(store, Bucket.CREDIT, "0.5", max_claims=3)

    outcomes = together(10, lambda i: claim_code(store, accounts[i], code.code))

    kinds = Counter(type(o).__name__ for o in outcomes)
    assert kinds == {"LedgerEntry": 3, "RedeemCodeExhausted": 7}
    granted = [a for a in accounts if store.get_wallet(a, Bucket.CREDIT).balance == 500_000]
    assert len(granted) == 3
    assert get_code(store, code.code).claim_count == 3
    assert len(store.query_items(f"CODE#{code.code}", "CLAIM#")) == 3
    for account_id in accounts:
        assert_conserved(store, account_id)
    with pytest.raises(RedeemCodeExhausted) as raised:
        claim_code(store, create_account(store, "late"), code.code)
    assert (raised.value.status, raised.value.code) == (410, "code_exhausted")


@pytest.mark.parametrize(
    ("make_unclaimable", "error", "status", "code"),
    [
        ("disabled", RedeemCodeDisabled, 409, "code_disabled"),
        ("expired", RedeemCodeExpired, 410, "code_expired"),
        ("unknown", RedeemCodeNotFound, 404, "code_not_found"),
        ("malformed", RedeemCodeNotFound, 404, "code_not_found"),
    ],
)
def test_unclaimable_codes_give_their_own_error_and_change_nothing(
    store: DynamoStore,
    account: str,
    make_unclaimable: str,
    error: type[ForgeError],
    status: int,
    code: str,
) -> None:
    today = datetime.now(UTC).date()
    created = create_code(store, Bucket.CREDIT, "1", expires=today)
    raw, now = created.code, None
    match make_unclaimable:
        case "disabled":
            disable_code(store, created.code)
        case "expired":
            now = datetime.now(UTC) + timedelta(days=1)  # past the end of `today`
        case "unknown":
            raw = created.code[:-1] + ("0" if created.code[-1] != "0" else "1")
        case "malformed":
            raw = "not-a-code"
    before = snapshot(store, account)

    with pytest.raises(error) as raised:
        claim_code(store, account, raw, now=now)

    assert (raised.value.status, raised.value.code) == (status, code)
    assert snapshot(store, account) == before
    assert store.query_items(f"CODE#{created.code}", "CLAIM#") == []
    assert get_code(store, created.code).claim_count == 0


def test_a_code_disabled_while_claims_race_keeps_an_exact_count(store: DynamoStore) -> None:
    """Disabling overwrites the code item; the claims that won the race must still be counted
    and nothing may be granted after it."""
    accounts = [create_account(store, f"racer {i}") for i in range(8)]
    code = create_code(store, Bucket.RMB, "1")

    def act(i: int) -> Any:
        return (
            disable_code(store, code.code) if i == 0 else claim_code(store, accounts[i], code.code)
        )

    outcomes = together(8, act)

    granted = [a for a in accounts if store.get_wallet(a, Bucket.RMB).balance == 1_000_000]
    claims = store.query_items(f"CODE#{code.code}", "CLAIM#")
    final = get_code(store, code.code)
    assert final.code_status is CodeStatus.DISABLED
    assert final.claim_count == len(claims) == len(granted)
    refused = [o for o in outcomes[1:] if isinstance(o, RedeemCodeDisabled)]
    assert len(refused) + len(granted) == 7
    with pytest.raises(RedeemCodeDisabled):
        claim_code(store, accounts[0], code.code)
    for account_id in accounts:
        assert_conserved(store, account_id)


def test_a_claim_landing_between_disables_read_and_write_is_still_counted(
    store: DynamoStore,
) -> None:
    """The deterministic version of the race above: a claim commits right after disable_code
    read the code item and right before it overwrites it."""
    code = create_code(store, Bucket.CREDIT, "1")
    claimer = create_account(store, "in between")
    settings = get_settings()

    class ClaimFirst(DynamoStore):
        raced = False

        def put_item(
            self, pk: str, sk: str, values: Mapping[str, Any], *, new: bool = True
        ) -> bool:
            if not new and not self.raced:
                self.raced = True
                claim_code(store, claimer, code.code)
            return super().put_item(pk, sk, values, new=new)

    racing = ClaimFirst(dynamodb_client(), settings.budget_table, settings.ledger_table)
    disabled = disable_code(racing, code.code)

    assert racing.raced
    assert store.get_wallet(claimer, Bucket.CREDIT).balance == 1_000_000
    assert disabled.claim_count == get_code(store, code.code).claim_count == 1
    assert get_code(store, code.code).code_status is CodeStatus.DISABLED
    assert_conserved(store, claimer)


def test_codes_are_listed_with_their_state(store: DynamoStore, account: str) -> None:
    kept = create_code(store, Bucket.CREDIT, "1", max_claims=1)
    dropped = create_code(store, Bucket.RMB, "2")
    disable_code(store, dropped.code)
    claim_code(store, account, kept.code)

    listed = {c.code: c for c in list_codes(store)}

    assert set(listed) == {kept.code, dropped.code}
    now = datetime.now(UTC)
    assert listed[kept.code].state(now) == "exhausted" and listed[kept.code].claim_count == 1
    assert listed[dropped.code].state(now) == "disabled"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"amount": "0"},
        {"amount": "-1"},
        {"amount": "0.0000001"},
        {"amount": "1", "max_claims": 0},
        {"amount": "1", "expires": date(2000, 1, 1)},
    ],
)
def test_bad_codes_are_refused_at_creation(store: DynamoStore, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        create_code(store, Bucket.CREDIT, **kwargs)
    assert list_codes(store) == []


# Operator adjustments -------------------------------------------------------------------------
def test_adjustments_move_money_both_ways_with_their_reason(
    store: DynamoStore, account: str
) -> None:
    credit_wallet(store, account, Bucket.CREDIT, "10", source="test", memo="fund")

    up = adjust_wallet(store, account, Bucket.CREDIT, "2.000001", reason="goodwill for outage")
    down = adjust_wallet(store, account, Bucket.CREDIT, "-4.5", reason="reversed duplicate")

    assert (up.kind, up.amount, up.source, up.memo) == (
        LedgerKind.ADJUSTMENT,
        2_000_001,
        "operator",
        "goodwill for outage",
    )
    assert (down.amount, down.balance_after) == (-4_500_000, 7_500_001)
    assert store.get_wallet(account, Bucket.CREDIT).balance == 7_500_001
    assert_conserved(store, account)


def test_a_negative_adjustment_never_takes_available_below_zero(
    store: DynamoStore, account: str
) -> None:
    credit_wallet(store, account, Bucket.RMB, "1", source="test", memo="fund")
    before = snapshot(store, account)

    with pytest.raises(BudgetExceeded):
        adjust_wallet(store, account, Bucket.RMB, "-1.000001", reason="too much")

    assert snapshot(store, account) == before
    adjust_wallet(store, account, Bucket.RMB, "-1", reason="exactly all of it")
    assert store.get_wallet(account, Bucket.RMB).balance == 0
    assert_conserved(store, account)


def test_concurrent_negative_adjustments_cannot_overdraw(store: DynamoStore, account: str) -> None:
    credit_wallet(store, account, Bucket.CREDIT, "3", source="test", memo="fund")

    outcomes = together(8, lambda _: adjust_wallet(store, account, Bucket.CREDIT, "-1", reason="r"))

    kinds = Counter(type(o).__name__ for o in outcomes)
    assert kinds == {"LedgerEntry": 3, "BudgetExceeded": 5}
    assert store.get_wallet(account, Bucket.CREDIT).balance == 0
    assert_conserved(store, account)


@pytest.mark.parametrize(
    ("amount", "reason", "param"),
    [
        ("0", "r", "amount"),
        ("1.0000001", "r", "amount"),
        ("abc", "r", "amount"),
        ("1", "", "reason"),
        ("1", "   ", "reason"),
        ("1", "x" * 501, "reason"),
    ],
)
def test_bad_adjustments_are_refused(
    store: DynamoStore, account: str, amount: str, reason: str, param: str
) -> None:
    with pytest.raises(InvalidRequest) as raised:
        adjust_wallet(store, account, Bucket.CREDIT, amount, reason=reason)
    assert raised.value.param == param
    assert store.list_entries(account, Bucket.CREDIT) == []


def test_adjusting_an_unknown_account_is_not_found(store: DynamoStore) -> None:
    with pytest.raises(NotFound):
        adjust_wallet(store, "acct_nobody", Bucket.CREDIT, "1", reason="r")


# The webhook route in-process: configuration decides before anything is read -----------------
def post_signed(secret: str, body: bytes) -> Any:
    with TestClient(create_app()) as client:
        return client.post(
            "/v1/webhooks/payments",
            content=body,
            headers={"Forge-Signature": sign_payload(secret, body, int(time.time()))},
        )


def event_body(account_id: str, event_id: str) -> bytes:
    return payment_event(account_id, "4", event_id).model_dump_json().encode()


def test_without_a_configured_secret_the_webhook_is_503_and_credits_nothing(
    store: DynamoStore, account: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FORGE_WEBHOOK_SECRET", raising=False)
    clear_cached_factories()
    before = snapshot(store, account)

    response = post_signed("", event_body(account, "evt_unconfigured"))

    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "webhooks_not_configured"
    assert snapshot(store, account) == before
    assert store.get_item("PAYMENT#evt_unconfigured", "EVENT") is None


def test_with_a_configured_secret_the_webhook_credits(
    store: DynamoStore, account: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORGE_WEBHOOK_SECRET", "whsec_it")
    clear_cached_factories()

    wrong = post_signed("whsec_other", event_body(account, "evt_configured"))
    right = post_signed("whsec_it", event_body(account, "evt_configured"))

    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "invalid_signature"
    assert right.status_code == 200 and right.json()["status"] == "credited", right.text
    assert get_store().get_wallet(account, Bucket.CREDIT).balance == 4_000_000
    assert_conserved(get_store(), account)
