"""Redeem codes: an operator creates a code worth an amount of one bucket; each account may
claim it once, within `max_claims`, before it expires, while it is active.

A claim is one `credit()` guarded by two guards in the same transaction, never a
read-then-write check: the account's `CodeClaim` must not exist yet, and the `CodeUse` counts
one more claim only while the code is still claimable.
"""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime, timedelta

from forge.domain.errors import (
    BudgetStoreUnavailable,
    GuardFailed,
    InvalidRequest,
    RedeemCodeAlreadyClaimed,
    RedeemCodeDisabled,
    RedeemCodeExhausted,
    RedeemCodeExpired,
    RedeemCodeInvalid,
    RedeemCodeNotFound,
)
from forge.domain.ids import new_id
from forge.domain.money import Bucket
from forge.domain.money_in import CodeClaim, CodeStatus, CodeUse, RedeemCode
from forge.domain.records import LedgerEntry, LedgerKind, utcnow
from forge.money_in.inputs import clean_memo, parse_amount
from forge.ports import CreditStore

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
    store: CreditStore,
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
    micros = parse_amount(amount, positive=True)
    if max_claims is not None and max_claims < 1:
        raise InvalidRequest("max_claims must be at least 1", param="max_claims")
    expires_at = None
    if expires is not None:
        expires_at = datetime(expires.year, expires.month, expires.day, tzinfo=UTC) + timedelta(
            days=1
        )
        if expires_at <= now:
            raise InvalidRequest("The expiry date has already passed", param="expires")
    memo = clean_memo(memo, "memo")
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


def get_code(store: CreditStore, raw_code: str) -> RedeemCode:
    code = normalize_code(raw_code)
    found = store.get_code(code) if code else None
    if found is None:
        raise RedeemCodeNotFound("No such redeem code", param="code")
    return found


def list_codes(store: CreditStore) -> list[RedeemCode]:
    """Every code, oldest first (an operator view: one read per code)."""
    return sorted(store.list_codes(), key=lambda c: (c.created_at, c.code))


def disable_code(store: CreditStore, raw_code: str) -> RedeemCode:
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
    store: CreditStore, account_id: str, raw_code: str, *, now: datetime | None = None
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
