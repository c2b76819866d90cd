"""Retry, fallback and route health: how many times a route is tried, how long to wait, and
which routes are skipped for a while because they keep failing.

Routing errors the client may see live here with the rest of routing; like every ForgeError
they carry their HTTP status and stable code and are mapped once by forge.api.errors.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from forge.domain.errors import (
    UpstreamRejected,
    UpstreamRejectedTooLarge,
    UpstreamRejectedUnprocessable,
)
from forge.domain.provider_errors import refusal_of
from forge.domain.upstream import UpstreamError


def rejected(exc: UpstreamError, **details: Any) -> UpstreamRejected:
    """The provider's refusal of the request, for the client: the provider's message, type,
    code and param in the client's dialect, with the HTTP status it answers with (413 and
    422 as they are, any other client status as 400)."""
    status = exc.status or 400
    kind = {413: UpstreamRejectedTooLarge, 422: UpstreamRejectedUnprocessable}.get(
        status, UpstreamRejected
    )
    refusal = refusal_of(exc.error, status)
    return kind(
        refusal.message,
        error_type=refusal.type,
        error_code=refusal.code,
        anthropic_type=refusal.anthropic_type,
        param=refusal.param,
        upstream_status=exc.status,
        **details,
    )


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with jitter. A Retry-After the provider sends is honoured
    when it is short enough to wait for; a longer one moves on to the next route."""

    attempts_per_route: int = 2  # the first call and one retry
    max_attempts: int = 4  # every call of one request, all routes together (a key may set it)
    base_delay: float = 0.2
    max_delay: float = 2.0
    max_retry_after: float = 5.0

    def delay(self, retry: int, retry_after: float | None, rand: Callable[[], float]) -> float:
        """Seconds to wait before retry number `retry` (0 for the first retry)."""
        if retry_after is not None:
            return max(retry_after, 0.0)
        ceiling: float = min(self.max_delay, self.base_delay * 2.0**retry)
        return ceiling / 2 + rand() * ceiling / 2  # "equal jitter": never zero, never above

    def waits_for(self, retry_after: float | None) -> bool:
        return retry_after is None or retry_after <= self.max_retry_after


@dataclass
class _RouteState:
    failures: int = 0
    skip_until: float = 0.0


@dataclass
class RouteHealth:
    """Per container: a route whose last `threshold` calls failed (transiently or as a route)
    is skipped for `cooldown` seconds; one success makes it healthy again. Only a hint: when
    every route a request may use is skipped, they are tried anyway."""

    threshold: int = 3
    cooldown: float = 30.0
    clock: Callable[[], float] = time.monotonic
    _routes: dict[str, _RouteState] = field(default_factory=dict)

    def healthy(self, route: str) -> bool:
        state = self._routes.get(route)
        return state is None or state.skip_until <= self.clock()

    def failed(self, route: str) -> None:
        state = self._routes.setdefault(route, _RouteState())
        state.failures += 1
        if state.failures >= self.threshold:
            state.skip_until = self.clock() + self.cooldown
            state.failures = 0

    def succeeded(self, route: str) -> None:
        self._routes.pop(route, None)


def jitter() -> float:
    return random.random()  # noqa: S311 - backoff jitter, not a secret
