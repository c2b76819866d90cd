"""Levers on the bill: the same measurement priced with and without each change to
template.yaml, and the floor these services put under any design.

An applied lever is in template.yaml or the code now: "before" prices the run with it reverted
(the template changed, or the measured quantity it changed put back). A what-if is not applied:
"after" prices the run with it. Both price the same measured run, so the difference is the
lever's alone. The floor is a model, not a measurement: the least a
paid call could cost on these services with the money rules kept.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bench.cost.parts import HEADLINE, MILLION, Prices, price

Template = dict[str, Any]
Measurement = dict[str, Any]


def _architecture(arch: str) -> Callable[[Template, Measurement], None]:
    def change(template: Template, _: Measurement) -> None:
        template.setdefault("Globals", {}).setdefault("Function", {})["Architectures"] = [arch]
        for resource in template["Resources"].values():
            if resource.get("Type") == "AWS::Serverless::Function":
                resource["Properties"].pop("Architectures", None)

    return change


def _proxy_memory(mb: int) -> Callable[[Template, Measurement], None]:
    def change(template: Template, _: Measurement) -> None:
        template["Resources"]["ProxyFunction"]["Properties"]["MemorySize"] = mb

    return change


def _object_per_entry(_: Template, measurement: Measurement) -> None:
    """The archive as it was: one PutObject per entry, one GetObject per entry a statement
    reads."""
    archiver, statement = measurement["archiver"], measurement["statement"]
    archiver["s3_calls"]["PutObject ledger/"] = archiver["delivered_records"]
    statement["s3_calls"]["GetObject ledger/"] = statement["entries"]


@dataclass(frozen=True)
class Lever:
    name: str
    applied: bool
    change: Callable[[Template, Measurement], None]  # the lever, or (applied) its reversal
    note: str = ""


LEVERS = (
    Lever(
        "arm64 for every function (was x86_64)",
        True,
        _architecture("x86_64"),
        "Graviton's GB-second is 20% cheaper; the layer is built from manylinux aarch64 wheels",
    ),
    Lever(
        "archive: one S3 object per run of an account's entries in a stream batch (was one per"
        " entry)",
        True,
        _object_per_entry,
        "the archiver's batches as template.yaml sets them, as measured; fewer entries per"
        " account and window mean more objects (the note on archive objects below)",
    ),
    Lever(
        "proxy at 256 MB (is 512 MB)",
        False,
        _proxy_memory(256),
        "priced at the gateway's measured added time; 256 MB buys ~0.14 vCPU, so the CPU-bound"
        " part of that time stretches until the hot path's CPU is cut (issue 12)",
    ),
    Lever("proxy at 128 MB (is 512 MB)", False, _proxy_memory(128), "as above, ~0.07 vCPU"),
)


@dataclass(frozen=True)
class LeverResult:
    lever: Lever
    before: Decimal
    after: Decimal


def weigh(
    measurement: Mapping[str, Any], prices: Prices, template: Mapping[str, Any]
) -> list[LeverResult]:
    """Each lever's total at the headline duration, before and after."""
    now = price(measurement, prices, template).total(HEADLINE)
    results = []
    for lever in LEVERS:
        changed, measured = copy.deepcopy(dict(template)), copy.deepcopy(dict(measurement))
        lever.change(changed, measured)
        other = price(measured, prices, changed).total(HEADLINE)
        before, after = (other, now) if lever.applied else (now, other)
        results.append(LeverResult(lever, before, after))
    return results


@dataclass(frozen=True)
class Floor:
    lines: list[tuple[str, Decimal]]

    @property
    def total(self) -> Decimal:
        return sum((usd for _, usd in self.lines), Decimal("0.00"))


def floor(prices: Prices) -> Floor:
    """The least a paid call can cost on API Gateway REST, Lambda, DynamoDB and S3 at the
    headline duration, whatever the code: one metered API call; one invocation at Lambda's
    smallest memory (128 MB arm64) for the upstream's whole time; a reserve, a settle and one
    ledger entry as single-item writes under 1 KB (3 WRU, no transaction, no index); the
    archive written in S3 objects of 100 entries."""

    def usd(amount: float) -> Decimal:
        return Decimal(repr(amount * MILLION)).quantize(Decimal("0.01"))

    gb_s = HEADLINE * 128 / 1024 * prices.usd("lambda_gb_second_arm64")
    return Floor(
        [
            ("API Gateway REST call", usd(prices.usd("apigateway_rest_request"))),
            ("Lambda invocation", usd(prices.usd("lambda_request"))),
            (f"Lambda {HEADLINE:g} s at 128 MB arm64", usd(gb_s)),
            ("DynamoDB: 3 WRU", usd(3 * prices.usd("dynamodb_write_request_unit"))),
            ("S3: 1/100 PutObject", usd(prices.usd("s3_put_request") / 100)),
        ]
    )
