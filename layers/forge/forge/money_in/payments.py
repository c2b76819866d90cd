"""Money in: verified payment webhooks, redeem codes and operator adjustments.

Every way money enters (or is corrected) is exactly one `DynamoStore.credit()`, so a balance
and its ledger entry always move together. Each "at most once" rule rides inside that same
transaction as a guard (forge.domain.money_in), never as a read-then-write check:

- a payment event credits once: its `PaymentMarker` must not exist yet;
- an account claims a code once: its `CodeClaim` must not exist yet, and the `CodeUse` counts
  one more claim only while the code is still active, unexpired and below `max_claims`;
- a request is refunded once: its `RefundMarker` must not exist yet.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from forge.domain import strict_json
from forge.domain.errors import (
    BudgetStoreUnavailable,
    GuardFailed,
    InvalidJson,
    InvalidRequest,
    NotFound,
    PaymentEventConflict,
    RedeemCodeAlreadyClaimed,
    RedeemCodeDisabled,
    RedeemCodeExhausted,
    RedeemCodeExpired,
    RedeemCodeInvalid,
    RedeemCodeNotFound,
    RefundAlreadyIssued,
    WebhookSignatureInvalid,
    WebhooksNotConfigured,
)
from forge.domain.ids import new_id
from forge.domain.money import Bucket, Money, decimal_to_micros, format_micros
from forge.domain.money_in import (
    CodeClaim,
    CodeStatus,
    CodeUse,
    PaymentMarker,
    RedeemCode,
    RefundMarker,
)
from forge.domain.records import LedgerEntry, LedgerKind, utcnow
from forge.store.dynamo.store import DynamoStore

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
    """Validate into `model`; a failure is a 422 naming the first bad field, never a 500."""
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


def apply_payment(store: DynamoStore, event: PaymentEvent) -> PaymentOutcome:
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
    store: DynamoStore, event_id: str, payment: PaymentData, money: Money
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


# Redeem codes ---------------------------------------------------------------------------------
CODE_PREFIX = "FORGE"
# Crockford's base32: no I, L, O or U, so nothing reads as something else; 12 symbols give
# 60 random bits. A typed O, I or L is read as 0, 1, 1, as Crockford specifies.
CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_GROUPS = 3
CODE_GROUP_LENGTH = 4
_READ_AS = str.maketrans({"O": "0", "I": "1", "L": "1"})


def new_code() -> str:
    """A readable, unguessable code: FORGE-XXXX-XXXX-XXXX (60 bits from `secrets`)."""
    body = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_GROUPS * CODE_GROUP_LENGTH))
    groups = [body[i : i + CODE_GROUP_LENGTH] for i in range(0, len(body), CODE_GROUP_LENGTH)]
    return "-".join([CODE_PREFIX, *groups])


def normalize_code(raw: str) -> str | None:
    """A code as typed (any case, spaces, dashes, O/I/L for 0/1) in its canonical form, or
    None if it cannot be one of ours."""
    compact = "".join(raw.split()).replace("-", "").upper()
    if not compact.startswith(CODE_PREFIX):
        return None
    body = compact.removeprefix(CODE_PREFIX).translate(_READ_AS)
    if len(body) != CODE_GROUPS * CODE_GROUP_LENGTH or any(c not in CODE_ALPHABET for c in body):
        return None
    groups = [body[i : i + CODE_GROUP_LENGTH] for i in range(0, len(body), CODE_GROUP_LENGTH)]
    return "-".join([CODE_PREFIX, *groups])


def create_code(
    store: DynamoStore,
    bucket: Bucket,
    amount: str,
    *,
    max_claims: int | None = None,
    expires: date | None = None,
    memo: str | None = None,
    now: datetime | None = None,
) -> RedeemCode:
    """A new active code. `expires` is the last UTC day it can be claimed on."""
    now = now or utcnow()
    micros = _parse_amount(amount, positive=True)
    if max_claims is not None and max_claims < 1:
        raise InvalidRequest("max_claims must be at least 1", param="max_claims")
    expires_at = None
    if expires is not None:
        expires_at = datetime(expires.year, expires.month, expires.day, tzinfo=UTC) + timedelta(
            days=1
        )
        if expires_at <= now:
            raise InvalidRequest("The expiry date has already passed", param="expires")
    memo = _clean_memo(memo, "memo")
    for _ in range(5):  # a collision at 60 bits is practically impossible, but never silent
        code = RedeemCode(
            code=new_code(),
            bucket=bucket,
            amount=micros,
            max_claims=max_claims,
            expires_at=expires_at,
            memo=memo,
            created_at=now,
        )
        if store.add_code(code):
            return code
    raise BudgetStoreUnavailable("Could not allocate a unique code; try again")


def get_code(store: DynamoStore, raw_code: str) -> RedeemCode:
    code = normalize_code(raw_code)
    found = store.get_code(code) if code else None
    if found is None:
        raise RedeemCodeNotFound("No such redeem code", param="code")
    return found


def list_codes(store: DynamoStore) -> list[RedeemCode]:
    """Every code, oldest first (an operator view: one read per code)."""
    return sorted(store.list_codes(), key=lambda c: (c.created_at, c.code))


def disable_code(store: DynamoStore, raw_code: str) -> RedeemCode:
    """Stop a code from granting anything more; claims already made stand."""
    code = get_code(store, raw_code)
    if code.code_status is CodeStatus.DISABLED:
        return code
    disabled = code.model_copy(update={"code_status": CodeStatus.DISABLED})
    store.replace_code(disabled)
    # The overwrite may have raced a claim's count. Once the code is disabled no claim can
    # commit, so the claims are final: recount from them, the source of truth.
    claims = store.count_code_claims(code.code)
    if claims != disabled.claim_count:
        disabled = disabled.model_copy(update={"claim_count": claims})
        store.replace_code(disabled)
    return disabled


def _unclaimable(code: RedeemCode, now: datetime) -> RedeemCodeInvalid | None:
    match code.state(now):
        case "disabled":
            return RedeemCodeDisabled("This code has been disabled", param="code")
        case "expired":
            return RedeemCodeExpired("This code has expired", param="code")
        case "exhausted":
            return RedeemCodeExhausted("This code has been claimed its maximum times", param="code")
    return None


def claim_code(
    store: DynamoStore, account_id: str, raw_code: str, *, now: datetime | None = None
) -> LedgerEntry:
    """Grant a code's amount to an account: once per account, within max_claims, before
    expiry, while active. The grant and the claim commit together or not at all."""
    now = now or utcnow()
    code = get_code(store, raw_code)
    if refusal := _unclaimable(code, now):
        raise refusal
    entry_id = new_id("le")
    claim = CodeClaim(
        code=code.code, account_id=account_id, ledger_entry_id=entry_id, claimed_at=now
    )
    try:
        return store.credit(
            account_id,
            code.bucket,
            code.amount,
            kind=LedgerKind.GRANT,
            entry_id=entry_id,
            source=f"code:{code.code}",
            memo=code.memo,
            guards=[claim, CodeUse(code=code.code, at=now)],
        )
    except GuardFailed as failed:
        if failed.index == 0:
            raise RedeemCodeAlreadyClaimed(
                "This account has already claimed this code", param="code"
            ) from None
        # A code only ever moves towards unclaimable, so a fresh read names the reason.
        refusal = _unclaimable(get_code(store, code.code), now)
        if refusal is None:
            raise BudgetStoreUnavailable("The code changed while claiming; try again") from None
        raise refusal from None


_MAX_MEMO = 500


def _parse_amount(amount: str, *, positive: bool) -> int:
    """A decimal amount in micro-units; with `positive`, above zero."""
    try:
        micros = decimal_to_micros(amount)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="amount") from exc
    if positive and micros <= 0:
        raise InvalidRequest("The amount must be positive", param="amount")
    return micros


def _clean_memo(memo: str | None, param: str) -> str | None:
    """A memo trimmed, at most _MAX_MEMO characters; None when empty."""
    if memo is None:
        return None
    memo = memo.strip()
    if len(memo) > _MAX_MEMO:
        raise InvalidRequest(f"At most {_MAX_MEMO} characters", param=param)
    return memo or None


# Operator adjustments and refunds -------------------------------------------------------------
def adjust_wallet(
    store: DynamoStore, account_id: str, bucket: Bucket, amount: str, *, reason: str
) -> LedgerEntry:
    """Correct a balance by a signed amount, with the reason on the ledger entry. A negative
    adjustment never takes `available` below zero (the store refuses with BudgetExceeded)."""
    micros = _parse_amount(amount, positive=False)
    if micros == 0:
        raise InvalidRequest("An adjustment cannot be zero", param="amount")
    memo = _clean_memo(reason, "reason")
    if not memo:
        raise InvalidRequest("An adjustment needs a reason", param="reason")
    if not store.account_exists(account_id):
        raise NotFound(f"No account '{account_id}'", param="account")
    return store.credit(
        account_id,
        bucket,
        micros,
        kind=LedgerKind.ADJUSTMENT,
        entry_id=new_id("le"),
        source="operator",
        memo=memo,
    )


def describe_entry(entry: LedgerEntry) -> dict[str, Any]:
    """A ledger entry's essentials with decimal strings, for the CLI."""
    return {
        "entry_id": entry.entry_id,
        "kind": entry.kind.value,
        "bucket": entry.bucket.value,
        "amount": format_micros(entry.amount),
        "balance_after": format_micros(entry.balance_after),
        "source": entry.source,
        "memo": entry.memo,
    }


