"""Writing an account's history on chosen days through the real store, and a month of record.

The store's clock is the only thing set by hand: every balance movement is a real DynamoDB
transaction (credit, reserve + settle, refund), so the ledger chain, balances and receipts are
what production would write; only `created_at` says the day the test wants.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from forge.domain.calendar import Month
from forge.domain.catalog import load_catalog
from forge.domain.ids import new_id
from forge.domain.money import Bucket, Prices, RouteType, Usage, charge_for, format_micros
from forge.domain.records import Attempt, Hold, LedgerEntry, LedgerKind, Receipt
from forge.money_in.accounts import create_account, issue_key
from forge.money_in.adjustments import adjust_wallet, refund_charge
from forge.money_in.codes import claim_code, create_code
from forge.money_in.webhooks import apply_payment, parse_event
from forge.store.dynamo.store import DynamoStore
from forge.store.dynamo.views import LedgerViews
from forge.store.s3archive import S3Archive


def at(month: Month, day: int, hour: int = 10) -> datetime:
    """An instant of `month`: its `day`, at `hour` UTC."""
    return month.start + timedelta(days=day - 1, hours=hour)


@dataclass
class Clock:
    """A settable clock for DynamoStore(clock=...)."""

    now: datetime = field(default_factory=lambda: datetime(2025, 1, 1, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now


class History:
    """Writes ledger history on chosen instants; optionally archives each entry as written
    (what the archiver does from the stream) so S3-level tests need no stream."""

    def __init__(
        self, client: Any, budget_table: str, ledger_table: str, archive: S3Archive | None = None
    ) -> None:
        self.clock = Clock()
        self.store = DynamoStore(client, budget_table, ledger_table, clock=self.clock)
        self.views = LedgerViews(client, ledger_table)
        self.archive = archive
        self._opened: set[str] = set()

    def at(self, when: datetime) -> DynamoStore:
        """The store, its clock set to `when`."""
        self.clock.now = when
        return self.store

    def _open(self, account_id: str) -> None:
        if account_id not in self._opened and not self.store.account_exists(account_id):
            self.store.create_account(account_id, f"History of {account_id}")
        self._opened.add(account_id)

    def _archived(self, entry: LedgerEntry) -> LedgerEntry:
        if self.archive is not None:
            assert self.archive.put_entry(entry) is True
        return entry

    def move(
        self,
        account_id: str,
        when: datetime,
        kind: LedgerKind,
        amount: int,
        bucket: Bucket = Bucket.CREDIT,
        *,
        archive: bool = True,
    ) -> LedgerEntry:
        """One balance movement of `amount` (signed) via DynamoStore.credit."""
        self._open(account_id)
        seq = self.store.get_wallet(account_id, bucket).seq + 1
        entry = self.at(when).credit(
            account_id,
            bucket,
            amount,
            kind=kind,
            entry_id=f"le_{account_id}_{bucket.value}_{seq}",
            source="test",
        )
        return self._archived(entry) if archive else entry

    def moves(
        self,
        account_id: str,
        *changes: tuple[datetime, LedgerKind, int],
        bucket: Bucket = Bucket.CREDIT,
        archive: bool = True,
    ) -> list[LedgerEntry]:
        return [
            self.move(account_id, when, kind, amount, bucket, archive=archive)
            for when, kind, amount in changes
        ]

    def call(
        self,
        account_id: str,
        when: datetime,
        *,
        request_id: str,
        key_id: str,
        project_id: str,
        model: str,
        route: str,
        usage: Usage,
        prices: Prices,
        route_type: RouteType = RouteType.OFFICIAL,
        run_id: str | None = None,
        attempts: int = 1,
    ) -> Receipt:
        """One served call, reserved and settled as the gateway does it (hold = charge + a
        margin that is released), with a receipt dated `when`; `attempts` > 1 records failed
        attempts before the one that served it."""
        self._open(account_id)
        bucket = route_type.bucket
        charge = charge_for(usage, prices)
        hold = Hold(
            request_id=request_id,
            account_id=account_id,
            key_id=key_id,
            project_id=project_id,
            requested_model=model,
            bucket=bucket,
            amount=charge + 1_000,
            expires_at=when + timedelta(minutes=16),
        )
        store = self.at(when)
        store.reserve(hold)
        tried = [
            Attempt(
                route=route,
                upstream_model=route.split(":")[-1],
                status=503,
                latency_ms=40,
                outcome="error",
                reason="upstream 503",
            )
            for _ in range(attempts - 1)
        ]
        tried.append(
            Attempt(
                route=route,
                upstream_model=route.split(":")[-1],
                status=200,
                latency_ms=120,
                outcome="ok",
            )
        )
        receipt = Receipt(
            request_id=request_id,
            account_id=account_id,
            key_id=key_id,
            project_id=project_id,
            run_id=run_id,
            requested_model=model,
            status="succeeded",
            attempts=tried,
            final_route=route,
            route_type=route_type,
            upstream_model=route.split(":")[-1],
            usage=usage,
            prices=prices,
            hold=hold.amount,
            bucket=bucket,
            created_at=when,
        )
        final = store.settle(hold, charge, receipt)
        if self.archive is not None:
            [entry] = [
                e
                for e in self.store.list_entries(account_id, bucket, hold.shard)
                if e.entry_id == final.ledger_entry_id
            ]
            self._archived(entry)
        return final


# A month of record -------------------------------------------------------------------------
@dataclass
class MonthStory:
    """What simulate_month did, for the tests to check the views and statements against."""

    account_id: str
    month: Month
    keys: dict[str, tuple[str, str]]  # project -> (key_id, plaintext)
    receipts: list[Receipt]
    runs: dict[str, list[str]]  # run_id -> request ids, in order
    refund: LedgerEntry
    code: str


# (day, hour, project, model, run, attempts, input, cached input, output tokens)
MONTH_CALLS: list[tuple[int, int, str, str, str | None, int, int, int, int]] = [
    (3, 9, "alpha", "demo-official", "run-alpha", 1, 1_200, 200, 350),
    (3, 9, "alpha", "demo-official", "run-alpha", 2, 900, 0, 120),
    (3, 15, "beta", "demo-routed", None, 1, 5_000, 1_000, 800),
    (5, 11, "alpha", "demo-routed", None, 1, 2_400, 0, 610),
    (8, 10, "beta", "demo-official", "run-beta", 1, 3_100, 1_500, 90),
    (8, 10, "beta", "demo-official", "run-beta", 1, 700, 0, 45),
    (8, 10, "beta", "demo-official", "run-beta", 3, 650, 0, 2_000),
    (13, 16, "alpha", "demo-official", None, 1, 15_000, 12_000, 1_400),
    (21, 8, "beta", "demo-routed", None, 1, 820, 0, 77),
    (28, 23, "alpha", "demo-official", None, 1, 4_000, 0, 4_000),
]


def _pay(history: History, account_id: str, when: datetime, bucket: str, amount: str) -> None:
    payment_id = new_id("pi")
    event = parse_event(
        json.dumps(
            {
                "id": new_id("evt"),
                "type": "payment.succeeded",
                "created": int(when.timestamp()),
                "data": {
                    "account_id": account_id,
                    "bucket": bucket,
                    "amount": amount,
                    "payment_id": payment_id,
                },
            }
        ).encode()
    )
    assert apply_payment(history.at(when), event).status == "credited"


def simulate_month(history: History, month: Month) -> MonthStory:
    """A customer's month through the real money paths, on chosen days: a payment the month
    before (the opening balance), a payment and a redeemed code, calls on several days from
    two keys in two projects (two runs, retries), a partial refund and an adjustment."""
    store = history.store
    account_id = create_account(store, "Month of record")
    keys = {project: issue_key(store, account_id, project) for project in ("alpha", "beta")}

    def day(d: int, hour: int = 9, minute: int = 0) -> datetime:
        return month.start + timedelta(days=d - 1, hours=hour, minutes=minute)

    _pay(
        history,
        account_id,
        month.previous().start + timedelta(days=19, hours=10),
        "credit",
        "20.00",
    )
    _pay(history, account_id, day(1, 8), "rmb", "100.00")
    code = create_code(store, Bucket.CREDIT, "5.00", memo="welcome credit")
    claim_code(history.at(day(2, 12)), account_id, code.code, now=day(2, 12))

    routes = {m.id: m.routes[0] for m in load_catalog().models}
    receipts: list[Receipt] = []
    runs: dict[str, list[str]] = {}
    for minute, (d, hour, project, model, run_id, attempts, inp, cached, out) in enumerate(
        MONTH_CALLS
    ):
        route = routes[model]
        key_id = keys[project][1].key_id
        receipt = history.call(
            account_id,
            day(d, hour, minute),
            request_id=new_id("req"),
            key_id=key_id,
            project_id=project,
            model=model,
            route=route.name,
            usage=Usage(input_tokens=inp, cached_input_tokens=cached, output_tokens=out),
            prices=route.effective_prices,
            route_type=route.route_type,
            run_id=run_id,
            attempts=attempts,
        )
        receipts.append(receipt)
        if run_id:
            runs.setdefault(run_id, []).append(receipt.request_id)

    refunded = receipts[2]  # the routed call of day 3: half of it back, on day 14
    refund = refund_charge(
        history.at(day(14, 10)),
        account_id,
        refunded.request_id,
        format_micros(refunded.charge // 2),
        reason="answer cut short",
    )
    adjust_wallet(history.at(day(22, 9)), account_id, Bucket.CREDIT, "-0.01", reason="goodwill fix")
    return MonthStory(
        account_id=account_id,
        month=month,
        keys={p: (key.key_id, plaintext) for p, (plaintext, key) in keys.items()},
        receipts=receipts,
        runs=runs,
        refund=refund,
        code=code.code,
    )
