"""Throughput of one busy wallet: a discrete-event simulation in virtual time, deterministic
from its seed (docs/simulation.md, "Throughput of one wallet").

C containers (Lambda containers: one request at a time, each with its own DynamoStore and
client, as in production) send paid requests on ONE account's credit bucket for T virtual
seconds: reserve a fixed worst case (a key without caps: no envelopes), wait for the upstream,
settle a seeded charge up to the hold, and again. What DynamoDB does under that load is
dynamodb_model's (latency, per-item serialisation, TransactionConflict, the per-item ceiling,
the client's retries); the store's own backoff between lost races sleeps in virtual time too.
A refused request writes its refusal receipt and a failed settle records its outcome, as the
gateway does. After T, the requests in flight finish, the clock passes every hold's expiry,
the sweeper runs, and every money rule is checked.

    python -m tests.sim.throughput --containers 8,32,64 --shards 1,2,4 --json out.json
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import patch

from forge.domain.envelopes import envelopes_for
from forge.domain.errors import BudgetExceeded, BudgetStoreUnavailable, HoldAlreadyResolved
from forge.domain.money import Bucket
from forge.domain.records import (
    ApiKey,
    Hold,
    HoldOutcome,
    HoldStatus,
    KeyCaps,
    LedgerKind,
    ProjectCaps,
    Receipt,
)
from forge.ledger.reconcile import reconcile
from forge.ledger.sweeper import SweepIncomplete, SweepReport, sweep
from forge.store.dynamo import base, schema
from forge.store.dynamo.store import DynamoStore
from forge_tools.template import MemoryStack
from tests.sim.checks import plain
from tests.sim.dynamodb_model import Client, Semantics, Service
from tests.sim.virtual_time import Turns
from tests.twin import twin_stack

ACCOUNT = "acct_busy"
BUCKET = Bucket.CREDIT
EPOCH = datetime(2031, 3, 3, 12, 0, tzinfo=UTC)  # on the hour: one usage cell for the run
HOLD_TTL_SECONDS = 300  # the gateway's
# With --capped, every request is held against this key's daily envelope (one item).
BUSY_KEY = ApiKey(
    key_id="key_busy",
    account_id=ACCOUNT,
    project_id="default",
    prefix="sk-forge-busy",
    caps={BUCKET: KeyCaps(daily=10**15)},
    created_at=EPOCH,
)
CALLS_PER_REQUEST = 3  # reserve; settle's read of the wallet and its transaction
_COUNTERS = ("balance", "available", "held", "consumed")


@dataclass(frozen=True)
class Load:
    containers: int = 32
    seconds: float = 5.0  # virtual, during which requests start
    shards: int = 1
    upstream: float = 0.030  # seconds the upstream takes, between reserve and settle
    hold: int = 20_000  # micro-units: every request's worst case
    opening: int = 10**12  # the wallet's opening balance (micro-units)
    seed: int = 1
    capped: bool = False  # the key has a daily cap (far above the load): one envelope item

    def cycle(self, semantics: Semantics) -> float:
        """How long a request takes if no call ever waits or fails."""
        return self.upstream + CALLS_PER_REQUEST * semantics.latency

    def offered(self, semantics: Semantics) -> float:
        """Requests a second the containers send (at most: see Container.run)."""
        return self.containers / self.cycle(semantics)


@dataclass
class Tally:
    """What the requests saw."""

    settled: dict[str, int] = field(default_factory=dict)  # request id -> charge
    settled_by_the_end: int = 0  # settled before the load stopped (T)
    deferred: dict[str, int] = field(default_factory=dict)  # settle failed, outcome recorded
    abandoned: set[str] = field(default_factory=set)  # settle failed, outcome not recorded
    refused: int = 0
    reserve_errors: int = 0
    latencies: list[float] = field(default_factory=list)  # reserve + settle, settled requests

    @property
    def store_errors(self) -> int:
        return self.reserve_errors + len(self.deferred) + len(self.abandoned)


@dataclass
class Result:
    """One run: a row of the report."""

    shards: int
    containers: int
    seconds: float
    offered_per_second: float
    settled_per_second: float
    requests: int
    refused: int
    store_errors: int
    settles_deferred: int  # of the store errors: served, then resolved by the sweeper
    conflicts: int
    throttles: int
    condition_failures: int
    client_retries: int
    p50_ms: float
    p99_ms: float
    conflicts_by_item: dict[str, int]
    throttles_by_item: dict[str, int]
    violations: list[str]
    wall_seconds: float


class Container:
    """One Lambda container: requests one after another on its own store."""

    def __init__(
        self,
        number: int,
        store: DynamoStore,
        load: Load,
        semantics: Semantics,
        turns: Turns,
        tally: Tally,
    ) -> None:
        self.number = number
        self.store = store
        self.load = load
        self.semantics = semantics
        self.turns = turns
        self.tally = tally
        self.rng = random.Random(f"throughput-{load.seed}-charges-{number}")

    def run(self) -> None:
        """Requests until the load stops, each starting at most one uncontended request time
        after the one before: a request that fails fast does not put another in its place at
        once, so the containers never send more than the offered load."""
        served = 0
        while self.turns.now < self.load.seconds:
            began = self.turns.now
            self.request(f"req_{self.number}_{served}")
            served += 1
            self.turns.sleep(began + self.load.cycle(self.semantics) - self.turns.now)

    def request(self, request_id: str) -> None:
        began = self.turns.now
        hold = self._hold(request_id)
        try:
            placed = self.store.reserve(hold)
        except BudgetExceeded as refusal:
            self.tally.refused += 1
            self._refusal_receipt(hold, refusal)
            return
        except BudgetStoreUnavailable:
            self.tally.reserve_errors += 1
            return
        reserving = self.turns.now - began
        self.turns.sleep(self.load.upstream)
        charge = self.rng.randint(1, placed.amount)
        settling = self.turns.now
        receipt = self._receipt(placed, "succeeded")
        try:
            self.store.settle(placed, charge, receipt)
        except BudgetStoreUnavailable:
            self._defer(placed, charge, receipt)
            return
        self.tally.settled[request_id] = charge
        self.tally.settled_by_the_end += self.turns.now <= self.load.seconds
        self.tally.latencies.append(reserving + self.turns.now - settling)

    def _defer(self, hold: Hold, charge: int, receipt: Receipt) -> None:
        """The gateway's answer to a failed settle: record the outcome for the sweeper."""
        deferred = receipt.model_copy(update={"charge": charge, "settlement": "deferred"})
        try:
            self.store.record_outcome(hold, HoldOutcome(charge=charge, receipt=deferred))
            self.tally.deferred[hold.request_id] = charge
        except (BudgetStoreUnavailable, HoldAlreadyResolved):
            self.tally.abandoned.add(hold.request_id)  # the sweeper voids it

    def _refusal_receipt(self, hold: Hold, refusal: BudgetExceeded) -> None:
        receipt = self._receipt(hold, "failed").model_copy(
            update={"hold": 0, "error_code": refusal.code, "note": refusal.message}
        )
        with suppress(BudgetStoreUnavailable):  # as the gateway: the refusal stands without it
            self.store.put_receipt(receipt)

    def _now(self) -> datetime:
        return EPOCH + timedelta(seconds=self.turns.now)

    def _hold(self, request_id: str) -> Hold:
        return Hold(
            request_id=request_id,
            account_id=ACCOUNT,
            key_id=BUSY_KEY.key_id,
            requested_model="sim-model",
            bucket=BUCKET,
            amount=self.load.hold,
            expires_at=self._now() + timedelta(seconds=HOLD_TTL_SECONDS),
            envelopes=envelopes_for(BUSY_KEY, ProjectCaps(), BUCKET, self._now(), None, None)
            if self.load.capped
            else [],
        )

    def _receipt(self, hold: Hold, status: str) -> Receipt:
        return Receipt.model_validate(
            {
                "request_id": hold.request_id,
                "account_id": hold.account_id,
                "key_id": hold.key_id,
                "project_id": hold.project_id,
                "requested_model": hold.requested_model,
                "status": status,
                "final_route": "sim/official",
                "hold": hold.amount,
                "created_at": self._now(),
            }
        )


