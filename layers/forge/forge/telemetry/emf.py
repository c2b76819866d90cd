"""The Meter on AWS: CloudWatch Embedded Metric Format lines on stdout, written by Powertools.

The proxy is a long-lived server (uvicorn behind the Lambda Web Adapter), not a handler under
`@metrics.log_metrics`, so each emit builds its own EMF document and flushes it at once. Not
Powertools' `Metrics`: its metric set is shared by every instance of the process, and
concurrent requests would mix (and flush) each other's metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from forge.domain.metrics import Metric

if TYPE_CHECKING:
    from aws_lambda_powertools.metrics import EphemeralMetrics


class EmfMeter:
    """One EMF document per set of dimensions, printed when emitted. Every document also
    carries the `service` dimension (POWERTOOLS_SERVICE_NAME) when one is set."""

    def __init__(self, namespace: str, service: str | None = None) -> None:
        self._namespace = namespace
        self._service = service

    def emit(self, metrics: Sequence[Metric]) -> None:
        documents: dict[tuple[tuple[str, str], ...], list[Metric]] = {}
        for metric in metrics:
            documents.setdefault(tuple(metric.dimensions.items()), []).append(metric)
        for dimensions, group in documents.items():
            document = self._document()
            for name, value in dimensions:
                document.add_dimension(name=name, value=value)
            for metric in group:
                document.add_metric(name=metric.name, unit=metric.unit, value=metric.value)
            document.flush_metrics(raise_on_empty_metrics=True)

    def _document(self) -> EphemeralMetrics:
        # Imported on first use: Powertools costs ~10 ms to import (docs/performance.md), and
        # a cold start that serves no paid call never pays it.
        from aws_lambda_powertools.metrics import EphemeralMetrics

        return EphemeralMetrics(namespace=self._namespace, service=self._service)
