"""bench.cost.parts: a measurement and the price file make dollars per million paid requests,
each part the measured quantity times its price line."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bench.cost.levers import floor, weigh
from bench.cost.parts import Function, Prices, price
from forge_tools.template import load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = load_template(ROOT / "template.yaml")
PRICES = Prices(json.loads((ROOT / "bench" / "prices.json").read_text()))


def group(**store: Any) -> dict[str, Any]:
    """Two calls that did the same, summarized as bench.cost.run summarizes calls."""
    mean = {
        "response_bytes": 1000,
        "output_bytes": 290,
        "completion_tokens": 19,
        "gateway_ms": 30.0,
        "table_wru": 14,
        "gsi_wru": 5,
        "rru": 1.0,
        "round_trips": 3,
        **store,
    }
    return {
        "count": 2,
        "streamed": 1,
        "mean": mean,
        "range": {k: [v, v] for k, v in mean.items()},
        "example": {"store": {**mean, "transactions": []}},
    }


MEASUREMENT: dict[str, Any] = {
    "calls": group(),
    "first_calls": [{"store": {"rru": 3.5, "round_trips": 6}}],
    "overhead": {
        "non_stream": {"added_ms": 0.0, "gateway_median_ms": 30.0, "calls": 2},
        "stream": {"added_ms": 0.0, "gateway_median_ms": 40.0, "calls": 2},
    },
    "stream": {"by_the_calls": {"INSERT ledger_entry": 10}, "paid_calls": 10},
    "archiver": {
        "batch_size": 100,
        "batching_window_seconds": 1,
        "delivered_records": 10,
        "warm_ms_per_record": 5.0,
        "s3_calls": {"PutObject ledger/": 10},
    },
    "statement": {
        "entries": 10,
        "s3_calls": {"GetObject ledger/": 10, "PutObject statements/": 2},
        "dynamodb": {"rru": 2.0},
    },
}


def cents(part: str, seconds: float = 2.0) -> Decimal:
    costs = price(MEASUREMENT, PRICES, TEMPLATE)
    return next(p.cents(seconds) for p in costs.parts if p.name == part)


def test_the_template_says_what_a_function_costs_per_second() -> None:
    assert Function.of(TEMPLATE, "ProxyFunction") == Function("ProxyFunction", 512, "arm64")
    assert Function.of(TEMPLATE, "ArchiverFunction").memory_mb == 512


@pytest.mark.parametrize(
    ("part", "usd"),
    [
        ("API Gateway REST calls", "3.50"),  # one call per paid call, $3.50 per 1M
        ("Proxy Lambda requests", "0.20"),
        ("Proxy Lambda GB-s", "13.33"),  # 2 s x 0.5 GB x $0.0000133334 (arm64)
        ("DynamoDB writes", "11.88"),  # 19 WRU x $0.625 per 1M = $11.875
        ("DynamoDB reads", "0.13"),  # 1 RRU x $0.125 per 1M
        ("S3", "5.40"),  # 1 entry: 1 PUT ($0.005 per 1,000) + 1 statement GET ($0.0004)
    ],
)
def test_each_part_is_its_quantity_times_its_price(part: str, usd: str) -> None:
    assert cents(part) == Decimal(usd)


def test_only_lambda_time_grows_with_the_upstreams_time_and_the_total_adds_up() -> None:
    costs = price(MEASUREMENT, PRICES, TEMPLATE)
    assert cents("Proxy Lambda GB-s", 60.0) == Decimal("400.00")
    assert cents("DynamoDB writes", 60.0) == cents("DynamoDB writes", 1.0)
    for seconds in (1.0, 2.0, 10.0, 60.0):
        assert costs.total(seconds) == sum(p.cents(seconds) for p in costs.parts)
    assert all(p.trace for p in costs.parts)


def test_each_lever_is_the_same_run_priced_with_and_without_it() -> None:
    results = {r.lever.name: r for r in weigh(MEASUREMENT, PRICES, TEMPLATE)}
    now = price(MEASUREMENT, PRICES, TEMPLATE).total(2.0)
    arm = results["arm64 for every function (was x86_64)"]
    assert arm.lever.applied and arm.after == now
    # x86_64's GB-second costs more: the proxy's 2 s x 0.5 GB is $16.67 on x86_64 and $13.33
    # on arm64 (each part rounded to the cent; the archiver's share rounds away)
    assert arm.before - arm.after == Decimal("3.34")
    half = results["proxy at 256 MB (is 512 MB)"]
    assert not half.lever.applied and half.before == now
    assert half.before - half.after == Decimal("6.66")  # $13.33 at 512 MB, $6.67 at 256 MB


def test_the_archive_lever_prices_one_object_per_entry_back() -> None:
    # Given a run whose ten entries the archiver wrote in one object, read back in one GET
    batched = copy.deepcopy(MEASUREMENT)
    batched["archiver"]["s3_calls"]["PutObject ledger/"] = 1
    batched["statement"]["s3_calls"]["GetObject ledger/"] = 1
    results = {r.lever.name: r for r in weigh(batched, PRICES, TEMPLATE)}
    [archive] = [r for name, r in results.items() if name.startswith("archive:")]
    # Then "after" is the run as measured: S3 $0.50 of PUTs and $0.04 of GETs per 1M calls,
    # and "before" one PUT and one GET per entry again: $5.40
    assert archive.lever.applied
    assert archive.after == price(batched, PRICES, TEMPLATE).total(2.0)
    assert archive.before - archive.after == Decimal("4.86")


def test_the_floor_is_one_call_of_each_service_at_its_least() -> None:
    lowest = floor(PRICES)
    assert dict(lowest.lines) == {
        "API Gateway REST call": Decimal("3.50"),
        "Lambda invocation": Decimal("0.20"),
        "Lambda 2 s at 128 MB arm64": Decimal("3.33"),
        "DynamoDB: 3 WRU": Decimal("1.88"),
        "S3: 1/100 PutObject": Decimal("0.05"),
    }
    assert lowest.total == Decimal("8.96")