@contextmanager
def virtual_store_time(turns: Turns, rng: random.Random) -> Iterator[None]:
    """The store's backoff between lost races (base.contended_attempts) reads the clock and
    sleeps through base's `time`, and its modules draw jitter from `random`: during the run,
    the virtual clock and one seeded generator."""
    clock = SimpleNamespace(monotonic=turns.monotonic, sleep=turns.sleep)
    with ExitStack() as patches:
        patches.enter_context(patch.object(base, "time", clock))
        for name, module in list(sys.modules.items()):
            if name.startswith("forge.store.dynamo.") and getattr(module, "random", None) is random:
                patches.enter_context(patch.object(module, "random", rng))
        yield


def open_wallet(store: DynamoStore, load: Load) -> None:
    store.create_account(ACCOUNT, "one busy wallet")
    store.credit(
        ACCOUNT, BUCKET, load.opening, kind=LedgerKind.TOPUP, entry_id="le_open", source="sim"
    )
    if load.shards > 1:
        store.shard_wallet(ACCOUNT, BUCKET, load.shards)


def simulate(load: Load, semantics: Semantics | None = None) -> Result:
    """One run of `load` (see the module docstring), its money rules checked."""
    semantics = semantics or Semantics()
    began = time.perf_counter()
    turns = Turns()
    stack = twin_stack()
    clock: Callable[[], datetime] = lambda: EPOCH + timedelta(seconds=turns.now)  # noqa: E731
    operator = DynamoStore(stack.client, stack.budget_table, stack.ledger_table, clock=clock)
    open_wallet(operator, load)
    service = Service(stack.client, turns, semantics)
    tally = Tally()
    starts = random.Random(f"throughput-{load.seed}-starts")
    for number in range(load.containers):
        jitter = random.Random(f"throughput-{load.seed}-jitter-{number}")
        client = Client(service, jitter.random)
        store = DynamoStore(client, stack.budget_table, stack.ledger_table, clock=clock)
        container = Container(number, store, load, semantics, turns, tally)
        turns.spawn(
            f"container-{number}", container.run, at=starts.uniform(0, load.cycle(semantics))
        )
    with virtual_store_time(turns, random.Random(f"throughput-{load.seed}-backoff")):
        turns.run()
    after_expiry = clock() + timedelta(seconds=HOLD_TTL_SECONDS + 1)
    violations = money_rules(stack, operator, load, tally, after_expiry)
    return _result(load, semantics, service, tally, violations, time.perf_counter() - began)


