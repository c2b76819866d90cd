"""Deterministic inputs for the contract suite: fixed ids and times, so both backends are
given exactly the same writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from forge.domain.envelopes import envelopes_for
from forge.domain.money import Bucket
from forge.domain.records import (
    ApiKey,
    Hold,
    KeyCaps,
    LedgerEntry,
    LedgerKind,
    ProjectCaps,
    Receipt,
)
from forge.store.dynamo.store import DynamoStore

NOW = datetime(2026, 3, 4, 12, 30, tzinfo=UTC)  # when the contract tests' ledger is written
ACCOUNT = "acct_contract"
OTHER = "acct_other"


def open_account(
    store: DynamoStore, account_id: str = ACCOUNT, credit: int = 1_000_000, rmb: int = 0
) -> str:
    store.create_account(account_id, "contract")
    for bucket, amount in ((Bucket.CREDIT, credit), (Bucket.RMB, rmb)):
        if amount:
            top_up(store, account_id, bucket, amount, f"le_open_{account_id}_{bucket.value}")
    return account_id


def top_up(
    store: DynamoStore, account_id: str, bucket: Bucket, amount: int, entry_id: str
) -> LedgerEntry:
    return store.credit(
        account_id, bucket, amount, kind=LedgerKind.TOPUP, entry_id=entry_id, source="test"
    )


def api_key(
    key_id: str = "key_1",
    account_id: str = ACCOUNT,
    project_id: str = "default",
    caps: dict[Bucket, KeyCaps] | None = None,
) -> ApiKey:
    return ApiKey(
        key_id=key_id,
        account_id=account_id,
        project_id=project_id,
        prefix="sk-forge-test",
        caps=caps or {},
        created_at=NOW,
    )


def hold(
    request_id: str,
    amount: int,
    *,
    key: ApiKey | None = None,
    bucket: Bucket = Bucket.CREDIT,
    project: ProjectCaps | None = None,
    run_id: str | None = None,
    run_budget: int | None = None,
    expires_in: timedelta = timedelta(minutes=16),
) -> Hold:
    key = key or api_key()
    return Hold(
        request_id=request_id,
        account_id=key.account_id,
        key_id=key.key_id,
        project_id=key.project_id,
        requested_model="demo-official",
        run_id=run_id,
        bucket=bucket,
        amount=amount,
        expires_at=NOW + expires_in,
        envelopes=envelopes_for(key, project or ProjectCaps(), bucket, NOW, run_id, run_budget),
    )


def receipt(of: Hold, status: str = "succeeded") -> Receipt:
    return Receipt.model_validate(
        {
            "request_id": of.request_id,
            "account_id": of.account_id,
            "key_id": of.key_id,
            "project_id": of.project_id,
            "run_id": of.run_id,
            "requested_model": of.requested_model,
            "status": status,
            "final_route": "demo/official",
            "hold": of.amount,
            "created_at": NOW,
        }
    )


def assert_conserved(store: DynamoStore, account_id: str = ACCOUNT) -> None:
    """Money rule 6, for both buckets: the ledger explains the balance, nothing negative."""
    for bucket in Bucket:
        wallet = store.get_wallet(account_id, bucket)
        entries = store.list_entries(account_id, bucket)
        assert wallet.available + wallet.held == wallet.balance
        assert sum(e.amount for e in entries) == wallet.balance
        assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
        assert wallet.available >= 0 and wallet.held >= 0
