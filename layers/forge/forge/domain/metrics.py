"""Operational metrics: their names and dimensions, and what a call's receipt, a refusal or a
sweep says in them. The names and dimensions are what the alarms match (docs/architecture.md,
"Metrics"): keep them stable."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from forge.domain.errors import ForgeError
from forge.domain.money import Bucket
from forge.domain.records import Receipt

CHARGES = "Charges"
CHARGED_MICROS = "ChargedMicros"
REFUSALS = "Refusals"
FALLBACKS = "Fallbacks"
UPSTREAM_ERRORS = "UpstreamErrors"
DEFERRED_SETTLES = "DeferredSettles"
HOLDS_SWEPT = "HoldsSwept"
SWEEP_FAILURES = "SweepFailures"

NO_ENVELOPE = "none"  # a refusal that names no envelope (no route, scope, a failing store)

# CloudWatch units: a count of events, or a plain number (micro-units of a bucket's currency).
Unit = Literal["Count", "None"]


@dataclass(frozen=True)
class Metric:
    """One value of one metric, with its dimensions. Dimension values come from bounded sets
    (buckets, error codes, envelope names, provider names): never ids, keys or prompts."""

    name: str
    value: int
    dimensions: Mapping[str, str] = field(default_factory=dict)
    unit: Unit = "Count"


def charge_metrics(bucket: Bucket, micros: int) -> list[Metric]:
    """A charge written to the ledger: one more charge, and its micro-units, in its bucket."""
    if micros <= 0:
        return []
    dimensions = {"bucket": bucket.value}
    return [
        Metric(CHARGES, 1, dimensions),
        Metric(CHARGED_MICROS, micros, dimensions, unit="None"),
    ]


def call_metrics(receipt: Receipt, providers: Mapping[str, str]) -> list[Metric]:
    """What the receipt a call ends with says: its charge, if the store confirmed it; a settle
    left to the sweeper; a route other than its first that served it; each upstream call that
    failed, by provider (`providers`: route name -> provider). A provider's refusal of the
    request itself (a 4xx returned to the client) is the request's fault, not an error."""
    metrics: list[Metric] = []
    if receipt.settlement == "deferred":
        metrics.append(Metric(DEFERRED_SETTLES, 1))
    elif receipt.bucket is not None:
        metrics += charge_metrics(receipt.bucket, receipt.charge)
    served = receipt.status != "failed"
    if served and receipt.attempts and receipt.final_route != receipt.attempts[0].route:
        metrics.append(Metric(FALLBACKS, 1))
    failed = Counter(
        providers.get(a.route) or a.route.partition(":")[0]
        for a in receipt.attempts
        if a.outcome == "error" and a.action != "return"
    )
    metrics += upstream_error_metrics(failed)
    return metrics


def upstream_error_metrics(failed: Mapping[str, int]) -> list[Metric]:
    """Failed upstream calls, counted per provider."""
    return [
        Metric(UPSTREAM_ERRORS, count, {"provider": provider})
        for provider, count in sorted(failed.items())
        if count > 0
    ]


def refusal_metrics(error: ForgeError) -> list[Metric]:
    """A paid call refused (before any upstream answer was served): by its error code and the
    envelope that stopped it, when one did."""
    envelope = error.details.get("envelope")
    return [
        Metric(
            REFUSALS,
            1,
            {"reason": error.code, "envelope": str(envelope) if envelope else NO_ENVELOPE},
        )
    ]
