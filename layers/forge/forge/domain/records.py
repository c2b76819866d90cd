"""The records the gateway keeps: keys, wallets, holds, ledger entries and receipts.

Every record that crosses a boundary (DynamoDB item, stream record, archive line, API body)
is one of these pydantic models; adapters only translate them to and from storage.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt

from forge.domain.money import Bucket, Prices, RouteType, Usage

LEDGER_SCHEMA_VERSION = 1


def utcnow() -> datetime:
    return datetime.now(UTC)


class KeyStatus(enum.StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    REVOKED = "revoked"
    EXPIRED = "expired"  # never stored: what an active key is once its expires_at has passed


class KeyKind(enum.StrEnum):
    """Inference keys call models; management keys manage the account (keys, projects, audit)
    and call models only when given `can_call_models`."""

    INFERENCE = "inference"
    MANAGEMENT = "management"


class KeyCaps(BaseModel):
    """A key's spend limits in one bucket, in micro-units; None means no cap."""

    model_config = ConfigDict(frozen=True)

    daily: NonNegativeInt | None = None
    monthly: NonNegativeInt | None = None
    total: NonNegativeInt | None = None
    run_budget: NonNegativeInt | None = None  # default budget of one X-Run-Id run
    max_request_charge: NonNegativeInt | None = None


class ProjectCaps(BaseModel):
    """A project's spend limits in one bucket, in micro-units; None means no cap."""

    model_config = ConfigDict(frozen=True)

    daily: NonNegativeInt | None = None
    monthly: NonNegativeInt | None = None


class ApiKey(BaseModel):
    """What the gateway knows about a key: never the key itself, only its hash and prefix.
    Items stored before keys had a kind, a name or a model scope read as inference keys
    allowed every model."""

    model_config = ConfigDict(frozen=True)

    key_id: str
    account_id: str
    project_id: str
    prefix: str
    name: str = ""
    kind: KeyKind = KeyKind.INFERENCE
    status: KeyStatus = KeyStatus.ACTIVE
    models: frozenset[str] | None = None  # the catalog model ids it may call; None: every one
    route_types: frozenset[RouteType] = frozenset(RouteType)
    can_call_models: bool = False  # a management key's model scope (inference keys always may)
    caps: dict[Bucket, KeyCaps] = Field(default_factory=dict)
    # Upstream calls one request may make, retries and fallbacks included (None: the default).
    max_upstream_attempts: int | None = Field(default=None, ge=1)
    expires_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    last_used_at: datetime | None = None
    # After a rotate, until when the previous secret still works.
    previous_secret_expires_at: datetime | None = None
    # Set only on a rotated-out secret's own item: this secret stops working then.
    secret_expires_at: datetime | None = None
    revision: NonNegativeInt = 0  # bumped by every change; a change names the one it read

    def caps_for(self, bucket: Bucket) -> KeyCaps:
        return self.caps.get(bucket) or KeyCaps()

    @property
    def calls_models(self) -> bool:
        return self.kind is KeyKind.INFERENCE or self.can_call_models

    def status_at(self, now: datetime) -> KeyStatus:
        if self.status is KeyStatus.ACTIVE and self.expires_at and now >= self.expires_at:
            return KeyStatus.EXPIRED
        return self.status

    def works_at(self, now: datetime) -> bool:
        """Whether this secret authenticates at `now`: an active key, unexpired, and (a
        rotated-out secret) within its grace period."""
        in_grace = self.secret_expires_at is None or now < self.secret_expires_at
        return self.status_at(now) is KeyStatus.ACTIVE and in_grace

    def allows_model(self, model_id: str) -> bool:
        return self.models is None or model_id in self.models

    def snapshot(self) -> dict[str, Any]:
        """What an audit entry keeps of a key: its settings, none of the bookkeeping."""
        return self.model_dump(
            mode="json", exclude={"secret_expires_at", "revision", "last_used_at", "account_id"}
        )


class Project(BaseModel):
    """A grouping of keys inside an account, with its own caps. `default` always exists."""

    model_config = ConfigDict(frozen=True)

    account_id: str
    project_id: str
    name: str = ""
    caps: dict[Bucket, ProjectCaps] = Field(default_factory=dict)
    created_at: datetime | None = None  # None: the implicit default project, never written
    revision: NonNegativeInt = 0

    def snapshot(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"revision", "account_id"})


