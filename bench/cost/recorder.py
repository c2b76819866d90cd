"""What the store adapter's DynamoDB calls cost, item by item, recorded at its botocore client.

A `CapacityRecorder` registers on the client's botocore events (`before-parameter-build` and
`after-call` of every DynamoDB operation, as tests/integration/test_iam_coverage.py records
calls): before a write it reads the items the call names, after the call it reads them again,
so each item is sized as DynamoDB sizes it (bench.cost.capacity): a Put by the larger of the new
and the replaced item, an Update by the larger of the item before and after, a Delete or a
ConditionCheck by the stored item. Reads are sized from what the call returned. Each global
secondary index a write touches costs its own writes (the documented GSI rules, below).

The images are read with a second client the recorder owns (never recorded), so the app's
own calls are exactly what it sends. This assumes nothing else writes those items between a
call and its images: true of the sequential runs `make cost` makes.

GSI writes, from "Using Global Secondary Indexes in DynamoDB", write capacity
(docs.aws.amazon.com/amazondynamodb/latest/developerguide/GSI.html): a write that adds an
item to an index is one index write, one that removes it one, one that changes an indexed
key two (delete and put), one that changes only projected attributes one; each sized by the
index entry (here ALL projections: the whole item). Whether a transaction's index writes are
doubled like its table writes is not documented; they are counted once, and reported apart
(`gsi_wru`) so the other reading can be computed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from bench.cost.capacity import batch_read_units, item_size, read_units, write_units

Item = dict[str, Any]  # a typed item (DynamoDB JSON)

_SINGLE_WRITES = {"PutItem": "Put", "UpdateItem": "Update", "DeleteItem": "Delete"}


@dataclass(frozen=True)
class Index:
    name: str
    keys: tuple[str, ...]
    projection: str  # ALL, KEYS_ONLY or INCLUDE
    included: tuple[str, ...] = ()

    def entry(self, item: Item | None, table_keys: tuple[str, ...]) -> Item | None:
        """The index entry of `item` (None when the item is not in this sparse index)."""
        if item is None or any(k not in item for k in self.keys):
            return None
        if self.projection == "ALL":
            return item
        kept = {*table_keys, *self.keys, *self.included}
        return {k: v for k, v in item.items() if k in kept}


@dataclass(frozen=True)
class Table:
    name: str
    keys: tuple[str, ...]
    indexes: tuple[Index, ...]

    @classmethod
    def describe(cls, client: Any, name: str) -> Table:
        table = client.describe_table(TableName=name)["Table"]
        indexes = tuple(
            Index(
                name=index["IndexName"],
                keys=tuple(k["AttributeName"] for k in index["KeySchema"]),
                projection=index["Projection"]["ProjectionType"],
                included=tuple(index["Projection"].get("NonKeyAttributes", ())),
            )
            for index in table.get("GlobalSecondaryIndexes", [])
        )
        return cls(name, tuple(k["AttributeName"] for k in table["KeySchema"]), indexes)

    def key_of(self, item: Mapping[str, Any]) -> Item:
        return {k: item[k] for k in self.keys}


@dataclass
class Write:
    """One item written (or checked) by a call, on the table or on one of its indexes."""

    table: str
    kind: str  # Put, Update, Delete, ConditionCheck; for an index: index put/delete/update
    size: int
    wru: int
    transactional: bool
    index: str | None = None


@dataclass
class Read:
    table: str
    size: int
    rru: float
    items: int = 1
    index: str | None = None


@dataclass
class StoreCall:
    """One DynamoDB API call the adapter made, with what it cost."""

    operation: str
    writes: list[Write] = field(default_factory=list)
    reads: list[Read] = field(default_factory=list)
    failed: bool = False
    seconds: float = 0.0

    @property
    def table_wru(self) -> int:
        return sum(w.wru for w in self.writes if w.index is None)

    @property
    def gsi_wru(self) -> int:
        return sum(w.wru for w in self.writes if w.index is not None)

    @property
    def rru(self) -> float:
        return sum(r.rru for r in self.reads)


@dataclass
class _Pending:
    operation: str
    params: dict[str, Any]
    targets: list[tuple[str, Item]]  # (table, key) of every item a write names
    before: list[Item | None]  # each target as it was before the call
    started: float


class CapacityRecorder:
    """Records every DynamoDB call `client` makes, with its write and read units."""

    def __init__(self, client: Any, reader: Any) -> None:
        self._client = client
        self._reader = reader  # reads item images; its own calls are never recorded
        self._tables: dict[str, Table] = {}
        self._lock = threading.Lock()
        self._calls: list[StoreCall] = []
        self._in_flight = 0
        self._paused = False
        self._errors: list[BaseException] = []  # a recorder fault never reaches the app

    def install(self) -> CapacityRecorder:
        events = self._client.meta.events
        events.register("before-parameter-build.dynamodb", self._before)
        events.register("after-call.dynamodb", self._after)
        events.register("after-call-error.dynamodb", self._after_error)
        return self

    # What the run reads ----------------------------------------------------------------
    def take(self) -> list[StoreCall]:
        """The calls recorded since the last take (raises what went wrong recording them)."""
        with self._lock:
            calls, self._calls = self._calls, []
            errors, self._errors = self._errors, []
        if errors:
            raise RuntimeError(f"{len(errors)} calls could not be costed") from errors[0]
        return calls

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Until no recorded call is under way."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if self._in_flight == 0:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError("a DynamoDB call is still under way")
            time.sleep(0.005)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Calls made meanwhile (seeding, checks) are not recorded."""
        self._paused = True
        try:
            yield
        finally:
            self._paused = False

    # botocore events -------------------------------------------------------------------
    def _table(self, name: str) -> Table:
        if name not in self._tables:
            self._tables[name] = Table.describe(self._reader, name)
        return self._tables[name]

    def _image(self, table: str, key: Item) -> Item | None:
        got = self._reader.get_item(TableName=table, Key=key, ConsistentRead=True)
        item: Item | None = got.get("Item")
        return item

    def _targets(self, operation: str, params: Mapping[str, Any]) -> list[tuple[str, Item]]:
        """(table, key) of every item a write names, in the call's order."""
        if operation == "TransactWriteItems":
            targets = []
            for entry in params["TransactItems"]:
                ((kind, op),) = entry.items()
                table = self._table(op["TableName"])
                targets.append(
                    (table.name, table.key_of(op["Item"] if kind == "Put" else op["Key"]))
                )
            return targets
        if operation in _SINGLE_WRITES:
            table = self._table(params["TableName"])
            source = params["Item"] if operation == "PutItem" else params["Key"]
            return [(table.name, table.key_of(source))]
        if operation == "BatchWriteItem":
            targets = []
            for name, requests in params["RequestItems"].items():
                table = self._table(name)
                for request in requests:
                    source = request["PutRequest"]["Item"] if "PutRequest" in request else None
                    key = source or request["DeleteRequest"]["Key"]
                    targets.append((table.name, table.key_of(key)))
            return targets
        return []

    def _before(self, params: Mapping[str, Any], model: Any, context: Any, **_: Any) -> None:
        if self._paused or not isinstance(context, dict):
            return
        try:
            operation = str(model.name)
            snapshot = dict(params)
            targets = self._targets(operation, snapshot)
            before = [self._image(table, key) for table, key in targets]
        except Exception as exc:  # reported by take(), never to the app
            with self._lock:
                self._errors.append(exc)
            return
        context["forge_capacity"] = _Pending(
            operation, snapshot, targets, before, time.perf_counter()
        )
        with self._lock:
            self._in_flight += 1

    def _after_error(self, context: Any, **_: Any) -> None:
        pending = context.pop("forge_capacity", None) if isinstance(context, dict) else None
        if pending is not None:
            with self._lock:
                self._in_flight -= 1

    def _after(self, http_response: Any, parsed: Any, context: Any, **_: Any) -> None:
        pending = context.pop("forge_capacity", None) if isinstance(context, dict) else None
        if pending is None:
            return
        try:
            call = StoreCall(pending.operation, failed=http_response.status_code >= 300)
            call.seconds = time.perf_counter() - pending.started
            self._cost(call, pending, parsed)
            with self._lock:
                self._calls.append(call)
        except Exception as exc:  # reported by take(), never to the app
            with self._lock:
                self._errors.append(exc)
        finally:
            with self._lock:
                self._in_flight -= 1

    # Costing -------------------------------------------------------------------------------
    def _cost(self, call: StoreCall, pending: _Pending, parsed: Mapping[str, Any]) -> None:
        operation, params = pending.operation, pending.params
        if operation == "TransactWriteItems":
            for n, entry in enumerate(params["TransactItems"]):
                ((kind, op),) = entry.items()
                self._write(call, n, kind, op, pending, transactional=True)
        elif operation in _SINGLE_WRITES:
            self._write(call, 0, _SINGLE_WRITES[operation], params, pending, transactional=False)
        elif operation == "BatchWriteItem":
            n = 0
            for requests in params["RequestItems"].values():
                for request in requests:
                    if "PutRequest" in request:
                        kind, op = "Put", request["PutRequest"]
                    else:
                        kind, op = "Delete", request["DeleteRequest"]
                    self._write(call, n, kind, op, pending, transactional=False)
                    n += 1
        elif operation == "GetItem":
            size = item_size(parsed.get("Item"))
            consistent = bool(params.get("ConsistentRead"))
            call.reads.append(
                Read(params["TableName"], size, read_units(size, consistent=consistent))
            )
        elif operation == "BatchGetItem":
            for name, request in params["RequestItems"].items():
                returned = parsed.get("Responses", {}).get(name, [])
                sizes = [item_size(i) for i in returned]
                sizes += [0] * (len(request["Keys"]) - len(returned))  # missing: the minimum
                consistent = bool(request.get("ConsistentRead"))
                units = batch_read_units(sizes, consistent=consistent)
                call.reads.append(Read(name, sum(sizes), units, items=len(sizes)))
        elif operation == "TransactGetItems":
            for entry, got in zip(
                params["TransactItems"], parsed.get("Responses", []), strict=False
            ):
                size = item_size(got.get("Item"))
                table = entry["Get"]["TableName"]
                call.reads.append(Read(table, size, read_units(size, transactional=True)))
        elif operation in ("Query", "Scan"):
            # Sized by the items returned: exact when no FilterExpression drops any (the
            # store's queries have none; a filtered one would be under-counted here).
            items = parsed.get("Items", [])
            size = sum(item_size(i) for i in items)
            consistent = bool(params.get("ConsistentRead"))
            call.reads.append(
                Read(
                    params["TableName"],
                    size,
                    read_units(size, consistent=consistent),
                    items=len(items),
                    index=params.get("IndexName"),
                )
            )

    def _write(
        self,
        call: StoreCall,
        n: int,
        kind: str,
        op: Mapping[str, Any],
        pending: _Pending,
        *,
        transactional: bool,
    ) -> None:
        table_name, key = pending.targets[n]
        table = self._table(table_name)
        before = pending.before[n]
        if call.failed or kind == "ConditionCheck":
            after = before  # nothing changed (a cancelled call still consumes capacity)
        elif kind == "Put":
            after = dict(op["Item"])
        else:
            after = self._image(table.name, key)
        if kind == "Put":
            size = max(item_size(before), item_size(op["Item"]))
        elif kind in ("Delete", "ConditionCheck"):
            size = item_size(before)
        else:
            size = max(item_size(before), item_size(after))
        call.writes.append(
            Write(
                table.name,
                kind,
                size,
                write_units(size, transactional=transactional),
                transactional,
            )
        )
        for index in table.indexes:
            for index_kind, index_size in _index_writes(index, table.keys, before, after):
                call.writes.append(
                    Write(
                        table.name,
                        index_kind,
                        index_size,
                        write_units(index_size),
                        transactional,
                        index=index.name,
                    )
                )


