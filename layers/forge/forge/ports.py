"""The ports: what the features (gateway, money in, ledger) need from the outside world, as
Protocols. The store and provider adapters implement them; the features name only these.

Every method fails closed: an unreachable or failing store raises BudgetStoreUnavailable,
never answers as if nothing were there.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from forge.domain.idempotency import IdempotencyRecord, StoredResponse
from forge.domain.money import Bucket
from forge.domain.records import (
    ApiKey,
    EnvelopeRef,
    Hold,
    HoldOutcome,
    LedgerEntry,
    ProjectCaps,
    Receipt,
    Wallet,
)


class KeyStore(Protocol):
    """Accounts, API keys (by hash) and project caps."""

    def create_account(self, account_id: str, name: str) -> None: ...

    def account_exists(self, account_id: str) -> bool: ...

    def put_api_key(self, key_hash: str, key: ApiKey) -> None: ...

    def update_api_key(self, account_id: str, key_id: str, **changes: Any) -> ApiKey: ...

    def get_api_key(self, key_hash: str) -> ApiKey | None: ...

    def get_project_caps(self, account_id: str, project_id: str) -> dict[Bucket, ProjectCaps]: ...

    def put_project_caps(
        self, account_id: str, project_id: str, caps: Mapping[Bucket, ProjectCaps]
    ) -> None: ...


class BudgetStore(Protocol):
    """Holds against a bucket and its envelopes: reserve before, settle or void after, exactly
    once. Refusals raise BudgetExceeded naming the envelope; a hold resolved elsewhere raises
    HoldAlreadyResolved."""

    def get_wallet(self, account_id: str, bucket: Bucket) -> Wallet: ...

    def reserve(self, hold: Hold) -> None: ...

    def rooms(
        self, account_id: str, bucket: Bucket, envelopes: Sequence[EnvelopeRef]
    ) -> dict[str, tuple[int, int]]: ...

    def rehold(self, current: Hold, moved: Hold) -> None: ...

    def settle(self, hold: Hold, charge: int, receipt: Receipt) -> Receipt: ...

    def void(self, hold: Hold, receipt: Receipt) -> Receipt: ...

    def record_outcome(self, hold: Hold, outcome: HoldOutcome) -> None: ...

    def get_hold(self, request_id: str) -> Hold | None: ...

    def expired_holds(self, now: datetime) -> list[Hold]: ...

    def put_receipt(self, receipt: Receipt) -> None: ...

    def get_receipt(self, account_id: str, request_id: str) -> Receipt | None: ...


class IdempotencyStore(Protocol):
    """Idempotency-Key claims: one owner per key, its answer kept for replays."""

    def claim_idempotency(
        self, account_id: str, key: str, record: IdempotencyRecord, now: int
    ) -> IdempotencyRecord | None: ...

    def read_idempotency(self, account_id: str, key: str) -> IdempotencyRecord | None: ...

    def finish_idempotency(
        self, account_id: str, key: str, request_id: str, response: StoredResponse | None
    ) -> None: ...


class LedgerReader(Protocol):
    """The ledger as written: what reconciliation and statements check balances against."""

    def get_wallet(self, account_id: str, bucket: Bucket) -> Wallet: ...

    def list_entries(self, account_id: str, bucket: Bucket) -> list[LedgerEntry]: ...

    def get_receipt(self, account_id: str, request_id: str) -> Receipt | None: ...

    def scan_budget(self) -> Iterator[dict[str, Any]]: ...

    def expired_holds(self, now: datetime) -> list[Hold]: ...


class GatewayStore(KeyStore, BudgetStore, Protocol):
    """What the gateway uses: keys to authenticate, holds to pay."""
