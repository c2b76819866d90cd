"""What an operator types when moving money by hand (codes, adjustments, refunds): decimal
amounts and memos, refused as a 400 naming the field when they cannot be used."""

from __future__ import annotations

from forge.domain.errors import InvalidRequest
from forge.domain.money import decimal_to_micros

MAX_MEMO = 500


def parse_amount(amount: str, *, positive: bool) -> int:
    """A decimal amount in micro-units; with `positive`, above zero."""
    try:
        micros = decimal_to_micros(amount)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="amount") from exc
    if positive and micros <= 0:
        raise InvalidRequest("The amount must be positive", param="amount")
    return micros


def clean_memo(memo: str | None, param: str) -> str | None:
    """A memo trimmed, at most MAX_MEMO characters; None when empty."""
    if memo is None:
        return None
    memo = memo.strip()
    if len(memo) > MAX_MEMO:
        raise InvalidRequest(f"At most {MAX_MEMO} characters", param=param)
    return memo or None
