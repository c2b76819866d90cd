"""A hypothesis state machine over the real budget store (emulated DynamoDB): random
interleavings of top-up, payment webhooks (with replays), redeem codes, adjustments, reserve,
settle, void and sweep across several keys, projects,
runs and both buckets. After every step the store must agree with a plain model, and
reconciliation must find no drift."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from forge.domain.envelopes import envelopes_for
from forge.domain.errors import BudgetExceeded, HoldAlreadyResolved, RedeemCodeInvalid
from forge.domain.ids import new_id
from forge.domain.money import Bucket
from forge.domain.records import ApiKey, Hold, KeyCaps, LedgerKind, ProjectCaps, Receipt, utcnow
from forge.ledger.reconcile import reconcile
from forge.ledger.sweeper import sweep
from forge.money_in.codes import claim_code, create_code
from forge.money_in.webhooks import PaymentEvent, apply_payment
from forge.store.dynamo.store import DynamoStore
from forge_tools.emulator import Emulator
from tests.twin import twin_store

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)
_machines = itertools.count()

buckets = st.sampled_from(list(Bucket))
amounts = st.integers(min_value=1, max_value=3_000)


class MoneyModel(RuleBasedStateMachine):
    new_store: Callable[[], DynamoStore]  # set by the test below: one fresh stack per run

    def __init__(self) -> None:
        super().__init__()
        self.store = self.new_store()
        self.account = new_id("acct")
        self.store.create_account(self.account, "model")
        caps = {
            Bucket.CREDIT: KeyCaps(daily=6_000, run_budget=4_000),
            Bucket.RMB: KeyCaps(total=8_000, max_request_charge=2_500),
        }
        self.keys = [
            ApiKey(
                key_id=new_id("key"),
                account_id=self.account,
                project_id=project,
                prefix="sk-forge-x",
                caps=caps if i % 2 else {},
            )
            for i, project in enumerate(["alpha", "alpha", "beta"])
        ]
        self.projects = {"alpha": ProjectCaps(daily=7_000), "beta": ProjectCaps(monthly=5_000)}
        self.balance = {b: 0 for b in Bucket}
        self.held = {b: 0 for b in Bucket}
        self.consumed: dict[tuple[str, str], int] = {}
        self.pending: dict[str, Hold] = {}
        self.paid: dict[int, Bucket] = {}
        self.codes = {b: create_code(self.store, b, "0.007").code for b in Bucket}
        self.redeemed: set[Bucket] = set()

    # Money in ----------------------------------------------------------------------------
    @rule(bucket=buckets, amount=st.integers(min_value=1, max_value=20_000))
    def top_up(self, bucket: Bucket, amount: int) -> None:
        self.store.credit(
            self.account,
            bucket,
            amount,
            kind=LedgerKind.TOPUP,
            entry_id=new_id("le"),
            source="model",
        )
        self.balance[bucket] += amount

    @rule(bucket=buckets, amount=st.integers(min_value=-20_000, max_value=5_000))
    def adjust(self, bucket: Bucket, amount: int) -> None:
        available = self.balance[bucket] - self.held[bucket]
        try:
            self.store.credit(
                self.account,
                bucket,
                amount,
                kind=LedgerKind.ADJUSTMENT,
                entry_id=new_id("le"),
                source="operator",
                memo="model",
            )
        except BudgetExceeded:
            assert available < -amount, "refused an adjustment that fitted"
            return
        assert available >= -amount, "allowed an adjustment that overdraws"
        self.balance[bucket] += amount

    @rule(event=st.integers(0, 3), bucket=buckets)
    def payment(self, event: int, bucket: Bucket) -> None:
        """Payment events from a small pool, so replays happen: each credits once."""
        event_id = f"evt_{self.account}_{event}"
        outcome = apply_payment(
            self.store,
            PaymentEvent(
                id=event_id,
                type="payment.succeeded",
                created=0,
                data={
                    "account_id": self.account,
                    "bucket": bucket.value if event not in self.paid else self.paid[event].value,
                    "amount": "0.005",
                    "payment_id": "pi_1",
                },
            ),
        )
        if event in self.paid:
            assert outcome.status == "duplicate"
            return
        assert outcome.status == "credited"
        self.paid[event] = bucket
        self.balance[bucket] += 5_000

    @rule(bucket=buckets)
    def redeem(self, bucket: Bucket) -> None:
        """Each account claims a code once; the second claim changes nothing."""
        code = self.codes[bucket]
        if bucket in self.redeemed:
            with pytest.raises(RedeemCodeInvalid):
                claim_code(self.store, self.account, code)
            return
        claim_code(self.store, self.account, code)
        self.redeemed.add(bucket)
        self.balance[bucket] += 7_000

    # Holds -------------------------------------------------------------------------------
    @rule(
        key_index=st.integers(0, 2),
        bucket=buckets,
        amount=amounts,
        run=st.sampled_from([None, "run-a", "run-b"]),
        run_header=st.sampled_from([None, 1_500, 10_000]),
        expired=st.booleans(),
    )
    def reserve(
        self,
        key_index: int,
        bucket: Bucket,
        amount: int,
        run: str | None,
        run_header: int | None,
        expired: bool,
    ) -> None:
        key = self.keys[key_index]
        envelopes = envelopes_for(key, self.projects[key.project_id], bucket, NOW, run, run_header)
        hold = Hold(
            request_id=new_id("req"),
            account_id=self.account,
            key_id=key.key_id,
            project_id=key.project_id,
            bucket=bucket,
            amount=amount,
            expires_at=utcnow() + timedelta(seconds=-1 if expired else 900),
            envelopes=envelopes,
        )
        fits = amount <= self.balance[bucket] - self.held[bucket] and all(
            self.consumed.get((e.pk, e.sk), 0) + amount <= e.limit for e in envelopes
        )
        try:
            self.store.reserve(hold)
        except BudgetExceeded:
            assert not fits, "refused a hold that fitted every envelope"
            return
        assert fits, "granted a hold that some envelope could not cover"
        self.held[bucket] += amount
        for e in envelopes:
            self.consumed[(e.pk, e.sk)] = self.consumed.get((e.pk, e.sk), 0) + amount
        self.pending[hold.request_id] = hold

    def _resolve(self, hold: Hold, charge: int) -> None:
        del self.pending[hold.request_id]
        self.held[hold.bucket] -= hold.amount
        self.balance[hold.bucket] -= charge
        for e in hold.envelopes:
            self.consumed[(e.pk, e.sk)] += charge - hold.amount

    @precondition(lambda self: self.pending)
    @rule(data=st.data(), share=st.fractions(min_value=0, max_value=1))
    def settle(self, data: st.DataObject, share: Any) -> None:
        hold = self.pending[data.draw(st.sampled_from(sorted(self.pending)))]
        charge = int(hold.amount * share)
        self.store.settle(hold, charge, _receipt(hold))
        self._resolve(hold, charge)
        with pytest.raises(HoldAlreadyResolved):  # exactly once
            self.store.settle(hold, charge, _receipt(hold))

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def void(self, data: st.DataObject) -> None:
        hold = self.pending[data.draw(st.sampled_from(sorted(self.pending)))]
        self.store.void(hold, _receipt(hold))
        self._resolve(hold, 0)

    @rule()
    def sweep_expired(self) -> None:
        expired = {rid for rid, h in self.pending.items() if h.expires_at < utcnow()}
        report = sweep(self.store, utcnow())
        assert set(report.voided) == expired
        for request_id in expired:
            self._resolve(self.pending[request_id], 0)

    # Invariants --------------------------------------------------------------------------
    @invariant()
    def store_matches_the_model_and_reconciles(self) -> None:
        for bucket in Bucket:
            wallet = self.store.get_wallet(self.account, bucket)
            assert (wallet.balance, wallet.held) == (self.balance[bucket], self.held[bucket])
            assert wallet.available == wallet.balance - wallet.held >= 0
        report = reconcile(self.store, utcnow())
        drifts = [d for d in report.drifts if d.check != "expired_hold_pending"]
        assert not drifts, drifts
        for item in self.store.scan_budget():
            if str(item["pk"]).startswith("ENV#"):
                assert item["consumed"] == self.consumed[(item["pk"], item["sk"])]
                assert 0 <= item["consumed"] <= item["limit"]


def _receipt(hold: Hold) -> Receipt:
    return Receipt(
        request_id=hold.request_id,
        account_id=hold.account_id,
        key_id=hold.key_id,
        project_id=hold.project_id,
        requested_model="model",
        status="succeeded",
    )


@pytest.mark.parametrize("backend", ["emulator", "twin"])
def test_the_money_model_survives_random_interleavings(
    backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "emulator":
        emulator: Emulator = request.getfixturevalue("emulator")

        def on_emulator() -> DynamoStore:
            stack = emulator.create_resources(TEMPLATE, prefix=f"mm{next(_machines)}")
            tables = stack.tables
            client = emulator.client("dynamodb")
            return DynamoStore(client, tables["BudgetTable"], tables["LedgerTable"])

        MoneyModel.new_store = staticmethod(on_emulator)  # type: ignore[assignment]
    else:
        MoneyModel.new_store = staticmethod(twin_store)  # type: ignore[assignment]
    run = MoneyModel.TestCase
    run.settings = settings(
        max_examples=25,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    run().runTest()
