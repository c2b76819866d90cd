"""The call's hold in the budget store: reserve, move, settle or void it, and keep its receipt."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar, cast

import anyio

from forge.domain.errors import BudgetStoreUnavailable, ForgeError, HoldAlreadyResolved
from forge.domain.metrics import Metric, call_metrics
from forge.domain.money import Bucket, Usage, charge_for
from forge.domain.records import EnvelopeRef, Hold, HoldOutcome, Receipt, Refusal
from forge.gateway.plan import Binding, CallPlan, Rooms, join_notes
from forge.ports import NO_METER, GatewayStore, Meter, emit_quietly

logger = logging.getLogger(__name__)
T = TypeVar("T")


# How a blocking store call leaves the event loop: a worker thread, or (a deterministic
# simulation) inline, one at a time.
Blocking = Callable[[Callable[[], Any]], Awaitable[Any]]


class Holds:
    """Every budget-store call the gateway makes for a call, each run off the event loop; and
    the metrics of the receipt each call ends with (settled, deferred or voided)."""

    def __init__(
        self,
        store: GatewayStore,
        blocking: Blocking = anyio.to_thread.run_sync,
        meter: Meter = NO_METER,
    ) -> None:
        self.store = store
        self.blocking = blocking
        self.meter = meter

    def measure(self, count: Callable[[], Sequence[Metric]]) -> None:
        """Emit metrics; one that fails is logged and never fails the call (emit_quietly)."""
        emit_quietly(self.meter, count)

    def _ended(self, plan: CallPlan, receipt: Receipt) -> Receipt:
        """The receipt a call ends with, counted."""
        self.measure(lambda: call_metrics(receipt, plan.route_providers))
        return receipt

    async def off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking store call off the event loop."""
        return cast(T, await self.blocking(partial(fn, *args)))

    async def reserve(self, binding: Binding) -> None:
        """Reserve the binding's hold; the hold as placed (on a shard of a split bucket)
        replaces it, so the call settles or voids where the money is held."""
        binding.hold = await self.off_loop(self.store.reserve, binding.hold)

    async def rehold(self, current: Hold, binding: Binding) -> None:
        """Move `current` to the binding's route; the binding keeps the hold as placed."""
        binding.hold = await self.off_loop(self.store.rehold, current, binding.hold)

    async def rooms(self, account_id: str, bucket: Bucket, envelopes: list[EnvelopeRef]) -> Rooms:
        return await self.off_loop(self.store.rooms, account_id, bucket, envelopes)

    async def settle(
        self,
        plan: CallPlan,
        usage: Usage,
        status: str,
        note: str | None,
        error_code: str | None = None,
    ) -> Receipt:
        """Charge actual usage (never more than the hold) and write ledger entry + receipt."""
        return self._ended(plan, await self._settle(plan, usage, status, note, error_code))

    async def _settle(
        self, plan: CallPlan, usage: Usage, status: str, note: str | None, error_code: str | None
    ) -> Receipt:
        cost = charge_for(usage, plan.prices)
        charge = min(cost, plan.hold.amount)
        if cost > charge:
            note = join_notes(note, f"usage cost {cost} exceeded the hold; charged the hold")
        receipt = plan.receipt(status, usage=usage, note=note, error_code=error_code)
        try:
            settled = await self.off_loop(self.store.settle, plan.hold, charge, receipt)
            plan.closed = True
            return settled
        except HoldAlreadyResolved:
            # Resolved already: by this very settle, whose answer was lost (botocore's retry
            # met its effect), or by the sweeper. The stored receipt says which.
            plan.closed = True
            try:
                stored = await self.off_loop(
                    self.store.get_receipt, plan.key.account_id, plan.request_id
                )
            except BudgetStoreUnavailable:
                stored = None
            if stored is None:
                # The answer was served and most likely paid for: it goes out, its charge
                # marked unconfirmed, rather than a 503 that says nothing was charged.
                return receipt.model_copy(update={"charge": charge, "settlement": "deferred"})
            return stored
        except BudgetStoreUnavailable:
            # The call was served; never charge twice and never for free by choice: leave the
            # hold (which expires) with the known outcome, for the sweeper to settle.
            deferred = receipt.model_copy(update={"charge": charge, "settlement": "deferred"})
            logger.error("settle_deferred", extra={"request_id": plan.request_id})
            plan.closed = True  # recorded or not, the sweeper resolves it; never voided here
            try:
                outcome = HoldOutcome(charge=charge, receipt=deferred)
                await self.off_loop(self.store.record_outcome, plan.hold, outcome)
            except (BudgetStoreUnavailable, HoldAlreadyResolved):
                logger.error("outcome_not_recorded", extra={"request_id": plan.request_id})
            return deferred

    async def void(self, plan: CallPlan, error_code: str, note: str) -> Receipt:
        receipt = plan.receipt("failed", error_code=error_code, note=note)
        voided = await self.off_loop(self.store.void, plan.hold, receipt)
        plan.closed = True
        return self._ended(plan, voided)

    async def release(self, plan: CallPlan, error_code: str, note: str) -> None:
        """Void the hold of a call about to answer an error. Already resolved means voided:
        by this very void, whose answer was lost and whose retry met its own effect, or by
        the sweeper. Nothing is left to release, and the answer stays the error it was."""
        try:
            await self.void(plan, error_code, note)
        except HoldAlreadyResolved:
            plan.closed = True

    async def record_refusal(self, plan: CallPlan, error: ForgeError) -> None:
        """A receipt for a request refused before any money was held."""
        receipt = plan.receipt(
            "failed",
            error_code=error.code,
            hold=0,
            note=error.message,
            refusal=Refusal.of(error.code, error.details),
        )
        await self.put_receipt(receipt)
        plan.closed = True

    async def put_receipt(self, receipt: Receipt) -> None:
        try:
            await self.off_loop(self.store.put_receipt, receipt)
        except BudgetStoreUnavailable:
            logger.warning("receipt_not_written", extra={"request_id": receipt.request_id})