class AuditEntry(BaseModel):
    """One change an account's owner (or an operator) made: who, what, when, before, after.
    Written in the same transaction as the change itself."""

    model_config = ConfigDict(frozen=True)

    audit_id: str
    account_id: str
    at: datetime
    actor_key_id: str  # the management key that made the change, or "operator"
    action: str  # e.g. "key.create", "key.revoke", "project.update"
    target_type: Literal["key", "project"]
    target_id: str
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


# A bucket of a busy account is split into sub-wallets (shards) so its writes spread over
# several items; each shard keeps its own counters and its own ledger chain (docs/shards.md).
# Shard 0 is the bucket's original item, and the only one of an account that is not split.
MAX_SHARDS = 32  # a rebalancing transaction names two items per shard (DynamoDB's limit: 100)


def _unsharded(shard: int) -> bool:
    return shard == 0


def shard_field() -> Any:
    """Not stored (nor archived) while 0: an unsplit account's items and lines stay as they
    were."""
    return Field(default=0, ge=0, lt=MAX_SHARDS, exclude_if=_unsharded)


def series_label(bucket: Bucket, shard: int) -> str:
    """How keys name one ledger series: `credit` for shard 0, `credit.03` for shard 3."""
    return bucket.value if shard == 0 else f"{bucket.value}.{shard:02d}"


class Wallet(BaseModel):
    """One bucket of one account, or one shard of it (the store's get_wallet sums the shards).
    Invariant: available + held == balance."""

    account_id: str
    bucket: Bucket
    balance: int = 0
    held: int = 0
    available: int = 0
    seq: int = 0  # number of ledger entries written for this bucket (or shard)
    shard: int = shard_field()
    shards: int = Field(default=1, ge=1, le=MAX_SHARDS, exclude_if=lambda n: n == 1)


class HoldStatus(enum.StrEnum):
    PENDING = "pending"
    SETTLED = "settled"
    VOIDED = "voided"


class EnvelopeRef(BaseModel):
    """One budget envelope a hold was reserved against: where its counters live."""

    model_config = ConfigDict(frozen=True)

    name: str  # e.g. "key:daily", "project:monthly", "run"
    pk: str
    sk: str
    limit: NonNegativeInt


class HoldOutcome(BaseModel):
    """What the gateway learned but could not settle: the sweeper settles it later."""

    charge: NonNegativeInt
    receipt: Receipt


class Hold(BaseModel):
    """Worst-case cost reserved before an upstream call; resolves exactly once."""

    request_id: str
    account_id: str
    key_id: str
    project_id: str = "default"
    requested_model: str = ""
    run_id: str | None = None
    bucket: Bucket
    shard: int = shard_field()  # the bucket's shard it holds money in
    amount: int = Field(ge=0)
    status: HoldStatus = HoldStatus.PENDING
    expires_at: datetime
    envelopes: list[EnvelopeRef] = Field(default_factory=list)
    outcome: HoldOutcome | None = None


class LedgerKind(enum.StrEnum):
    TOPUP = "topup"
    GRANT = "grant"
    CHARGE = "charge"
    REFUND = "refund"
    ADJUSTMENT = "adjustment"
    TRANSFER = "transfer"  # between two shards of one bucket: its entries sum to zero


class LedgerEntry(BaseModel):
    """One balance movement. Per account, bucket and shard (a *series*), `seq` is gap-free and
    each entry's balance_after = previous balance_after + amount, so the ledger alone explains
    a balance."""

    schema_version: int = LEDGER_SCHEMA_VERSION
    entry_id: str
    account_id: str
    bucket: Bucket
    shard: int = shard_field()
    seq: int = Field(ge=1)
    kind: LedgerKind
    amount: int  # signed micro-units: positive adds to the balance, negative takes from it
    balance_after: int
    created_at: datetime = Field(default_factory=utcnow)
    request_id: str | None = None
    key_id: str | None = None
    project_id: str | None = None
    model: str | None = None
    route: str | None = None
    source: str | None = None  # payment id, redeem code, or operator
    memo: str | None = None

    @property
    def series(self) -> tuple[Bucket, int]:
        """The chain this entry belongs to: its bucket and shard."""
        return self.bucket, self.shard


