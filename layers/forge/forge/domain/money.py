"""Exact money: integer micro-units that always travel with their balance bucket.

Rounding rule (documented in docs/architecture.md): a charge is computed per token class as
ceil(tokens x price_per_1M_micros / 1_000_000) and the classes are summed. Rounding is always
up, so the gateway never bills less than a fraction of a micro-unit per class and never more
than one micro-unit per class above the exact price.
"""

from __future__ import annotations

import enum
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Self

from pydantic import BaseModel, ConfigDict, NonNegativeInt

MICROS_PER_UNIT = 1_000_000
TOKENS_PER_PRICE_UNIT = 1_000_000  # prices are quoted per 1M tokens


class Bucket(enum.StrEnum):
    """A balance bucket. Credit pays official routes; the RMB wallet pays routed ones."""

    CREDIT = "credit"
    RMB = "rmb"

    @property
    def currency(self) -> str:
        return "USD" if self is Bucket.CREDIT else "CNY"


class RouteType(enum.StrEnum):
    OFFICIAL = "official"
    ROUTED = "routed"

    @property
    def bucket(self) -> Bucket:
        """Which bucket pays this route type; there is no silent conversion between them."""
        return Bucket.CREDIT if self is RouteType.OFFICIAL else Bucket.RMB


class Money(BaseModel):
    """An amount of one bucket, in integer micro-units (1e-6 of the bucket's currency)."""

    model_config = ConfigDict(frozen=True)

    micros: int
    bucket: Bucket

    @classmethod
    def parse(cls, amount: str, bucket: Bucket) -> Self:
        """Parse a decimal string exactly; more than six decimals is an error, not a rounding."""
        return cls(micros=decimal_to_micros(amount), bucket=bucket)

    def __str__(self) -> str:
        return f"{format_micros(self.micros)} {self.bucket.currency}"


def decimal_to_micros(amount: str) -> int:
    """'12.5' -> 12_500_000. Rejects floats' cousins: exponents, NaN, and sub-micro digits."""
    try:
        value = Decimal(amount.strip())
    except (InvalidOperation, AttributeError) as exc:
        raise ValueError(f"not a decimal amount: {amount!r}") from exc
    if not value.is_finite() or "e" in amount.lower():
        raise ValueError(f"not a plain decimal amount: {amount!r}")
    micros = value * MICROS_PER_UNIT
    if micros != micros.to_integral_value():
        raise ValueError(f"more than 6 decimal places: {amount!r}")
    return int(micros)


def format_micros(micros: int) -> str:
    """12_500_000 -> '12.500000' (always six places, so amounts line up in statements)."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS_PER_UNIT)
    return f"{sign}{whole}.{frac:06d}"


def price_to_micros(price_per_1m: str, multiplier: str = "1") -> int:
    """A catalog price (decimal per 1M tokens) times the operator multiplier, rounded up."""
    value = Decimal(price_per_1m) * Decimal(multiplier) * MICROS_PER_UNIT
    if value < 0:
        raise ValueError("prices cannot be negative")
    return int(value.to_integral_value(rounding=ROUND_CEILING))


def token_cost(tokens: int, price_per_1m_micros: int) -> int:
    """ceil(tokens x price / 1M) in integers only."""
    if tokens < 0 or price_per_1m_micros < 0:
        raise ValueError("tokens and prices are non-negative")
    return -(-tokens * price_per_1m_micros // TOKENS_PER_PRICE_UNIT)


class Prices(BaseModel):
    """Per-1M-token prices in micro-units of the paying bucket, after the multiplier."""

    model_config = ConfigDict(frozen=True)

    input: NonNegativeInt
    cached_input: NonNegativeInt
    output: NonNegativeInt


class Usage(BaseModel):
    """Tokens of one call. `cached_input_tokens` is a subset of `input_tokens`, counted once;
    `reasoning_tokens` (a reasoning model's hidden thought) a subset of `output_tokens`,
    priced as output like the rest of them and shown apart only to explain the charge."""

    model_config = ConfigDict(frozen=True)

    input_tokens: NonNegativeInt = 0
    cached_input_tokens: NonNegativeInt = 0
    output_tokens: NonNegativeInt = 0
    reasoning_tokens: NonNegativeInt = 0  # absent from receipts stored before it existed


def charge_for(usage: Usage, prices: Prices) -> int:
    """The charge in micro-units: per-class ceil, summed (see the module docstring)."""
    cached = min(usage.cached_input_tokens, usage.input_tokens)
    return (
        token_cost(usage.input_tokens - cached, prices.input)
        + token_cost(cached, prices.cached_input)
        + token_cost(usage.output_tokens, prices.output)
    )
