"""The records the gateway keeps: keys, wallets, holds, ledger entries and receipts.

Every record that crosses a boundary (DynamoDB item, stream record, archive line, API body)
is one of these pydantic models; adapters only translate them to and from storage.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from forge.money import Bucket, Prices, RouteType, Usage

LEDGER_SCHEMA_VERSION = 1


def utcnow() -> datetime:
    return datetime.now(UTC)


class KeyStatus(enum.StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    REVOKED = "revoked"


class ApiKey(BaseModel):
    """What the gateway knows about a key: never the key itself, only its hash and prefix."""

    model_config = ConfigDict(frozen=True)

    key_id: str
    account_id: str
    project_id: str
    prefix: str
    status: KeyStatus = KeyStatus.ACTIVE
    route_types: frozenset[RouteType] = frozenset(RouteType)
    created_at: datetime = Field(default_factory=utcnow)


class Wallet(BaseModel):
    """One bucket of one account. Invariant: available + held == balance."""

    account_id: str
    bucket: Bucket
    balance: int = 0
    held: int = 0
    available: int = 0
    seq: int = 0  # number of ledger entries written for this bucket


class HoldStatus(enum.StrEnum):
    PENDING = "pending"
    SETTLED = "settled"
    VOIDED = "voided"


class Hold(BaseModel):
    """Worst-case cost reserved before an upstream call; resolves exactly once."""

    request_id: str
    account_id: str
    key_id: str
    bucket: Bucket
    amount: int = Field(ge=0)
    status: HoldStatus = HoldStatus.PENDING
    expires_at: datetime


class LedgerKind(enum.StrEnum):
    TOPUP = "topup"
    GRANT = "grant"
    CHARGE = "charge"
    REFUND = "refund"
    ADJUSTMENT = "adjustment"


class LedgerEntry(BaseModel):
    """One balance movement. Per account and bucket, `seq` is gap-free and each entry's
    balance_after = previous balance_after + amount, so the ledger alone explains a balance."""

    schema_version: int = LEDGER_SCHEMA_VERSION
    entry_id: str
    account_id: str
    bucket: Bucket
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


class Attempt(BaseModel):
    route: str
    upstream_model: str
    status: int | None  # upstream HTTP status; None when no response arrived
    latency_ms: int
    outcome: Literal["ok", "error"]
    reason: str | None = None


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
    prices: Prices | None = None
    hold: int = 0
    charge: int = 0
    bucket: Bucket | None = None
    balance_after: int | None = None
    ledger_entry_id: str | None = None
    error_code: str | None = None
    note: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
