"""DynamoDB's behaviour under load, around the in-memory twin: what the throughput simulation
(tests/sim/throughput.py) puts between the store and the twin, in virtual time.

The twin gives DynamoDB's data semantics (conditions, all-or-nothing transactions, their
cancellation reasons) but answers every call at once and never refuses one for being busy.
`Service` adds what a busy item meets in DynamoDB:

- latency: every call is in flight for `latency` seconds. Its effect (admission, conflict
  check, then the write or read on the twin) happens at the end of its flight, the instant its
  answer returns, so the whole latency counts in every window a race can happen in;
- per-item serialisation: writes to one item apply one at a time, each at its own instant, in
  one order (virtual time, then the order the calls were made);
- TransactionConflict: a transaction is cancelled (reason TransactionConflict on the item) if
  another write to one of its items, transactional or not, was applied while it was in flight;
  a single-item write arriving while a transaction on its item is in flight is refused with
  TransactionConflictException;
- a ceiling per item: 1,000 write units and 3,000 read units a second, each a token bucket
  holding one second's worth (no burst credit beyond it). Units are bench.cost.capacity's: a
  write 1 per KB of the item's size before it (a Put: the larger of the old and the new item),
  2 in a transaction, consumed whether the transaction commits or is cancelled; a GetItem 1
  per 4 KB strongly consistent, half that eventually consistent. A call over the ceiling is
  refused whole and consumes nothing: ProvisionedThroughputExceededException, or for a
  transaction a cancellation with ThrottlingError on the items over it. Queries, scans and
  batch reads are not metered (the simulated requests make none).

`Client` is one container's client over it, retrying as the production client does
(forge.store.dynamo.wire, botocore's standard mode: 4 attempts, jittered exponential backoff,
the retry quota), its backoff slept in virtual time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from bench.cost.capacity import item_size, read_units, write_units
from forge.store.dynamo.wire import (  # the production client's own retry policy
    _RETRY_COST,
    _THROTTLING_CODES,
    _THROTTLING_COST,
    _TRANSIENT_CODES,
    _TRANSIENT_STATUS,
    MAX_ATTEMPTS,
    _delay,
    _RetryQuota,
)
from forge.store.memory import MemoryDynamoDB
from forge.store.memory import errors as twin_errors
from tests.sim.virtual_time import Turns

ItemId = tuple[str, str, str]  # table, pk, sk
_SINGLE = {"put_item": "Put", "update_item": "Update", "delete_item": "Delete", "get_item": "Get"}
_WRITES = frozenset({"Put", "Update", "Delete"})
_CONFLICT = {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}
_OVER = (
    "Throughput exceeds the current capacity of your table or index. DynamoDB is automatically"
    " scaling your table or index so please try again shortly. If exceptions persist, check if"
    " you have a hot key"
)


@dataclass(frozen=True)
class Semantics:
    """The stated figures the model runs on."""

    latency: float = 0.004  # seconds per call, as measured DynamoDB in-region
    write_units_per_second: float = 1000.0  # per item (DynamoDB's per-partition ceiling)
    read_units_per_second: float = 3000.0


class TokenBucket:
    """Units a second, holding at most one second's worth."""

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.tokens = rate
        self._at = now

    def room(self, now: float) -> float:
        self.tokens = min(self.rate, self.tokens + (now - self._at) * self.rate)
        self._at = now
        return self.tokens


@dataclass(frozen=True)
class Touch:
    """One item a call names, how (Put, Update, Delete, ConditionCheck or Get), and the
    call's (or transaction entry's) parameters for it."""

    item: ItemId
    action: str
    params: Mapping[str, Any]


def touches(operation: str, params: Mapping[str, Any]) -> list[Touch]:
    """The items a call names, in request order (none for queries, scans and batches)."""
    if operation == "transact_write_items":
        return [
            _touch(action, op) for entry in params["TransactItems"] for action, op in entry.items()
        ]
    action = _SINGLE.get(operation)
    return [_touch(action, params)] if action else []


def _touch(action: str, op: Mapping[str, Any]) -> Touch:
    key = op.get("Key") or op["Item"]
    return Touch((op["TableName"], key["pk"]["S"], key["sk"]["S"]), action, op)


def label(item: ItemId) -> str:
    """What kind of item: the first part of its partition and sort keys (ACCT/BUCKET: a
    wallet; USAGE/<hour>: a usage cell)."""
    _, pk, sk = item
    return f"{pk.split('#')[0]}/{sk.split('#')[0]}"


def operation_name(operation: str) -> str:
    return "".join(part.capitalize() for part in operation.split("_"))


