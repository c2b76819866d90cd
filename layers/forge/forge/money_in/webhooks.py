"""Payment webhooks: a signed event from the payment provider credits its bucket exactly once.

The signature (`Forge-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`, Stripe's scheme) is
checked against the raw body before anything is parsed. A `payment.succeeded` event is one
`credit()` guarded by a `PaymentMarker` in the same transaction, so a replayed event changes
nothing, and a replay carrying different money is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from forge.domain import strict_json
from forge.domain.errors import (
    GuardFailed,
    InvalidJson,
    InvalidRequest,
    NotFound,
    PaymentEventConflict,
    WebhookSignatureInvalid,
    WebhooksNotConfigured,
)
from forge.domain.money import Bucket, Money, decimal_to_micros
from forge.domain.money_in import PaymentMarker
from forge.domain.records import LedgerEntry, LedgerKind, utcnow
from forge.ports import CreditStore

_Model = TypeVar("_Model", bound=BaseModel)

# Signatures --------------------------------------------------------------------------------
SIGNATURE_HEADER = "Forge-Signature"
SIGNATURE_TOLERANCE_SECONDS = 300
_MAX_SIGNATURE_HEADER = 2048  # a handful of v1 values; anything longer is not ours
_MAX_SIGNATURES = 8
_HEX_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    signed = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def sign_payload(secret: str, body: bytes, timestamp: int) -> str:
    """The Forge-Signature header value a sender puts on `body` (senders and tests)."""
    return f"t={timestamp},v1={_digest(secret, timestamp, body)}"


def _parse_signature_header(header: str | None) -> tuple[int, list[str]]:
    if not header:
        raise WebhookSignatureInvalid(
            f"Missing {SIGNATURE_HEADER} header", param=SIGNATURE_HEADER, reason="missing_header"
        )
    if len(header) > _MAX_SIGNATURE_HEADER:
        raise WebhookSignatureInvalid(
            f"{SIGNATURE_HEADER} header is too long", param=SIGNATURE_HEADER, reason="malformed"
        )
    timestamps: list[str] = []
    signatures: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            raise WebhookSignatureInvalid(
                f"{SIGNATURE_HEADER} must be 't=<unix seconds>,v1=<hex>'",
                param=SIGNATURE_HEADER,
                reason="malformed",
            )
        if name == "t":
            timestamps.append(value)
        elif name == "v1":
            signatures.append(value.lower())
        # Other schemes (v0, future versions) are ignored, as Stripe's verifiers do.
    if len(timestamps) != 1 or not _TIMESTAMP.match(timestamps[0]):
        raise WebhookSignatureInvalid(
            f"{SIGNATURE_HEADER} needs exactly one t=<unix seconds>",
            param=SIGNATURE_HEADER,
            reason="malformed",
        )
    if not signatures or len(signatures) > _MAX_SIGNATURES:
        raise WebhookSignatureInvalid(
            f"{SIGNATURE_HEADER} needs between 1 and {_MAX_SIGNATURES} v1 signatures",
            param=SIGNATURE_HEADER,
            reason="malformed",
        )
    if not all(_HEX_SHA256.match(s) for s in signatures):
        raise WebhookSignatureInvalid(
            "A v1 signature is not a hex HMAC-SHA256", param=SIGNATURE_HEADER, reason="malformed"
        )
    return int(timestamps[0]), signatures


def verify_signature(
    secret: str | None,
    body: bytes,
    header: str | None,
    *,
    tolerance_seconds: int = SIGNATURE_TOLERANCE_SECONDS,
    clock: Callable[[], float] = time.time,
) -> int:
    """Check a Forge-Signature header against the raw body; returns the signed timestamp.

    Any v1 value may match (a sender signs with old and new secret while rotating); the
    timestamp must be within `tolerance_seconds` of `clock()` either way, so a captured
    request cannot be replayed later."""
    if not secret:
        raise WebhooksNotConfigured("Payment webhooks are not configured; nothing was credited")
    timestamp, signatures = _parse_signature_header(header)
    expected = _digest(secret, timestamp, body)
    # Compare against every candidate (no early exit), each in constant time.
    matches = [hmac.compare_digest(expected, candidate) for candidate in signatures]
    if not any(matches):
        raise WebhookSignatureInvalid(
            "No v1 signature matches this body", param=SIGNATURE_HEADER, reason="mismatch"
        )
    skew = clock() - timestamp
    if skew > tolerance_seconds:
        raise WebhookSignatureInvalid(
            f"The signature timestamp is more than {tolerance_seconds} s old",
            param=SIGNATURE_HEADER,
            reason="timestamp_too_old",
        )
    if skew < -tolerance_seconds:
        raise WebhookSignatureInvalid(
            f"The signature timestamp is more than {tolerance_seconds} s in the future",
            param=SIGNATURE_HEADER,
            reason="timestamp_in_future",
        )
    return timestamp


# Payment events -------------------------------------------------------------------------------
PAYMENT_SUCCEEDED = "payment.succeeded"
_SAFE_ID = r"^[A-Za-z0-9_-]{1,128}$"


def _validated(model: type[_Model], value: Any, where: str) -> _Model:
    """Validate into `model`; a failure is a 400 naming the first bad field, never a 500."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        location = ".".join(str(p) for p in (where, *first["loc"]) if p != "")
        raise InvalidRequest(f"{location or 'body'}: {first['msg']}", param=location) from None


