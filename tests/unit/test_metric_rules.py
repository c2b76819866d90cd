"""What a receipt, a refusal and a sweep count as metrics (forge.domain.metrics), that a
failing meter or count is only logged, and the EMF documents the Powertools adapter prints."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from forge.domain.errors import BudgetExceeded, BudgetStoreUnavailable, ModelNotFound
from forge.domain.metrics import Metric, call_metrics, charge_metrics, refusal_metrics
from forge.domain.money import Bucket
from forge.domain.records import Attempt, Receipt
from forge.ledger.sweeper import SweepReport, sweep_metrics
from forge.ports import emit_quietly
from forge.telemetry import EmfMeter

PROVIDERS = {"openai:gpt": "openai", "anthropic:claude": "anthropic"}


def attempt(route: str, outcome: str = "ok", action: str | None = None) -> Attempt:
    status = {"ok": 200, "error": 503, "skipped": None}[outcome]
    if action == "return":
        status = 400
    return Attempt.model_validate(
        {
            "route": route,
            "upstream_model": route.split(":")[1],
            "status": status,
            "latency_ms": 5,
            "outcome": outcome,
            "action": action,
        }
    )


def receipt(*attempts: Attempt, **values: Any) -> Receipt:
    return Receipt.model_validate(
        {
            "request_id": "req_1",
            "account_id": "acct_1",
            "key_id": "key_1",
            "project_id": "default",
            "requested_model": "gpt",
            "status": "succeeded",
            "attempts": list(attempts),
            "final_route": attempts[-1].route if attempts else None,
            "bucket": Bucket.CREDIT,
            **values,
        }
    )


def counted(metrics: Sequence[Metric]) -> list[tuple[str, int, dict[str, str]]]:
    return [(m.name, m.value, dict(m.dimensions)) for m in metrics]


def test_a_settled_charge_counts_once_with_its_micros_in_its_bucket() -> None:
    settled = receipt(attempt("openai:gpt"), charge=1234, bucket=Bucket.RMB)

    assert counted(call_metrics(settled, PROVIDERS)) == [
        ("Charges", 1, {"bucket": "rmb"}),
        ("ChargedMicros", 1234, {"bucket": "rmb"}),
    ]
    assert call_metrics(receipt(attempt("openai:gpt"), charge=0), PROVIDERS) == []


def test_a_deferred_settle_is_not_a_charge_yet() -> None:
    deferred = receipt(attempt("openai:gpt"), charge=1234, settlement="deferred")

    assert counted(call_metrics(deferred, PROVIDERS)) == [("DeferredSettles", 1, {})]


def test_failed_upstream_calls_count_per_provider_and_a_later_route_serving_is_a_fallback() -> None:
    served = receipt(
        attempt("openai:gpt", "error", "retry"),
        attempt("openai:gpt", "error", "fallback"),
        attempt("anthropic:claude"),
        charge=7,
    )

    assert counted(call_metrics(served, PROVIDERS)) == [
        ("Charges", 1, {"bucket": "credit"}),
        ("ChargedMicros", 7, {"bucket": "credit"}),
        ("Fallbacks", 1, {}),
        ("UpstreamErrors", 2, {"provider": "openai"}),
    ]


def test_a_route_skipped_as_unhealthy_makes_the_next_one_a_fallback_not_an_error() -> None:
    served = receipt(attempt("openai:gpt", "skipped"), attempt("anthropic:claude"), charge=7)

    assert [m.name for m in call_metrics(served, PROVIDERS)] == [
        "Charges",
        "ChargedMicros",
        "Fallbacks",
    ]


def test_a_call_no_route_served_is_no_fallback_and_a_refused_request_no_upstream_error() -> None:
    failed = receipt(
        attempt("openai:gpt", "error", "fallback"),
        attempt("anthropic:claude", "error", "give_up"),
        status="failed",
    )
    rejected = receipt(attempt("openai:gpt", "error", "return"), status="failed")

    assert counted(call_metrics(failed, PROVIDERS)) == [
        ("UpstreamErrors", 1, {"provider": "anthropic"}),
        ("UpstreamErrors", 1, {"provider": "openai"}),
    ]
    assert call_metrics(rejected, PROVIDERS) == []  # a 4xx the client caused


def test_a_refusal_counts_by_code_and_the_envelope_it_names() -> None:
    capped = BudgetExceeded("no room", envelope="project:monthly")

    assert counted(refusal_metrics(capped)) == [
        ("Refusals", 1, {"reason": "budget_exceeded", "envelope": "project:monthly"})
    ]
    assert counted(refusal_metrics(BudgetStoreUnavailable("down"))) == [
        ("Refusals", 1, {"reason": "budget_store_unavailable", "envelope": "none"})
    ]
    assert refusal_metrics(ModelNotFound("no"))[0].dimensions["reason"] == "model_not_found"


def test_a_sweep_always_reports_its_count_and_whether_it_failed() -> None:
    report = SweepReport(settled=["a"], voided=["b", "c"], already_resolved=["d"])

    assert counted(sweep_metrics(report, failed=False)) == [
        ("HoldsSwept", 3, {}),
        ("SweepFailures", 0, {}),
    ]
    assert counted(sweep_metrics(SweepReport(), failed=True)) == [
        ("HoldsSwept", 0, {}),
        ("SweepFailures", 1, {}),
    ]


class Recording:
    def __init__(self) -> None:
        self.emitted: list[Metric] = []

    def emit(self, metrics: Sequence[Metric]) -> None:
        self.emitted += metrics


class Failing:
    def emit(self, metrics: Sequence[Metric]) -> None:
        raise RuntimeError("no stdout")


def test_emit_quietly_logs_a_failing_meter_or_count_and_never_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken_count() -> list[Metric]:
        raise KeyError("secret-looking detail")

    emit_quietly(Failing(), lambda: charge_metrics(Bucket.CREDIT, 5))
    emit_quietly(Recording(), broken_count)

    logged = [r for r in caplog.records if r.name == "forge.ports"]
    assert [(r.message, r.__dict__["error"]) for r in logged] == [
        ("metrics_not_emitted", "RuntimeError"),
        ("metrics_not_emitted", "KeyError"),
    ]
    assert "secret-looking detail" not in caplog.text
    recording = Recording()
    emit_quietly(recording, list)  # nothing to count: the meter is not called
    assert recording.emitted == []


def test_the_emf_meter_prints_one_document_per_dimension_set(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    monkeypatch.delenv("POWERTOOLS_DEV", raising=False)
    meter = EmfMeter("TokensForge", "tokens-forge")

    meter.emit([*charge_metrics(Bucket.RMB, 42), Metric("Fallbacks", 1)])

    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["_aws"]["CloudWatchMetrics"][0]["Dimensions"] for d in documents] == [
        [["bucket", "service"]],
        [["service"]],
    ]
    charged, fallback = documents
    # Powertools writes each value as a list of samples.
    assert (charged["bucket"], charged["Charges"], charged["ChargedMicros"]) == ("rmb", [1], [42])
    assert (fallback["service"], fallback["Fallbacks"]) == ("tokens-forge", [1])
    assert {d["_aws"]["CloudWatchMetrics"][0]["Namespace"] for d in documents} == {"TokensForge"}


def test_the_emf_meter_prints_nothing_when_powertools_metrics_are_disabled(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")

    EmfMeter("TokensForge").emit(charge_metrics(Bucket.CREDIT, 1))

    assert capsys.readouterr().out == ""
