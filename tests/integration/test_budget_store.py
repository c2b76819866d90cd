"""The DynamoDB budget store against the embedded emulator: holds never overdraw, resolve
exactly once, and the ledger chain explains the balance. Threads hit the emulator directly,
so these races are ours, not the HTTP layer's."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from forge.domain.errors import BudgetExceeded, BudgetStoreUnavailable, HoldAlreadyResolved
from forge.domain.ids import new_id
from forge.domain.money import Bucket
from forge.domain.records import Hold, HoldStatus, Receipt, utcnow
from forge.money_in.accounts import create_account, credit_wallet
from forge.store.dynamo.store import DynamoStore
from forge.wiring import get_store
from forge_tools.emulator import Resources


@pytest.fixture
def aws_stack(aws_stack_or_twin: Resources) -> Resources:
    """Every test of this module runs on the emulator and on the in-memory twin."""
    return aws_stack_or_twin


def make_hold(account_id: str, amount: int, bucket: Bucket = Bucket.CREDIT) -> Hold:
    return Hold(
        request_id=new_id("req"),
        account_id=account_id,
        key_id="key_test",
        bucket=bucket,
        amount=amount,
        expires_at=utcnow() + timedelta(minutes=16),
    )


def receipt_for(hold: Hold) -> Receipt:
    return Receipt(
        request_id=hold.request_id,
        account_id=hold.account_id,
        key_id=hold.key_id,
        project_id="default",
        requested_model="demo-official",
        status="succeeded",
        hold=hold.amount,
    )


def funded(store: DynamoStore, amount: str) -> str:
    account_id = create_account(store, "store test")
    credit_wallet(store, account_id, Bucket.CREDIT, amount, source="test", memo="fund")
    return account_id


def assert_conserved(store: DynamoStore, account_id: str) -> None:
    for bucket in Bucket:
        wallet = store.get_wallet(account_id, bucket)
        entries = store.list_entries(account_id, bucket)
        assert wallet.available + wallet.held == wallet.balance
        assert sum(e.amount for e in entries) == wallet.balance
        assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
        assert wallet.available >= 0 and wallet.held >= 0


def container(store: DynamoStore) -> DynamoStore:
    """Another store over the same tables, as another Lambda container would have: its own
    in-process wallet locks, so only DynamoDB's conditions stand between the two."""
    return DynamoStore(store._db, store._budget, store._ledger)


def test_concurrent_reserve_and_settle_never_overdraw(aws_stack: Resources) -> None:
    store = get_store()
    account_id = funded(store, "0.001000")  # 1000 micros: room for 10 holds of 100

    def request(_: int) -> str:
        store = container(get_store())  # every request from its own container
        hold = make_hold(account_id, 100)
        try:
            store.reserve(hold)
        except BudgetExceeded:
            return "refused"
        store.settle(hold, 60, receipt_for(hold))
        return "settled"

    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(request, range(48)))

    wallet = store.get_wallet(account_id, Bucket.CREDIT)
    settled = outcomes.count("settled")
    assert settled >= 10 and "refused" in outcomes
    assert wallet.balance == 1000 - 60 * settled >= 0
    assert wallet.held == 0
    assert_conserved(store, account_id)


def test_a_hold_resolves_exactly_once(aws_stack: Resources) -> None:
    store = get_store()
    account_id = funded(store, "1")
    hold = make_hold(account_id, 500)
    store.reserve(hold)
    store.settle(hold, 200, receipt_for(hold))

    with pytest.raises(HoldAlreadyResolved):
        store.settle(hold, 200, receipt_for(hold))
    with pytest.raises(HoldAlreadyResolved):
        store.void(hold, receipt_for(hold))

    stored = store.get_hold(hold.request_id)
    assert stored is not None and stored.status is HoldStatus.SETTLED
    wallet = store.get_wallet(account_id, Bucket.CREDIT)
    assert wallet.balance == 1_000_000 - 200 and wallet.held == 0
    assert_conserved(store, account_id)


def test_concurrent_double_settle_charges_once(aws_stack: Resources) -> None:
    store = get_store()
    account_id = funded(store, "1")
    hold = make_hold(account_id, 500)
    store.reserve(hold)

    def settle(_: int) -> str:
        try:
            container(store).settle(hold, 300, receipt_for(hold))
        except HoldAlreadyResolved:
            return "already"
        return "charged"

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(settle, range(8)))

    assert outcomes.count("charged") == 1
    assert store.get_wallet(account_id, Bucket.CREDIT).balance == 1_000_000 - 300
    assert_conserved(store, account_id)


def test_void_releases_the_whole_hold(aws_stack: Resources) -> None:
    store = get_store()
    account_id = funded(store, "1")
    hold = make_hold(account_id, 400)
    store.reserve(hold)
    assert store.get_wallet(account_id, Bucket.CREDIT).available == 1_000_000 - 400
    store.void(hold, receipt_for(hold))
    wallet = store.get_wallet(account_id, Bucket.CREDIT)
    assert (wallet.balance, wallet.available, wallet.held) == (1_000_000, 1_000_000, 0)
    assert len(store.list_entries(account_id, Bucket.CREDIT)) == 1  # only the top-up


def test_a_refusal_names_the_bucket_and_what_was_left(aws_stack: Resources) -> None:
    store = get_store()
    account_id = funded(store, "0.000050")
    with pytest.raises(BudgetExceeded) as raised:
        store.reserve(make_hold(account_id, 51))
    assert raised.value.details == {
        "envelope": "bucket:credit",
        "limit": "0.000050",
        "remaining": "0.000050",
        "requested": "0.000051",
    }
    assert store.get_wallet(account_id, Bucket.CREDIT).held == 0


def test_an_unreachable_store_fails_closed() -> None:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "dynamodb",
        endpoint_url="http://127.0.0.1:9",  # discard port: nothing listens
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(connect_timeout=0.5, retries={"max_attempts": 1}),
    )
    store = DynamoStore(client, "budget", "ledger")
    with pytest.raises(BudgetStoreUnavailable):
        store.reserve(make_hold("acct_x", 1))
