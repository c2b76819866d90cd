"""What money in keeps beside the ledger: redeem codes, and the guards that make a credit
happen at most once.

A guard commits with its credit or not at all (the store writes both in one transaction);
when one fails, the store raises GuardFailed with the guard's position:
- `PaymentMarker`: a payment event credits once per event id;
- `CodeClaim`: an account claims a code once;
- `CodeUse`: a claim counts against the code only while it is claimable (active, unexpired,
  below `max_claims`);
- `RefundMarker`: a request's charge is refunded once.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from forge.domain.money import Bucket
from forge.domain.records import utcnow


class CodeStatus(enum.StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


class RedeemCode(BaseModel):
    """A code an operator hands out: `amount` micro-units of `bucket` per claiming account."""

    model_config = ConfigDict(extra="ignore")

    code: str
    bucket: Bucket
    amount: int = Field(gt=0)
    max_claims: int | None = Field(default=None, ge=1)
    claim_count: int = Field(default=0, ge=0)
    code_status: CodeStatus = CodeStatus.ACTIVE
    expires_at: datetime | None = None  # exclusive: claimable strictly before this moment
    memo: str | None = None
    created_at: datetime = Field(default_factory=utcnow)

    def state(self, now: datetime) -> Literal["active", "disabled", "expired", "exhausted"]:
        if self.code_status is CodeStatus.DISABLED:
            return "disabled"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        if self.max_claims is not None and self.claim_count >= self.max_claims:
            return "exhausted"
        return "active"

    def item_values(self) -> dict[str, Any]:
        """The stored values: the model, and its expiry as a number, which a claim's
        condition can compare (stores compare numbers, not the instants ISO strings name)."""
        values = self.model_dump(mode="json", exclude_none=True)
        if self.expires_at is not None:
            values["valid_until_epoch"] = int(self.expires_at.timestamp())
        return values


class PaymentMarker(BaseModel):
    """A payment event that was credited, with what it credited."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: str
    account_id: str
    bucket: Bucket
    amount: int
    payment_id: str
    ledger_entry_id: str
    received_at: datetime


class CodeClaim(BaseModel):
    """An account's claim of a code."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    code: str
    account_id: str
    ledger_entry_id: str
    claimed_at: datetime


class CodeUse(BaseModel):
    """One more claim counted on a code, only if it is still claimable at `at`."""

    model_config = ConfigDict(frozen=True)

    code: str
    at: datetime


class RefundMarker(BaseModel):
    """A request's charge that was refunded, with what was refunded."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    account_id: str
    request_id: str
    charge_entry_id: str
    bucket: Bucket
    amount: int
    ledger_entry_id: str
    refunded_at: datetime


CreditGuard = PaymentMarker | CodeClaim | CodeUse | RefundMarker
