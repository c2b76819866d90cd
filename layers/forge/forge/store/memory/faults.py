"""What goes wrong with the twin's calls, and when: scripted rules and seeded random rates.

The twin serialises every call under one lock, so two transactions never overlap in time and
DynamoDB's `TransactionConflict` cannot arise by itself; it happens when this schedule says so.
Each decision is drawn from one `random.Random(seed)` in call order, so a single-threaded run
(a simulation) replays exactly from its seed; `log` records every fault injected.
With `overlap`, writes that are in flight at the same time (between the call and its answer,
latency included) conflict as they do in DynamoDB: a transaction or a single-item write that
names an item an in-flight transaction holds is refused with TransactionConflict. That
depends on thread timing, so it is for concurrency tests, not for replayable simulations.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from forge.store.memory.values import AttributeValue


class FaultKind(Enum):
    # The call never reaches the table (nothing applied):
    UNREACHABLE = "unreachable"  # botocore EndpointConnectionError
    TIMEOUT = "timeout"  # botocore ConnectTimeoutError
    THROTTLED = "throttled"  # ProvisionedThroughputExceededException (retries exhausted)
    INTERNAL_ERROR = "internal_error"  # InternalServerError (HTTP 500)
    # A write meets another (nothing applied): a transaction is cancelled with
    # TransactionConflict on one item; a single-item write gets TransactionConflictException.
    CONFLICT = "conflict"
    # The call is applied (or refused) but its answer is lost: botocore ReadTimeoutError.
    LOST_RESPONSE = "lost_response"
    # A batch call processes only some of its keys and returns the rest as unprocessed.
    UNPROCESSED = "unprocessed"


WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"})
_BATCHES = frozenset({"BatchGetItem", "BatchWriteItem"})
_OVERLAPPING = frozenset({"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems"})


@dataclass(frozen=True)
class Call:
    """What the schedule is told about a call: its number (from 1), its operation and the
    items it names, as (table, key) in request order (one per transaction item)."""

    number: int
    operation: str
    items: Sequence[tuple[str, Mapping[str, AttributeValue]]] = ()


@dataclass
class Rule:
    """Inject `kind` into calls that match: of `operation` (any if None), naming an item of
    `table` whose key attributes include `key` (plain values: {"pk": "HOLD#req_1"}); the first
    `skip` matching calls pass, then the rule fires `times` times (None: always)."""

    kind: FaultKind
    operation: str | None = None
    table: str | None = None
    key: Mapping[str, str | int] | None = None
    skip: int = 0
    times: int | None = 1

    def target(self, call: Call) -> int | None:
        """Index of the first item of the call that the rule names (0 if it names none)."""
        if self.operation is not None and call.operation != self.operation:
            return None
        if self.table is None and self.key is None:
            return 0
        for index, (table, key) in enumerate(call.items):
            if self.table is not None and table != self.table:
                continue
            if self.key is None or all(
                name in key and _plain(key[name]) == str(value) for name, value in self.key.items()
            ):
                return index
        return None


def _plain(value: AttributeValue) -> str:
    return str(next(iter(value.values())))


@dataclass(frozen=True)
class Injected:
    call: int
    operation: str
    kind: FaultKind
    item: int | None = None  # the transaction item that conflicted


@dataclass(frozen=True)
class Decision:
    kind: FaultKind
    item: int = 0  # which item (transactions), or the seed of a batch's split


@dataclass
class Faults:
    """The fault schedule of one twin. `rates` gives each kind a probability per eligible call;
    `latency` seconds are spent (through `sleep`) before each call, outside the twin's lock."""

    rules: list[Rule] = field(default_factory=list)
    rates: Mapping[FaultKind, float] = field(default_factory=dict)
    seed: int = 0
    latency: float = 0.0
    sleep: Callable[[float], None] = time.sleep
    overlap: bool = False
    log: list[Injected] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)  # noqa: S311 - a simulation, not secrets
        self._flight_lock = threading.Lock()
        self._in_flight: Counter[str] = Counter()  # items held by transactions in flight

    def inject(self, kind: FaultKind, **match: Any) -> Rule:
        """Add a rule (see Rule for the match arguments); returns it."""
        rule = Rule(kind, **match)
        self.rules.append(rule)
        return rule

    def clear(self) -> None:
        self.rules.clear()
        self.rates = {}

    def wait(self) -> None:
        if self.latency > 0:
            self.sleep(self.latency)

    def depart(
        self, operation: str, items: Sequence[tuple[str, Mapping[str, AttributeValue]]]
    ) -> tuple[list[str], int | None]:
        """With `overlap`: a write takes off. Returns what a transaction now holds in flight
        (for `arrive`) and the index of its first item an earlier transaction in flight holds."""
        if not self.overlap or operation not in _OVERLAPPING:
            return [], None
        names = [
            f"{table}#{sorted((k, _plain(v)) for k, v in key.items())}" for table, key in items
        ]
        with self._flight_lock:
            clash = next((i for i, name in enumerate(names) if self._in_flight[name]), None)
            if operation != "TransactWriteItems":
                return [], clash
            self._in_flight.update(names)
        return names, clash

    def arrive(self, held: list[str]) -> None:
        """The write's answer is back (or lost): its items are no longer in flight."""
        if held:
            with self._flight_lock:
                self._in_flight.subtract(held)
                self._in_flight = +self._in_flight

    def decide(self, call: Call, clash: int | None = None) -> Decision | None:
        """The fault for this call, if any: scripted rules first, then the random rates, then
        an overlap with a transaction in flight (`clash`, the index of the item it holds)."""
        decision = self._scripted(call) or self._drawn(call)
        if decision is None and clash is not None:
            decision = Decision(FaultKind.CONFLICT, clash)
        if decision is not None:
            item = decision.item if decision.kind is FaultKind.CONFLICT else None
            self.log.append(Injected(call.number, call.operation, decision.kind, item))
        return decision

    def _scripted(self, call: Call) -> Decision | None:
        for rule in self.rules:
            if rule.times is not None and rule.times <= 0:
                continue
            if not _eligible(rule.kind, call.operation):
                continue
            index = rule.target(call)
            if index is None:
                continue
            if rule.skip > 0:
                rule.skip -= 1
                continue
            if rule.times is not None:
                rule.times -= 1
            return Decision(rule.kind, index)
        return None

    def _drawn(self, call: Call) -> Decision | None:
        for kind in FaultKind:  # a fixed order keeps the draws reproducible
            rate = self.rates.get(kind, 0.0)
            if rate <= 0 or not _eligible(kind, call.operation):
                continue
            if self._random.random() < rate:
                count = max(len(call.items), 1)
                return Decision(kind, self._random.randrange(count))
        return None


def _eligible(kind: FaultKind, operation: str) -> bool:
    if kind is FaultKind.CONFLICT:
        return operation in WRITES and operation != "BatchWriteItem"
    if kind is FaultKind.UNPROCESSED:
        return operation in _BATCHES
    return True
