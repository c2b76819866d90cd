"""The ports: what the features (gateway, money in, ledger) need from the outside world, as
Protocols. The store and provider adapters implement them; the features name only these.

Every store method fails closed: an unreachable or failing store raises
BudgetStoreUnavailable, never answers as if nothing were there. The one exception is the Meter:
metrics fail open (`emit_quietly`), since a lost metric must never refuse or break a call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from forge.domain.archive import ArchiveRun, MonthClose, StatementFormat, StatementState
from forge.domain.calendar import Month
from forge.domain.idempotency import IdempotencyRecord, StoredResponse
from forge.domain.metrics import Metric
from forge.domain.money import Bucket
from forge.domain.money_in import CreditGuard, PaymentMarker, RedeemCode
from forge.domain.records import (
    ApiKey,
    AuditEntry,
    BudgetSnapshot,
    EnvelopeRef,
    Hold,
    HoldOutcome,
    LedgerEntry,
    LedgerKind,
    Project,
    ProjectCaps,
    Receipt,
    Wallet,
)

if TYPE_CHECKING:  # in annotations only: the proxy's paid path never loads the views
    from forge.domain.archive_replay import QueuedMessage
    from forge.domain.views import TimeRange

logger = logging.getLogger(__name__)


class KeyStore(Protocol):
    """Accounts, API keys (by hash) and project caps."""

    def create_account(self, account_id: str, name: str) -> None: ...

    def account_exists(self, account_id: str) -> bool: ...

    def put_api_key(self, key_hash: str, key: ApiKey, audit: AuditEntry | None = None) -> None: ...

    def update_api_key(self, account_id: str, key_id: str, **changes: Any) -> ApiKey: ...

    def get_api_key(self, key_hash: str) -> ApiKey | None: ...

    def touch_key(self, account_id: str, key_id: str, at: datetime) -> None: ...

    def get_project_caps(self, account_id: str, project_id: str) -> dict[Bucket, ProjectCaps]: ...

    def put_project_caps(
        self, account_id: str, project_id: str, caps: Mapping[Bucket, ProjectCaps]
    ) -> None: ...


class KeyAdminStore(KeyStore, Protocol):
    """What an account's owner changes: keys by id, projects, and the audit trail each change
    writes in the same transaction. A change names the revision it read; a lost race raises
    KeyChangeConflict (keys) or GuardFailed (projects)."""

    def get_key(self, account_id: str, key_id: str) -> ApiKey | None: ...

    def list_keys(self, account_id: str) -> list[ApiKey]: ...

    def save_key(self, key: ApiKey, audit: AuditEntry | None = None) -> ApiKey: ...

    def rotate_key(
        self, key: ApiKey, new_hash: str, grace_until: datetime | None, audit: AuditEntry | None
    ) -> ApiKey: ...

    def get_project(self, account_id: str, project_id: str) -> Project | None: ...

    def list_projects(self, account_id: str) -> list[Project]: ...

    def save_project(
        self, project: Project, audit: AuditEntry | None = None, *, new: bool = False
    ) -> Project: ...

    def list_audit(
        self, account_id: str, *, limit: int, cursor: str | None = None
    ) -> tuple[list[AuditEntry], str | None]: ...


class BudgetStore(Protocol):
    """Holds against a bucket and its envelopes: reserve before, settle or void after, exactly
    once. Refusals raise BudgetExceeded naming the envelope; a hold resolved elsewhere raises
    HoldAlreadyResolved."""

    def get_wallet(self, account_id: str, bucket: Bucket) -> Wallet: ...

    def reserve(self, hold: Hold) -> Hold: ...

    def rooms(
        self, account_id: str, bucket: Bucket, envelopes: Sequence[EnvelopeRef]
    ) -> dict[str, tuple[int, int]]: ...

    def rehold(self, current: Hold, moved: Hold) -> Hold: ...

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


class CreditStore(Protocol):
    """Money in: credits with the guards that make them happen at most once (a payment
    event, a code claim, a refund), and the redeem codes themselves."""

    def account_exists(self, account_id: str) -> bool: ...

    def get_wallet(self, account_id: str, bucket: Bucket) -> Wallet: ...

    def credit(
        self,
        account_id: str,
        bucket: Bucket,
        amount: int,
        *,
        kind: LedgerKind,
        entry_id: str,
        source: str | None = None,
        memo: str | None = None,
        guards: Sequence[CreditGuard] = (),
        refund_of: Receipt | None = None,
    ) -> LedgerEntry: ...

    def get_payment_marker(self, event_id: str) -> PaymentMarker | None: ...

    def get_receipt(self, account_id: str, request_id: str) -> Receipt | None: ...

    def add_code(self, code: RedeemCode) -> bool: ...

    def get_code(self, code: str) -> RedeemCode | None: ...

    def list_codes(self) -> list[RedeemCode]: ...

    def replace_code(self, code: RedeemCode) -> None: ...

    def count_code_claims(self, code: str) -> int: ...


class LedgerReader(Protocol):
    """The ledger as written: what reconciliation checks balances and holds against."""

    def read_budget(self) -> BudgetSnapshot: ...

    def list_entries(
        self, account_id: str, bucket: Bucket, shard: int = 0
    ) -> list[LedgerEntry]: ...


class LedgerScan(Protocol):
    """Every ledger entry of a time window, whatever its account: what the archive is rebuilt
    from (operator jobs only)."""

    def entries_between(self, window: TimeRange) -> Iterator[LedgerEntry]: ...


class FailureQueue(Protocol):
    """Where the archiver's on-failure records wait: received (and hidden from other readers),
    then deleted once handled, or released to be seen again at once."""

    def receive(self) -> list[QueuedMessage]: ...

    def delete(self, messages: Sequence[QueuedMessage]) -> None: ...

    def release(self, messages: Sequence[QueuedMessage]) -> None: ...


class AccountStore(KeyStore, CreditStore, Protocol):
    """What operator actions on accounts use: keys, and credits to fund them."""


class GatewayStore(KeyStore, BudgetStore, Protocol):
    """What the gateway uses: keys to authenticate, holds to pay."""


class LedgerArchive(Protocol):
    """The archive port: where ledger entries and statements are kept (S3 in production)."""

    def put_entries(self, entries: Sequence[LedgerEntry]) -> int:
        """Archive `entries` (one object per run of consecutive entries of a series); how many
        went into objects written now."""
        ...

    def put_run(self, run: ArchiveRun) -> bool:
        """Write one run's object; False when it was already there."""
        ...

    def archived_keys(self, entries: Sequence[LedgerEntry]) -> set[str]:
        """The `archive_key`s of those of `entries` that are archived, alone or in a run."""
        ...

    def entries(
        self, account_id: str, *, through: Month | None = None, since: Month | None = None
    ) -> list[LedgerEntry]:
        """The entry objects of an account (months `since`..`through`), each entry once, by
        (bucket, shard, seq)."""
        ...

    def accounts_with_activity(self, month: Month | str) -> list[str]: ...

    def closed_months(self, account_id: str) -> list[Month]:
        """The account's compacted months (those with a closing record), oldest first."""
        ...

    def month_close(self, account_id: str, month: Month) -> MonthClose | None:
        """A compacted month's closing record; None if the month is not compacted."""
        ...

    def compacted_lines(
        self, account_id: str, month: Month, bucket: Bucket, shard: int = 0
    ) -> bytes:
        """A compacted object's JSON Lines, uncompressed."""
        ...

    def put_compacted(
        self, account_id: str, month: Month, bucket: Bucket, body: bytes, shard: int = 0
    ) -> bool:
        """Write a compacted object once; False when the key already holds one."""
        ...

    def put_month_close(self, close: MonthClose) -> bool:
        """Write a closing record once; False when one is already there."""
        ...

    def put_statement(
        self,
        account_id: str,
        month: Month | str,
        body: bytes,
        *,
        final: bool = True,
        fmt: StatementFormat = StatementFormat.CSV,
    ) -> str: ...

    def statement_exists(
        self, account_id: str, month: Month | str, fmt: StatementFormat = StatementFormat.CSV
    ) -> bool:
        """Whether a *final* statement is stored (provisional ones do not count)."""
        ...

    def stored_statement(
        self, account_id: str, month: Month | str, fmt: StatementFormat = StatementFormat.CSV
    ) -> StatementState | None:
        """How the statement is stored, final or provisional; None if it is not."""
        ...

    def final_statement(
        self, account_id: str, month: Month | str, fmt: StatementFormat = StatementFormat.CSV
    ) -> bytes | None:
        """The stored final statement's bytes; None if there is none (or only a provisional)."""
        ...


class Meter(Protocol):
    """Where operational metrics go (CloudWatch Embedded Metric Format lines on AWS). It may
    fail: callers emit through `emit_quietly`, so a metric never fails the call it counts."""

    def emit(self, metrics: Sequence[Metric]) -> None: ...


class NoMeter:
    """Metrics that go nowhere: the default of tests, tools and stacks without a namespace."""

    def emit(self, metrics: Sequence[Metric]) -> None:
        return None


NO_METER = NoMeter()


def emit_quietly(meter: Meter, count: Callable[[], Sequence[Metric]]) -> None:
    """Build the metrics (`count`) and emit them; a failure of either is logged (the error's
    type, nothing else: no request data) and ignored. Money paths call this, so a lost metric
    never costs a call its answer or its charge."""
    try:
        metrics = count()
        if metrics:
            meter.emit(metrics)
    except Exception as exc:
        logger.warning("metrics_not_emitted", extra={"error": type(exc).__name__})