# The money rules, after the run ------------------------------------------------------------
def money_rules(
    stack: MemoryStack, store: DynamoStore, load: Load, tally: Tally, now: datetime
) -> list[str]:
    """Sweep what the requests left, then every rule; the violations (none: all held)."""
    problems: list[str] = []
    try:
        swept = sweep(store, now)
    except SweepIncomplete as exc:
        swept = SweepReport()
        problems.append(f"the sweep left holds unresolved: {exc.request_ids[:5]}")
    if sorted(swept.settled) != sorted(tally.deferred):
        problems.append("the sweeper did not settle exactly the recorded outcomes")
    if sorted(swept.voided) != sorted(tally.abandoned):
        problems.append("the sweeper did not void exactly the holds left without an outcome")
    problems += [
        f"reconcile: {d.check} {d.detail} {d.involved[:3]}" for d in reconcile(store, now).drifts
    ]
    budget = [plain(item) for item in stack.client.table_items(stack.budget_table)]
    ledger = [plain(item) for item in stack.client.table_items(stack.ledger_table)]
    problems += [
        f"{item['pk']}/{item['sk']}: {name} {item[name]} below zero"
        for item in budget
        for name in _COUNTERS
        if int(item.get(name, 0)) < 0
    ]
    pending = [
        i["pk"] for i in budget if schema.is_hold(i["pk"]) and i["status"] == HoldStatus.PENDING
    ]
    if pending:
        problems.append(f"{len(pending)} holds still pending after the sweep: {pending[:3]}")
    problems += _charge_rules(ledger, store, load, tally)
    return problems


def _charge_rules(
    ledger: list[dict[str, object]], store: DynamoStore, load: Load, tally: Tally
) -> list[str]:
    """One charge entry per settled request, at its charge; the charges are what left."""
    charges = [
        (str(e["request_id"]), -int(str(e["amount"])))
        for e in ledger
        if e.get("record_type") == schema.LEDGER_ENTRY_RECORD and e["kind"] == LedgerKind.CHARGE
    ]
    problems = []
    if len(charges) != len(dict(charges)):
        problems.append("a request was charged twice")
    if dict(charges) != {**tally.settled, **tally.deferred}:
        problems.append("the charge entries are not one per settled request, at its charge")
    if any(charge > load.hold for _, charge in charges):
        problems.append("a charge exceeds its hold")
    closing = store.get_wallet(ACCOUNT, BUCKET).balance
    if sum(charge for _, charge in charges) != load.opening - closing:
        problems.append(f"charges {sum(c for _, c in charges)} != {load.opening} - {closing}")
    return problems


