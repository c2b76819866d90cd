"""Crash injection at each step of a request, then the sweeper and reconciliation: nothing is
charged twice, nothing stays stranded, and conservation holds."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from forge.domain.catalog import load_catalog
from forge.domain.ids import new_id
from forge.domain.money import Bucket, Usage, charge_for
from forge.domain.records import ApiKey, HoldStatus, LedgerKind, utcnow
from forge.domain.requests import ChatCompletionRequest
from forge.gateway import CallPlan, Gateway, RequestLimits
from forge.ledger.reconcile import reconcile
from forge.ledger.sweeper import sweep
from forge.money_in.accounts import create_account, credit_wallet, issue_key
from forge.providers.openai import OpenAICompatProvider
from forge.store.dynamo.store import DynamoStore
from forge.wiring import dynamodb_client, get_store
from forge_tools.emulator import Resources

USAGE = {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}
REQUEST = ChatCompletionRequest.model_validate(
    {"model": "demo-official", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 64}
)


@pytest.fixture
def aws_stack(aws_stack_or_twin: Resources) -> Resources:
    """Every test of this module runs on the emulator and on the in-memory twin."""
    return aws_stack_or_twin


class FlakyClient:
    """A DynamoDB client that fails settle transactions: before sending them, or after they
    were applied (the answer lost on the way back), as a crash or a network cut would."""

    def __init__(self, client: Any, mode: str) -> None:
        self._client = client
        self.mode = mode

    def transact_write_items(self, **kwargs: Any) -> Any:
        is_settle = any(
            "ENTRY#" in str(item.get("Put", {}).get("Item", {}).get("sk", ""))
            for item in kwargs["TransactItems"]
        )
        if is_settle and self.mode == "before":
            raise EndpointConnectionError(endpoint_url="http://budget-store")
        result = self._client.transact_write_items(**kwargs)
        if is_settle and self.mode == "after":
            raise EndpointConnectionError(endpoint_url="http://budget-store")
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def upstream_ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"id": "x", "choices": [], "usage": USAGE})


def flaky_store(stack: Resources, mode: str) -> DynamoStore:
    """The same tables, through a client that fails settle transactions (see FlakyClient)."""
    flaky = FlakyClient(dynamodb_client(), mode)
    return DynamoStore(flaky, stack.tables["BudgetTable"], stack.tables["LedgerTable"])


def gateway_over(store: DynamoStore) -> Gateway:
    provider = OpenAICompatProvider(
        "http://up.test/v1", "k", transport=httpx.MockTransport(upstream_ok)
    )
    return Gateway(store, {"demo": provider}, load_catalog(), hold_ttl_seconds=960)


def setup(store: DynamoStore) -> tuple[ApiKey, Gateway]:
    account_id = create_account(store, "crash test")
    credit_wallet(store, account_id, Bucket.CREDIT, "1", source="test", memo="fund")
    return issue_key(store, account_id)[1], gateway_over(store)


def reserved(gateway: Gateway, key: ApiKey, run_id: str | None = None) -> CallPlan:
    async def run() -> CallPlan:
        plan = await gateway.plan(key, REQUEST, new_id("req"), RequestLimits(run_id=run_id))
        await gateway.reserve(plan)
        return plan

    return asyncio.run(run())


def after_expiry() -> Any:
    return utcnow() + timedelta(seconds=961)


def assert_conserved(store: DynamoStore, *, at: Any = None) -> None:
    report = reconcile(store, at or utcnow())
    assert report.ok, report.drifts
    assert report.pending_holds == 0


def charges(store: DynamoStore, key: ApiKey) -> list[int]:
    return [
        e.amount
        for e in store.list_entries(key.account_id, Bucket.CREDIT)
        if e.kind is LedgerKind.CHARGE
    ]


@pytest.mark.parametrize("crash", ["after_reserve", "after_upstream_answered"])
def test_a_request_that_dies_before_settling_is_released_by_the_sweeper(
    aws_stack: Resources, crash: str
) -> None:
    store = get_store()
    key, gateway = setup(store)
    plan = reserved(gateway, key, run_id="agent-7")
    if crash == "after_upstream_answered":
        asyncio.run(gateway._provider(plan.route).complete(plan.upstream_body))
    # ... and the process is gone: the hold is pending, nobody will settle it.
    wallet = store.get_wallet(key.account_id, Bucket.CREDIT)
    assert wallet.held == plan.hold.amount

    early = sweep(store, utcnow())  # not expired yet: a live request is never swept
    assert early.voided == [] and early.settled == []
    stale = reconcile(store, after_expiry())
    assert [d.check for d in stale.drifts] == ["expired_hold_pending"]
    assert stale.drifts[0].involved == [plan.request_id]

    report = sweep(store, after_expiry())
    assert report.voided == [plan.request_id]
    assert sweep(store, after_expiry()).voided == []  # exactly once
    wallet = store.get_wallet(key.account_id, Bucket.CREDIT)
    assert (wallet.balance, wallet.held, wallet.available) == (1_000_000, 0, 1_000_000)
    assert charges(store, key) == []
    receipt = store.get_receipt(key.account_id, plan.request_id)
    assert receipt is not None and receipt.error_code == "hold_expired"
    assert receipt.run_id == "agent-7"  # the swept call still shows under its run
    assert_conserved(store, at=after_expiry())


def test_settle_that_never_reached_the_store_is_settled_later_at_the_known_charge(
    aws_stack: Resources,
) -> None:
    store = get_store()
    key, _ = setup(store)
    gateway = gateway_over(flaky_store(aws_stack, "before"))
    plan = reserved(gateway, key)

    _, receipt = asyncio.run(gateway.complete(plan))

    expected = charge_for(Usage(input_tokens=12, output_tokens=7), plan.prices)
    assert receipt.settlement == "deferred" and receipt.charge == expected
    hold = store.get_hold(plan.request_id)
    assert hold is not None and hold.status is HoldStatus.PENDING
    assert hold.outcome is not None and hold.outcome.charge == expected
    assert charges(store, key) == []  # nothing charged yet...

    report = sweep(store, after_expiry())
    assert report.settled == [plan.request_id]
    assert charges(store, key) == [-expected]  # ...then exactly once, at the known price
    assert sweep(store, after_expiry()).settled == []
    assert store.get_wallet(key.account_id, Bucket.CREDIT).balance == 1_000_000 - expected
    assert_conserved(store, at=after_expiry())


def test_settle_applied_but_answer_lost_is_never_charged_twice(aws_stack: Resources) -> None:
    store = get_store()
    key, _ = setup(store)
    gateway = gateway_over(flaky_store(aws_stack, "after"))
    plan = reserved(gateway, key)

    _, receipt = asyncio.run(gateway.complete(plan))

    expected = charge_for(Usage(input_tokens=12, output_tokens=7), plan.prices)
    assert receipt.charge == expected
    assert charges(store, key) == [-expected]  # the transaction did commit, once
    assert sweep(store, after_expiry()).model_dump() == {
        "settled": [],
        "voided": [],
        "already_resolved": [],
    }
    assert charges(store, key) == [-expected]
    assert_conserved(store, at=after_expiry())


def test_reconcile_reports_drift_with_the_entries_involved(aws_stack: Resources) -> None:
    store = get_store()
    key, gateway = setup(store)
    plan = reserved(gateway, key)
    asyncio.run(gateway.complete(plan))
    assert reconcile(store, utcnow()).ok

    # Someone edits a balance behind the ledger's back.
    item = store.get_item(f"ACCT#{key.account_id}", "BUCKET#credit")
    assert item is not None
    store.put_item(
        f"ACCT#{key.account_id}",
        "BUCKET#credit",
        {
            **{k: v for k, v in item.items() if k not in ("pk", "sk")},
            "balance": item["balance"] + 5,
        },
        new=False,
    )

    report = reconcile(store, utcnow())
    checks = {d.check: d for d in report.drifts}
    assert set(checks) == {"ledger_vs_balance", "available_plus_held"}
    drift = checks["ledger_vs_balance"]
    assert drift.account_id == key.account_id and drift.bucket is Bucket.CREDIT
    assert drift.actual == drift.expected + 5
    assert f"le_{plan.request_id}" in drift.involved


class ConflictingClient:
    """DynamoDB answering the first transactions with TransactionConflict, as it does when
    two transactions touch one item at the same moment (the serialised emulator never does)."""

    def __init__(self, client: Any, conflicts: int) -> None:
        self._client = client
        self.conflicts = conflicts

    def transact_write_items(self, **kwargs: Any) -> Any:
        if self.conflicts > 0:
            self.conflicts -= 1
            reasons = [{"Code": "None"}] * len(kwargs["TransactItems"])
            reasons[1] = {"Code": "TransactionConflict", "Message": "conflict"}
            raise ClientError(
                {
                    "Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
                    "CancellationReasons": reasons,
                },
                "TransactWriteItems",
            )
        return self._client.transact_write_items(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_a_transaction_conflict_is_retried_never_refused_or_charged_twice(
    aws_stack: Resources,
) -> None:
    store = get_store()
    key, _ = setup(store)
    client = ConflictingClient(dynamodb_client(), conflicts=2)
    conflicted = DynamoStore(
        client, aws_stack.tables["BudgetTable"], aws_stack.tables["LedgerTable"]
    )
    gateway = gateway_over(conflicted)
    plan = reserved(gateway, key)  # two conflicts, then the reservation goes through
    assert client.conflicts == 0
    client.conflicts = 2
    _, receipt = asyncio.run(gateway.complete(plan))  # and the settle, likewise
    assert client.conflicts == 0
    assert receipt.settlement == "settled"
    assert charges(store, key) == [-receipt.charge]
    assert_conserved(store)
