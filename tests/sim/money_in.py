"""Money in, as the simulation does it: payment webhooks (redelivered until acknowledged, as a
payment provider does), operator top-ups and adjustments, redeem-code claims, and refunds.

Each action has a tag that its ledger entry can be recognised by (checks.credit_tag), so the
books know, for every entry, which action wrote it. An action's outcome is `applied` (the call
said so), `refused` (it said nothing was written) or `unknown` (the store failed: the write may
have landed with its answer lost). A retry of an idempotent action may prove an earlier
attempt applied (a duplicate, "already claimed"); a refusal of a retry proves nothing about
the attempt before it. So an action must have its entry once any attempt said `applied`, must
have none if every attempt was refused, and otherwise the ledger tells.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from forge.domain.errors import (
    BudgetExceeded,
    BudgetStoreUnavailable,
    RedeemCodeAlreadyClaimed,
    RedeemCodeInvalid,
    RefundAlreadyIssued,
)
from forge.domain.money import Bucket, format_micros
from forge.money_in.accounts import credit_wallet
from forge.money_in.adjustments import adjust_wallet, refund_charge
from forge.money_in.codes import claim_code, get_code
from forge.money_in.webhooks import PaymentEvent, apply_payment
from forge.store.dynamo.store import DynamoStore

Tag = tuple[str, ...]


@dataclass
class MoneyIn:
    tag: Tag
    account: str
    bucket: Bucket
    amount: int  # micro-units the entry must carry (signed for adjustments)
    applied: bool = False  # some attempt said so
    unknown: int = 0  # attempts whose answer was lost

    @property
    def state(self) -> str:
        return "applied" if self.applied else "unknown" if self.unknown else "refused"


class Books:
    """Every money-in action the simulation took, by tag."""

    def __init__(self) -> None:
        self.actions: dict[Tag, MoneyIn] = {}

    def opening(self, account: str, bucket: Bucket, amount: int, memo: str) -> None:
        self.actions[("topup", memo)] = MoneyIn(
            ("topup", memo), account, bucket, amount, applied=True
        )

    def pay(
        self, store: DynamoStore, event_id: str, account: str, bucket: Bucket, amount: int
    ) -> str:
        """Deliver (or redeliver) a payment.succeeded event."""
        tag = ("payment", event_id)
        action = self.actions.setdefault(tag, MoneyIn(tag, account, bucket, amount))
        event = PaymentEvent(
            id=event_id,
            type="payment.succeeded",
            created=0,
            data={
                "account_id": account,
                "bucket": bucket.value,
                "amount": format_micros(amount),
                "payment_id": f"pay_{event_id}",
            },
        )
        try:
            outcome = apply_payment(store, event)
        except BudgetStoreUnavailable:
            action.unknown += 1
            return "store unavailable"
        action.applied = True  # credited now, or a duplicate of an applied one
        return outcome.status

    def top_up(
        self, store: DynamoStore, memo: str, account: str, bucket: Bucket, amount: int
    ) -> str:
        tag = ("topup", memo)
        action = self.actions.setdefault(tag, MoneyIn(tag, account, bucket, amount))
        try:
            credit_wallet(store, account, bucket, format_micros(amount), source="sim", memo=memo)
        except BudgetStoreUnavailable:
            action.unknown += 1
            return "store unavailable"
        action.applied = True
        return "credited"

    def adjust(
        self, store: DynamoStore, memo: str, account: str, bucket: Bucket, amount: int
    ) -> str:
        tag = ("adjustment", memo)
        action = self.actions.setdefault(tag, MoneyIn(tag, account, bucket, amount))
        try:
            adjust_wallet(store, account, bucket, format_micros(amount), reason=memo)
        except BudgetExceeded:
            return "refused: below zero"
        except BudgetStoreUnavailable:
            action.unknown += 1
            return "store unavailable"
        action.applied = True
        return "adjusted"

    def redeem(self, store: DynamoStore, account: str, code: str, now: datetime) -> str:
        tag = ("code", account, f"code:{code}")
        try:
            found = get_code(store, code)
        except BudgetStoreUnavailable:
            return "store unavailable"  # nothing was written yet
        action = self.actions.setdefault(tag, MoneyIn(tag, account, found.bucket, found.amount))
        try:
            claim_code(store, account, code, now=now)
        except RedeemCodeAlreadyClaimed:
            action.applied = True  # by an earlier attempt whose answer was lost
            return "already claimed"
        except RedeemCodeInvalid as exc:
            return f"refused: {exc.code}"
        except BudgetStoreUnavailable:
            action.unknown += 1
            return "store unavailable"
        action.applied = True
        return "claimed"

    def refund(
        self, store: DynamoStore, account: str, bucket: Bucket, request_id: str, amount: int
    ) -> str:
        tag = ("refund", request_id)
        action = self.actions.setdefault(tag, MoneyIn(tag, account, bucket, amount))
        try:
            refund_charge(store, account, request_id, format_micros(action.amount), reason="sim")
        except RefundAlreadyIssued:
            action.applied = True
            return "already refunded"
        except BudgetStoreUnavailable:
            action.unknown += 1
            return "store unavailable"
        action.applied = True
        return "refunded"