# The report ----------------------------------------------------------------------------------
def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[round(fraction * (len(ordered) - 1))] if ordered else 0.0


def _result(
    load: Load,
    semantics: Semantics,
    service: Service,
    tally: Tally,
    violations: list[str],
    wall: float,
) -> Result:
    return Result(
        shards=load.shards,
        containers=load.containers,
        seconds=load.seconds,
        offered_per_second=round(load.offered(semantics), 1),
        settled_per_second=round(tally.settled_by_the_end / load.seconds, 1),
        requests=len(tally.settled) + tally.refused + tally.store_errors,
        refused=tally.refused,
        store_errors=tally.store_errors,
        settles_deferred=len(tally.deferred) + len(tally.abandoned),
        conflicts=service.stats["conflicts"],
        throttles=service.stats["throttles"],
        condition_failures=service.stats["condition failures"],
        client_retries=service.stats["client retries"],
        p50_ms=round(1000 * _percentile(tally.latencies, 0.5), 1),
        p99_ms=round(1000 * _percentile(tally.latencies, 0.99), 1),
        conflicts_by_item=dict(service.conflicts.most_common()),
        throttles_by_item=dict(service.throttles.most_common()),
        violations=violations,
        wall_seconds=round(wall, 1),
    )


_COLUMNS = (  # heading, width, field
    ("shards", 6, "shards"),
    ("containers", 10, "containers"),
    ("offered/s", 9, "offered_per_second"),
    ("settled/s", 9, "settled_per_second"),
    ("refused", 7, "refused"),
    ("store errors", 12, "store_errors"),
    ("conflicts", 9, "conflicts"),
    ("throttles", 9, "throttles"),
    ("p50 ms", 7, "p50_ms"),
    ("p99 ms", 7, "p99_ms"),
    ("rules", 5, "violations"),
)


def heading() -> str:
    return "  ".join(f"{title:>{width}}" for title, width, _ in _COLUMNS)


def row(result: Result) -> str:
    values = asdict(result)
    values["violations"] = "held" if not result.violations else "BROKEN"
    return "  ".join(f"{values[name]!s:>{width}}" for _, width, name in _COLUMNS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.sim.throughput", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0, help="virtual seconds of load")
    parser.add_argument("--containers", default="16,64,96", help="comma-separated counts")
    parser.add_argument("--shards", default="1,4,16,32", help="comma-separated counts")
    parser.add_argument("--latency", type=float, default=4.0, help="ms per DynamoDB call")
    parser.add_argument("--upstream", type=float, default=30.0, help="ms per upstream call")
    parser.add_argument("--opening", type=int, default=Load.opening, help="micro-units")
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument(
        "--capped", action="store_true", help="the key has a daily cap: one envelope item"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # not the sweeper's "holds_swept" of every run
    shards = [int(n) for n in args.shards.split(",")]
    semantics = Semantics(latency=args.latency / 1000)
    print(f"one wallet, {args.seconds:g} virtual s, {semantics}, upstream {args.upstream:g} ms")
    print(heading(), flush=True)
    results = []
    for count in shards:
        for containers in (int(n) for n in args.containers.split(",")):
            load = Load(
                containers=containers,
                seconds=args.seconds,
                shards=count,
                upstream=args.upstream / 1000,
                opening=args.opening,
                seed=args.seed,
                capped=args.capped,
            )
            results.append(simulate(load, semantics))
            print(row(results[-1]), flush=True)
    for result in results:
        where = f"{result.shards} shards, {result.containers} containers"
        print(
            f"{where}: conflicts {result.conflicts_by_item}, throttles"
            f" {result.throttles_by_item}, failed conditions {result.condition_failures},"
            f" client retries {result.client_retries}, settles left to the sweeper"
            f" {result.settles_deferred}, {result.wall_seconds} s wall"
        )
        for violation in result.violations:
            print(f"  money rule broken: {violation}")
    if args.json:
        report = {"semantics": asdict(semantics), "upstream_ms": args.upstream, "seed": args.seed}
        report["runs"] = [asdict(r) for r in results]
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 1 if any(r.violations for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