def _index_writes(
    index: Index, table_keys: tuple[str, ...], before: Item | None, after: Item | None
) -> list[tuple[str, int]]:
    """The writes one table write costs `index`: (kind, entry size) each."""
    old, new = index.entry(before, table_keys), index.entry(after, table_keys)
    if old is None and new is None:
        return []
    if old is None:
        return [("index put", item_size(new))]
    if new is None:
        return [("index delete", item_size(old))]
    if any(old[k] != new[k] for k in index.keys):
        return [("index delete", item_size(old)), ("index put", item_size(new))]
    if old != new:
        return [("index update", max(item_size(old), item_size(new)))]
    return []


def summarize(calls: list[StoreCall]) -> dict[str, Any]:
    """Totals of a request's calls: units, round trips, items written per transaction."""
    ops: dict[str, int] = {}
    for c in calls:
        ops[c.operation] = ops.get(c.operation, 0) + 1
    return {
        "round_trips": len(calls),
        "operations": ops,
        "table_wru": sum(c.table_wru for c in calls),
        "gsi_wru": sum(c.gsi_wru for c in calls),
        "rru": sum(c.rru for c in calls),
        "transactions": [
            [f"{w.kind} {w.size} B" for w in c.writes if w.index is None]
            for c in calls
            if c.operation == "TransactWriteItems"
        ],
        "failed_calls": sum(1 for c in calls if c.failed),
    }
