"""Counting the S3 requests a boto3 client sends, by operation, and the time spent in them:
botocore `before-call` / `after-call` hooks, so what is counted is what the archive adapter
really asks S3 (each page of a listing is one request), not an estimate."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any


class S3Requests:
    """Counts one S3 client's API calls from now on (calls made from one thread at a time)."""

    def __init__(self, client: Any) -> None:
        self.by_operation: Counter[str] = Counter()
        self.seconds = 0.0  # wall time inside the calls, retries included
        self._started = 0.0
        client.meta.events.register("before-call.s3", self._count)
        client.meta.events.register("after-call.s3", self._finish)

    def _count(self, model: Any, **_: Any) -> None:
        self.by_operation[str(model.name)] += 1
        self._started = time.perf_counter()

    def _finish(self, **_: Any) -> None:
        self.seconds += time.perf_counter() - self._started

    @property
    def gets(self) -> int:
        return self.by_operation["GetObject"]

    @property
    def total(self) -> int:
        return sum(self.by_operation.values())

    def reset(self) -> None:
        self.by_operation.clear()
        self.seconds = 0.0