class Attempt(BaseModel):
    """One upstream call (or a route skipped as unhealthy) and what the gateway did next."""

    route: str
    upstream_model: str
    # Upstream HTTP status; None when no response arrived (or the route was skipped). It
    # must default to None: stored items drop None values, nested ones included, so a
    # required field that may be None would make the record unreadable once stored.
    status: int | None = None
    latency_ms: int
    # "abandoned": cancelled in flight because the client disconnected (not an error).
    outcome: Literal["ok", "error", "skipped", "abandoned"]
    reason: str | None = None
    route_type: RouteType | None = None
    bucket: Bucket | None = None
    # After a failure: retried the same route (after wait_ms), fell back to the next route,
    # returned the provider's refusal to the client, or gave up (nothing left to try).
    action: Literal["retry", "fallback", "return", "give_up"] | None = None
    wait_ms: int | None = None


class Refusal(BaseModel):
    """The envelope that refused a request, as its 402 named it: decimals of the bucket's
    currency (limit, what was left, the smallest hold the call asked for)."""

    model_config = ConfigDict(frozen=True)

    envelope: str
    limit: str
    remaining: str
    requested: str

    @classmethod
    def of(cls, code: str, details: dict[str, object]) -> Refusal | None:
        """The refusal an error's details describe, if it is an envelope's 402."""
        if code != "budget_exceeded" or not {"envelope", "remaining"} <= details.keys():
            return None
        return cls(
            envelope=str(details["envelope"]),
            limit=str(details.get("limit", "")),
            remaining=str(details["remaining"]),
            requested=str(details.get("requested", "")),
        )


class Receipt(BaseModel):
    """One per request, failed ones too: everything needed to explain its charge."""

    request_id: str
    account_id: str
    key_id: str
    project_id: str
    run_id: str | None = None
    requested_model: str
    stream: bool = False
    status: Literal["succeeded", "failed", "partial"]
    attempts: list[Attempt] = Field(default_factory=list)
    final_route: str | None = None
    route_type: RouteType | None = None
    upstream_model: str | None = None
    usage: Usage = Field(default_factory=Usage)
    # Input tokens written to the provider's prompt cache (Anthropic), part of usage's input.
    cache_write_input_tokens: NonNegativeInt = 0
    prices: Prices | None = None
    hold: int = 0
    charge: int = 0
    bucket: Bucket | None = None
    balance_after: int | None = None
    ledger_entry_id: str | None = None
    # "deferred": served, but the store failed at settle; the sweeper settles the outcome.
    settlement: Literal["settled", "deferred"] = "settled"
    error_code: str | None = None
    note: str | None = None
    refusal: Refusal | None = None  # a budget_exceeded refusal: which envelope, what was left
    created_at: datetime = Field(default_factory=utcnow)


HoldOutcome.model_rebuild()
Hold.model_rebuild()


class EnvelopeCounters(BaseModel):
    """An envelope's stored counters: its own item, or its share on one shard of a split
    bucket (`shard` > 0). Invariants: consumed == settled + held (+ lent, on its own item),
    held == the sum of the pending holds reserved against it; a share's received == room +
    consumed, and its envelope's lent == the sum of its shares' received."""

    pk: str
    sk: str
    consumed: int = 0
    held: int = 0
    settled: int = 0
    lent: int = 0  # own item: room lent to its shares, counted in consumed
    shard: int = 0
    room: int = 0  # a share: what it may still take
    received: int = 0  # a share: what its envelope lent it, net

    @property
    def envelope(self) -> tuple[str, str]:
        """The (pk, sk) of the envelope this item is (a share of)."""
        return self.pk, self.sk.removesuffix(f"#{self.shard:02d}") if self.shard else self.sk


class BudgetSnapshot(BaseModel):
    """Every wallet, hold and envelope of the budget store, read in one pass (reconciliation)."""

    wallets: list[Wallet] = Field(default_factory=list)
    holds: list[Hold] = Field(default_factory=list)
    envelopes: list[EnvelopeCounters] = Field(default_factory=list)