def _positive_micros(value: str) -> int:
    micros = decimal_to_micros(value)
    if micros <= 0:
        raise ValueError("must be a positive amount")
    return micros


class PaymentData(BaseModel):
    """What a successful payment buys: an amount of one bucket of one account."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    account_id: str = Field(pattern=_SAFE_ID)
    bucket: Bucket
    amount: str = Field(max_length=40)  # a decimal string: JSON numbers are refused
    payment_id: str = Field(pattern=_SAFE_ID)

    @field_validator("amount")
    @classmethod
    def _exact_and_positive(cls, value: str) -> str:
        _positive_micros(value)
        return value

    @property
    def money(self) -> Money:
        return Money.parse(self.amount, self.bucket)


class PaymentEvent(BaseModel):
    """A payment provider's event. Only `payment.succeeded` moves money; other types are
    acknowledged and ignored, so their `data` is not interpreted."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str = Field(pattern=_SAFE_ID)
    type: str = Field(min_length=1, max_length=100)
    created: int = Field(ge=0)
    data: dict[str, Any] = Field(default_factory=dict)

    def payment(self) -> PaymentData:
        return _validated(PaymentData, self.data, "data")


def parse_event(body: bytes) -> PaymentEvent:
    """A verified webhook body as an event; a payment event's data is validated too."""
    try:
        raw = strict_json.loads(body)
    except ValueError:
        raise InvalidJson("The request body is not valid JSON") from None
    event = _validated(PaymentEvent, raw, "")
    if event.type == PAYMENT_SUCCEEDED:
        event.payment()
    return event


class PaymentOutcome(BaseModel):
    """What applying one event did: credited it now, had credited it before, or ignored it."""

    event_id: str
    status: Literal["credited", "duplicate", "ignored"]
    ledger_entry_id: str | None = None
    entry: LedgerEntry | None = None  # only when this call wrote it


def apply_payment(store: CreditStore, event: PaymentEvent) -> PaymentOutcome:
    """Credit a payment event's bucket exactly once per event id; a replay changes nothing."""
    if event.type != PAYMENT_SUCCEEDED:
        return PaymentOutcome(event_id=event.id, status="ignored")
    payment = event.payment()
    money = payment.money
    entry_id = f"le_pay_{event.id}"
    if not store.account_exists(payment.account_id):
        raise NotFound(f"No account '{payment.account_id}'", param="data.account_id")
    marker = PaymentMarker(
        event_id=event.id,
        account_id=payment.account_id,
        bucket=money.bucket,
        amount=money.micros,
        payment_id=payment.payment_id,
        ledger_entry_id=entry_id,
        received_at=utcnow(),
    )
    try:
        entry = store.credit(
            payment.account_id,
            money.bucket,
            money.micros,
            kind=LedgerKind.TOPUP,
            entry_id=entry_id,
            source=f"payment:{payment.payment_id}",
            memo=f"payment event {event.id}",
            guards=[marker],
        )
    except GuardFailed:
        return _replayed(store, event.id, payment, money)
    return PaymentOutcome(
        event_id=event.id, status="credited", ledger_entry_id=entry.entry_id, entry=entry
    )


def _replayed(
    store: CreditStore, event_id: str, payment: PaymentData, money: Money
) -> PaymentOutcome:
    """The event was applied before: a no-op, unless the replay carries different money."""
    seen = store.get_payment_marker(event_id)
    if seen is None or (seen.account_id, seen.bucket, seen.amount, seen.payment_id) != (
        payment.account_id,
        money.bucket,
        money.micros,
        payment.payment_id,
    ):
        raise PaymentEventConflict(
            f"Event '{event_id}' was already applied with different data; nothing was credited",
            param="id",
        )
    return PaymentOutcome(
        event_id=event_id, status="duplicate", ledger_entry_id=seen.ledger_entry_id
    )
