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

from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

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
from tests.sim.checks import Observer, Violation
from tests.sim.scheduler import CURRENT, Actor

Tag = tuple[str, ...]


@dataclass
class MoneyIn:
    tag: Tag
    account: str
    bucket: Bucket
    amount: int  # micro-units the entry must carry (signed for adjustments)
    applied: bool = False  # some attempt said so
    unknown: int = 0  # attempts whose answer was lost, or not to be trusted (see `refused`)
    refused_after_fault: int = 0

    @property
    def state(self) -> str:
        return "applied" if self.applied else "unknown" if self.unknown else "refused"

    def refused(self, attempt: Actor) -> None:
        """A refusal after a lost write proves nothing: botocore's retry of a write that
        landed is refused by the write's own effect (a claim met its own claim item)."""
        if attempt.store_faults:
            self.unknown += 1
            self.refused_after_fault += 1


@contextmanager
def attempt() -> Iterator[Actor]:
    """One call of a money-in action, its store faults counted."""
    actor = Actor("money in")
    token = CURRENT.set(actor)
    try:
        yield actor
    finally:
        CURRENT.reset(token)


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
        with attempt() as call:
            try:
                adjust_wallet(store, account, bucket, format_micros(amount), reason=memo)
            except BudgetExceeded:
                action.refused(call)
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
        with attempt() as call:
            try:
                claim_code(store, account, code, now=now)
            except RedeemCodeAlreadyClaimed:
                action.applied = True  # by an earlier attempt whose answer was lost
                return "already claimed"
            except RedeemCodeInvalid as exc:
                action.refused(call)
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

    def check(self, observer: Observer, spent: Mapping[tuple[str, str], int]) -> None:
        """The ledger holds exactly the money-in entries these actions call for (by tag, with
        their wallet and amount), and each wallet's balance is what was credited less `spent`."""
        entries: dict[Tag, dict[str, Any]] = dict(observer.credits)
        entries.update({("refund", rid): entry for rid, entry in observer.refunds.items()})
        expected: Counter[tuple[str, str]] = Counter()
        for tag, entry in entries.items():
            action = self.actions.get(tag)
            if action is None:
                raise Violation("6", f"ledger entry {entry['entry_id']} answers no action")
            wallet = (action.account, action.bucket.value)
            if (str(entry["account_id"]), str(entry["bucket"])) != wallet:
                raise Violation("6", f"{tag} credited {entry['account_id']}/{entry['bucket']}")
            if int(entry["amount"]) != action.amount:
                raise Violation("6", f"{tag} credited {entry['amount']}, not {action.amount}")
            if action.state == "refused":
                raise Violation("4", f"{tag} was refused every time, yet credited")
            expected[wallet] += action.amount
        for tag, action in self.actions.items():
            if action.applied and tag not in entries:
                raise Violation("6", f"{tag} was applied but has no ledger entry")
        for wallet, balance in sorted(observer.bucket_balances().items()):  # shards summed
            if balance != expected[wallet] - spent.get(wallet, 0):
                books = expected[wallet] - spent.get(wallet, 0)
                raise Violation(
                    "6", f"{'/'.join(wallet)}: balance {balance}, the books say {books}"
                )