class Service:
    """The shared DynamoDB of every container (see the module docstring)."""

    def __init__(self, twin: MemoryDynamoDB, turns: Turns, semantics: Semantics) -> None:
        self.twin = twin
        self.turns = turns
        self.semantics = semantics
        self.stats: Counter[str] = Counter()
        self.conflicts: Counter[str] = Counter()  # by item label
        self.throttles: Counter[str] = Counter()
        self._applied: Counter[ItemId] = Counter()  # writes applied to each item so far
        self._in_transaction: Counter[ItemId] = Counter()  # transactions in flight on it
        self._sizes: dict[ItemId, int] = {}
        self._buckets: dict[tuple[ItemId, bool], TokenBucket] = {}

    def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        """One attempt of one call: in flight for the latency, then refused (throttled or in
        conflict), or run on the twin."""
        touched = touches(operation, params)
        transaction = operation == "transact_write_items"
        seen = [self._applied[t.item] for t in touched]
        held = [t.item for t in touched] if transaction else []
        self._in_transaction.update(held)
        try:
            self.turns.sleep(self.semantics.latency)
        finally:
            self._in_transaction.subtract(held)
        self.stats["calls"] += 1
        self._admit(operation, touched, transaction)
        self._check_conflicts(operation, touched, seen, transaction)
        try:
            response: dict[str, Any] = getattr(self.twin, operation)(**params)
        except ClientError as exc:
            if any(r.get("Code") == "ConditionalCheckFailed" for r in _reasons(exc)):
                self.stats["condition failures"] += 1
            raise
        self._applied_now(touched)
        return response

    # The ceiling -----------------------------------------------------------------------
    def _admit(self, operation: str, touched: list[Touch], transaction: bool) -> None:
        """Take each item's units, or refuse the whole call if one item lacks them."""
        now = self.turns.now
        costs = [(self._bucket(t, now), self._units(t, transaction)) for t in touched]
        over = [bucket.room(now) < units for bucket, units in costs]
        if not any(over):
            for bucket, units in costs:
                bucket.tokens -= units
            return
        self.stats["throttles"] += 1
        self.throttles.update(label(t.item) for t, o in zip(touched, over, strict=True) if o)
        if transaction:
            throttled = {"Code": "ThrottlingError", "Message": _OVER}
            raise twin_errors.cancelled([throttled if o else {"Code": "None"} for o in over])
        raise twin_errors.client_error(
            "ProvisionedThroughputExceededException", _OVER, operation_name(operation)
        )

    def _bucket(self, touch: Touch, now: float) -> TokenBucket:
        writes = touch.action in _WRITES
        semantics = self.semantics
        rate = semantics.write_units_per_second if writes else semantics.read_units_per_second
        return self._buckets.setdefault((touch.item, writes), TokenBucket(rate, now))

    def _units(self, touch: Touch, transaction: bool) -> float:
        size = self._size(touch.item)
        if touch.action == "Get":
            return read_units(size, consistent=bool(touch.params.get("ConsistentRead")))
        if touch.action == "ConditionCheck":
            return read_units(size, transactional=True)
        if touch.action == "Put":
            size = max(size, item_size(touch.params["Item"]))
        return write_units(size, transactional=transaction)

    def _size(self, item: ItemId) -> int:
        if item not in self._sizes:
            table, pk, sk = item
            key = {"pk": {"S": pk}, "sk": {"S": sk}}
            got = self.twin.get_item(TableName=table, Key=key, ConsistentRead=True)
            self._sizes[item] = item_size(got.get("Item"))
        return self._sizes[item]

    # Conflicts ---------------------------------------------------------------------------
    def _check_conflicts(
        self, operation: str, touched: list[Touch], seen: list[int], transaction: bool
    ) -> None:
        if transaction:
            clashed = [self._applied[t.item] != s for t, s in zip(touched, seen, strict=True)]
        else:
            clashed = [t.action in _WRITES and self._in_transaction[t.item] > 0 for t in touched]
        if not any(clashed):
            return
        self.stats["conflicts"] += 1
        self.conflicts.update(label(t.item) for t, c in zip(touched, clashed, strict=True) if c)
        if transaction:
            raise twin_errors.cancelled(
                [dict(_CONFLICT) if c else {"Code": "None"} for c in clashed]
            )
        raise twin_errors.client_error(
            "TransactionConflictException", _CONFLICT["Message"], operation_name(operation)
        )

    def _applied_now(self, touched: list[Touch]) -> None:
        """The call was applied: its writes count against later conflict checks, and the
        sizes they change are read again when next needed."""
        for touch in touched:
            if touch.action not in _WRITES:
                continue
            self._applied[touch.item] += 1
            if touch.action == "Put":
                self._sizes[touch.item] = item_size(touch.params["Item"])
            else:
                self._sizes.pop(touch.item, None)


def _reasons(exc: ClientError) -> list[dict[str, Any]]:
    return list(exc.response.get("CancellationReasons") or [])


class Client:
    """One container's DynamoDB client over the Service, with the production client's
    retries (see the module docstring); `jitter` draws the backoff's random factor."""

    def __init__(self, service: Service, jitter: Callable[[], float]) -> None:
        self._service = service
        self._jitter = jitter
        self._quota = _RetryQuota()

    def __getattr__(self, operation: str) -> Callable[..., dict[str, Any]]:
        if operation.startswith("_"):
            raise AttributeError(operation)
        return lambda **params: self._call(operation, params)

    def _call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        attempt = acquired = 0
        while True:
            attempt += 1
            try:
                response = self._service.call(operation, params)
            except ClientError as exc:
                code = exc.response["Error"]["Code"]
                status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
                throttled = code in _THROTTLING_CODES
                retryable = throttled or code in _TRANSIENT_CODES or status in _TRANSIENT_STATUS
                cost = _THROTTLING_COST if throttled else _RETRY_COST
                if attempt >= MAX_ATTEMPTS or not retryable or not self._quota.acquire(cost):
                    raise
                acquired = cost
                self._service.stats["client retries"] += 1
                self._service.turns.sleep(_delay(self._jitter(), attempt, throttled, None))
                continue
            self._quota.release(acquired or 1)
            return response
