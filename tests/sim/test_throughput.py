"""The throughput simulation of one wallet (tests/sim/throughput.py): the DynamoDB semantics it
models, each on its own, then a short run of today's design with every money rule checked."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.sim.dynamodb_model import Client, Semantics, Service
from tests.sim.throughput import Load, simulate
from tests.sim.virtual_time import Turns
from tests.twin import twin_stack

TABLE_ITEM = {"pk": {"S": "ITEM#hot"}, "sk": {"S": "ITEM"}}


class Model:
    """A Service over a fresh twin, and what its threads saw."""

    def __init__(self, semantics: Semantics | None = None) -> None:
        self.stack = twin_stack()
        self.turns = Turns()
        self.service = Service(self.stack.client, self.turns, semantics or Semantics())
        self.outcomes: list[str] = []  # "applied", or the error code (and first reason)

    def call(self, operation: str, **params: Any) -> None:
        try:
            self.service.call(operation, params)
            self.outcomes.append("applied")
        except ClientError as exc:
            reasons = [r["Code"] for r in exc.response.get("CancellationReasons", [])]
            self.outcomes.append(" ".join([exc.response["Error"]["Code"], *reasons]))

    def at(self, seconds: float, operation: str, **params: Any) -> None:
        self.turns.spawn(operation, lambda: self.call(operation, **params), at=seconds)


def add_one(table: str) -> dict[str, Any]:
    return {
        "Update": {
            "TableName": table,
            "Key": TABLE_ITEM,
            "UpdateExpression": "ADD n :one",
            "ExpressionAttributeValues": {":one": {"N": "1"}},
        }
    }


def test_two_transactions_in_flight_on_one_item_conflict() -> None:
    model = Model()
    items = [add_one(model.stack.budget_table)]
    model.at(0.000, "transact_write_items", TransactItems=items)
    model.at(0.001, "transact_write_items", TransactItems=items)  # in flight as the first lands
    model.turns.run()
    assert model.outcomes == ["applied", "TransactionCanceledException TransactionConflict"]
    assert model.service.conflicts == {"ITEM/ITEM": 1}


def test_a_single_write_meeting_a_transaction_in_flight_is_refused() -> None:
    model = Model()
    model.at(0.000, "update_item", **add_one(model.stack.budget_table)["Update"])
    model.at(0.002, "transact_write_items", TransactItems=[add_one(model.stack.budget_table)])
    model.turns.run()
    # The write lands at 4 ms, while the transaction (2 to 6 ms) is in flight; nothing was
    # applied to the item meanwhile, so the transaction commits.
    assert model.outcomes == ["TransactionConflictException", "applied"]


def test_transactions_one_after_another_do_not_conflict() -> None:
    model = Model()
    items = [add_one(model.stack.budget_table)]
    model.at(0.000, "transact_write_items", TransactItems=items)
    model.at(0.005, "transact_write_items", TransactItems=items)  # after the first landed
    model.turns.run()
    assert model.outcomes == ["applied", "applied"]


@pytest.mark.parametrize(
    ("operation", "units", "refusal"),
    [
        ("update_item", 1, "ProvisionedThroughputExceededException"),
        ("transact_write_items", 2, "TransactionCanceledException ThrottlingError"),
    ],
)
def test_an_item_takes_at_most_1000_write_units_a_second(
    operation: str, units: int, refusal: str
) -> None:
    model = Model(Semantics(latency=0.0001))
    update = add_one(model.stack.budget_table)
    params = {"TransactItems": [update]} if units == 2 else update["Update"]

    def hammer() -> None:
        for _ in range(2_000 // units):  # 2,000 units in 0.2 s (or 0.1 s): 10,000 a second
            model.call(operation, **params)

    model.turns.spawn("hammer", hammer)
    model.turns.run()
    applied = model.outcomes.count("applied")
    allowed = 1000 + 1000 * model.turns.now  # a full bucket, then the refill
    assert allowed - units - 1 <= applied * units <= allowed
    assert set(model.outcomes) == {"applied", refusal}


def test_latency_and_backoff_cost_virtual_time() -> None:
    model = Model()
    client = Client(model.service, lambda: 0.5)
    key = {"TableName": model.stack.budget_table, "Key": TABLE_ITEM}
    seen: list[float] = []

    def three_reads() -> None:
        for _ in range(3):
            client.get_item(**key)
            seen.append(model.turns.now)

    model.turns.spawn("reads", three_reads)
    model.turns.run()
    assert seen == pytest.approx([0.004, 0.008, 0.012])


def test_a_failing_thread_stops_the_run() -> None:
    turns = Turns()
    waited: list[float] = []

    def fails() -> None:
        turns.sleep(0.01)
        raise RuntimeError("boom")

    def waits() -> None:
        while True:
            turns.sleep(0.003)
            waited.append(turns.now)

    turns.spawn("fails", fails)
    turns.spawn("waits", waits)
    with pytest.raises(RuntimeError, match="boom"):
        turns.run()
    assert max(waited) < 0.011


# Today's design: one wallet item -------------------------------------------------------------
def test_one_wallet_settles_far_below_1000_requests_a_second_and_keeps_every_money_rule() -> None:
    result = simulate(Load(containers=16, seconds=2.0))
    assert result.violations == []
    # The hot-wallet limit, reproduced: 16 containers offer 381 requests a second and one
    # wallet item settles 113.5 of them here (116.7 over 10 s in `make sim-throughput`, the
    # most of any load): every request's two transactions on it lose races to each other's.
    assert result.offered_per_second == pytest.approx(381, abs=1)
    assert 50 < result.settled_per_second < 200
    assert result.conflicts_by_item["ACCT/BUCKET"] > 0


def test_a_wallet_that_runs_dry_refuses_and_is_never_overdrawn() -> None:
    result = simulate(Load(containers=8, seconds=1.0, opening=400_000))
    assert result.refused > 0
    assert result.violations == []


def test_one_seed_gives_one_result() -> None:
    load = Load(containers=4, seconds=0.5, seed=3)
    first, second = asdict(simulate(load)), asdict(simulate(load))
    first.pop("wall_seconds"), second.pop("wall_seconds")
    assert first == second


# Wallet shards -----------------------------------------------------------------------------
def test_one_account_settles_over_1000_requests_a_second_on_32_shards() -> None:
    """The same load on one wallet and on 32 shards, in the same semantics: 64 containers
    offer 1,524 requests a second; one item settles under a tenth of them, 32 shards over
    1,000 (1,310 over 3 s in `make sim-throughput`), and every money rule holds after both."""
    one = simulate(Load(containers=64, seconds=1.0))
    split = simulate(Load(containers=64, seconds=1.0, shards=32))
    assert one.violations == [] and split.violations == []
    assert one.settled_per_second < 150
    assert split.settled_per_second >= 1_000
    assert split.store_errors == 0 and split.refused == 0


def test_a_capped_key_settles_over_1000_requests_a_second_on_32_shards() -> None:
    """Every call also takes the key's daily envelope: whole, that one item holds the account
    to what one wallet item does; split with the bucket, it does not."""
    one = simulate(Load(containers=64, seconds=1.0, capped=True))
    split = simulate(Load(containers=64, seconds=1.0, shards=32, capped=True))
    assert one.violations == [] and split.violations == []
    assert one.settled_per_second < 150
    assert split.settled_per_second >= 1_000
    assert split.conflicts_by_item["ENV/credit"] > 0  # the envelope's items were written


def test_a_split_wallet_that_runs_dry_refuses_only_what_the_bucket_cannot_pay() -> None:
    """Shards run short at different times and refill from each other under conflicts and
    throttling: the bucket is spent to within one worst-case hold, never overdrawn."""
    result = simulate(Load(containers=16, seconds=1.0, shards=8, opening=400_000))
    assert result.refused > 0
    assert result.violations == []
