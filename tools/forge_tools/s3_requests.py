"""Counting the S3 requests a boto3 client sends, by operation: a botocore `before-call` hook,
so what is counted is what the archive adapter really asks S3 (each page of a listing is one
request), not an estimate."""

from __future__ import annotations

from collections import Counter
from typing import Any


class S3Requests:
    """Counts one S3 client's API calls from now on."""

    def __init__(self, client: Any) -> None:
        self.by_operation: Counter[str] = Counter()
        client.meta.events.register("before-call.s3", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.by_operation[str(model.name)] += 1

    @property
    def gets(self) -> int:
        return self.by_operation["GetObject"]

    @property
    def total(self) -> int:
        return sum(self.by_operation.values())

    def reset(self) -> None:
        self.by_operation.clear()
