"""Upstream calls on record, and what follows a failed one: retry, fall back or give up."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

from forge.domain.catalog import RouteSpec
from forge.domain.errors import (
    BudgetExceeded,
    BudgetStoreUnavailable,
    FallbackNotAllowed,
    ForgeError,
    HoldAlreadyResolved,
    UpstreamUnavailable,
)
from forge.domain.records import Attempt
from forge.domain.routing import RetryPolicy, RouteHealth, rejected
from forge.domain.upstream import FailureKind, UpstreamError
from forge.gateway.auth import Keys
from forge.gateway.holds import Holds
from forge.gateway.plan import CallPlan, bind, resize, rooms_beside, tightest_envelope


class Attempts:
    """Records each upstream call on the plan and decides what follows a failure: retry the
    route, move the hold to the next route and fall back, or end the call charging nothing."""

    def __init__(
        self,
        holds: Holds,
        keys: Keys,
        health: RouteHealth,
        retry: RetryPolicy,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Any],
        rand: Callable[[], float],
        now: Callable[[], datetime],
    ) -> None:
        self._now = now
        self._holds = holds
        self._keys = keys
        self._health = health
        self._retry = retry
        self._clock = clock
        self._sleep = sleep
        self._rand = rand

    def record(
        self,
        plan: CallPlan,
        started: float,
        status: int | None,
        error: UpstreamError | None,
        action: str | None = None,
        wait: float | None = None,
    ) -> None:
        plan.attempts.append(
            Attempt.model_validate(
                {
                    "route": plan.route.name,
                    "upstream_model": plan.route.upstream_model,
                    "status": status,
                    "latency_ms": int((self._clock() - started) * 1000),
                    "outcome": "error" if error else "ok",
                    "reason": error.reason if error else None,
                    "route_type": plan.route.route_type,
                    "bucket": plan.hold.bucket,
                    "action": action,
                    "wait_ms": None if wait is None else int(wait * 1000),
                }
            )
        )

    def abandoned(self, plan: CallPlan, started: float, reason: str) -> None:
        """An upstream call cancelled in flight because its client left: not a failure of
        the route (its health and the upstream error count are untouched)."""
        plan.attempts.append(
            Attempt(
                route=plan.route.name,
                upstream_model=plan.route.upstream_model,
                latency_ms=int((self._clock() - started) * 1000),
                outcome="abandoned",
                reason=reason,
                route_type=plan.route.route_type,
                bucket=plan.hold.bucket,
            )
        )

    async def after_failure(self, plan: CallPlan, started: float, exc: UpstreamError) -> None:
        """Decide what follows a failed call: retry the route (after a capped, jittered wait
        or the provider's Retry-After), fall back to the next route (re-reserving first), or
        end the request charging nothing. Returns when there is something to call next."""
        route = plan.route
        if exc.kind is FailureKind.CLIENT:
            # The request itself was refused: the receipt keeps the provider's code (as the
            # client sees it), and the refusal goes out in the client's dialect.
            self.record(plan, started, exc.status, exc, "return")
            refusal = rejected(exc, route=route.name)
            note = f"{route.name} refused the request ({exc.reason}): {refusal.message}"
            await self._holds.release(plan, refusal.code, note)
            raise refusal
        self._health.failed(route.name)
        plan.route_calls += 1
        ceiling = plan.key.max_upstream_attempts or self._retry.max_attempts
        may_call = plan.calls + 1 < ceiling
        retry = self._retry
        if (
            exc.kind is FailureKind.RETRY
            and may_call
            and plan.route_calls < retry.attempts_per_route
            and retry.waits_for(exc.retry_after)
        ):
            wait = retry.delay(plan.route_calls - 1, exc.retry_after, self._rand)
            self.record(plan, started, exc.status, exc, "retry", wait)
            await self._sleep(wait)
            return
        if may_call and plan.fallbacks:
            self.record(plan, started, exc.status, exc, "fallback")
            try:
                await self._move_hold(plan, plan.fallbacks.pop(0))
            except HoldAlreadyResolved:
                # The sweeper voided the hold (the call outlived its expiry): with nothing
                # held, no fallback may be called. The call failed, and nothing is charged.
                raise await self._fail(plan, exc) from None
            except (BudgetExceeded, BudgetStoreUnavailable) as refused:
                # The hold did not move: release it (or, if the store is down, let it expire).
                with contextlib.suppress(BudgetStoreUnavailable, HoldAlreadyResolved):
                    await self._holds.void(
                        plan, refused.code, f"fallback refused: {refused.message}"
                    )
                raise
            return
        self.record(plan, started, exc.status, exc, "give_up")
        position = plan.model.routes.index(plan.route)
        barred = [r for r in plan.model.routes[position + 1 :] if r in plan.refused]
        if may_call and barred:
            raise await self._fallback_not_allowed(plan, exc, barred[0])
        if not may_call:
            plan.notes.append(f"stopped after {plan.calls} upstream calls (the key's ceiling)")
        raise await self._fail(plan, exc)

    async def _move_hold(self, plan: CallPlan, route: RouteSpec) -> None:
        """Re-reserve at the fallback route's price and in its bucket before calling it: the
        hold moves in one transaction, resized to what is left if it does not fit."""
        project = await self._keys.project_caps(plan.key, route.bucket)
        binding = bind(plan.key, plan.request, route, plan.hold, plan.limits, project, self._now())
        note = None
        try:
            await self._holds.rehold(plan.hold, binding)
        except BudgetExceeded:
            # What is left, seen from the fallback's bucket and envelopes; our own hold is
            # not spent, so where the two share a bucket it counts as room.
            rooms = rooms_beside(
                plan.hold,
                binding.hold,
                await self._holds.rooms(
                    plan.key.account_id, binding.hold.bucket, binding.hold.envelopes
                ),
            )
            tokens = resize(binding, rooms)
            note = (
                f"max_tokens lowered from {binding.max_output} to {tokens}"
                f" by {tightest_envelope(rooms)}"
            )
            binding.set_max_output(tokens)
            await self._holds.rehold(plan.hold, binding)
        plan.binding = binding
        plan.route_calls = 0
        plan.notes.append(f"fell back to {route.name}")
        if note:
            plan.notes.append(note)

    async def _fallback_not_allowed(
        self, plan: CallPlan, exc: UpstreamError, refused: RouteSpec
    ) -> ForgeError:
        message = (
            f"The route {plan.route.name} failed ({exc.reason}) and the next route,"
            f" {refused.name}, is a {refused.route_type.value} route paid from the"
            f" {refused.bucket.value} bucket, which this key may not use; nothing was charged"
        )
        await self._holds.release(plan, FallbackNotAllowed.code, message)
        return FallbackNotAllowed(
            message,
            param="model",
            failed_route=plan.route.name,
            refused_route=refused.name,
            refused_route_type=refused.route_type.value,
            refused_bucket=refused.bucket.value,
        )

    async def _fail(self, plan: CallPlan, exc: UpstreamError) -> UpstreamUnavailable:
        """No route served the call: release the whole hold, charge nothing."""
        await self._holds.release(plan, UpstreamUnavailable.code, exc.reason)
        return UpstreamUnavailable(
            f"The upstream for '{plan.request.model}' failed ({exc.reason}); nothing was charged",
            upstream_status=exc.status,
        )
