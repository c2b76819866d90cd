"""What the emulator cannot show, on the twin: transaction conflicts, answers lost after the
write applied, and calls that fail before applying, injected by the twin's seeded fault
schedule. The adapter must retry a conflict without charging twice, a lost answer must never
turn into a second charge, and any failure before the upstream call fails closed."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
import pytest

from forge.domain.catalog import load_catalog
from forge.domain.errors import (
    BudgetExceeded,
    BudgetStoreUnavailable,
    HoldAlreadyResolved,
    RedeemCodeAlreadyClaimed,
)
from forge.domain.money import Bucket
from forge.domain.records import HoldStatus, KeyCaps, LedgerKind
from forge.domain.requests import ChatCompletionRequest
from forge.gateway import Gateway, RequestLimits
from forge.ledger.reconcile import reconcile
from forge.ledger.sweeper import SweepIncomplete, sweep
from forge.money_in.codes import claim_code, create_code
from forge.money_in.webhooks import PaymentEvent, apply_payment
from forge.providers.openai import OpenAICompatProvider
from forge.store.dynamo import base as dynamo
from forge.store.dynamo.catalog import DynamoCatalogStore
from forge.store.dynamo.store import DynamoStore
from forge.store.memory import FaultKind, Faults
from forge_tools.template import MemoryStack
from tests.contract.money import (
    ACCOUNT,
    NOW,
    api_key,
    assert_conserved,
    hold,
    open_account,
    receipt,
)
from tests.twin import store_on, twin_stack

TRANSACT = "TransactWriteItems"
HOLD_1 = {"pk": "HOLD#req_1"}
BEFORE_APPLYING = [
    FaultKind.UNREACHABLE,
    FaultKind.TIMEOUT,
    FaultKind.THROTTLED,
    FaultKind.INTERNAL_ERROR,
]


@pytest.fixture
def stack() -> MemoryStack:
    return twin_stack(Faults(seed=1))


@pytest.fixture
def store(stack: MemoryStack) -> DynamoStore:
    store = store_on(stack)
    open_account(store)
    return store


def faults(stack: MemoryStack) -> Faults:
    return stack.client.faults


def test_a_conflicted_settle_is_retried_and_charges_once(
    stack: MemoryStack, store: DynamoStore
) -> None:
    held = hold("req_1", 5_000)
    store.reserve(held)
    faults(stack).inject(FaultKind.CONFLICT, operation=TRANSACT, key=HOLD_1, times=3)
    final = store.settle(held, 2_000, receipt(held))
    assert [(i.kind, i.item) for i in faults(stack).log] == [(FaultKind.CONFLICT, 0)] * 3
    assert final.balance_after == 1_000_000 - 2_000
    assert [e.amount for e in store.list_entries(ACCOUNT, Bucket.CREDIT)] == [1_000_000, -2_000]
    assert_conserved(store)


def test_a_conflicted_reservation_is_retried_not_refused(
    stack: MemoryStack, store: DynamoStore
) -> None:
    faults(stack).inject(FaultKind.CONFLICT, operation=TRANSACT, key=HOLD_1, times=2)
    store.reserve(hold("req_1", 5_000))
    assert store.get_wallet(ACCOUNT, Bucket.CREDIT).held == 5_000
    faults(stack).inject(FaultKind.CONFLICT, operation=TRANSACT, key={"pk": f"ACCT#{ACCOUNT}"})
    store.credit(ACCOUNT, Bucket.CREDIT, 7, kind=LedgerKind.TOPUP, entry_id="le_7")
    assert [e.seq for e in store.list_entries(ACCOUNT, Bucket.CREDIT)] == [1, 2]
    assert len(faults(stack).log) == 3


def test_endless_conflicts_fail_closed(
    stack: MemoryStack, store: DynamoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dynamo, "_CONTENTION_SECONDS", 0.2)
    faults(stack).inject(FaultKind.CONFLICT, operation=TRANSACT, times=None)
    with pytest.raises(BudgetStoreUnavailable):
        store.reserve(hold("req_1", 5_000))
    faults(stack).clear()
    assert store.get_hold("req_1") is None
    assert store.get_wallet(ACCOUNT, Bucket.CREDIT).held == 0


@pytest.mark.parametrize("kind", BEFORE_APPLYING, ids=lambda k: k.value)
def test_a_store_failure_before_applying_fails_closed_and_writes_nothing(
    stack: MemoryStack, store: DynamoStore, kind: FaultKind
) -> None:
    faults(stack).inject(kind, operation=TRANSACT)
    with pytest.raises(BudgetStoreUnavailable):
        store.reserve(hold("req_1", 5_000))
    assert store.get_hold("req_1") is None
    faults(stack).inject(kind, operation="GetItem")
    with pytest.raises(BudgetStoreUnavailable):
        store.get_api_key("hash_1")
    assert store.get_wallet(ACCOUNT, Bucket.CREDIT).held == 0


def test_a_settle_whose_answer_is_lost_charges_once(stack: MemoryStack, store: DynamoStore) -> None:
    held = hold("req_1", 5_000)
    store.reserve(held)
    faults(stack).inject(FaultKind.LOST_RESPONSE, operation=TRANSACT, key=HOLD_1)
    with pytest.raises(BudgetStoreUnavailable):
        store.settle(held, 2_000, receipt(held))  # applied, but the caller cannot know
    with pytest.raises(HoldAlreadyResolved):
        store.settle(held, 2_000, receipt(held))  # so it retries: nothing more is charged
    assert sweep(store, NOW.replace(year=2030)).settled == []
    assert store.get_wallet(ACCOUNT, Bucket.CREDIT).balance == 1_000_000 - 2_000
    assert_conserved(store)


def test_a_payment_whose_answer_is_lost_credits_once(
    stack: MemoryStack, store: DynamoStore
) -> None:
    data = {"account_id": ACCOUNT, "bucket": "credit", "amount": "1", "payment_id": "pay_1"}
    event = PaymentEvent(id="evt_1", type="payment.succeeded", created=0, data=data)
    faults(stack).inject(FaultKind.LOST_RESPONSE, operation=TRANSACT, key={"pk": "PAYMENT#evt_1"})
    with pytest.raises(BudgetStoreUnavailable):
        apply_payment(store, event)  # the provider sees a 503 and redelivers
    assert apply_payment(store, event).status == "duplicate"
    assert store.get_wallet(ACCOUNT, Bucket.CREDIT).balance == 2_000_000
    code = create_code(store, Bucket.RMB, "0.5", now=NOW)
    faults(stack).inject(FaultKind.LOST_RESPONSE, operation=TRANSACT, key={"sk": "CODE"})
    with pytest.raises(BudgetStoreUnavailable):
        claim_code(store, ACCOUNT, code.code, now=NOW)
    with pytest.raises(RedeemCodeAlreadyClaimed):
        claim_code(store, ACCOUNT, code.code, now=NOW)
    assert store.get_wallet(ACCOUNT, Bucket.RMB).balance == 500_000
    assert_conserved(store)


def test_a_lost_batch_key_is_read_again_by_the_catalog(stack: MemoryStack) -> None:
    catalog = DynamoCatalogStore(stack.client, stack.budget_table)
    catalog.seed(load_catalog())
    faults(stack).inject(FaultKind.UNPROCESSED, operation="BatchGetItem", times=2)
    assert catalog.read_catalog() == load_catalog()
    assert [i.kind for i in faults(stack).log] == [FaultKind.UNPROCESSED] * 2


def test_rooms_survive_unprocessed_keys(stack: MemoryStack, store: DynamoStore) -> None:
    key = api_key(caps={Bucket.CREDIT: KeyCaps(run_budget=1_000)})
    held = hold("req_1", 600, key=key, run_id="r")
    store.reserve(held)
    faults(stack).inject(FaultKind.UNPROCESSED, operation="BatchGetItem", times=2)
    rooms = store.rooms(ACCOUNT, Bucket.CREDIT, held.envelopes)
    assert rooms == {"bucket:credit": (1_000_000, 999_400), "run": (1_000, 400)}
    assert [i.kind for i in faults(stack).log] == [FaultKind.UNPROCESSED] * 2


def test_the_schedule_replays_from_its_seed() -> None:
    def run(seed: int) -> list[Any]:
        stack = twin_stack(Faults(seed=seed))
        store = store_on(stack)
        open_account(store)
        stack.client.faults.rates = {FaultKind.CONFLICT: 0.3}
        for n in range(20):
            held = hold(f"req_{n}", 100)
            store.reserve(held)
            store.settle(held, 50, receipt(held))
        assert_conserved(store)
        assert store.get_wallet(ACCOUNT, Bucket.CREDIT).balance == 1_000_000 - 20 * 50
        return stack.client.faults.log

    first = run(7)
    assert first == run(7) and first != run(8)
    assert len(first) > 5


def test_overlapping_transactions_conflict_and_money_stays_exact() -> None:
    stack = twin_stack()
    open_account(store_on(stack), credit=10_000)
    stack.client.faults = Faults(overlap=True, latency=0.0005)

    def request(n: int) -> str:
        store = store_on(stack)  # every request from its own container: no shared wallet lock
        held = hold(f"req_{n}", 100)
        try:
            store.reserve(held)
        except BudgetExceeded:
            return "refused"
        store.settle(held, 60, receipt(held))
        return "settled"

    with ThreadPoolExecutor(max_workers=12) as pool:
        outcomes = list(pool.map(request, range(60)))
    store = store_on(stack)
    settled = outcomes.count("settled")
    assert any(i.kind is FaultKind.CONFLICT for i in stack.client.faults.log)
    assert store.get_wallet(ACCOUNT, Bucket.CREDIT).balance == 10_000 - 60 * settled
    assert_conserved(store)
    assert reconcile(store, NOW).ok


# The gateway over a failing store ------------------------------------------------------------
class Upstream:
    def __init__(self) -> None:
        self.calls = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
        message = {"role": "assistant", "content": "hello"}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        body = {"id": "c", "object": "chat.completion", "created": 1, "model": "m"}
        return httpx.Response(200, json={**body, "choices": [choice], "usage": usage})


def serve(store: DynamoStore, upstream: Upstream, request_id: str) -> Any:
    provider = OpenAICompatProvider(
        "http://upstream.test/v1", "k", transport=httpx.MockTransport(upstream.handler)
    )
    gateway = Gateway(store, {"demo": provider}, load_catalog(), hold_ttl_seconds=960)
    request = ChatCompletionRequest.model_validate(
        {
            "model": "demo-official",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 20,
        }
    )
    return asyncio.run(gateway.serve(api_key(), request, request_id, RequestLimits(), repr))


def test_a_reservation_whose_answer_is_lost_is_voided_and_nothing_is_called(
    stack: MemoryStack, store: DynamoStore
) -> None:
    upstream = Upstream()
    faults(stack).inject(FaultKind.LOST_RESPONSE, operation=TRANSACT, key=HOLD_1)
    with pytest.raises(BudgetStoreUnavailable):
        serve(store, upstream, "req_1")
    assert upstream.calls == 0
    stored = store.get_hold("req_1")
    assert stored is not None and stored.status is HoldStatus.VOIDED
    failed = store.get_receipt(ACCOUNT, "req_1")
    assert failed is not None and (failed.status, failed.charge) == ("failed", 0)
    assert store.get_wallet(ACCOUNT, Bucket.CREDIT).balance == 1_000_000
    assert_conserved(store)


def test_a_served_call_whose_settle_answer_is_lost_is_charged_once(
    stack: MemoryStack, store: DynamoStore
) -> None:
    upstream = Upstream()
    faults(stack).inject(FaultKind.LOST_RESPONSE, operation=TRANSACT, key=HOLD_1, skip=1)
    served = serve(store, upstream, "req_1")
    assert upstream.calls == 1 and served.receipt.settlement == "deferred"
    stored = store.get_receipt(ACCOUNT, "req_1")
    assert stored is not None and stored.charge == served.receipt.charge > 0
    assert sweep(store, NOW.replace(year=2030)).settled == []
    wallet = store.get_wallet(ACCOUNT, Bucket.CREDIT)
    assert (wallet.balance, wallet.held) == (1_000_000 - stored.charge, 0)
    assert_conserved(store)


def test_a_hold_the_sweeper_cannot_resolve_does_not_stop_the_others(
    stack: MemoryStack, store: DynamoStore
) -> None:
    expired = [hold(f"req_{n}", 100, expires_in=timedelta(minutes=-n)) for n in range(1, 6)]
    for held in expired:
        store.reserve(held)
    faults(stack).inject(
        FaultKind.INTERNAL_ERROR, operation=TRANSACT, key={"pk": "HOLD#req_2"}, times=None
    )

    with pytest.raises(SweepIncomplete) as failed:
        sweep(store, NOW)

    assert failed.value.request_ids == ["req_2"]
    assert [h.request_id for h in store.expired_holds(NOW)] == ["req_2"]
    faults(stack).clear()
    assert sweep(store, NOW).voided == ["req_2"]
    assert store.get_wallet(ACCOUNT, Bucket.CREDIT).held == 0
    assert_conserved(store)


def test_a_failing_store_stops_the_sweep_after_three_failures_in_a_row(
    stack: MemoryStack, store: DynamoStore
) -> None:
    for n in range(1, 6):
        store.reserve(hold(f"req_{n}", 100, expires_in=timedelta(minutes=-n)))
    faults(stack).inject(FaultKind.UNREACHABLE, operation=TRANSACT, times=None)

    with pytest.raises(BudgetStoreUnavailable):
        sweep(store, NOW)

    assert len(faults(stack).log) == 3  # not one attempt per hold against a store that is down
    faults(stack).clear()
    assert len(sweep(store, NOW).voided) == 5
    assert_conserved(store)
