"""The call's hold in the budget store: reserve, move, settle or void it, and keep its receipt."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import anyio

from forge.domain.errors import BudgetStoreUnavailable, ForgeError, HoldAlreadyResolved
from forge.domain.money import Bucket, Usage, charge_for
from forge.domain.records import EnvelopeRef, Hold, HoldOutcome, Receipt
from forge.gateway.plan import CallPlan, Rooms, join_notes
from forge.ports import GatewayStore

logger = logging.getLogger(__name__)
T = TypeVar("T")


async def off_loop(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking store call off the event loop."""
    return await anyio.to_thread.run_sync(partial(fn, *args))


class Holds:
    """Every budget-store call the gateway makes for a call, each run off the event loop."""

    def __init__(self, store: GatewayStore) -> None:
        self.store = store

    async def reserve(self, hold: Hold) -> None:
        await off_loop(self.store.reserve, hold)

    async def rehold(self, current: Hold, moved: Hold) -> None:
        await off_loop(self.store.rehold, current, moved)

    async def rooms(self, account_id: str, bucket: Bucket, envelopes: list[EnvelopeRef]) -> Rooms:
        return await off_loop(self.store.rooms, account_id, bucket, envelopes)

    async def settle(self, plan: CallPlan, usage: Usage, status: str, note: str | None) -> Receipt:
        """Charge actual usage (never more than the hold) and write ledger entry + receipt."""
        cost = charge_for(usage, plan.prices)
        charge = min(cost, plan.hold.amount)
        if cost > charge:
            note = join_notes(note, f"usage cost {cost} exceeded the hold; charged the hold")
        receipt = plan.receipt(status, usage=usage, note=note)
        try:
            settled = await off_loop(self.store.settle, plan.hold, charge, receipt)
            plan.closed = True
            return settled
        except HoldAlreadyResolved:
            plan.closed = True
            stored = await off_loop(self.store.get_receipt, plan.key.account_id, plan.request_id)
            if stored is None:
                raise BudgetStoreUnavailable("The hold was resolved elsewhere") from None
            return stored
        except BudgetStoreUnavailable:
            # The call was served; never charge twice and never for free by choice: leave the
            # hold (which expires) with the known outcome, for the sweeper to settle.
            deferred = receipt.model_copy(update={"charge": charge, "settlement": "deferred"})
            logger.error("settle_deferred", extra={"request_id": plan.request_id})
            plan.closed = True  # recorded or not, the sweeper resolves it; never voided here
            try:
                outcome = HoldOutcome(charge=charge, receipt=deferred)
                await off_loop(self.store.record_outcome, plan.hold, outcome)
            except (BudgetStoreUnavailable, HoldAlreadyResolved):
                logger.error("outcome_not_recorded", extra={"request_id": plan.request_id})
            return deferred

    async def void(self, plan: CallPlan, error_code: str, note: str) -> Receipt:
        receipt = plan.receipt("failed", error_code=error_code, note=note)
        voided = await off_loop(self.store.void, plan.hold, receipt)
        plan.closed = True
        return voided

    async def record_refusal(self, plan: CallPlan, error: ForgeError) -> None:
        """A receipt for a request refused before any money was held."""
        receipt = plan.receipt("failed", error_code=error.code, hold=0, note=error.message)
        await self.put_receipt(receipt)
        plan.closed = True

    async def put_receipt(self, receipt: Receipt) -> None:
        try:
            await off_loop(self.store.put_receipt, receipt)
        except BudgetStoreUnavailable:
            logger.warning("receipt_not_written", extra={"request_id": receipt.request_id})