def refund_charge(
    store: DynamoStore,
    account_id: str,
    request_id: str,
    amount: str | None = None,
    *,
    reason: str | None = None,
) -> LedgerEntry:
    """Credit back (part of) one request's charge to the bucket it was paid from: one `refund`
    ledger entry with source `refund:{request_id}` (naming the request, its key, project,
    model and route), at most once per request, guarded by a marker item written in the same
    transaction, which also counts it in the usage and run views. Spend caps already consumed
    stay consumed."""
    receipt = store.get_receipt(account_id, request_id)
    if receipt is None:
        raise NotFound(f"No request '{request_id}' in account '{account_id}'", param="request_id")
    if receipt.bucket is None or receipt.charge <= 0 or receipt.ledger_entry_id is None:
        raise InvalidRequest(f"Request '{request_id}' was not charged", param="request_id")
    micros = receipt.charge if amount is None else _parse_amount(amount, positive=True)
    if micros > receipt.charge:
        raise InvalidRequest(
            f"A refund cannot exceed the charge ({format_micros(receipt.charge)}"
            f" {receipt.bucket.currency})",
            param="amount",
        )
    memo = _clean_memo(reason, "reason") or f"refund of {request_id}"
    entry_id = f"le_refund_{request_id}"
    marker = RefundMarker(
        account_id=account_id,
        request_id=request_id,
        charge_entry_id=receipt.ledger_entry_id,
        bucket=receipt.bucket,
        amount=micros,
        ledger_entry_id=entry_id,
        refunded_at=utcnow(),
    )
    try:
        return store.credit(
            account_id,
            receipt.bucket,
            micros,
            kind=LedgerKind.REFUND,
            entry_id=entry_id,
            source=f"refund:{request_id}",
            memo=memo,
            guards=[marker],
            refund_of=receipt,
        )
    except GuardFailed:
        raise RefundAlreadyIssued(
            f"Request '{request_id}' has already been refunded", param="request_id"
        ) from None
