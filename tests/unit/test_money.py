"""Exact money: integer micro-units, per-class ceil, and decimal parsing that never rounds."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from math import ceil

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forge.domain.money import (
    Bucket,
    Money,
    Prices,
    RouteType,
    Usage,
    charge_for,
    decimal_to_micros,
    format_micros,
    price_to_micros,
    token_cost,
)

tokens = st.integers(min_value=0, max_value=10**9)
prices = st.integers(min_value=0, max_value=10**9)


@given(tokens, prices)
def test_token_cost_is_the_exact_ceiling(n: int, price: int) -> None:
    assert token_cost(n, price) == ceil(Fraction(n * price, 1_000_000))


@given(tokens, prices)
def test_token_cost_never_undercharges_and_overcharges_by_less_than_one_micro(
    n: int, price: int
) -> None:
    exact = Fraction(n * price, 1_000_000)
    assert exact <= token_cost(n, price) < exact + 1


@given(tokens, tokens, tokens, prices, prices, prices)
def test_charge_is_per_class_ceiling_summed_and_counts_cached_tokens_once(
    inp: int, cached: int, out: int, p_in: int, p_cached: int, p_out: int
) -> None:
    cached = min(cached, inp)
    usage = Usage(input_tokens=inp, cached_input_tokens=cached, output_tokens=out)
    table = Prices(input=p_in, cached_input=p_cached, output=p_out)
    expected = (
        ceil(Fraction((inp - cached) * p_in, 10**6))
        + ceil(Fraction(cached * p_cached, 10**6))
        + ceil(Fraction(out * p_out, 10**6))
    )
    assert charge_for(usage, table) == expected
    assert isinstance(charge_for(usage, table), int)


def test_one_token_at_a_tiny_price_still_costs_one_micro() -> None:
    assert charge_for(Usage(input_tokens=1), Prices(input=1, cached_input=0, output=0)) == 1


def test_zero_usage_costs_nothing() -> None:
    assert charge_for(Usage(), Prices(input=5, cached_input=5, output=5)) == 0


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_format_and_parse_round_trip(micros: int) -> None:
    assert decimal_to_micros(format_micros(micros)) == micros


@pytest.mark.parametrize(
    ("text", "micros"),
    [("12.5", 12_500_000), ("0.000001", 1), ("-3", -3_000_000), (" 7 ", 7_000_000)],
)
def test_decimal_strings_parse_exactly(text: str, micros: int) -> None:
    assert decimal_to_micros(text) == micros


@pytest.mark.parametrize("text", ["0.0000001", "1e3", "NaN", "inf", "", "ten", "1,5"])
def test_amounts_that_would_need_rounding_or_are_not_plain_decimals_are_refused(
    text: str,
) -> None:
    with pytest.raises(ValueError):
        decimal_to_micros(text)


@given(
    st.decimals(min_value=0, max_value=1000, places=6),
    st.decimals(min_value=Decimal("0.5"), max_value=3, places=2),
)
def test_catalog_price_with_multiplier_rounds_up_to_a_whole_micro(
    price: Decimal, multiplier: Decimal
) -> None:
    micros = price_to_micros(str(price), str(multiplier))
    exact = price * multiplier * 10**6
    assert exact <= micros < exact + 1


def test_each_route_type_is_paid_by_its_own_bucket() -> None:
    assert RouteType.OFFICIAL.bucket is Bucket.CREDIT
    assert RouteType.ROUTED.bucket is Bucket.RMB


def test_money_prints_with_its_currency() -> None:
    assert str(Money.parse("1.5", Bucket.RMB)) == "1.500000 CNY"
